"""Per-step metrics records: built from a trainer log, read back tolerantly, plotted."""

from __future__ import annotations

from pathlib import Path

import pytest
from safe_context_training import StepMetrics, plot_metrics, read_metrics

from safe_context_agent.errors import ConfigError

LOG = {
    "loss": 0.25,
    "grad_norm": 0.1,
    "learning_rate": 2e-5,
    "epoch": 0.5,
    "entropy": 2.7,
    "kl": 0.01,
    "sca/reward_mean": 0.5,
    "sca/consult_rate": 0.25,
    "sca/consult_rate_harmful": 0.5,
    "sca/mixed_groups": 1.0,
    "sca/groups": 2.0,
    "sca/reward/behaviour": 0.75,
    "sca/reward/format": -0.25,
    "clip_ratio/low_mean": 0.0,
    "frac_reward_zero_std": 0.5,
}


def test_a_record_maps_the_trainer_log() -> None:
    record = StepMetrics.from_log(LOG, step=3, algo="ifpo", policy="policy_v2")
    assert (record.step, record.algo, record.policy, record.epoch) == (3, "ifpo", "policy_v2", 0.5)
    assert (record.loss, record.kl, record.reward_mean) == (0.25, 0.01, 0.5)
    assert (record.consult_rate, record.consult_rate_harmful, record.consult_rate_benign) == (
        0.25,
        0.5,
        None,
    )
    assert record.mixed_groups == 1.0 and record.groups == 2.0
    assert record.rewards == {"behaviour": 0.75, "format": -0.25}
    assert record.extra == {"clip_ratio/low_mean": 0.0, "frac_reward_zero_std": 0.5}


def write(path: Path, steps: int, *, cut: bool = False) -> Path:
    lines = [
        StepMetrics.from_log(
            {**LOG, "loss": 1 / (step + 1)}, step=step, algo="grpo"
        ).model_dump_json()
        for step in range(1, steps + 1)
    ]
    text = "\n".join(lines) + "\n"
    path.write_text(text[:-30] if cut else text)
    return path


def test_read_metrics_skips_a_cut_short_last_line(tmp_path: Path) -> None:
    records = read_metrics(write(tmp_path / "metrics.jsonl", 3, cut=True))
    assert [r.step for r in records] == [1, 2]


def test_read_metrics_names_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": "one"}\n{"step": 2}\n')
    with pytest.raises(ConfigError, match=rf"{path.name}:1: not a training metrics record"):
        read_metrics(path)
    with pytest.raises(ConfigError, match="cannot read training metrics"):
        read_metrics(tmp_path / "missing.jsonl")


def test_plot_overlays_runs(tmp_path: Path) -> None:
    grpo = write(tmp_path / "grpo.jsonl", 4)
    ifpo = write(tmp_path / "ifpo.jsonl", 4)
    out = plot_metrics([grpo, ifpo], tmp_path / "plots" / "curves.png", labels=["GRPO", "IFPO"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="2 labels for 1 metrics files"):
        plot_metrics(grpo, tmp_path / "x.png", labels=["a", "b"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ConfigError, match="no metrics records"):
        plot_metrics(empty, tmp_path / "y.png")
