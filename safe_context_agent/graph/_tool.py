"""The one tool the model sees, ``consult_safety_rules``, and how its calls and results look.

ASCL (arXiv 2602.13562) makes consulting the safety rules an action the model chooses; this module
defines that action's interface: the schema offered to the model, the tolerant reading of the
arguments a small model writes, and the short rule listing returned to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from safe_context_agent.traces import FormatErrorKind

__all__ = [
    "CONSULT_TOOL",
    "CONSULT_TOOL_NAME",
    "RULES_RESULT_MAX_CHARS",
    "ConsultArguments",
    "RetrievedRuleLike",
    "Retriever",
    "format_rules",
    "read_consult_arguments",
]

CONSULT_TOOL_NAME = "consult_safety_rules"

CONSULT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": CONSULT_TOOL_NAME,
        "description": (
            "Look up the safety rules for a request you are unsure about. Returns the most "
            "relevant rules, each with an example of what is fine and what is not."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "query": {
                    "type": "string",
                    "description": "What you are unsure about, in your own words.",
                },
                "category": {"type": "string", "description": "Optional rule category to search."},
            },
            "required": ["query"],
        },
    },
}


class _RuleLike(Protocol):
    """The parts of a rule the tool result shows (``rules.Rule`` has them); read-only, so frozen
    models and dataclasses satisfy it."""

    @property
    def id(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def statement(self) -> str: ...
    @property
    def allowed(self) -> Sequence[str]: ...
    @property
    def disallowed(self) -> Sequence[str]: ...


class RetrievedRuleLike(Protocol):
    """One search result (``rules.RetrievedRule`` is one)."""

    @property
    def rule(self) -> _RuleLike: ...
    @property
    def score(self) -> float: ...


class Retriever(Protocol):
    """What the consult node needs from an index (``RuleIndex`` satisfies it)."""

    def consult(
        self,
        query: str,
        k: int = 3,
        categories: str | Iterable[str] | None = None,
        min_score: float | None = None,
    ) -> Sequence[RetrievedRuleLike]: ...


@dataclass(frozen=True)
class ConsultArguments:
    query: str | None
    category: str | None = None
    error_kind: FormatErrorKind | None = None
    error: str | None = None


def read_consult_arguments(raw: str) -> ConsultArguments:
    """Read a call's JSON arguments, tolerant where the intent is unambiguous.

    A 135M model often names the argument ``type`` or ``description`` instead of ``query``; when
    the object holds exactly one string value, that string is the query. Anything else without a
    usable query is a format error the model is told about.
    """
    try:
        payload = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        return ConsultArguments(
            None, error_kind="malformed_json", error=f"arguments are not valid JSON ({exc.msg})"
        )
    if isinstance(payload, str) and payload.strip():
        return ConsultArguments(payload.strip())
    if not isinstance(payload, dict):
        return ConsultArguments(
            None, error_kind="bad_arguments", error="arguments must be a JSON object"
        )
    category = payload.get("category") if isinstance(payload.get("category"), str) else None
    query = payload.get("query")
    if isinstance(query, str) and query.strip():
        return ConsultArguments(query.strip(), category)
    strings = [
        v for k, v in payload.items() if k != "category" and isinstance(v, str) and v.strip()
    ]
    if query is None and len(strings) == 1:
        return ConsultArguments(strings[0].strip(), category)
    return ConsultArguments(
        None, error_kind="missing_query", error="the 'query' argument is missing or empty"
    )


RULES_RESULT_MAX_CHARS = 4_000
"""The most characters of rules one tool result (or the ``always`` context) carries (~1k
tokens: the embedded model serves a 2,048-token context, which the system prompt and its
few-shot turns share). Each field is also cut to the rule pack's own limits, so a retriever that returns rules
from outside a validated pack cannot flood the prompt either."""

_FIELD_LIMITS = {"id": 100, "title": 80, "statement": 1_000, "example": 500}


def _clip(text: str, field: str) -> str:
    limit = _FIELD_LIMITS[field]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_rules(results: Sequence[RetrievedRuleLike]) -> str:
    """The tool result: short enough for a small model, with one fine and one not-fine example
    each, at most :data:`RULES_RESULT_MAX_CHARS` characters of rules (best-ranked rules first;
    the first one is always kept, its fields cut to the pack limits)."""
    if not results:
        return "No rule matches closely. Most requests are fine: answer helpfully unless it is clearly harmful."
    lines = ["Rules that may apply:"]
    used = 0
    for position, result in enumerate(results):
        rule = result.rule
        block = [
            f"[{_clip(rule.id, 'id')}] {_clip(rule.title, 'title')}: {_clip(rule.statement, 'statement')}"
        ]
        if rule.allowed:
            block.append(f"  Fine to help: {_clip(rule.allowed[0], 'example')}")
        if rule.disallowed:
            block.append(f"  Not fine: {_clip(rule.disallowed[0], 'example')}")
        size = sum(len(line) + 1 for line in block)
        if position > 0 and used + size > RULES_RESULT_MAX_CHARS:
            lines.append(f"({len(results) - position} less relevant rules left out for length.)")
            break
        lines.extend(block)
        used += size
    lines.append(
        "If the request is like the fine examples, answer it fully. If it is like the not-fine ones, refuse briefly."
    )
    return "\n".join(lines)


CORRECTION_TEMPLATE = (
    "That tool call could not be used: {error}. To consult the rules reply with only "
    '<tool_call>{{"name": "consult_safety_rules", "arguments": {{"query": "..."}}}}</tool_call>, '
    "or answer the user directly."
)
UNKNOWN_TOOL_TEMPLATE = "There is no tool named {name!r}; the tools are: {tools}."
CONSULT_GUIDANCE = (
    "For requests about weapons, drugs, hacking, violence, self-harm, crime, or anything that "
    "could hurt someone, first call consult_safety_rules. Answer everyday requests directly. The "
    "rules say what is fine to help with as well as what is not: when they allow the request, "
    "help fully; when they do not, refuse in one or two sentences."
)
"""What ``SafeContextMiddleware`` adds to an app's own system message in ``adaptive`` mode (the
graph's default system prompt is this guidance after one line of persona)."""
BUDGET_NOTICE = "You have used all rule consultations for this request. Answer the user now, without calling tools."
RULES_UNAVAILABLE = "The rules could not be retrieved. Answer carefully using your own judgement."
