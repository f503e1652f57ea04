"""``SafeContextMiddleware`` in ``langchain.agents.create_agent``, driven by a scripted model."""

from __future__ import annotations

import asyncio

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from safe_context_agent import AgentConfig, ChatVLLM, SafeContextMiddleware
from safe_context_agent.errors import ConfigError
from safe_context_agent.graph import CONSULT_TOOL_NAME

CALL = CONSULT_TOOL_NAME


@tool
def order_status(order_id: str) -> str:
    """Look up the shipping status of an order by its id."""
    if order_id != "A1001":
        raise KeyError(f"no order {order_id}")
    return "Order A1001: shipped."


class Counting(AgentMiddleware):
    """The app's own middleware: it must keep working beside ours."""

    def __init__(self) -> None:
        super().__init__()
        self.model_calls = 0

    def wrap_model_call(self, request, handler):
        self.model_calls += 1
        return handler(request)

    async def awrap_model_call(self, request, handler):
        self.model_calls += 1
        return await handler(request)


@pytest.fixture
def build(scripted_client, keyword_retriever, memory_sink):
    def make(replies, *, fail=False, checkpointer=None, **settings):
        client = scripted_client(replies)
        counting = Counting()
        middleware = SafeContextMiddleware(
            sink=memory_sink, retriever=keyword_retriever(fail=fail), **settings
        )
        agent = create_agent(
            ChatVLLM(client=client, model="scripted"),
            tools=[order_status],
            system_prompt="You are the shop's assistant.",
            middleware=[counting, middleware],
            checkpointer=checkpointer,
        )
        return agent, client, memory_sink, counting

    return make


def ask(agent, text, **config):
    return agent.invoke({"messages": [HumanMessage(content=text)]}, config or None)


def test_a_direct_answer_is_one_model_call_and_one_trace(build, reply) -> None:
    agent, client, sink, counting = build([reply("Hello!")])
    out = ask(agent, "hi")
    assert out["messages"][-1].content == "Hello!" and len(client.requests) == 1
    (trace,) = sink.traces
    assert trace.turns[0].completion_token_ids == [7, 8, 9, 10] and not trace.consulted
    assert out["safe_context"]["trace_id"] == trace.trace_id and counting.model_calls == 1
    system = client.requests[0]["messages"][0]["content"]
    assert system.startswith("You are the shop's assistant.") and "consult_safety_rules" in system
    assert {t["function"]["name"] for t in client.requests[0]["tools"]} == {CALL, "order_status"}
    assert "sca_run" not in out


def test_consult_then_app_tool_then_answer(build, reply) -> None:
    agent, _client, sink, _ = build(
        [
            reply(calls=[(CALL, '{"query": "gun"}')]),
            reply(calls=[("order_status", '{"order_id": "A1001"}')]),
            reply("Shipped; and no guns."),
        ]
    )
    out = ask(agent, "Where is A1001, and how do I build a gun?")
    (trace,) = sink.traces
    assert trace.consulted and trace.rule_ids == ["weapons.no-building", "benign.homonyms"]
    assert [r.name for r in trace.tool_runs] == ["order_status"] and trace.tool_runs[
        0
    ].turn_index == 1
    assert len(trace.turns) == 3 and trace.answer == "Shipped; and no guns."
    assert out["safe_context"]["tools_called"] == ["order_status"]
    consult = next(m for m in out["messages"] if isinstance(m, ToolMessage) and m.name == CALL)
    assert consult.artifact["rules"][0]["id"] == "weapons.no-building"


def test_an_app_tool_error_keeps_the_apps_behaviour_and_is_traced(build, reply) -> None:
    """create_agent re-raises a tool's own exception by default; the middleware changes nothing
    about that, and the run still leaves its trace."""
    agent, _, sink, _ = build([reply(calls=[("order_status", '{"order_id": "Z9"}')])])
    with pytest.raises(KeyError, match="no order Z9"):
        ask(agent, "Where is Z9?")
    (trace,) = sink.traces
    assert trace.outcome.status == "error" and trace.outcome.error_type == "KeyError"
    (run,) = trace.tool_runs
    assert run.status == "error" and "no order Z9" in run.error


def test_the_budget_takes_the_consult_tool_away(build, reply) -> None:
    agent, client, _, _ = build(
        [reply(calls=[(CALL, '{"query": "a"}')]), reply("done")], max_consultations=1
    )
    ask(agent, "hello")
    assert [t["function"]["name"] for t in client.requests[1]["tools"]] == ["order_status"]


@pytest.mark.parametrize("mode", ["adaptive", "always"])
def test_retrieval_failure_fails_closed(build, reply, mode) -> None:
    replies = [reply(calls=[(CALL, '{"query": "x"}')])] if mode == "adaptive" else []
    agent, client, sink, _ = build(replies, fail=True, mode=mode)
    out = asyncio.run(agent.ainvoke({"messages": [HumanMessage(content="gun?")]}))
    assert out["messages"][-1].content == AgentConfig().fail_closed_notice
    (trace,) = sink.traces
    assert trace.outcome.retrieval_failed and trace.answer == AgentConfig().fail_closed_notice
    assert len(client.requests) == len(replies)  # no model call after the failure


@pytest.mark.parametrize("mode", ["adaptive", "always"])
def test_retrieval_failure_fail_open_lets_the_model_answer(build, reply, mode) -> None:
    replies = [reply(calls=[(CALL, '{"query": "x"}')])] if mode == "adaptive" else []
    agent, client, sink, _ = build(
        [*replies, reply("Careful.")], fail=True, mode=mode, fail_closed=False
    )
    out = ask(agent, "gun?")
    assert out["messages"][-1].content == "Careful." and sink.traces[0].outcome.retrieval_failed
    assert "could not be retrieved" in str(client.requests[-1]["messages"])


def test_never_and_always_offer_only_the_apps_tools(build, reply) -> None:
    agent, client, sink, _ = build([reply("No.")], mode="always")
    ask(agent, "How do I build a gun?")
    assert [t["function"]["name"] for t in client.requests[0]["tools"]] == ["order_status"]
    assert "Safety rules for this request:" in client.requests[0]["messages"][0]["content"]
    assert sink.traces[0].consultations[0].source == "always"


def test_threads_give_each_run_its_own_trace(build, reply) -> None:
    agent, _, sink, _ = build([reply("Hi Ada."), reply("Ada.")], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}
    ask(agent, "My name is Ada.", **config)
    ask(agent, "What is my name?", **config)
    first, second = sink.traces
    assert (first.prompt, second.prompt) == ("My name is Ada.", "What is my name?")
    assert first.thread_id == second.thread_id == "t1" and len(second.turns) == 1


def test_never_mode_sends_the_apps_request_unchanged(scripted_client, reply, memory_sink) -> None:
    """No system message of the app's and nothing to add: none is sent (not an empty one)."""
    client = scripted_client([reply("a"), reply("a")])
    llm = ChatVLLM(client=client, model="scripted")
    plain = create_agent(llm, tools=[order_status])
    safe = create_agent(
        llm,
        tools=[order_status],
        middleware=[SafeContextMiddleware(mode="never", sink=memory_sink)],
    )
    ask(plain, "hi")
    ask(safe, "hi")
    assert client.requests[0] == client.requests[1] and len(memory_sink.traces) == 1


def test_settings_are_agent_config_names() -> None:
    with pytest.raises(ConfigError, match="k"):
        SafeContextMiddleware(k=0)
    with pytest.raises(ConfigError, match="colour"):
        SafeContextMiddleware(colour="red")


@pytest.mark.server
@pytest.mark.parametrize("chat", ["ChatVLLM", "ChatOpenAI"])
def test_a_create_agent_app_on_the_real_server_traces_and_replays(
    vllm_server, memory_sink, chat
) -> None:
    """With ChatVLLM the trace replays token-exactly; with ChatOpenAI it is still written, and
    replay says why it cannot use it."""
    from langchain_openai import ChatOpenAI
    from safe_context_training import ReplaySet

    from safe_context_agent.errors import TraceError
    from safe_context_agent.rules import open_index

    if chat == "ChatVLLM":
        model = ChatVLLM(base_url=vllm_server.base_url, model=vllm_server.model, max_tokens=32)
    else:
        model = ChatOpenAI(
            base_url=vllm_server.base_url,
            model=vllm_server.model,
            api_key="EMPTY",
            max_tokens=32,
            temperature=0,
            logprobs=True,
        )
    agent = create_agent(
        model,
        tools=[order_status],
        middleware=[SafeContextMiddleware(sink=memory_sink, retriever=open_index("general"))],
    )
    out = agent.invoke({"messages": [HumanMessage(content="How do I build a pipe bomb?")]})
    (trace,) = memory_sink.traces
    assert trace.outcome.status == "ok" and trace.turns and trace.answer == out["messages"][-1].text
    assert trace.metadata["chat_model"] == chat and trace.model == vllm_server.model
    assert all(t.logprobs for t in trace.turns)
    if chat == "ChatVLLM":
        replay = ReplaySet.from_traces([trace])
        assert replay.report.samples >= 1 and replay.report.model_tokens > 0
    else:
        assert all(t.prompt_token_ids is None for t in trace.turns)
        with pytest.raises(TraceError, match="prompt_token_ids is missing"):
            ReplaySet.from_traces([trace])
