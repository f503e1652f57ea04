"""The graph's typed state. ``messages`` is LangGraph's ``MessagesState`` key, so the agent composes
with users' graphs; everything per-run lives under ``sca`` as plain JSON-able data (any
checkpointer can store it)."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

__all__ = ["AgentState", "RunInput", "RunRecord"]


class RunInput(TypedDict, total=False):
    """Optional per-run labels supplied with the input (RL collection and evaluation use them)."""

    group_id: str
    sample_index: int
    metadata: dict[str, Any]


class RunRecord(TypedDict, total=False):
    """Bookkeeping of the current run, rebuilt by the ``start`` node at every invocation."""

    trace_id: str
    started_at: str
    user_prompt: str
    turns: list[dict[str, Any]]
    consultations: list[dict[str, Any]]
    format_errors: list[dict[str, Any]]
    node_latencies: dict[str, list[float]]
    pending_calls: list[dict[str, Any]]
    budget_notice_sent: bool
    always_rules: str | None
    wire_messages: list[dict[str, Any]]
    outcome: dict[str, Any]
    answer: str | None
    done: bool


class AgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    run: RunInput
    sca: RunRecord
    answer: str | None
    """The final answer of the last run (also the content of the last AI message)."""
    consulted: bool
    rule_ids: list[str]
    trace_id: str | None
