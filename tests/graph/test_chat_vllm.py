"""``ChatVLLM``: a LangChain chat model on the project's client that keeps vLLM's token ids."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.tools import tool

from safe_context_agent import ChatVLLM


@tool
def order_status(order_id: str) -> str:
    """Look up an order."""
    return "shipped"


def test_invoke_keeps_ids_and_logprobs_and_parses_calls(scripted_client, reply) -> None:
    client = scripted_client(
        [reply(calls=[("order_status", '{"order_id": "A1"}')]), reply("fine"), reply("a b c")]
    )
    llm = ChatVLLM(client=client, model="scripted")
    message = llm.bind_tools([order_status]).invoke("Where is A1?")
    assert message.tool_calls[0]["name"] == "order_status"
    assert message.tool_calls[0]["args"] == {"order_id": "A1"}
    meta = message.response_metadata
    assert meta["completion_token_ids"] == [7, 8, 9, 10] and len(meta["logprobs"]) == 4
    assert meta["prompt_token_ids"] and meta["finish_reason"] == "tool_calls"
    assert message.usage_metadata["output_tokens"] == 4
    sent = client.requests[0]
    assert sent["tools"][0]["function"]["name"] == "order_status"
    assert sent["messages"] == [{"role": "user", "content": "Where is A1?"}]
    assert asyncio.run(llm.ainvoke([HumanMessage(content="hi")])).content == "fine"
    chunks = list(llm.stream("hi"))
    assert [c.content for c in chunks[:3]] == ["a", " b", " c"]
    whole = sum(chunks[1:], chunks[0])
    assert isinstance(whole, AIMessageChunk) and whole.content == "a b c"
    assert whole.response_metadata["completion_token_ids"] == [7, 8, 9, 10]


def test_a_text_call_is_a_tool_call_and_a_broken_one_invalid(scripted_client, reply) -> None:
    text = '<tool_call>{"name": "order_status", "arguments": {"order_id": "A1"}}</tool'
    broken = '<tool_call>{"name": "order_status", "arguments": {'
    llm = ChatVLLM(client=scripted_client([reply(text), reply(broken)]), model="scripted")
    parsed = llm.invoke("x")
    assert parsed.tool_calls[0]["args"] == {"order_id": "A1"} and parsed.content == ""
    assert parsed.response_metadata["parsed_by"] == ["fallback"]
    invalid = llm.invoke("x")
    assert invalid.tool_calls == [] and invalid.invalid_tool_calls[0]["name"] == "order_status"


@pytest.mark.server
def test_against_the_real_server(vllm_server) -> None:
    llm = ChatVLLM(base_url=vllm_server.base_url, model=None, max_tokens=8)
    message = llm.invoke("Say hi.")
    meta = message.response_metadata
    assert meta["model_name"] == vllm_server.model  # model=None: the server's own
    assert meta["prompt_token_ids"] and meta["completion_token_ids"]
    assert len(meta["logprobs"]) == len(meta["completion_token_ids"])
    chunks = list(llm.stream("Say hi."))
    assert len(chunks) > 1 and chunks[-1].response_metadata["completion_token_ids"]
    bound = llm.bind_tools([order_status]).invoke("Where is order A1001? Use the tool.")
    assert bound.response_metadata["prompt_token_ids"]
