"""Input the agent must survive (issue 13): text no UTF-8 encoder accepts, empty prompts, and a
client failing outside its own error types. Every run that started leaves a trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from safe_context_agent import AgentConfig, SafeContextAgent
from safe_context_agent.errors import AgentRunError
from safe_context_agent.traces import open_sink, read_traces

LONE = "hello \ud800 world"
ARGV = "hello \udcff\udcfe world"  # what sys.argv holds for $'hello \xff\xfe world'


@pytest.mark.parametrize("prompt", [LONE, ARGV], ids=["lone-surrogate", "argv-bytes"])
def test_lone_surrogates_are_repaired_before_the_model_call(make_agent, reply, prompt) -> None:
    harness = make_agent([reply("Hi there.")])
    result = harness.agent.invoke(prompt)
    assert result.answer == "Hi there."
    sent = harness.client.requests[0]["messages"]
    user = next(m for m in sent if m["role"] == "user")["content"]
    assert user == prompt[:6] + "\ufffd" * (len(prompt) - 12) + prompt[-6:]
    user.encode("utf-8")  # what the openai SDK needs
    assert harness.trace.prompt == user


@pytest.mark.parametrize("suffix", [".jsonl", ".sqlite"])
def test_a_surrogate_prompt_leaves_its_trace_in_a_real_sink(
    make_agent, reply, tmp_path: Path, suffix: str
) -> None:
    client = make_agent([reply("Hi there.")]).client
    path = tmp_path / f"traces{suffix}"
    with SafeContextAgent(
        AgentConfig(base_url="http://scripted/v1", mode="never"),
        sink=open_sink(path),
        client=client,
    ) as agent:
        result = agent.invoke(LONE)
    [trace] = list(read_traces(path))
    assert trace.trace_id == result.trace_id
    assert trace.prompt == "hello \ufffd world"


def test_a_surrogate_in_caller_metadata_is_repaired_when_the_trace_is_written(
    make_agent, reply, tmp_path: Path
) -> None:
    client = make_agent([reply("Hi there.")]).client
    path = tmp_path / "traces.jsonl"
    with SafeContextAgent(
        AgentConfig(base_url="http://scripted/v1", mode="never"),
        sink=open_sink(path),
        client=client,
    ) as agent:
        agent.invoke("hello", run={"metadata": {"note": "bad \udc80 byte"}})
    [trace] = list(read_traces(path))
    assert trace.metadata["note"] == "bad \ufffd byte"


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
def test_an_empty_prompt_is_refused_before_any_model_call(make_agent, prompt: str) -> None:
    harness = make_agent([])  # the script has no reply: a model call would fail the test
    with pytest.raises(AgentRunError, match="empty or only whitespace") as caught:
        harness.agent.invoke(prompt)
    assert harness.client.requests == []
    assert harness.trace.outcome.status == "error"
    assert harness.trace.outcome.error_type == "BadInput"
    assert caught.value.trace_id == harness.trace.trace_id


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_an_unexpected_client_exception_still_writes_the_trace(make_agent, use_async: bool) -> None:
    import asyncio

    harness = make_agent([UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed")])
    with pytest.raises(UnicodeEncodeError):  # a bug keeps its traceback...
        if use_async:
            asyncio.run(harness.agent.ainvoke("hello"))
        else:
            harness.agent.invoke("hello")
    trace = harness.trace  # ...and the run still has its trace
    assert trace.outcome.status == "error"
    assert trace.outcome.error_type == "UnicodeEncodeError"
    assert trace.prompt == "hello"
