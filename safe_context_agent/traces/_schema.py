"""The ``Trace``: everything one agent run did, good enough to train on.

A trace records what the server saw and sampled, never a re-tokenisation of text: per model turn
the served prompt token ids, the completion token ids and their logprobs (vLLM's
``return_token_ids`` / ``logprobs``). Replay (the training package) rebuilds trajectories from
these ids only. Credentials are never part of a trace: ``base_url`` loses its user-info and error
texts are redacted on validation (see ``safe_context_agent._sanitize``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from safe_context_agent._sanitize import redact, redact_url

__all__ = [
    "TRACE_SCHEMA_VERSION",
    "ConsultMode",
    "Consultation",
    "FormatError",
    "FormatErrorKind",
    "ModelTurn",
    "Outcome",
    "PackRef",
    "RetrievedRuleRef",
    "ToolCallRecord",
    "ToolRun",
    "Trace",
    "new_trace_id",
]

TRACE_SCHEMA_VERSION = 1

ConsultMode = Literal["adaptive", "never", "always"]
FormatErrorKind = Literal[
    "malformed_json",
    "unknown_tool",
    "missing_query",
    "bad_arguments",
    "call_without_tools",
]


def new_trace_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class _Record(BaseModel):
    # Unknown fields are kept (not rejected) so that a newer writer's extra fields survive a
    # read-modify-write by an older reader; the schema version says what is guaranteed.
    model_config = ConfigDict(extra="allow")


class ToolCallRecord(_Record):
    """A tool call as the model made it (after server or fallback parsing)."""

    id: str
    name: str
    arguments: str
    """The raw JSON argument string, exactly as produced."""
    parsed_by: Literal["server", "fallback"] = "server"


class ToolRun(_Record):
    """One call of an app's own tool (not the consult tool), as the agent's tool node ran it.

    Its result reached the model as a tool message: replay masks it like a consultation's."""

    name: str
    tool_call_id: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: str = ""
    """The tool message's text, cut to 2,000 characters (the trace is not the app's data store)."""
    status: Literal["success", "error"] = "success"
    error: str | None = None
    turn_index: int | None = None
    latency_s: float = 0.0

    @field_validator("error")
    @classmethod
    def _no_secrets(cls, value: str | None) -> str | None:
        return redact(value) if value is not None else None


class ModelTurn(_Record):
    """One request to the model and its sampled completion."""

    index: int
    prompt_token_ids: list[int] | None = None
    """The prompt as the server tokenised it (None only when the endpoint does not return ids)."""
    completion_token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    """One logprob per completion token id, from the sampling distribution."""
    content: str | None = None
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    finish_reason: str | None = None
    tools_offered: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0
    model: str | None = None
    """The served model (or LoRA adapter) name that produced this turn."""


class RetrievedRuleRef(_Record):
    id: str
    category: str
    score: float


class Consultation(_Record):
    """One retrieval: by the model's tool call (``adaptive``) or before the first turn (``always``)."""

    source: Literal["tool_call", "always"]
    query: str
    categories: list[str] | None = None
    rules: list[RetrievedRuleRef] = Field(default_factory=list)
    turn_index: int | None = None
    """The model turn whose tool call asked for it (None for ``always``)."""
    tool_call_id: str | None = None
    latency_s: float = 0.0
    error: str | None = None

    @field_validator("error")
    @classmethod
    def _no_secrets(cls, value: str | None) -> str | None:
        return redact(value) if value is not None else None


class FormatError(_Record):
    """A malformed tool call: answered with one corrective tool message, never a crash."""

    kind: FormatErrorKind
    turn_index: int
    detail: str
    raw: str | None = None


class Outcome(_Record):
    status: Literal["ok", "error"] = "ok"
    message: str | None = None
    error_type: str | None = None
    retrieval_failed: bool = False
    """Retrieval raised; with fail-closed the answer is the configured notice."""

    @field_validator("message")
    @classmethod
    def _no_secrets(cls, value: str | None) -> str | None:
        # Error messages quote URLs and server replies; credentials in them never reach a sink.
        return redact(value) if value is not None else None


class PackRef(_Record):
    name: str
    version: str
    content_hash: str
    embedding_model: str | None = None


class Trace(_Record):
    """One agent run. ``group_id``/``sample_index`` tie RL samples of the same prompt together."""

    schema_version: int = TRACE_SCHEMA_VERSION
    trace_id: str = Field(default_factory=new_trace_id)
    group_id: str | None = None
    sample_index: int | None = None
    thread_id: str | None = None
    started_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None
    model: str
    base_url: str | None = None
    sampling: dict[str, Any] = Field(default_factory=dict)
    pack: PackRef | None = None
    mode: ConsultMode
    messages: list[dict[str, Any]] = Field(default_factory=list)
    """The conversation in OpenAI chat format (system, user, assistant, tool), as sent."""
    turns: list[ModelTurn] = Field(default_factory=list)
    consultations: list[Consultation] = Field(default_factory=list)
    format_errors: list[FormatError] = Field(default_factory=list)
    tool_runs: list[ToolRun] = Field(default_factory=list)
    """Calls of the app's own tools (``build_graph(config, tools=[...])``, the middleware)."""
    node_latencies: dict[str, list[float]] = Field(default_factory=dict)
    answer: str | None = None
    outcome: Outcome = Field(default_factory=Outcome)
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Caller-supplied labels (e.g. ``label``/``answer`` of an eval or training prompt)."""

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        return redact_url(value)

    @model_validator(mode="before")
    @classmethod
    def _drop_derived_fields(cls, data: Any) -> Any:
        # `consulted` and `rule_ids` are written for readers of the raw JSON; they are derived, so
        # a stored copy is dropped on read instead of being kept as an extra field.
        if isinstance(data, dict) and ("consulted" in data or "rule_ids" in data):
            data = {k: v for k, v in data.items() if k not in ("consulted", "rule_ids")}
        return data

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form: mypy rejects any decorator over @property
    @property
    def consulted(self) -> bool:
        """The action class IFPO weighs by: did the run look at the rules at all?"""
        return any(c.error is None for c in self.consultations)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form: mypy rejects any decorator over @property
    @property
    def rule_ids(self) -> list[str]:
        seen: dict[str, None] = {}
        for consultation in self.consultations:
            for rule in consultation.rules:
                seen.setdefault(rule.id, None)
        return list(seen)

    @property
    def prompt(self) -> str | None:
        """The user message this run answered: the last one sent (a run adds no user messages,
        so in a thread's follow-up run this is the follow-up, not the thread's first question)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                content = message.get("content")
                return content if isinstance(content, str) else None
        return None
