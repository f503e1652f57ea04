"""Per-step training metrics: the record written to ``metrics.jsonl``, its reader and its plot.

Light on purpose (pydantic only; matplotlib is imported by :func:`plot_metrics` when called), so
``sca train plot`` works without the training extra.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from safe_context_agent.errors import ConfigError

__all__ = ["METRIC_PREFIX", "StepMetrics", "plot_metrics", "read_metrics"]

METRIC_PREFIX = "sca/"
"""Prefix of the metrics the IFPO trainer adds to TRL's log (``sca/consult_rate``, ...)."""

# StepMetrics field -> key in the trainer's log.
_FROM_LOG: dict[str, str] = {
    "loss": "loss",
    "kl": "kl",
    "grad_norm": "grad_norm",
    "learning_rate": "learning_rate",
    "entropy": "entropy",
    **{
        name: METRIC_PREFIX + name
        for name in (
            "reward_mean",
            "reward_std",
            "consult_rate",
            "consult_rate_harmful",
            "consult_rate_benign",
            "weight_min",
            "weight_mean",
            "weight_max",
            "groups",
            "trajectories",
            "per_turn_trajectories",
            "filler_slots",
            "zero_variance_groups",
            "nonzero_advantage_groups",
            "both_classes_groups",
            "mixed_groups",
            "collect_s",
        )
    },
}
_REWARD_PREFIX = METRIC_PREFIX + "reward/"


class StepMetrics(BaseModel):
    """One optimizer step, as logged (values averaged over the logging window, 1 step by default)."""

    schema_version: Literal[1] = 1
    step: int = Field(description="Optimizer steps done (TRL's global_step).")
    epoch: float | None = None
    algo: str = Field(description="'ifpo' or 'grpo'.")
    policy: str | None = Field(
        default=None,
        description="Online runs: the served policy that collected this step's rollouts.",
    )
    loss: float | None = None
    kl: float | None = Field(
        default=None, description="KL to the reference model; logged by TRL only when beta > 0."
    )
    grad_norm: float | None = None
    learning_rate: float | None = None
    entropy: float | None = None
    reward_mean: float | None = Field(default=None, description="Mean reward per trajectory.")
    reward_std: float | None = None
    consult_rate: float | None = Field(default=None, description="Trajectories that consulted.")
    consult_rate_harmful: float | None = Field(
        default=None,
        description="Consult rate on prompts labelled harmful (None: none in the step).",
    )
    consult_rate_benign: float | None = Field(
        default=None,
        description="Consult rate on prompts labelled benign (None: none in the step).",
    )
    weight_min: float | None = Field(default=None, description="Smallest IFPO weight (clipped).")
    weight_mean: float | None = None
    weight_max: float | None = None
    groups: float | None = Field(default=None, description="Groups (prompts) in the step.")
    trajectories: float | None = None
    per_turn_trajectories: float | None = Field(
        default=None, description="Trajectories replayed turn by turn (prompts did not extend)."
    )
    filler_slots: float | None = Field(
        default=None, description="Fully masked slots that padded the batch to TRL's shape."
    )
    zero_variance_groups: float | None = None
    nonzero_advantage_groups: float | None = None
    both_classes_groups: float | None = Field(
        default=None, description="Groups holding consult and direct trajectories."
    )
    mixed_groups: float | None = Field(
        default=None, description="Groups mixed in action and reward: the ones IFPO re-weights."
    )
    collect_s: float | None = Field(
        default=None, description="Online runs: rollout collection time."
    )
    rewards: dict[str, float] = Field(
        default_factory=dict, description="Mean of each reward term over the trajectories."
    )
    extra: dict[str, float | None] = Field(
        default_factory=dict, description="Everything else TRL logged for the step."
    )

    @classmethod
    def from_log(
        cls, logs: Mapping[str, Any], *, step: int, algo: str, policy: str | None = None
    ) -> StepMetrics:
        """Build the record from a trainer ``on_log`` dict."""
        known = set(_FROM_LOG.values()) | {"epoch"}
        fields: dict[str, Any] = {
            name: _number(logs.get(key)) for name, key in _FROM_LOG.items() if key in logs
        }
        rewards = {
            key.removeprefix(_REWARD_PREFIX): value
            for key, value in logs.items()
            if key.startswith(_REWARD_PREFIX) and _number(value) is not None
        }
        extra = {
            key: _number(value)
            for key, value in logs.items()
            if key not in known and not key.startswith(_REWARD_PREFIX)
        }
        return cls(
            step=step,
            epoch=_number(logs.get("epoch")),
            algo=algo,
            policy=policy,
            rewards=rewards,
            extra=extra,
            **fields,
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def read_metrics(path: str | os.PathLike[str]) -> list[StepMetrics]:
    """Read a ``metrics.jsonl`` file; a cut-short last line (a run killed mid-write) is skipped."""
    source = Path(path)
    try:
        lines = source.read_bytes().splitlines(keepends=True)
    except OSError as exc:
        raise ConfigError(
            f"{source}: cannot read training metrics ({exc}); check the path"
        ) from exc
    records: list[StepMetrics] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(StepMetrics.model_validate(json.loads(line)))
        except (ValueError, ValidationError) as exc:
            if number == len(lines) and not line.endswith(b"\n"):
                break  # a writer stopped mid-line
            raise ConfigError(
                f"{source}:{number}: not a training metrics record ({exc}); pass the "
                "metrics.jsonl written by sca train"
            ) from None
    return records


_PANELS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("reward", (("reward_mean", "mean reward"),)),
    (
        "consult rate",
        (
            ("consult_rate", "all"),
            ("consult_rate_harmful", "harmful"),
            ("consult_rate_benign", "benign"),
        ),
    ),
    (
        "groups",
        (
            ("mixed_groups", "mixed (action and reward)"),
            ("zero_variance_groups", "zero variance"),
            ("both_classes_groups", "both classes"),
        ),
    ),
    ("loss and KL", (("loss", "loss"), ("kl", "KL"), ("weight_mean", "IFPO weight mean"))),
)


def plot_metrics(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    labels: Sequence[str] | None = None,
) -> Path:
    """Plot reward, consult rates (overall / harmful / benign), group counts, loss and KL.

    Several metrics files (e.g. a GRPO and an IFPO run) are drawn on the same axes, one line
    style per file. Needs matplotlib (``pip install 'safe-context-agent[eval]'``).
    """
    sources = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
    if labels is not None and len(labels) != len(sources):
        raise ConfigError(f"{len(labels)} labels for {len(sources)} metrics files; give one each")
    runs = [(source, read_metrics(source)) for source in sources]
    for source, records in runs:
        if not records:
            raise ConfigError(f"{source}: no metrics records to plot; run training first")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError(
            "plotting needs matplotlib; install it with: pip install 'safe-context-agent[eval]'"
        ) from exc

    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    styles = ["-", "--", ":", "-."]
    for run_index, (source, records) in enumerate(runs):
        name = labels[run_index] if labels else source.parent.name or source.stem
        style = styles[run_index % len(styles)]
        steps = [r.step for r in records]
        for axis, (title, series) in zip(axes.flat, _PANELS, strict=True):
            for field, label in series:
                values = [getattr(r, field) for r in records]
                if all(v is None for v in values):
                    continue
                shown = [float("nan") if v is None else v for v in values]
                prefix = f"{name}: " if len(runs) > 1 else ""
                axis.plot(steps, shown, style, marker=".", label=prefix + label)
            axis.set_title(title)
    for axis in axes.flat:
        if axis.lines:
            axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    for axis in axes[1]:
        axis.set_xlabel("step")
    figure.tight_layout()
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=120)
    plt.close(figure)
    return target
