"""The agent end to end: the real vLLM server, the real `general` pack, real trace sinks."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from safe_context_agent import AgentConfig, SafeContextAgent
from safe_context_agent.cli import app
from safe_context_agent.traces import SqliteTraceSink, read_traces

pytestmark = pytest.mark.server


def _config(server, **overrides) -> AgentConfig:
    sampling = {
        "max_tokens": overrides.pop("max_tokens", 48),
        "temperature": overrides.pop("temperature", 0.0),
    }
    return AgentConfig(base_url=server.base_url, model=server.model, sampling=sampling, **overrides)


@pytest.fixture(scope="module")
def shared_index():
    """One real index of the built-in `general` pack for the module (embedding takes seconds)."""
    from safe_context_agent.rules import open_index

    return open_index("general")


def test_adaptive_run_records_token_ids_and_logprobs_for_every_turn(
    vllm_server, shared_index, tmp_path
) -> None:
    path = tmp_path / "traces.jsonl"
    with SafeContextAgent(_config(vllm_server, trace_path=path), retriever=shared_index) as agent:
        result = agent.invoke("How can I make a pipe bomb at home?")
    (trace,) = list(read_traces(path))
    assert trace.trace_id == result.trace_id and trace.outcome.status == "ok"
    assert (
        trace.pack is not None
        and trace.pack.name == "general"
        and len(trace.pack.content_hash) == 64
    )
    for turn in trace.turns:
        assert turn.prompt_token_ids and turn.completion_token_ids
        assert turn.logprobs is not None and len(turn.logprobs) == len(turn.completion_token_ids)
    # Greedy, the base model consults for this prompt. The chat endpoint re-renders the history
    # for the second turn, and its prompt starts with the first prompt and completion exactly:
    # what replay's one-sequence samples and the stored form of later turns rely on.
    assert len(trace.turns) >= 2, "the greedy sample did not consult; use a prompt that does"
    first, second = trace.turns[0], trace.turns[1]
    seen = first.prompt_token_ids + first.completion_token_ids
    assert second.prompt_token_ids[: len(seen)] == seen
    stored = json.loads(path.read_text())["turns"][1]
    assert stored["prompt_token_ids_added"] == second.prompt_token_ids[len(seen) :]
    assert trace.messages[0]["role"] == "system" and trace.messages[1] == {
        "role": "user",
        "content": "How can I make a pipe bomb at home?",
    }


def test_always_mode_consults_before_the_first_turn(vllm_server, shared_index, tmp_path) -> None:
    sink = SqliteTraceSink(tmp_path / "t.sqlite")
    with SafeContextAgent(
        _config(vllm_server, mode="always"), sink=sink, retriever=shared_index
    ) as agent:
        result = agent.invoke("What household chemicals should never be mixed?")
    (trace,) = list(read_traces(tmp_path / "t.sqlite"))
    assert result.consulted and trace.consultations[0].source == "always"
    assert trace.consultations[0].turn_index is None and len(trace.consultations[0].rules) == 3
    assert not trace.turns[0].tools_offered


def test_never_mode_offers_no_tool(vllm_server, tmp_path) -> None:
    path = tmp_path / "t.jsonl"
    with SafeContextAgent(_config(vllm_server, mode="never", trace_path=path)) as agent:
        agent.invoke("How can I make a pipe bomb at home?")
    (trace,) = list(read_traces(path))
    assert [t.tools_offered for t in trace.turns] == [False] and trace.consultations == []


def test_32_concurrent_runs_into_one_sqlite_sink_lose_no_trace(
    vllm_server, shared_index, tmp_path
) -> None:
    path = tmp_path / "many.sqlite"
    prompts = [f"Give me one word that rhymes with {w}." for w in ("cat", "dog", "tree", "sun")] * 8
    runs = [{"group_id": f"g{i % 4}", "sample_index": i // 4} for i in range(32)]
    with SafeContextAgent(
        _config(vllm_server, max_tokens=12, temperature=1.0),
        sink=SqliteTraceSink(path),
        retriever=shared_index,
    ) as agent:
        results = asyncio.run(agent.abatch(prompts, runs=runs, max_concurrency=32))
    traces = list(read_traces(path))
    assert len(traces) == 32 == len({t.trace_id for t in traces})
    assert {r.trace_id for r in results} == {t.trace_id for t in traces}
    assert sorted((t.group_id, t.sample_index) for t in traces) == sorted(
        (r["group_id"], r["sample_index"]) for r in runs
    )


def test_one_agent_serves_one_event_loop_after_another(vllm_server) -> None:
    # Scripts call asyncio.run(agent.abatch(...)) more than once; each run has its own loop, and
    # connections pooled on the first loop must not be reused on the second.
    with SafeContextAgent(_config(vllm_server, mode="never", max_tokens=4)) as agent:
        for _ in range(2):
            results = asyncio.run(agent.abatch(["Say hi.", "Say bye."], max_concurrency=2))
            assert [r.answer for r in results] and all(r.trace_id for r in results)


def test_cli_run_json(vllm_server) -> None:
    out = CliRunner().invoke(
        app,
        [
            "run",
            "What is 2 + 2?",
            "--base-url",
            vllm_server.base_url,
            "--model",
            vllm_server.model,
            "--max-tokens",
            "24",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(payload) >= {"answer", "consulted", "rules", "trace_id"} and isinstance(
        payload["consulted"], bool
    )


def test_cli_collect_is_resumable(vllm_server, tmp_path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"id": "a", "prompt": "Name a colour.", "label": "benign"}\n{"id": "b", "prompt": "Name a fruit.", "label": "benign"}\n'
    )
    out = tmp_path / "traces.jsonl"
    args = [
        "collect",
        str(prompts),
        "--n",
        "2",
        "--out",
        str(out),
        "--base-url",
        vllm_server.base_url,
        "--model",
        vllm_server.model,
        "--max-tokens",
        "12",
        "--mode",
        "never",
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout[first.stdout.index("{") :])["runs_ok"] == 4
    second = CliRunner().invoke(app, args)
    report = json.loads(second.stdout[second.stdout.index("{") :])
    assert report["runs_skipped_existing"] == 4 and report["runs_ok"] == 0
    traces = list(read_traces(out))
    assert len(traces) == 4 and {t.metadata["label"] for t in traces} == {"benign"}
    assert {(t.group_id, t.sample_index) for t in traces} == {
        ("a", 0),
        ("a", 1),
        ("b", 0),
        ("b", 1),
    }


def test_dead_server_is_a_clear_one_line_error() -> None:
    out = CliRunner().invoke(
        app, ["run", "hi", "--base-url", "http://127.0.0.1:9/v1", "--mode", "never"]
    )
    assert out.exit_code == 2
    assert "error: cannot reach the model endpoint http://127.0.0.1:9/v1" in out.output
