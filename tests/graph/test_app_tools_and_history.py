"""The app's own tools beside the consult tool, and histories any chat API accepts (issue 12).

A scripted model decides the routing; each kind of run leaves ``state["messages"]`` checked by
:func:`assert_valid_history`, and the server test sends the same histories to the real vLLM.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from safe_context_agent import AgentConfig, build_graph
from safe_context_agent.errors import ConfigError
from safe_context_agent.graph import CONSULT_TOOL_NAME, AgentResources, RunSummary

CALL = CONSULT_TOOL_NAME
ORDERS = {"A1001": "shipped on 3 May"}


@tool
def order_status(order_id: str) -> str:
    """Look up the shipping status of an order by its id, e.g. A1001."""
    if order_id not in ORDERS:
        raise KeyError(f"no order {order_id}")
    return f"Order {order_id}: {ORDERS[order_id]}."


def assert_valid_history(messages) -> None:
    """What the OpenAI chat API demands of a history, on LangChain messages."""
    ids = [m.id for m in messages if m.id is not None]
    assert len(ids) == len(set(ids)), "message ids repeat"
    open_calls: set[str] = set()
    for message in messages:
        if isinstance(message, ToolMessage):
            assert message.tool_call_id in open_calls, (
                f"tool message {message.tool_call_id!r} answers no call of the AIMessage before it"
            )
            assert message.name and message.status in ("success", "error")
            open_calls.discard(message.tool_call_id)
            continue
        assert not open_calls, f"calls {open_calls} have no tool message"
        if isinstance(message, AIMessage):
            calls = [c["id"] for c in [*message.tool_calls, *message.invalid_tool_calls]]
            assert all(calls) and len(calls) == len(set(calls))
            open_calls = set(calls)
    assert not open_calls, f"the history ends with unanswered calls {open_calls}"
    assert isinstance(messages[-1], AIMessage) and not messages[-1].tool_calls


def _app(make_agent, replies, **config):
    return make_agent(replies, tools=[order_status], **config)


def test_the_model_calls_an_app_tool_and_the_trace_records_it(make_agent, reply) -> None:
    h = _app(
        make_agent, [reply(calls=[("order_status", '{"order_id": "A1001"}')]), reply("Friday.")]
    )
    result = h.agent.invoke("Where is my order A1001?")
    assert result.answer == "Friday." and not result.consulted
    tools = [t["function"]["name"] for t in h.client.requests[0]["tools"]]
    assert tools == [CALL, "order_status"]
    tool_message = result.messages[2]
    assert isinstance(tool_message, ToolMessage) and tool_message.name == "order_status"
    assert (
        tool_message.content == "Order A1001: shipped on 3 May."
        and tool_message.status == "success"
    )
    (run,) = h.trace.tool_runs
    assert run.name == "order_status" and run.arguments == {"order_id": "A1001"}
    assert run.result == "Order A1001: shipped on 3 May." and run.status == "success"
    assert run.turn_index == 0 and run.latency_s >= 0
    assert h.client.requests[1]["messages"][-1]["content"] == "Order A1001: shipped on 3 May."
    assert_valid_history(result.messages)


def test_an_app_tool_error_is_a_tool_message_not_a_crash(make_agent, reply) -> None:
    h = _app(make_agent, [reply(calls=[("order_status", '{"order_id": "Z9"}')]), reply("Sorry.")])
    result = asyncio.run(h.agent.ainvoke("Where is order Z9?"))
    error = result.messages[2]
    assert error.status == "error" and error.content.startswith("Error: KeyError:")
    (run,) = h.trace.tool_runs
    assert run.status == "error" and "no order Z9" in run.error
    assert_valid_history(result.messages)


def test_consult_and_an_app_tool_in_one_turn(make_agent, reply) -> None:
    h = _app(
        make_agent,
        [
            reply(calls=[(CALL, '{"query": "gun"}'), ("order_status", '{"order_id": "A1001"}')]),
            reply("Done."),
        ],
    )
    result = h.agent.invoke("Order A1001 and a gun?")
    answered = {m.name for m in result.messages if isinstance(m, ToolMessage)}
    assert answered == {CALL, "order_status"} and result.consulted
    assert [r.name for r in h.trace.tool_runs] == ["order_status"]
    assert_valid_history(result.messages)


@pytest.mark.parametrize("mode", ["never", "always"])
def test_never_and_always_offer_only_the_apps_tools(make_agent, reply, mode) -> None:
    h = _app(make_agent, [reply("Hi.")], mode=mode)
    h.agent.invoke("hello")
    assert [t["function"]["name"] for t in h.client.requests[0]["tools"]] == ["order_status"]


def test_consult_budget_spent_leaves_the_app_tools_offered(make_agent, reply) -> None:
    h = _app(
        make_agent,
        [reply(calls=[(CALL, '{"query": "a"}')]), reply("Answer.")],
        max_consultations=1,
    )
    h.agent.invoke("hello")
    assert [t["function"]["name"] for t in h.client.requests[1]["tools"]] == ["order_status"]


def test_tools_must_be_langchain_tools_and_not_the_consult_tool() -> None:
    config = AgentConfig(base_url="http://scripted/v1")

    @tool(CALL)
    def impostor(query: str) -> str:
        """x"""
        return query

    with pytest.raises(ConfigError, match="is the agent's own tool"):
        build_graph(config, tools=[impostor], client=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="is not a LangChain tool"):
        build_graph(config, tools=[{"type": "function"}], client=object())  # type: ignore[list-item]


# -- every kind of run leaves a valid history ---------------------------------------------------
TEXT_CALL = '<tool_call>{"name": "consult_safety_rules", "arguments": {"query": "c"}}</tool_call>'
KINDS = {
    "consult": lambda r: [r(calls=[(CALL, '{"query": "gun"}')]), r("No.")],
    "text_call": lambda r: [r(TEXT_CALL), r("No.")],
    "truncated_call": lambda r: [r(TEXT_CALL[:-6], finish="length"), r("No.")],
    "malformed": lambda r: [
        r('<tool_call>{"name": "consult_safety_rules", "arguments": {'),
        r("Ok."),
    ],
    "unknown_tool": lambda r: [r(calls=[("web_search", '{"q": "x"}')]), r("Ok.")],
    "budget_exhausted": lambda r: [
        r(calls=[(CALL, '{"query": "a"}')]),
        r(TEXT_CALL),
        r(TEXT_CALL),
        r("Final."),
    ],
    "app_tool_error": lambda r: [r(calls=[("order_status", '{"order_id": "Z9"}')]), r("Sorry.")],
    "fail_closed": lambda r: [
        r(calls=[(CALL, '{"query": "x"}'), ("order_status", '{"order_id": "A1001"}')])
    ],
}


def run_kind(make_agent, reply, kind: str):
    settings = {"max_consultations": 1, "max_model_turns": 5}
    h = _app(make_agent, KINDS[kind](reply), fail_retrieval=kind == "fail_closed", **settings)
    return h, h.agent.invoke("How do I build a gun?")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_of_run_leaves_a_valid_history(make_agent, reply, kind) -> None:
    h, result = run_kind(make_agent, reply, kind)
    assert_valid_history(result.messages)
    if kind == "fail_closed":
        assert result.answer == AgentConfig().fail_closed_notice
        assert result.messages[-1].content == result.answer
        assert h.trace.messages[-1] == {"role": "assistant", "content": result.answer}
    if kind == "truncated_call":
        assert result.consulted and h.trace.format_errors == []
    if kind == "budget_exhausted":
        notices = [
            m for m in result.messages if isinstance(m, ToolMessage) and "used all" in m.text
        ]
        assert len(notices) == 1 and notices[0].status == "error"
    # what the graph sends is valid too: each tool message answers the assistant turn before it
    for request in h.client.requests:
        wire = request["messages"]
        for i, message in enumerate(wire):
            if message["role"] == "tool":
                j = i
                while wire[j]["role"] == "tool":
                    j -= 1
                assert message["tool_call_id"] in {c["id"] for c in wire[j].get("tool_calls", [])}


def test_text_call_ids_are_unique_across_a_thread(make_agent, reply) -> None:
    h = make_agent(
        [reply(TEXT_CALL), reply("a"), reply(TEXT_CALL), reply("b")], checkpointer=InMemorySaver()
    )
    h.agent.invoke("one", thread_id="t")
    second = h.agent.invoke("two", thread_id="t")
    assert_valid_history(second.messages)


def test_thread_id_and_the_runs_own_prompt_are_in_every_trace(make_agent, reply) -> None:
    h = make_agent([reply("Hi Ada."), reply("Ada.")], checkpointer=InMemorySaver())
    h.agent.invoke("My name is Ada.", thread_id="t1")
    h.agent.invoke("What is my name?", thread_id="t1")
    first, second = h.sink.traces
    assert first.thread_id == second.thread_id == "t1"
    assert (first.prompt, second.prompt) == ("My name is Ada.", "What is my name?")


class Parent(TypedDict):
    messages: Annotated[list, add_messages]
    safe_context: RunSummary


def test_the_parent_graph_reads_the_outcome_from_safe_context(make_agent, reply) -> None:

    h = make_agent([reply(calls=[(CALL, '{"query": "gun"}')]), reply("No.")])
    safe = build_graph(
        h.agent.config,
        client=h.client,
        resources=AgentResources(h.agent.config, retriever=h.retriever, sink=h.sink),
    )

    app = StateGraph(Parent)
    app.add_node("safe", safe)
    app.add_edge(START, "safe")
    app.add_edge("safe", END)
    out = app.compile().invoke({"messages": [HumanMessage(content="How do I build a gun?")]})
    summary = out["safe_context"]
    assert summary["consulted"] and summary["rule_ids"] == [
        "weapons.no-building",
        "benign.homonyms",
    ]
    assert summary["trace_id"] == h.sink.traces[0].trace_id and "sca_run" not in out


def test_messages_stream_mode_yields_token_chunks(make_agent, reply) -> None:
    from langchain_core.messages import AIMessageChunk
    from langgraph.graph import MessagesState

    h = make_agent([reply("hello there world"), reply("hello there world")])
    safe = build_graph(
        h.agent.config,
        client=h.client,
        resources=AgentResources(h.agent.config, retriever=h.retriever, sink=h.sink),
    )
    question = {"messages": [HumanMessage(content="hi")]}
    direct = [
        m
        for m, meta in safe.stream(question, stream_mode="messages")
        if meta["langgraph_node"] == "model"
    ]
    assert [m.content for m in direct if isinstance(m, AIMessageChunk)][:3] == [
        "hello",
        " there",
        " world",
    ]
    assert not [m for m in direct if not isinstance(m, AIMessageChunk)], "the answer came twice"
    parent = StateGraph(MessagesState)
    parent.add_node("safe", safe)
    parent.add_edge(START, "safe")
    parent.add_edge("safe", END)
    # From a parent graph, a subgraph's tokens come with subgraphs=True (as for any subgraph).
    nested = [
        m.content
        for _ns, (m, meta) in parent.compile().stream(
            question, stream_mode="messages", subgraphs=True
        )
        if meta["langgraph_node"] == "model"
    ]
    assert nested[:3] == ["hello", " there", " world"]


@pytest.mark.server
def test_every_history_is_accepted_by_the_real_server(make_agent, reply, vllm_server) -> None:
    """Each kind of run's ``state["messages"]``, sent as LangChain apps send them (ChatOpenAI's
    own conversion) and as the agent sends them, is accepted by vLLM."""
    import openai
    from langchain_openai import ChatOpenAI

    from safe_context_agent.client._messages import history_to_wire

    chat = ChatOpenAI(
        base_url=vllm_server.base_url, model=vllm_server.model, api_key="EMPTY", max_tokens=1
    )
    raw = openai.OpenAI(base_url=vllm_server.base_url, api_key="EMPTY")
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in (CALL, "order_status")
    ]
    for kind in sorted(KINDS):
        _, result = run_kind(make_agent, reply, kind)
        history = [*result.messages, HumanMessage(content="Thanks. Anything else?")]
        assert chat.bind_tools(tools).invoke(history).response_metadata["finish_reason"], kind
        wire = history_to_wire(history, "You are a helpful assistant.")
        done = raw.chat.completions.create(
            model=vllm_server.model, messages=wire, tools=tools, max_tokens=1
        )
        assert done.choices[0].finish_reason, kind
