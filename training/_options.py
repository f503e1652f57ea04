"""The training options, declared once: fields with help, defaults, choices and bounds.

Each option is a dataclass field in TRL's style (``metadata={"help": ...}``, see
:func:`~safe_context_agent.config.option`); the choices are the ``Literal`` types of
``_advantages`` and the judges. Three consumers read the same declaration:

- the Python API: :class:`IFPOOptions` is the part of ``IFPOConfig`` that is ours (``IFPOConfig``
  is ``IFPOOptions`` + TRL's ``GRPOConfig``), :class:`SFTOptions` gives ``train_sft`` its
  defaults, :class:`RewardOptions` builds the default reward;
- validation: ``__post_init__`` and ``train_sft`` check the values through
  :func:`~safe_context_agent.config.validate_options`;
- the CLI: ``sca train``, ``sca train online`` and ``sca train sft`` build their flags (help,
  default, choices) from these fields and validate the values given through the same function.

Light on purpose (no torch, no TRL): ``sca`` builds its flags from this module at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeAlias

from safe_context_training._advantages import (
    DEFAULT_WEIGHT_CLIP,
    Algo,
    ApplyTo,
    FrequencyScope,
)

from safe_context_agent.config import SamplingParams, option, validate_options
from safe_context_agent.errors import ConfigError
from safe_context_agent.judges import JudgeKind

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "DEFAULT_ONLINE_SAMPLING",
    "BehaviourLogprobs",
    "IFPOOptions",
    "OnlineOptions",
    "RewardOptions",
    "SFTOptions",
    "weight_clip_bounds",
]

BehaviourLogprobs: TypeAlias = Literal["ratio", "ignore"]
"""Old logprobs of the PPO ratio: the recorded (behaviour policy) ones, or TRL's own."""

DEFAULT_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


def _check(options: type, values: Any, source: str) -> None:
    """``values``' fields of the dataclass ``options``: choices, types and bounds."""
    names = [f.name for f in fields(options)]
    validate_options(
        options,
        {name: getattr(values, name) for name in names},
        source=source,
        labels={name: f"{source}.{name}" for name in names},
    )


def weight_clip_bounds(value: Any, label: str) -> list[float] | None:
    """``[w_min, w_max]`` as floats with ``0 < w_min <= w_max < inf``, or None (no clipping)."""
    if value is None:
        return None
    clip = list(value)
    if len(clip) != 2 or not (0.0 < clip[0] <= clip[1]) or not math.isfinite(clip[1]):
        raise ConfigError(
            f"{label}={value!r} is invalid; use [w_min, w_max] with 0 < w_min <= w_max, e.g. "
            "[0.25, 4.0], or None"
        )
    return [float(clip[0]), float(clip[1])]


# Fields more than one options class declares: each declared here once.
_FULL_FINETUNE: dict[str, Any] = {
    "default": False,
    "help": "Train every weight instead of a LoRA adapter. Online training needs LoRA (only "
    "adapters can be hot-loaded into the running vLLM server).",
}
_LORA_R: dict[str, Any] = {
    "default": 16,
    "ge": 1,
    "help": "LoRA rank; keep it <= the server's --max-lora-rank (16 by default).",
}
_LORA_ALPHA: dict[str, Any] = {
    "default": 32,
    "ge": 1,
    "help": "LoRA scaling numerator (alpha / r).",
}


@dataclass
class IFPOOptions:
    """The options of trace replay and IFPO: the fields ``IFPOConfig`` adds to ``GRPOConfig``
    (and the TRL defaults it changes: ``learning_rate``, ``logging_steps``, ``bf16``)."""

    algo: Algo = option(
        "ifpo",
        help="Advantage estimator: 'ifpo' re-weights each GRPO advantage by the inverse "
        "frequency of its action class (consult or direct) in the group; 'grpo' is plain "
        "group-normalised GRPO. Both go through the same code path.",
    )
    frequency_scope: FrequencyScope = option(
        "group",
        help="IFPO: count action classes per 'group' (w = G / (K * n_c)) or over the whole "
        "'batch' (better for small groups). Ignored by 'grpo'.",
    )
    apply_to: ApplyTo = option(
        "all",
        help="IFPO: re-weight 'all' advantages, or only the 'positive' ones (penalties stay as "
        "GRPO gives them). Ignored by 'grpo'.",
    )
    weight_clip: list[float] | None = option(
        default_factory=lambda: list(DEFAULT_WEIGHT_CLIP),
        help="IFPO: [w_min, w_max] bounds on the inverse-frequency weight, so one rare rollout "
        "cannot dominate a step; None for no clipping. Ignored by 'grpo'.",
    )
    behaviour_logprobs: BehaviourLogprobs = option(
        "ratio",
        help="'ratio': use the logprobs recorded at collection (the behaviour policy) as the old "
        "logprobs of the PPO ratio, so replayed off-policy data is importance-weighted and "
        "clipped; needs temperature=1.0 because vLLM records raw (untempered) logprobs. "
        "'ignore': TRL's default, the ratio is taken against the trainer's own model.",
    )
    full_finetune: bool = option(**_FULL_FINETUNE)
    lora_r: int = option(**_LORA_R)
    lora_alpha: int = option(**_LORA_ALPHA)
    lora_dropout: float = option(
        0.0,
        ge=0.0,
        lt=1.0,
        help="LoRA dropout; 0 keeps the trainer's logprobs comparable with the recorded ones in "
        "the PPO ratio.",
    )
    lora_target_modules: list[str] = option(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        help="Module names that get LoRA adapters (the attention projections).",
    )
    metrics_file: str | None = option(
        None,
        help="Where to append one StepMetrics JSON line per logged step; None writes "
        "<output_dir>/metrics.jsonl.",
    )

    # Defaults changed from TRL's (see IFPOConfig).
    learning_rate: float = option(
        2e-5,
        gt=0.0,
        allow_inf_nan=False,
        help="Initial AdamW learning rate (2e-5 suits LoRA; lower it for full fine-tuning).",
    )
    logging_steps: float = option(
        1, gt=0, help="Log (and write a metrics record) every this many steps."
    )
    bf16: bool | None = option(
        None,
        help="bf16 mixed precision; None turns it on only on a CUDA device with bf16 support "
        "(CPU training runs in fp32).",
    )

    def check_options(self, source: str = "IFPOConfig") -> None:
        """Choices, types and bounds of these fields, then the weight clip's shape."""
        _check(IFPOOptions, self, source)
        self.weight_clip = weight_clip_bounds(self.weight_clip, f"{source}.weight_clip")

    @property
    def clip_bounds(self) -> tuple[float, float] | None:
        return (self.weight_clip[0], self.weight_clip[1]) if self.weight_clip else None


@dataclass
class RewardOptions:
    """The terms of :func:`~safe_context_training.default_reward` and the judge of its behaviour
    term (``sca train --judge llm --judge-url ... --judge-model ...``)."""

    judge: JudgeKind = option("pattern", help="Refusal judge of the behaviour reward.")
    judge_url: str | None = option(None, help="LLM judge endpoint (ends in /v1).")
    judge_model: str | None = option(None, help="LLM judge model.")
    judge_unknown: float | None = option(
        None,
        allow_inf_nan=False,
        help="Reward for an undecidable LLM verdict (default: an error naming the trace).",
    )
    behaviour_weight: float = option(
        1.0,
        allow_inf_nan=False,
        help="Weight of the behaviour term (the action matches the label).",
    )
    correctness_weight: float = option(
        1.0, allow_inf_nan=False, help="Weight of task correctness (metadata.answer)."
    )
    format_weight: float = option(
        0.25, allow_inf_nan=False, help="Weight of the -1 malformed-tool-call penalty."
    )

    def __post_init__(self) -> None:
        _check(RewardOptions, self, "RewardOptions")


@dataclass
class SFTOptions:
    """The hyper-parameters of the SFT warm start (``train_sft``, ``sca train sft``)."""

    min_reward: float | None = option(
        1.0,
        allow_inf_nan=False,
        help="Keep trajectories scoring at least this (rejection sampling); None keeps all.",
    )
    epochs: float = option(1.0, gt=0.0, help="Passes over the kept samples.")
    max_steps: int = option(-1, ge=-1, help="Optimizer steps; -1 runs the epochs.")
    learning_rate: float = option(1e-4, gt=0.0, allow_inf_nan=False, help="Learning rate.")
    batch_size: int = option(4, ge=1, help="Sequences per optimizer step.")
    full_finetune: bool = option(**_FULL_FINETUNE)
    lora_r: int = option(**_LORA_R)
    lora_alpha: int = option(**_LORA_ALPHA)
    seed: int = option(42, ge=0, help="Random seed.")

    def __post_init__(self) -> None:
        _check(SFTOptions, self, "train_sft")


DEFAULT_ONLINE_SAMPLING = SamplingParams(temperature=1.0, max_tokens=128)
"""Collection samples at temperature 1.0: the trainer scores at 1.0 and vLLM records raw logprobs."""


@dataclass
class OnlineOptions:
    """How ``run_online`` serves its policies and collects (``sca train online``)."""

    adapter_prefix: str = option(
        "policy", help="Served adapter names: <prefix>_v0 (a starting adapter), <prefix>_v1, ..."
    )
    max_concurrency: int = option(8, ge=1, help="Agent runs in flight during a collection.")
    keep_loaded: int = option(
        2, ge=1, help="Adapters kept loaded in the server (the current policy and the ones before)."
    )

    def __post_init__(self) -> None:
        _check(OnlineOptions, self, "run_online")
