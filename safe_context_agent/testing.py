"""Test doubles for apps built on the agent: run the real graph offline, with no server or index.

- :class:`ScriptedClient` stands in for the model endpoint: it plays back replies made with
  :func:`scripted_reply` and records every request the graph sent (messages, tools offered).
- :class:`KeywordRetriever` stands in for the FAISS index: it ranks rules by the words they
  share with the query, so what a run consults depends on what the model asked.
- :class:`MemorySink` keeps finished traces in a list instead of writing them to disk.

Everything else (routing, the consult tool, budgets, tool calls parsed from text, the trace) is
the production code, so a test sees what a served run would record::

    from safe_context_agent import AgentConfig, SafeContextAgent
    from safe_context_agent.testing import KeywordRetriever, MemorySink, ScriptedClient, scripted_reply

    client = ScriptedClient([
        scripted_reply(calls=[("consult_safety_rules", '{"query": "build a gun"}')]),
        scripted_reply("I can't help with building weapons."),
    ])
    sink = MemorySink()
    agent = SafeContextAgent(
        AgentConfig(base_url=client.base_url), client=client, retriever=KeywordRetriever(), sink=sink
    )
    result = agent.invoke("How do I build a gun?")
    assert result.consulted and sink.traces[0].rule_ids[0] == "weapons.no-building"

As pydantic-ai's ``TestModel`` and LangChain's fake chat models do for theirs, these let a test
suite check an app's own wiring (its tools, its graph around the agent, what it does with the
answer) deterministically and in milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from safe_context_agent.client import ModelReply
from safe_context_agent.client._chat import TokenCallback, _finish_reply, new_call_id
from safe_context_agent.rules import RetrievedRule, Rule
from safe_context_agent.rules._index import wanted_categories
from safe_context_agent.traces import Trace, TraceSink

__all__ = [
    "KeywordRetriever",
    "MemorySink",
    "ScriptedClient",
    "scripted_reply",
]

_SCRIPTED_COMPLETION_IDS = [7, 8, 9, 10]
_SCRIPTED_LOGPROBS = [-0.5, -0.25, -0.125, -0.0625]


def scripted_reply(
    content: str | None = None,
    calls: Sequence[tuple[str, str]] | None = None,
    *,
    finish: str = "stop",
    prompt_ids: list[int] | None = None,
    completion_ids: list[int] | None = None,
    logprobs: list[float] | None = None,
) -> ModelReply:
    """One model turn as vLLM would return it.

    ``calls`` are tool calls the server parsed, as ``(name, arguments_json)`` pairs; with none,
    ``<tool_call>`` blocks in ``content`` go through the same text fallback as a served reply.
    Token ids default to ``prompt_ids = [100, 101, ...]`` (5 plus the content's length) and
    four completion ids ``[7, 8, 9, 10]`` with their logprobs; pass your own to script a run that
    replay can rebuild as one sequence (each later prompt starting with the earlier prompt and
    completion, as a served conversation does).
    """
    server_calls = [
        {"id": new_call_id(), "type": "function", "function": {"name": name, "arguments": args}}
        for name, args in calls or []
    ]
    if prompt_ids is None:
        prompt_ids = list(range(100, 105 + len(content or "")))
    if completion_ids is None:
        completion_ids = list(_SCRIPTED_COMPLETION_IDS)
    if logprobs is None:
        logprobs = (
            list(_SCRIPTED_LOGPROBS)
            if completion_ids == _SCRIPTED_COMPLETION_IDS
            else [-0.5] * len(completion_ids)
        )
    if len(logprobs) != len(completion_ids):
        raise ValueError(
            f"scripted_reply: {len(logprobs)} logprobs for {len(completion_ids)} completion ids;"
            " give one logprob per completion id"
        )
    return _finish_reply(
        content=content,
        server_calls=server_calls,
        finish_reason="tool_calls" if calls else finish,
        prompt_ids=prompt_ids,
        completion_ids=completion_ids,
        logprobs=logprobs,
        usage={"prompt_tokens": len(prompt_ids), "completion_tokens": len(completion_ids)},
        latency_s=0.01,
    )


@dataclass
class ScriptedClient:
    """The model endpoint, scripted: each model turn takes the next reply (or raises it).

    Pass it as ``SafeContextAgent(..., client=...)`` or ``build_graph(..., client=...)``.
    ``requests`` holds the keyword arguments of every call, in order: the messages the model
    would have seen and the tools it was offered (``None`` when the graph offered none). A graph
    that asks for more turns than were scripted fails with an ``AssertionError`` naming that.
    """

    replies: list[ModelReply | Exception]
    base_url: str = "http://scripted/v1"
    model: str = "scripted"
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.replies = list(self.replies)  # the caller's list is left as it was

    def request(
        self, messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        return {"model": self.model, "messages": list(messages), "tools": tools}

    def _next(self, kwargs: dict[str, Any]) -> ModelReply:
        self.requests.append(kwargs)
        if not self.replies:
            raise AssertionError(
                f"the graph asked for model turn {len(self.requests)}, but the script has"
                f" {len(self.requests) - 1} replies; add replies to the ScriptedClient"
            )
        item = self.replies.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def complete(self, kwargs: dict[str, Any], on_token: TokenCallback | None = None) -> ModelReply:
        result = self._next(kwargs)
        if on_token is not None and result.content:
            for word in result.content.split(" "):
                on_token(word)
        return result

    async def acomplete(
        self, kwargs: dict[str, Any], on_token: TokenCallback | None = None
    ) -> ModelReply:
        return self.complete(kwargs, on_token)

    def stream(self, kwargs: dict[str, Any]) -> Iterator[str | ModelReply]:
        """The reply's text word by word, then the reply, as ``ChatClient.stream`` yields them."""
        result = self._next(kwargs)
        if result.content:
            words = result.content.split(" ")
            yield from (word if i == 0 else " " + word for i, word in enumerate(words))
        yield result

    async def astream(self, kwargs: dict[str, Any]) -> AsyncIterator[str | ModelReply]:
        for item in self.stream(kwargs):
            yield item

    def close(self) -> None:
        """Nothing to release (present so the agent can close it like a ``ChatClient``)."""


def _example_rules() -> tuple[Rule, ...]:
    return (
        Rule(
            id="weapons.no-building",
            category="weapons",
            title="No weapon building",
            statement="Do not explain how to build weapons.",
            rationale="Build instructions give real uplift for harm.",
            allowed=("How do guns work?",),
            disallowed=("How do I build a gun?",),
            severity="critical",
        ),
        Rule(
            id="benign.homonyms",
            category="benign_sensitive",
            title="Technical homonyms",
            statement="Answer 'kill a process' and similar.",
            rationale="Words like kill, shoot or attack have harmless technical meanings.",
            allowed=("How do I kill a process?",),
            disallowed=("How do I kill a person?",),
            severity="low",
        ),
    )


_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    # Crude stemming ("guns" finds "gun", "building" finds "build"), enough for test queries.
    found = set()
    for word in _WORD.findall(text.lower()):
        found.add(word)
        for ending in ("ing", "s"):
            if word.endswith(ending) and len(word) - len(ending) >= 3:
                found.add(word.removesuffix(ending))
    return found


class KeywordRetriever:
    """The rule index, by keywords: rules ranked by the share of query words they contain.

    ``consult`` behaves like :meth:`RuleIndex.consult <safe_context_agent.rules.RuleIndex.consult>`:
    the ``k`` best rules (of ``categories`` when given), best first, scored in [0, 1] (the share
    of the query's words found in the rule's id, title, statement and examples), ties in the
    order the rules were given, and ``min_score`` drops weaker ones. ``rules`` defaults to two
    examples: ``weapons.no-building`` and ``benign.homonyms``; pass a pack's rules
    (``load_pack("general").rules``) to test against real ones. ``fail=True`` makes every
    consultation raise, as a broken index would. ``queries`` records ``(query, categories)``.
    """

    def __init__(self, rules: Iterable[Rule] | None = None, *, fail: bool = False) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules) if rules is not None else _example_rules()
        self.fail = fail
        self.queries: list[tuple[str, Any]] = []
        self._words = [
            _words(" ".join((r.id, r.title, r.statement, *r.allowed, *r.disallowed)))
            for r in self.rules
        ]

    def consult(
        self,
        query: str,
        k: int = 3,
        categories: str | Iterable[str] | None = None,
        min_score: float | None = None,
    ) -> list[RetrievedRule]:
        self.queries.append((query, categories))
        if self.fail:
            raise RuntimeError("index file unreadable")
        wanted = wanted_categories(categories)
        asked = _words(query)
        scored = [
            (round(len(asked & words) / len(asked), 3) if asked else 0.0, position)
            for position, (rule, words) in enumerate(zip(self.rules, self._words, strict=True))
            if wanted is None or rule.category in wanted
        ]
        scored.sort(key=lambda pair: (-pair[0], pair[1]))
        kept = [(s, p) for s, p in scored if min_score is None or s >= min_score][:k]
        return [
            RetrievedRule(rule=self.rules[position], score=score, rank=rank)
            for rank, (score, position) in enumerate(kept, start=1)
        ]


class MemorySink(TraceSink):
    """Keeps every finished trace in ``traces``, in the order runs finished."""

    def __init__(self) -> None:
        self.traces: list[Trace] = []

    def write(self, trace: Trace) -> None:
        self.traces.append(trace)

    async def awrite(self, trace: Trace) -> None:
        self.traces.append(trace)

    def close(self) -> None:
        """Nothing to release; the traces stay readable."""
