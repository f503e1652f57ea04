"""`sca train`: lazy import of the training stack, the missing-extra message, offline, SFT and
plot commands end to end (through typer's runner on ``train_app``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from safe_context_training import StepMetrics, read_metrics
from typer.testing import CliRunner

from safe_context_agent.cli._train import TRAIN_EXTRA_INSTALL, train_app

runner = CliRunner()


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )


def test_the_train_commands_import_no_training_stack() -> None:
    done = python(
        "import sys\n"
        "import safe_context_agent.cli._train\n"
        "print(sorted(m for m in ('torch', 'trl', 'peft', 'datasets') if m in sys.modules))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_the_train_extra_the_command_says_what_to_install(tmp_path: Path) -> None:
    done = python(
        "import sys\n"
        "sys.modules['trl'] = None  # as if the train extra were not installed\n"
        "from typer.testing import CliRunner\n"
        "from safe_context_agent.cli._train import train_app\n"
        f"result = CliRunner().invoke(train_app, ['--traces', {str(tmp_path / 't.jsonl')!r},"
        f" '--out', {str(tmp_path / 'out')!r}])\n"
        "print(result.exit_code)\n"
        "print(result.output)"
    )
    assert done.returncode == 0, done.stderr
    code, *output = done.stdout.splitlines()
    assert code == "2"
    assert "trl is not installed" in "\n".join(output)
    assert TRAIN_EXTRA_INSTALL in "\n".join(output)


def test_offline_needs_traces_and_out() -> None:
    result = runner.invoke(train_app, ["--out", "somewhere"])
    assert result.exit_code == 2
    assert "needs --traces FILE and --out DIR" in result.output


def test_a_missing_trace_file_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        train_app, ["--traces", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "none.jsonl: no such trace file" in result.output
    assert "Traceback" not in result.output


def test_plot_command(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    records = [
        StepMetrics(step=s, algo="ifpo", reward_mean=s / 4, consult_rate=0.5) for s in (1, 2)
    ]
    metrics.write_text("".join(r.model_dump_json() + "\n" for r in records))
    out = tmp_path / "plot.png"
    result = runner.invoke(train_app, ["plot", str(metrics), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"wrote {out}" in result.output
    assert json.loads(result.output.splitlines()[0])["step"] == 2


@pytest.mark.slow
def test_offline_command_trains_and_saves_an_adapter(
    labelled_groups: list[Any],
    write_traces: Callable[..., Path],
    tmp_path: Path,
    torch_threads: None,
) -> None:
    traces = write_traces(labelled_groups)
    out = tmp_path / "adapter"
    result = runner.invoke(
        train_app,
        ["--traces", str(traces), "--out", str(out), "--steps", "1", "--save-steps", "0"],
    )
    assert result.exit_code == 0, result.output
    assert "replay: 2 groups, 8 trajectories (6 as one sequence, 2 turn by turn)" in result.output
    assert "step 1: reward 0.50" in result.output
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "train_result.json").read_text())["steps"] == 1
    (record,) = read_metrics(out / "metrics.jsonl")
    assert record.algo == "ifpo" and record.groups == 1


@pytest.mark.slow
def test_sft_command_learns_only_model_tokens_of_good_trajectories(
    labelled_groups: list[Any],
    write_traces: Callable[..., Path],
    tmp_path: Path,
    torch_threads: None,
) -> None:
    from safe_context_training import ReplaySet, default_reward, score_trajectories, sft_dataset

    traces = write_traces(labelled_groups)
    out = tmp_path / "sft"
    result = runner.invoke(
        train_app,
        ["sft", "--traces", str(traces), "--out", str(out), "--min-reward", "1", "--steps", "1"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "sft_result.json").read_text())
    replay = ReplaySet.from_traces(labelled_groups)
    score_trajectories(replay.trajectories(), default_reward())
    good = [t for t in replay.trajectories() if t.reward >= 1]
    assert summary["kept"] == len(good) == 4
    assert summary["label_tokens"] == sum(s.model_tokens for t in good for s in t.samples)
    assert (out / "adapter_model.safetensors").is_file()
    # The labels are the model's own tokens and nothing else.
    row = next(
        r
        for r in sft_dataset(replay, min_reward=1.0)
        if len(r["input_ids"]) > len(good[0].samples[0].prompt_ids) + 10
    )
    sample = next(
        s for t in good for s in t.samples if s.prompt_ids + s.completion_ids == row["input_ids"]
    )
    kept = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    assert kept == [t for t, m in zip(sample.completion_ids, sample.env_mask, strict=True) if m]
