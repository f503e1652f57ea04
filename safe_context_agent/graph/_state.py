"""The graph's state.

``messages`` is LangGraph's ``MessagesState`` key, so the agent composes with users' graphs, and
after every run it is a history any chat API accepts. What a parent graph reads about the run is
one documented key, ``safe_context`` (a :class:`RunSummary`). The per-run bookkeeping is a typed
pydantic model in a private channel (``sca_run``): it is checkpointed with the thread like every
channel, but it is neither input nor output, so a parent graph never sees it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from pydantic import BaseModel, Field

from safe_context_agent.traces import Consultation, FormatError, ModelTurn, Outcome, ToolRun

__all__ = ["AgentInput", "AgentState", "RunInput", "RunRecord", "RunSummary"]


class RunInput(TypedDict, total=False):
    """Optional per-run labels supplied with the input (RL collection and evaluation use them)."""

    group_id: str
    sample_index: int
    metadata: dict[str, Any]


class RunSummary(TypedDict):
    """What a run did, for the graph around it: ``state["safe_context"]``.

    A parent graph that declares ``safe_context: RunSummary`` in its own state receives it when
    the agent runs as its node or subgraph (a ``MessagesState`` parent without the key does not).
    """

    trace_id: str
    status: Literal["ok", "error"]
    consulted: bool
    """At least one consultation returned rules (the action class IFPO weighs by)."""
    rule_ids: list[str]
    tools_called: list[str]
    """Names of the app's own tools the model called, in order."""
    answer: str | None


class AgentInput(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    run: RunInput


class AgentState(AgentInput, total=False):
    """The graph's input and output keys."""

    answer: str | None
    """The final answer of the last run (also the content of the last AI message)."""
    consulted: bool
    rule_ids: list[str]
    trace_id: str | None
    safe_context: RunSummary


class RunRecord(BaseModel):
    """Bookkeeping of the current run, rebuilt by the ``start`` node at every invocation.

    Nodes never mutate a record they read: they copy it and rebind the fields they change, so a
    checkpointed record stays what that step wrote."""

    trace_id: str
    started_at: datetime
    thread_id: str | None = None
    user_prompt: str = ""
    turns: list[ModelTurn] = Field(default_factory=list)
    consultations: list[Consultation] = Field(default_factory=list)
    format_errors: list[FormatError] = Field(default_factory=list)
    tool_runs: list[ToolRun] = Field(default_factory=list)
    node_latencies: dict[str, list[float]] = Field(default_factory=dict)
    budget_notice_sent: bool = False
    always_rules: str | None = None
    wire_messages: list[dict[str, Any]] = Field(default_factory=list)
    """The last request's messages in OpenAI form, as sent (the trace's ``messages``)."""
    outcome: Outcome = Field(default_factory=Outcome)
    answer: str | None = None
    answer_emitted: bool = False
    """The final AI message is in ``messages`` (fail-closed answers are added by ``finish``)."""
    done: bool = False

    def consultations_used(self) -> int:
        return sum(1 for c in self.consultations if c.source == "tool_call")


class _GraphState(AgentState, total=False):
    sca_run: RunRecord
