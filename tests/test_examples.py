"""Every example runs against the real server (they are documentation that must not rot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.server, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(script: str, server, *args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "SCA_BASE_URL": server.base_url, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--model", server.model, "--max-tokens", "32", *args],
        env=env, capture_output=True, text=True, timeout=900, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _replayable_traces(path: Path, runs: int) -> None:
    """Structure, not behaviour (the 135M model calls an app tool unreliably): one trace per run,
    a history in which each tool message answers a call of the assistant turn before it, and
    samples that replay token-exactly."""
    from safe_context_training import ReplaySet

    from safe_context_agent.traces import read_traces

    traces = list(read_traces(path))
    assert len(traces) == runs and all(t.outcome.status == "ok" for t in traces)
    for trace in traces:
        calls: set[str] = set()
        for message in trace.messages:
            if message["role"] == "tool":
                assert message["tool_call_id"] in calls, trace.messages
            else:
                calls = {c["id"] for c in message.get("tool_calls") or []}
    assert ReplaySet.from_traces(traces).report.samples >= runs


def test_support_bot(vllm_server, tmp_path) -> None:
    path = tmp_path / "t.jsonl"
    out = _run("support_bot.py", vllm_server, "--trace-path", str(path))
    assert out.count("> ") == 3 and out.count("review: ") == 3
    _replayable_traces(path, 3)


def test_create_agent_app(vllm_server, tmp_path) -> None:
    path = tmp_path / "t.jsonl"
    out = _run("create_agent_app.py", vllm_server, "--trace-path", str(path))
    assert out.count("> ") == 2 and out.count("trace: ") == 2
    _replayable_traces(path, 2)


def test_swap_rule_packs(vllm_server) -> None:
    out = _run("swap_rule_packs.py", vllm_server)
    retrieved = {line.split("]")[0][1:]: line for line in out.splitlines() if "retrieved:" in line}
    assert set(retrieved) == {"general", "healthcare", "kids"}
    assert len({line.split("retrieved: ")[1] for line in retrieved.values()}) == 3, (
        "each pack retrieves its own rules"
    )


def test_collect_for_training(vllm_server, tmp_path) -> None:
    out = _run(
        "collect_for_training.py", vllm_server, "--n", "2", "--out", str(tmp_path / "t.jsonl")
    )
    assert '"runs_ok": 8' in out and out.count(": 2 samples") == 4


def test_ifpo_vs_grpo_smallest_run(vllm_server, shared_data, tmp_path) -> None:
    """The whole experiment pipeline at toy size: warm start, both arms, probes, plot."""
    out = tmp_path / "exp"
    sizes = ["--steps", "1", "--group-size", "2", "--prompts-per-step", "1",
             "--harmful-per-source", "1", "--benign-per-source", "1", "--probe-per-source", "1",
             "--warm-n", "2", "--warm-cap", "2", "--warm-epochs", "1"]  # fmt: skip
    _run("ifpo_vs_grpo.py", vllm_server, "--data", str(shared_data), "--out", str(out), *sizes)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_prompts"] == {
        "strongreject": 1, "harmbench": 1, "xstest": 1, "jailbreakbench_benign": 1, "gsm8k": 1
    }  # fmt: skip
    assert [len(summary["per_step"][algo]) for algo in ("grpo", "ifpo")] == [1, 1]
    assert set(summary["probe"]) == {"warm_start", "grpo", "ifpo"}
    assert all(p["runs"] == 5 for p in summary["probe"].values())
    assert (out / "ifpo_vs_grpo.png").stat().st_size > 10_000
    assert (out / "warm_start" / "adapter_model.safetensors").exists()
    # Rerunning resumes: every stage is found done, nothing is collected or trained again.
    again = _run(
        "ifpo_vs_grpo.py", vllm_server, "--data", str(shared_data), "--out", str(out), *sizes
    )
    assert "warm start: reusing" in again and "grpo: reusing" in again and "ifpo: reusing" in again
