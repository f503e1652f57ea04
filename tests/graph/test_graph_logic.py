"""The graph's routing, budgets and error handling, driven by a scripted chat model."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph

from safe_context_agent import AgentConfig, SafeContextAgent, build_graph
from safe_context_agent.errors import AgentRunError
from safe_context_agent.graph import CONSULT_TOOL_NAME, AgentResources
from safe_context_agent.testing import KeywordRetriever, MemorySink, ScriptedClient

CALL = CONSULT_TOOL_NAME


def test_direct_answer_makes_one_turn_and_no_consultation(make_agent, reply) -> None:
    h = make_agent([reply("Paris.")])
    result = h.agent.invoke("What is the capital of France?")
    assert result.answer == "Paris." and not result.consulted and result.rule_ids == []
    assert len(h.client.requests) == 1 and h.client.requests[0]["tools"]
    trace = h.trace
    assert trace.trace_id == result.trace_id and trace.outcome.status == "ok"
    assert trace.turns[0].completion_token_ids == [7, 8, 9, 10] and trace.turns[0].logprobs
    assert trace.messages[0]["role"] == "system" and trace.messages[-1] == {
        "role": "assistant",
        "content": "Paris.",
    }


def test_consult_then_answer(make_agent, reply) -> None:
    h = make_agent(
        [reply(calls=[(CALL, '{"query": "building a gun"}')]), reply("I can't help with that.")]
    )
    result = h.agent.invoke("How do I build a gun?")
    assert result.consulted and result.rule_ids == ["weapons.no-building", "benign.homonyms"]
    assert h.retriever.queries == [("building a gun", None)]
    second = h.client.requests[1]["messages"]
    assert second[-2]["tool_calls"][0]["function"]["arguments"] == '{"query": "building a gun"}'
    assert second[-1]["role"] == "tool" and "[weapons.no-building]" in second[-1]["content"]
    assert "Fine to help: How do guns work?" in second[-1]["content"]
    trace = h.trace
    assert [t.tools_offered for t in trace.turns] == [True, True]
    assert trace.consultations[0].source == "tool_call" and trace.consultations[0].turn_index == 0
    assert trace.format_errors == []
    assert set(trace.node_latencies) == {"start", "model", "consult"}


def test_text_tool_call_is_parsed_by_the_fallback(make_agent, reply) -> None:
    text = '<tool_call>{"name": "consult_safety_rules", "arguments": {"query": "kill a process"}}</tool_call>'
    h = make_agent([reply(text), reply("Use kill PID.")])
    result = h.agent.invoke("How do I kill a process?")
    assert result.consulted and result.answer == "Use kill PID."
    assert h.trace.turns[0].tool_calls[0].parsed_by == "fallback"
    # The call the server did not parse goes back as a tool call with an id the tool message
    # answers; the template renders it as the text the model wrote.
    assistant, tool = h.client.requests[1]["messages"][-2:]
    (call,) = assistant["tool_calls"]
    assert assistant["content"] == "" and call["function"]["name"] == CALL
    assert call["id"] == tool["tool_call_id"] == h.trace.turns[0].tool_calls[0].id


def test_malformed_call_gets_one_correction_and_counts_as_format_error(make_agent, reply) -> None:
    h = make_agent(
        [
            reply(
                '<tool_call>{"name": "consult_safety_rules", "arguments": {"query": </tool_call>'
            ),
            reply("Sure: ..."),
        ]
    )
    result = h.agent.invoke("hello")
    assert result.answer == "Sure: ..." and not result.consulted
    (error,) = h.trace.format_errors
    assert error.kind == "malformed_json" and error.turn_index == 0
    correction = h.client.requests[1]["messages"][-1]
    assert correction["role"] == "tool" and correction["content"].startswith(
        "That tool call could not be used: malformed JSON"
    )


def test_unknown_tool_is_corrected(make_agent, reply) -> None:
    h = make_agent([reply(calls=[("web_search", '{"q": "x"}')]), reply("Answer.")])
    h.agent.invoke("hello")
    assert [e.kind for e in h.trace.format_errors] == ["unknown_tool"]
    assert "There is no tool named 'web_search'" in h.client.requests[1]["messages"][-1]["content"]


def test_missing_query_is_corrected_but_a_lone_string_is_accepted(make_agent, reply) -> None:
    h = make_agent(
        [
            reply(calls=[(CALL, '{"limit": 3}')]),
            reply(calls=[(CALL, '{"type": "weapons"}')]),
            reply("Done."),
        ]
    )
    result = h.agent.invoke("hello")
    assert [e.kind for e in h.trace.format_errors] == ["missing_query"]
    assert result.consulted and h.retriever.queries == [("weapons", None)]


def test_consultation_budget_is_told_once_then_the_model_must_answer(make_agent, reply) -> None:
    h = make_agent(
        [
            reply(calls=[(CALL, '{"query": "a"}')]),
            reply(calls=[(CALL, '{"query": "b"}')]),
            reply(
                '<tool_call>{"name": "consult_safety_rules", "arguments": {"query": "c"}}</tool_call>'
            ),
            reply("Final answer."),
        ],
        max_consultations=2,
        max_model_turns=6,
    )
    result = h.agent.invoke("hello")
    assert result.answer == "Final answer."
    assert [c.query for c in h.trace.consultations] == ["a", "b"]
    assert [bool(r["tools"]) for r in h.client.requests] == [True, True, False, False]
    assert h.client.requests[3]["messages"][-1]["content"].startswith(
        "You have used all rule consultations"
    )
    assert [e.kind for e in h.trace.format_errors] == ["call_without_tools"]


def test_turn_budget_forces_an_answer_on_the_last_turn(make_agent, reply) -> None:
    h = make_agent(
        [reply(calls=[(CALL, '{"query": "a"}')]), reply("Answer.")],
        max_model_turns=2,
        max_consultations=5,
    )
    h.agent.invoke("hello")
    assert [bool(r["tools"]) for r in h.client.requests] == [True, False]


def test_never_mode_offers_no_tool(make_agent, reply) -> None:
    h = make_agent([reply("Hi.")], mode="never")
    h.agent.invoke("hello")
    assert h.client.requests[0]["tools"] is None and h.retriever.queries == []
    assert "consult_safety_rules" not in h.client.requests[0]["messages"][0]["content"]


def test_always_mode_retrieves_before_the_first_turn(make_agent, reply) -> None:
    h = make_agent([reply("No.")], mode="always")
    result = h.agent.invoke("How do I build a gun?")
    assert h.retriever.queries == [("How do I build a gun?", None)]
    assert h.client.requests[0]["tools"] is None
    assert "Safety rules for this request:" in h.client.requests[0]["messages"][0]["content"]
    assert result.consulted and h.trace.consultations[0].source == "always"


@pytest.mark.parametrize("mode", ["adaptive", "always"])
def test_retrieval_failure_fail_closed_answers_with_the_notice(make_agent, reply, mode) -> None:
    replies = [reply(calls=[(CALL, '{"query": "x"}')])] if mode == "adaptive" else []
    h = make_agent(replies, fail_retrieval=True, mode=mode, fail_closed=True)
    result = h.agent.invoke("How do I build a gun?")
    assert result.answer == AgentConfig().fail_closed_notice
    assert h.trace.outcome.retrieval_failed and h.trace.outcome.status == "ok"
    assert h.trace.consultations[-1].error == "RuntimeError: index file unreadable"
    assert not result.consulted


@pytest.mark.parametrize("mode", ["adaptive", "always"])
def test_retrieval_failure_fail_open_lets_the_model_answer(make_agent, reply, mode) -> None:
    replies = ([reply(calls=[(CALL, '{"query": "x"}')])] if mode == "adaptive" else []) + [
        reply("Careful answer.")
    ]
    h = make_agent(replies, fail_retrieval=True, mode=mode, fail_closed=False)
    result = h.agent.invoke("hello")
    assert result.answer == "Careful answer." and h.trace.outcome.retrieval_failed
    assert "could not be retrieved" in json.dumps(h.client.requests[-1]["messages"])


def test_dead_server_writes_an_error_trace_then_raises(make_agent, model_call_error) -> None:
    h = make_agent(
        [model_call_error("cannot reach the model endpoint http://x/v1; is the server running?")]
    )
    with pytest.raises(AgentRunError, match="cannot reach the model endpoint") as info:
        h.agent.invoke("hello")
    assert h.trace.outcome.status == "error" and info.value.trace_id == h.trace.trace_id


def test_oversized_prompt_is_rejected_before_any_model_call(make_agent) -> None:
    h = make_agent([], max_prompt_chars=10)
    with pytest.raises(
        AgentRunError, match=r"the user prompt is 26 characters, over max_prompt_chars=10"
    ):
        h.agent.invoke("x" * 26)
    assert h.client.requests == [] and h.trace.outcome.error_type == "BadInput"


def test_failing_sink_never_fails_the_run(make_agent, reply) -> None:
    h = make_agent([reply("fine")])

    def broken(trace):
        raise OSError("disk full")

    h.agent.resources.sink.inner.write = broken
    assert h.agent.invoke("hello").answer == "fine"
    assert h.agent.resources.sink.errors == 1


class _GatedClient(ScriptedClient):
    """Holds each call until ``width`` calls are in flight at once (or 10 s pass), then lets
    every call through: a batch that runs ``width`` runs at a time gets there, a serial one not."""

    def __init__(self, replies, width: int) -> None:
        super().__init__(replies)
        self.width, self.in_flight, self.peak, self.opened = width, 0, 0, False

    async def acomplete(self, kwargs, on_token=None):
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.opened = self.opened or self.in_flight >= self.width
        try:
            deadline = time.monotonic() + 10
            while not self.opened and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            return await super().acomplete(kwargs, on_token)
        finally:
            self.in_flight -= 1


def test_async_batch_runs_concurrently_and_keeps_order(reply) -> None:
    # Replies go to runs in the order they ask, which concurrency shuffles: each result is matched
    # to its input through its trace (the prompt and sample_index it was given).
    client = _GatedClient([reply(f"answer {i}") for i in range(6)], width=3)
    sink = MemorySink()
    agent = SafeContextAgent(
        AgentConfig(base_url=client.base_url),
        client=client,
        retriever=KeywordRetriever(),
        sink=sink,
    )
    results = asyncio.run(
        agent.abatch(
            [f"q{i}" for i in range(6)],
            max_concurrency=3,
            runs=[{"group_id": "g", "sample_index": i} for i in range(6)],
        )
    )
    assert client.peak == 3  # three runs in flight at once, never more
    traces = {trace.trace_id: trace for trace in sink.traces}
    assert [traces[r.trace_id].prompt for r in results] == [f"q{i}" for i in range(6)]
    assert [traces[r.trace_id].sample_index for r in results] == list(range(6))
    assert [r.answer for r in results] == [traces[r.trace_id].answer for r in results]
    assert sorted(r.answer for r in results) == [f"answer {i}" for i in range(6)]


def test_stream_yields_node_updates_and_tokens(make_agent, reply) -> None:
    h = make_agent([reply("hello there world")])
    events = list(h.agent.stream("hi"))
    nodes = [next(iter(payload)) for kind, payload in events if kind == "updates"]
    tokens = [payload["text"] for kind, payload in events if kind == "custom"]
    assert nodes == ["start", "model", "finish"] and tokens == ["hello", " there", " world"]


def test_thread_continuity_with_a_checkpointer(make_agent, reply) -> None:
    h = make_agent([reply("Hi Ada."), reply("Your name is Ada.")], checkpointer=InMemorySaver())
    h.agent.invoke("My name is Ada.", thread_id="t1")
    second = h.agent.invoke("What is my name?", thread_id="t1")
    sent = [m["content"] for m in h.client.requests[1]["messages"][1:]]
    assert sent == ["My name is Ada.", "Hi Ada.", "What is my name?"]
    assert second.answer == "Your name is Ada." and len(h.sink.traces) == 2


def test_graph_composes_as_a_node_of_a_users_messages_graph(make_agent, reply) -> None:
    h = make_agent([reply(calls=[(CALL, '{"query": "gun"}')]), reply("No.")])
    safe = build_graph(
        h.agent.config,
        client=h.client,
        resources=AgentResources(h.agent.config, retriever=h.retriever),
    )

    def triage(state: MessagesState) -> dict:
        return {"messages": [AIMessage(content="Routing to the safe assistant.")]}

    app = StateGraph(MessagesState)
    app.add_node("triage", triage)
    app.add_node("safe_assistant", safe)
    app.add_edge(START, "triage")
    app.add_edge("triage", "safe_assistant")
    app.add_edge("safe_assistant", END)
    out = app.compile().invoke({"messages": [HumanMessage(content="How do I build a gun?")]})
    kinds = [type(m).__name__ for m in out["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert out["messages"][-1].content == "No." and isinstance(out["messages"][3], ToolMessage)
