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
from itertools import pairwise
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    computed_field,
    field_validator,
    model_serializer,
    model_validator,
)

from safe_context_agent._sanitize import redact, redact_url

__all__ = [
    "ADDED_PROMPT_IDS",
    "EXTENDS_PREVIOUS",
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
    "stored_turns",
]

TRACE_SCHEMA_VERSION = 2
"""2: a later model turn stores only the prompt ids it adds (see :func:`stored_turns`).
1: every turn stored its whole prompt. Both are read; a version-1 trace is read as version 2 (the
two differ only in how the ids are stored, not in what they are)."""

ADDED_PROMPT_IDS = "prompt_token_ids_added"
"""The stored key of a later turn's prompt ids that follow the previous turn's prompt and
completion (which the stored trace does not repeat)."""
EXTENDS_PREVIOUS = "prompt_extends_previous"
"""Stored as ``false`` on a later turn whose prompt does not start with the previous turn's prompt
and completion (a chat template that re-renders earlier turns): its whole prompt is stored."""

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


def _ids(turn: Any, name: str) -> Any:
    return turn.get(name) if isinstance(turn, dict) else getattr(turn, name, None)


def _added_ids(turn: dict[str, Any], previous: dict[str, Any]) -> list[int] | None:
    """The ids ``turn``'s prompt adds to the previous turn's prompt and completion, or None when
    its prompt does not start with them (or ids are missing)."""
    ids, before, sampled = (
        turn.get("prompt_token_ids"),
        previous.get("prompt_token_ids"),
        previous.get("completion_token_ids"),
    )
    if ids is None or before is None or sampled is None:
        return None
    seen = len(before) + len(sampled)
    if len(ids) < seen or ids[: len(before)] != before or ids[len(before) : seen] != sampled:
        return None
    return ids[seen:]


def stored_turns(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The turns (as field dicts) in their stored form, schema version 2.

    In a served conversation each later turn's prompt is the previous turn's prompt, its
    completion, then what came since (the tool result and the chat scaffolding around it). Such a
    turn stores only that last part, under :data:`ADDED_PROMPT_IDS`, in place of
    ``prompt_token_ids``. A later turn whose prompt does not start so keeps its whole
    ``prompt_token_ids`` and is flagged ``prompt_extends_previous: false``. The dicts given are
    not changed.
    """
    stored = turns[:1]
    for previous, turn in pairwise(turns):
        added = _added_ids(turn, previous)
        if added is not None:
            turn = {
                (ADDED_PROMPT_IDS if key == "prompt_token_ids" else key): (
                    added if key == "prompt_token_ids" else value
                )
                for key, value in turn.items()
            }
        elif all(
            ids is not None
            for ids in (
                turn.get("prompt_token_ids"),
                previous.get("prompt_token_ids"),
                previous.get("completion_token_ids"),
            )
        ):
            turn = {**turn, EXTENDS_PREVIOUS: False}
        stored.append(turn)
    return stored


def _whole_turns(turns: list[Any]) -> list[Any]:
    """Undo :func:`stored_turns`: every turn with its whole ``prompt_token_ids`` again."""
    whole: list[Any] = []
    for position, turn in enumerate(turns):
        if isinstance(turn, dict) and (ADDED_PROMPT_IDS in turn or EXTENDS_PREVIOUS in turn):
            turn = {k: v for k, v in turn.items() if k != EXTENDS_PREVIOUS}
            if ADDED_PROMPT_IDS in turn:
                turn = _with_whole_prompt(position, turn, whole[-1] if whole else None)
        whole.append(turn)
    return whole


def _with_whole_prompt(position: int, turn: dict[str, Any], previous: Any) -> dict[str, Any]:
    where = f"turns.{position}.{ADDED_PROMPT_IDS}"
    if turn.get("prompt_token_ids") is not None:
        raise ValueError(
            f"{where}: the turn also has prompt_token_ids; a stored turn has one of the two"
        )
    if previous is None:
        raise ValueError(
            f"{where}: the first turn has no earlier turn to add to; store its whole prompt in"
            " prompt_token_ids"
        )
    parts = (
        _ids(previous, "prompt_token_ids"),
        _ids(previous, "completion_token_ids"),
        turn[ADDED_PROMPT_IDS],
    )
    if not all(isinstance(part, list) for part in parts):
        raise ValueError(
            f"{where}: needs lists of token ids here and in the previous turn's prompt_token_ids"
            " and completion_token_ids (the trace is damaged; re-collect it)"
        )
    fields = {key: value for key, value in turn.items() if key != ADDED_PROMPT_IDS}
    return {"prompt_token_ids": parts[0] + parts[1] + parts[2], **fields}


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
    def _from_stored_form(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # `consulted` and `rule_ids` are written for readers of the raw JSON; they are derived, so
        # a stored copy is dropped on read instead of being kept as an extra field.
        data = {k: v for k, v in data.items() if k not in ("consulted", "rule_ids")}
        if data.get("schema_version") == 1:
            data["schema_version"] = TRACE_SCHEMA_VERSION
        if isinstance(data.get("turns"), list):
            data["turns"] = _whole_turns(data["turns"])
        return data

    @model_serializer(mode="wrap")
    def _to_stored_form(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Every dump is the stored form, so model_dump_json() and the sinks write the same bytes.
        data = handler(self)
        if isinstance(data.get("turns"), list):
            data["turns"] = stored_turns(data["turns"])
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
