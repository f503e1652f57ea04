"""``make_consult_tool``: the consult action as a LangChain ``StructuredTool`` (issue 12)."""

from __future__ import annotations

import asyncio

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from safe_context_agent import make_consult_tool
from safe_context_agent.graph import CONSULT_TOOL


def _call(query: str, **extra) -> dict:
    return {
        "type": "tool_call",
        "id": "call_1",
        "name": "consult_safety_rules",
        "args": {"query": query, **extra},
    }


def test_it_is_a_structured_tool_with_content_and_artifact(keyword_retriever) -> None:
    retriever = keyword_retriever()
    tool = make_consult_tool(pack="general", k=1, retriever=retriever)
    assert isinstance(tool, StructuredTool) and tool.name == "consult_safety_rules"
    assert tool.response_format == "content_and_artifact"
    assert tool.tool_call_schema.model_json_schema()["required"] == ["query"]
    message = tool.invoke(_call("building a gun"))
    assert isinstance(message, ToolMessage) and "[weapons.no-building]" in message.content
    assert message.artifact == {
        "query": "building a gun",
        "category": None,
        "pack": "general",
        "rules": [{"id": "weapons.no-building", "category": "weapons", "score": 1.0}],
    }
    assert retriever.queries == [("building a gun", None)]
    again = asyncio.run(tool.ainvoke(_call("kill a process")))
    assert again.artifact["rules"][0]["id"] == "benign.homonyms"
    assert CONSULT_TOOL["function"]["description"] == tool.description


def test_a_failing_index_is_a_tool_error_not_a_crash(keyword_retriever) -> None:
    tool = make_consult_tool(retriever=keyword_retriever(fail=True))
    message = tool.invoke(_call("x"))
    assert message.status == "error"
    assert message.content.startswith("The rules could not be retrieved")
    assert "RuntimeError: index file unreadable" in message.content


def test_it_runs_in_a_tool_node_of_any_graph(keyword_retriever) -> None:
    tool = make_consult_tool(retriever=keyword_retriever())

    def model(state: MessagesState) -> dict:
        return {"messages": [AIMessage(content="", tool_calls=[_call("gun")])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", model)
    graph.add_node("tools", ToolNode([tool]))
    graph.add_edge(START, "model")
    graph.add_edge("model", "tools")
    graph.add_edge("tools", END)
    app = graph.compile()
    for out in (
        app.invoke({"messages": [HumanMessage(content="hi")]}),
        asyncio.run(app.ainvoke({"messages": [HumanMessage(content="hi")]})),
    ):
        result = out["messages"][-1]
        assert result.name == "consult_safety_rules" and result.tool_call_id == "call_1"
        assert [r["id"] for r in result.artifact["rules"]] == [
            "weapons.no-building",
            "benign.homonyms",
        ]
