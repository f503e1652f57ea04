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


# Every numeric flag is checked, before the training stack loads, by the bounds its option
# declares: one line naming the flag, exit 2 (a typer usage box only for an unknown choice).
BAD_FLAGS = [
    ([], "--lr", "-1", "--lr -1.0: input should be greater than 0"),
    ([], "--lr", "nan", "--lr nan: input should be a finite number"),
    ([], "--group-size", "1", "--group-size 1: input should be greater than or equal to 2"),
    ([], "--groups-per-step", "0", "--groups-per-step 0: input should be greater than or equal"),
    ([], "--steps", "-2", "--steps -2: input should be greater than or equal to -1"),
    ([], "--epochs", "0", "--epochs 0.0: input should be greater than 0"),
    ([], "--beta", "-0.1", "--beta -0.1: input should be greater than or equal to 0"),
    ([], "--save-steps", "-1", "--save-steps -1: input should be greater than or equal to 0"),
    ([], "--seed", "-1", "--seed -1: input should be greater than or equal to 0"),
    ([], "--lora-r", "0", "--lora-r 0: input should be greater than or equal to 1"),
    ([], "--weight-clip", "4,0.25", "--weight-clip=[4.0, 0.25] is invalid"),
    ([], "--weight-clip", "0.25", "--weight-clip '0.25' is not 'MIN,MAX'"),
    ([], "--behaviour-weight", "inf", "--behaviour-weight inf: input should be a finite number"),
    ([], "--judge-unknown", "nan", "--judge-unknown nan: input should be a finite number"),
]
ONLINE = ["online", "--prompts", "p.jsonl", "--out", "o"]
ONLINE_1 = [*ONLINE, "--steps", "1"]
BAD_ONLINE_FLAGS = [
    (ONLINE, "--steps", "0", "--steps 0: online training needs at least 1 update"),
    (ONLINE_1, "--prompts-per-step", "0", "--prompts-per-step 0: input should"),
    (ONLINE_1, "--max-tokens", "0", "--max-tokens 0: input should be greater"),
    (ONLINE_1, "--temperature", "-1", "--temperature -1.0: input should be"),
    (ONLINE_1, "--max-concurrency", "0", "--max-concurrency 0: input should"),
    (ONLINE_1, "--lr", "0", "--lr 0.0: input should be greater than 0"),
]
SFT = ["sft", "--traces", "t.jsonl", "--out", "o"]
BAD_SFT_FLAGS = [
    (SFT, "--batch-size", "0", "--batch-size 0: input should be greater than or equal to 1"),
    (SFT, "--epochs", "-1", "--epochs -1.0: input should be greater than 0"),
    (SFT, "--lr", "-1e-4", "--lr -0.0001: input should be greater than 0"),
    (SFT, "--min-reward", "nan", "--min-reward nan: input should be a finite number"),
    (SFT, "--steps", "-5", "--steps -5: input should be greater than or equal to -1"),
    (SFT, "--lora-r", "0", "--lora-r 0: input should be greater than or equal to 1"),
]


@pytest.mark.parametrize(
    ("command", "flag", "value", "message"), BAD_FLAGS + BAD_ONLINE_FLAGS + BAD_SFT_FLAGS
)
def test_a_bad_flag_value_is_one_line_naming_the_flag(
    command: list[str], flag: str, value: str, message: str, tmp_path: Path
) -> None:
    args = command or ["--traces", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "o")]
    result = runner.invoke(train_app, [*args, flag, value])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "o").exists()


def test_an_unknown_choice_is_refused_with_the_choices_of_the_literal() -> None:
    from typing import get_args

    from safe_context_training._advantages import Algo

    result = runner.invoke(train_app, ["--traces", "t.jsonl", "--out", "o", "--algo", "ppo"])
    assert result.exit_code == 2
    assert all(choice in result.output for choice in get_args(Algo))


def test_the_flags_help_and_defaults_are_the_options_own() -> None:
    from safe_context_training import IFPOConfig
    from safe_context_training._options import IFPOOptions, RewardOptions, SFTOptions

    from safe_context_agent.cli._train import _OFFLINE_FLAGS, _SFT_FLAGS

    def option(flag_sets: Any, name: str) -> Any:
        return next(p for flags in flag_sets for p in flags.parameters() if p.name == name)

    lr = option(_OFFLINE_FLAGS, "learning_rate")
    assert lr.default == IFPOOptions.learning_rate == IFPOConfig(output_dir="x").learning_rate
    (info,) = lr.annotation.__metadata__
    assert info.default == "--lr"  # the flag name, in typer's Annotated form
    assert info.help == IFPOOptions.__dataclass_fields__["learning_rate"].metadata["help"]
    assert option(_SFT_FLAGS, "learning_rate").default == SFTOptions.learning_rate == 1e-4
    assert option(_OFFLINE_FLAGS, "format_weight").default == RewardOptions.format_weight
    assert option(_OFFLINE_FLAGS, "algo").default.value == "ifpo"
    assert option(_OFFLINE_FLAGS, "weight_clip").default == "0.25,4"
    # Every IFPO, reward and SFT flag shown by --help carries its field's help text.
    help_text = " ".join(runner.invoke(train_app, ["sft", "--help"]).output.split())
    assert "Sequences per optimizer step." in help_text and "[default: 0.0001]" in help_text


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
