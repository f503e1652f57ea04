"""The graph's logic without a server: fixtures over ``safe_context_agent.testing``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from safe_context_agent.errors import ModelCallError
from safe_context_agent.testing import KeywordRetriever, MemorySink, ScriptedClient, scripted_reply


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
        client = ScriptedClient(replies)
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


@pytest.fixture
def reply():
    """``reply(content=None, calls=None, ...)`` -> a scripted ``ModelReply``."""
    return scripted_reply


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
    return ScriptedClient
