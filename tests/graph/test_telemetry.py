"""OpenTelemetry spans of a run, read with the SDK's in-memory exporter (the app's side)."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.tools import tool

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from safe_context_agent.graph import CONSULT_TOOL_NAME
from safe_context_agent.graph._telemetry import CAPTURE_CONTENT_ENV
from safe_context_agent.testing import KeywordRetriever

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans():
    # The global provider can be set once per process: one provider, one exporter, cleared.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@tool
def order_status(order_id: str) -> str:
    """Look up an order."""
    if order_id != "A1":
        raise KeyError(order_id)
    return "shipped"


def test_one_span_per_run_with_model_retrieval_and_tool_children(make_agent, reply, spans) -> None:
    h = make_agent(
        [
            reply(
                calls=[
                    (CONSULT_TOOL_NAME, '{"query": "gun"}'),
                    ("order_status", '{"order_id": "A1"}'),
                ]
            ),
            reply("No."),
        ],
        tools=[order_status],
    )
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("app request") as app_span:
        result = h.agent.invoke("Where is A1, and how do I build a gun?")
    by_name = {s.name: s for s in spans.get_finished_spans()}
    run = by_name["invoke_agent safe_context_agent"]
    assert run.parent.span_id == app_span.get_span_context().span_id  # under the app's span
    assert run.attributes["sca.trace_id"] == result.trace_id and run.attributes["sca.consulted"]
    chats = [s for s in spans.get_finished_spans() if s.name == "chat scripted"]
    assert len(chats) == 2 and all(s.parent.span_id == run.context.span_id for s in chats)
    first = chats[0].attributes
    assert first["gen_ai.operation.name"] == "chat" and first["gen_ai.request.model"] == "scripted"
    assert first["gen_ai.usage.output_tokens"] == 4 and first["gen_ai.response.finish_reasons"] == (
        "tool_calls",
    )
    retrieval = by_name["retrieval general"]
    assert retrieval.attributes["sca.rule_ids"] == ("weapons.no-building", "benign.homonyms")
    assert retrieval.attributes["sca.rule_scores"] == pytest.approx(
        tuple(hit.score for hit in KeywordRetriever().consult("gun"))
    )
    assert retrieval.parent.span_id == run.context.span_id
    tool_span = by_name["execute_tool order_status"]
    assert tool_span.parent.span_id == run.context.span_id
    assert tool_span.attributes["gen_ai.tool.name"] == "order_status"
    # no message content unless opted in
    assert not any("gen_ai.input.messages" in s.attributes for s in spans.get_finished_spans())
    assert "sca.query" not in retrieval.attributes


def test_content_only_when_opted_in_and_errors_marked(
    make_agent, reply, spans, monkeypatch
) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "true")
    h = make_agent(
        [reply(calls=[("order_status", '{"order_id": "Z"}')]), reply("Sorry.")],
        tools=[order_status],
    )
    asyncio.run(h.agent.ainvoke("Where is Z?"))
    by_name = {s.name: s for s in spans.get_finished_spans()}
    chat = next(s for s in spans.get_finished_spans() if s.name == "chat scripted")
    assert "Where is Z?" in chat.attributes["gen_ai.input.messages"]
    tool_span = by_name["execute_tool order_status"]
    assert tool_span.status.status_code.name == "ERROR"
    assert tool_span.attributes["gen_ai.tool.call.arguments"] == '{"order_id": "Z"}'


# -- the same spans from SafeContextMiddleware in create_agent ------------------------------


def _middleware_agent(scripted_client, keyword_retriever, memory_sink, replies, **settings):
    from langchain.agents import create_agent

    from safe_context_agent import ChatVLLM, SafeContextMiddleware

    middleware = SafeContextMiddleware(sink=memory_sink, retriever=keyword_retriever(), **settings)
    return create_agent(
        ChatVLLM(client=scripted_client(replies), model="scripted"),
        tools=[order_status],
        middleware=[middleware],
    )


def test_the_middleware_emits_the_graphs_spans(
    scripted_client, keyword_retriever, memory_sink, reply, spans
) -> None:
    replies = [
        reply(calls=[(CONSULT_TOOL_NAME, '{"query": "gun"}')]),
        reply(calls=[("order_status", '{"order_id": "A1"}')]),
        reply("Shipped; and no."),
    ]
    agent = _middleware_agent(scripted_client, keyword_retriever, memory_sink, replies)
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("app request") as app_span:
        agent.invoke({"messages": [{"role": "user", "content": "Where is A1? Build a gun?"}]})
    [recorded] = memory_sink.traces
    finished = spans.get_finished_spans()
    by_name = {s.name: s for s in finished}
    run = by_name["invoke_agent safe_context_agent"]
    assert run.parent.span_id == app_span.get_span_context().span_id
    assert run.attributes["sca.trace_id"] == recorded.trace_id
    assert run.attributes["sca.consulted"] and run.attributes["sca.model_turns"] == 3
    assert run.attributes["sca.rule_ids"] == ("weapons.no-building", "benign.homonyms")
    chats = [s for s in finished if s.name == "chat scripted"]
    assert len(chats) == 3 and all(s.parent.span_id == run.context.span_id for s in chats)
    first = chats[0].attributes
    assert first["gen_ai.provider.name"] == "vllm" and first["gen_ai.request.model"] == "scripted"
    assert set(first["sca.tools_offered"]) == {CONSULT_TOOL_NAME, "order_status"}
    assert first["gen_ai.usage.output_tokens"] == 4 and first["sca.tool_calls"] == (
        CONSULT_TOOL_NAME,
    )
    retrieval = by_name["retrieval general"]
    assert retrieval.parent.span_id == run.context.span_id
    assert retrieval.attributes["sca.rule_ids"] == ("weapons.no-building", "benign.homonyms")
    assert retrieval.attributes["sca.rule_scores"] == pytest.approx(
        tuple(hit.score for hit in KeywordRetriever().consult("gun"))
    )
    tool_span = by_name["execute_tool order_status"]
    assert tool_span.parent.span_id == run.context.span_id
    assert f"execute_tool {CONSULT_TOOL_NAME}" not in by_name  # a consultation is a retrieval
    assert not any("gen_ai.input.messages" in s.attributes for s in finished)


def test_the_middleware_spans_in_always_mode_async_with_content_and_errors(
    scripted_client, keyword_retriever, memory_sink, reply, spans, monkeypatch
) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "true")
    replies = [reply(calls=[("order_status", '{"order_id": "Z"}')])]
    agent = _middleware_agent(
        scripted_client, keyword_retriever, memory_sink, replies, mode="always"
    )
    with pytest.raises(KeyError):  # create_agent's tool node re-raises what the tool raised
        asyncio.run(agent.ainvoke({"messages": [{"role": "user", "content": "Where is Z?"}]}))
    finished = spans.get_finished_spans()
    by_name = {s.name: s for s in finished}
    run = by_name["invoke_agent safe_context_agent"]  # ended with the run's error trace
    assert run.attributes["sca.mode"] == "always" and run.attributes["sca.outcome"] == "error"
    assert run.status.status_code.name == "ERROR"
    assert memory_sink.traces[0].trace_id == run.attributes["sca.trace_id"]
    retrieval = by_name["retrieval general"]  # the up-front retrieval of `always` mode
    assert retrieval.parent.span_id == run.context.span_id
    assert retrieval.attributes["sca.query"] == "Where is Z?"
    chat = next(s for s in finished if s.name == "chat scripted")
    assert "Where is Z?" in chat.attributes["gen_ai.input.messages"]
    assert "Safety rules for this request" in chat.attributes["gen_ai.input.messages"]
    tool_span = by_name["execute_tool order_status"]
    assert tool_span.status.status_code.name == "ERROR"
    assert tool_span.attributes["gen_ai.tool.call.arguments"] == '{"order_id": "Z"}'
