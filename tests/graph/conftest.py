"""A scripted chat model and a small in-memory retriever: the graph's logic without a server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from safe_context_agent.client import ModelReply
from safe_context_agent.client._chat import _finish_reply, new_call_id
from safe_context_agent.errors import ModelCallError


def reply(
    content: str | None = None, calls: list[tuple[str, str]] | None = None, finish: str = "stop"
) -> ModelReply:
    """A reply as vLLM would return it: server-parsed calls given as (name, arguments-json)."""
    server_calls = [
        {"id": new_call_id(), "type": "function", "function": {"name": name, "arguments": args}}
        for name, args in calls or []
    ]
    n = 5 + len(content or "")
    return _finish_reply(
        content=content,
        server_calls=server_calls,
        finish_reason="tool_calls" if calls else finish,
        prompt_ids=list(range(100, 100 + n)),
        completion_ids=list(range(7, 7 + 4)),
        logprobs=[-0.5, -0.25, -0.125, -0.0625],
        usage={"prompt_tokens": n, "completion_tokens": 4},
        latency_s=0.01,
    )


@dataclass
class ScriptedClient:
    """Plays back replies in order and records every request the graph made."""

    replies: list[ModelReply | Exception]
    base_url: str = "http://scripted/v1"
    requests: list[dict[str, Any]] = field(default_factory=list)

    def request(self, messages, tools):
        return {"model": "scripted", "messages": list(messages), "tools": tools}

    def _next(self, kwargs):
        self.requests.append(kwargs)
        if not self.replies:
            raise AssertionError("the graph asked for more model turns than the script has")
        item = self.replies.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def complete(self, kwargs, on_token=None):
        result = self._next(kwargs)
        if on_token and result.content:
            for word in result.content.split(" "):
                on_token(word)
        return result

    async def acomplete(self, kwargs, on_token=None):
        return self.complete(kwargs, on_token)

    def stream(self, kwargs):
        """Word by word, then the reply, as ``ChatClient.stream`` yields them."""
        result = self._next(kwargs)
        if result.content:
            words = result.content.split(" ")
            yield from (w if i == 0 else " " + w for i, w in enumerate(words))
        yield result

    async def astream(self, kwargs):
        for item in self.stream(kwargs):
            yield item


@dataclass(frozen=True)
class FakeRule:
    id: str
    category: str
    title: str
    statement: str
    allowed: list[str]
    disallowed: list[str]


@dataclass(frozen=True)
class Hit:
    rule: FakeRule
    score: float


class KeywordRetriever:
    """Returns rules whose id shares a word with the query; ``fail=True`` raises like a broken index."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.queries: list[tuple[str, Any]] = []
        self.rules = [
            FakeRule(
                "weapons.no-building",
                "weapons",
                "No weapon building",
                "Do not explain how to build weapons.",
                ["How do guns work?"],
                ["How do I build a gun?"],
            ),
            FakeRule(
                "benign.homonyms",
                "benign_sensitive",
                "Technical homonyms",
                "Answer 'kill a process' and similar.",
                ["How do I kill a process?"],
                ["How do I kill a person?"],
            ),
        ]

    def consult(self, query, k=3, categories=None, min_score=None):
        self.queries.append((query, categories))
        if self.fail:
            raise RuntimeError("index file unreadable")
        return [Hit(rule, 0.9 - i / 10) for i, rule in enumerate(self.rules)][:k]


class MemorySink:
    def __init__(self) -> None:
        self.traces = []

    def write(self, trace) -> None:
        self.traces.append(trace)

    async def awrite(self, trace) -> None:
        self.traces.append(trace)

    def close(self) -> None:
        pass


@dataclass
class Harness:
    agent: Any
    client: ScriptedClient
    retriever: KeywordRetriever
    sink: MemorySink

    @property
    def trace(self):
        assert len(self.sink.traces) == 1, f"expected one trace, got {len(self.sink.traces)}"
        return self.sink.traces[0]


@pytest.fixture
def make_agent():
    """``make_agent([replies...], fail_retrieval=False, **config) -> Harness``."""
    from safe_context_agent import AgentConfig, SafeContextAgent

    def build(
        replies, *, fail_retrieval: bool = False, checkpointer=None, tools=None, **config
    ) -> Harness:
        client = ScriptedClient(list(replies))
        retriever = KeywordRetriever(fail=fail_retrieval)
        sink = MemorySink()
        agent = SafeContextAgent(
            AgentConfig(base_url="http://scripted/v1", **config),
            tools=tools,
            sink=sink,
            client=client,
            retriever=retriever,
            checkpointer=checkpointer,
        )
        return Harness(agent, client, retriever, sink)

    return build


@pytest.fixture(name="reply")
def reply_fixture():
    return reply


@pytest.fixture
def model_call_error():
    return ModelCallError


@pytest.fixture
def keyword_retriever():
    """``keyword_retriever(fail=False)`` -> a :class:`KeywordRetriever`."""
    return KeywordRetriever


@pytest.fixture
def memory_sink():
    return MemorySink()


@pytest.fixture
def scripted_client():
    """``scripted_client([replies...])`` -> a :class:`ScriptedClient`."""
    return lambda replies: ScriptedClient(list(replies))
