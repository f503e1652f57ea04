"""The crash guard (issue 13): an unexpected exception in any node of the graph (``start`` with
its up-front retrieval, ``model``, ``consult``, the app tools' ``ToolNode``) propagates unchanged
and still leaves the run's error trace, with what the run had done before it. LangGraph's own
control flow (``interrupt``) passes through and writes nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, interrupt
from pydantic import BaseModel, ValidationError

from safe_context_agent import AgentConfig
from safe_context_agent.graph import CONSULT_TOOL_NAME, AgentResources, build_graph

PROMPT = "Where is order A1, and how do I build a gun?"


class JunkRetriever:
    """An index that answers with something that is not a search hit (a broken plug-in)."""

    def consult(self, query, k=3, categories=None, min_score=None):
        return ["not a hit"]


class Approval(BaseModel):
    approved: bool


@tool
def refund(order_id: str) -> str:
    """Refund an order once a person approves it."""
    answer = interrupt({"refund": order_id}, response_schema=Approval)
    return "refunded" if answer.approved else "not refunded"


class _Unprintable(RuntimeError):
    def __str__(self) -> str:
        raise ValueError("no message")


def _run(graph, payload: Any, config: dict[str, Any], use_async: bool) -> Any:
    if use_async:
        return asyncio.run(graph.ainvoke(payload, config))
    return graph.invoke(payload, config)


def _graph(replies, retriever, sink, scripted_client, *, tools=None, checkpointer=None, **config):
    settings = AgentConfig(base_url="http://scripted/v1", **config)
    client = scripted_client(replies)
    resources = AgentResources(settings, sink=sink, retriever=retriever)
    graph = build_graph(
        settings, tools=tools, client=client, resources=resources, checkpointer=checkpointer
    )
    return graph, client


def _user(text: str = PROMPT) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_crash_in_the_start_nodes_retrieval_writes_the_error_trace(
    scripted_client, memory_sink, use_async: bool
) -> None:
    graph, client = _graph([], JunkRetriever(), memory_sink, scripted_client, mode="always")
    with pytest.raises(AttributeError):
        _run(graph, _user(), {}, use_async)
    [trace] = memory_sink.traces
    assert trace.outcome.status == "error" and trace.outcome.error_type == "AttributeError"
    assert trace.prompt == PROMPT and trace.mode == "always" and client.requests == []
    assert trace.messages[0]["role"] == "system" and trace.messages[-1]["content"] == PROMPT


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_crash_in_the_consult_node_keeps_the_model_turn(
    scripted_client, memory_sink, reply, use_async: bool
) -> None:
    replies = [reply(calls=[(CONSULT_TOOL_NAME, '{"query": "building a gun"}')])]
    graph, _ = _graph(replies, JunkRetriever(), memory_sink, scripted_client)
    with pytest.raises(AttributeError):
        _run(graph, _user(), {}, use_async)
    [trace] = memory_sink.traces
    assert trace.outcome.error_type == "AttributeError"
    [turn] = trace.turns  # the model turn that asked to consult, token ids and all
    assert turn.tool_calls[0].name == CONSULT_TOOL_NAME and turn.completion_token_ids
    assert trace.messages[-1]["tool_calls"][0]["function"]["name"] == CONSULT_TOOL_NAME


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_crash_in_a_later_model_turn_keeps_the_consultation_and_the_tool_message(
    scripted_client, memory_sink, keyword_retriever, reply, use_async: bool
) -> None:
    replies = [
        reply(calls=[(CONSULT_TOOL_NAME, '{"query": "building a gun"}')]),
        _Unprintable("the HTTP library broke"),
    ]
    graph, client = _graph(replies, keyword_retriever(), memory_sink, scripted_client)
    with pytest.raises(_Unprintable):
        _run(graph, _user(), {}, use_async)
    [trace] = memory_sink.traces
    assert trace.outcome.error_type == "_Unprintable"
    assert trace.outcome.message == "<_Unprintable: its message could not be read>"
    assert len(trace.turns) == 1 and trace.rule_ids == ["weapons.no-building", "benign.homonyms"]
    assert trace.messages[-1]["role"] == "tool" and "No weapon building" in str(trace.messages[-1])
    assert len(client.requests) == 2


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_crash_in_the_tool_node_writes_the_error_trace_and_an_interrupt_writes_none(
    scripted_client, memory_sink, keyword_retriever, reply, use_async: bool
) -> None:
    replies = [reply(calls=[("refund", '{"order_id": "A1"}')])]
    graph, _ = _graph(
        replies,
        keyword_retriever(),
        memory_sink,
        scripted_client,
        tools=[refund],
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": f"refund-{use_async}"}}
    paused = _run(graph, _user("Refund order A1."), config, use_async)
    assert paused["__interrupt__"][0].value == {"refund": "A1"}
    assert memory_sink.traces == []  # waiting for a person is not a crash
    # A resume value the interrupt's schema refuses fails the tool node (ToolNode re-raises it:
    # no tool-error message can fix it) and so the run.
    with pytest.raises(ValidationError):
        _run(graph, Command(resume={"approve": "yes"}), config, use_async)
    [trace] = memory_sink.traces
    assert trace.outcome.status == "error" and trace.outcome.error_type == "ValidationError"
    assert trace.thread_id == f"refund-{use_async}" and trace.prompt == "Refund order A1."
    [turn] = trace.turns
    assert json.loads(turn.tool_calls[0].arguments) == {"order_id": "A1"}


def test_parallel_tool_calls_that_crash_together_write_one_error_trace(
    scripted_client, memory_sink, keyword_retriever, reply
) -> None:
    calls = [("refund", '{"order_id": "A1"}'), ("refund", '{"order_id": "B2"}')]
    graph, _ = _graph(
        [reply(calls=calls)],
        keyword_retriever(),
        memory_sink,
        scripted_client,
        tools=[refund],
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": "two-refunds"}}
    paused = graph.invoke(_user("Refund A1 and B2."), config)
    resume = {i.id: {"approve": "yes"} for i in paused["__interrupt__"]}
    assert len(resume) == 2
    with pytest.raises(ValidationError):
        graph.invoke(Command(resume=resume), config)
    assert len(memory_sink.traces) == 1 and memory_sink.traces[0].outcome.status == "error"
