"""``IFPOTrainer``: TRL's ``GRPOTrainer`` fed by trace replay, with GRPO or IFPO advantages.

How a replayed batch reaches TRL (``docs/training.md`` has the picture):

1. The train dataset has one row per *group key* (offline: a ``group_id``; online: a prompt id).
   TRL's sampler repeats each row ``num_generations`` times, consecutively; copy ``k`` of a key
   stands for trajectory ``k`` of its group.
2. :meth:`IFPOTrainer.generation_batch` (TRL's generation step) resolves each copy to a
   trajectory through the :class:`RolloutSource` (offline: a lookup; online: collection with the
   agent), and lays the trajectories' samples out in *slots*: the first sample of entry ``i`` in
   slot ``i`` (so TRL's groups line up with ours), the extra per-turn samples of trajectories
   that could not be replayed as one sequence after them, and fully masked filler slots to round
   the batch to TRL's shape. Then it calls TRL with one entry per slot, keyed
   ``sca-slot:<generation>:<slot>``: the layout is registered under its generation number for
   the length of that call only.
3. TRL's ``rollout_func`` (:func:`replay_rollout`) returns each slot's recorded ids, logprobs
   and ``env_mask``; TRL builds the loss mask ``completion_mask * env_mask``.
4. After TRL has scored the batch, the advantages are replaced: ``ifpo_advantages`` (or
   ``grpo_advantages``) over the full groups' logged rewards and consult flags, one value per
   trajectory, copied to each of its slots (0 for fillers). Both algorithms take this path, and
   the completions log gets these advantages in place of the GRPO ones TRL logged.
5. What the loss needs per row (the slot index, filler or not, the trace) travels in the batch
   dict itself, shuffled and split with the rows, so an evaluation pass between the buffered
   micro-batches of one generation cannot change what is trained.

TRL's private members are used in :mod:`._trl_compat` only.

A non-finite loss stops training with :class:`NonFiniteLossError` naming the step and traces
(non-finite rewards already stop at scoring, see ``_rewards``): skipping a step would hide the
divergence, and the last checkpoint resumes cleanly.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel
from safe_context_training._advantages import (
    AdvantageStats,
    group_statistics,
    grpo_advantages,
    ifpo_advantages,
)
from safe_context_training._metrics import METRIC_PREFIX, StepMetrics
from safe_context_training._options import DEFAULT_LORA_TARGETS, IFPOOptions
from safe_context_training._replay import (
    ReplayReport,
    ReplaySample,
    ReplaySet,
    ReplayTrajectory,
    load_replay,
)
from safe_context_training._rewards import CombinedReward, default_reward, score_trajectories
from safe_context_training._trl_compat import GRPOSeams
from transformers import TrainerCallback
from trl import GRPOConfig

from safe_context_agent.errors import ConfigError, SafeContextError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "IFPOConfig",
    "IFPOTrainer",
    "NonFiniteLossError",
    "ReplaySource",
    "RolloutSource",
    "Slot",
    "TrainResult",
    "compact_micro_batch",
    "layout_slots",
    "load_policy",
    "lora_config",
    "replay_rollout",
    "slot_advantages",
    "train_offline",
]

logger = logging.getLogger(__name__)

_SLOT_PREFIX = "sca-slot:"
_FILLER_MARKER = "'sca_filler': True"


class NonFiniteLossError(SafeContextError):
    """The training loss became NaN or infinite: the message names the step and the traces."""


def cuda_bf16_supported() -> bool:
    """Whether bf16 mixed precision should be on: a CUDA device that supports it."""
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


@dataclass
class IFPOConfig(IFPOOptions, GRPOConfig):
    """``GRPOConfig`` plus the options of trace replay and IFPO (:class:`IFPOOptions`, where
    each is declared with its help, choices and bounds).

    Every ``GRPOConfig`` field keeps its meaning (``num_generations`` is the group size,
    ``scale_rewards`` the std normalisation of the underlying GRPO advantage, ``beta`` the KL
    coefficient, ...). Defaults that differ from TRL's: ``learning_rate`` 2e-5 (LoRA),
    ``logging_steps`` 1 (one metrics record per step) and ``bf16`` only on a CUDA device that
    supports it (CPU trains in fp32). Gradient checkpointing stays on, as in TRL: the agent's
    prompts are ~450 tokens, and without it 8 such sequences took ~12 GiB on CPU.
    """

    def __post_init__(self) -> None:
        self.check_options("IFPOConfig")
        if self.behaviour_logprobs == "ratio" and self.temperature != 1.0:
            raise ConfigError(
                f"IFPOConfig.temperature={self.temperature} with behaviour_logprobs='ratio': vLLM "
                "records raw (temperature 1) logprobs, so the trainer must score at temperature "
                "1.0 too; keep temperature=1.0 or set behaviour_logprobs='ignore'"
            )
        if self.bf16 is None:
            self.bf16 = cuda_bf16_supported()
        super().__post_init__()


def load_policy(
    model: str | os.PathLike[str] | None = None,
    *,
    adapter: str | os.PathLike[str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model to train and its tokenizer: a HF folder (default: the embedded SmolLM2).

    The embedded folder holds bf16 weights; they load as fp32 by default, the precision that
    trains on a CPU. ``adapter`` continues training an existing LoRA adapter (e.g. an SFT warm
    start).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model is None:
        from safe_context_agent.serve import prepare_embedded_model

        folder = str(prepare_embedded_model())
    else:
        folder = str(model)
    try:
        policy = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except OSError as exc:
        raise ConfigError(
            f"cannot load the model to train from {folder} ({exc}); pass a Hugging Face model "
            "folder (config.json, weights, tokenizer) or leave --model out for the embedded one"
        ) from exc
    if adapter is not None:
        from peft import PeftModel

        try:
            policy = PeftModel.from_pretrained(policy, str(adapter), is_trainable=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load the LoRA adapter {adapter} ({exc}); pass a folder written by "
                "sca train / sca train sft (adapter_config.json + adapter_model.safetensors)"
            ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return policy, tokenizer


_DEFAULTS = IFPOOptions()


def lora_config(
    r: int = _DEFAULTS.lora_r,
    alpha: int = _DEFAULTS.lora_alpha,
    dropout: float = _DEFAULTS.lora_dropout,
    target_modules: Sequence[str] = DEFAULT_LORA_TARGETS,
) -> Any:
    """The PEFT ``LoraConfig`` both trainers use by default."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        task_type="CAUSAL_LM",
    )


@runtime_checkable
class RolloutSource(Protocol):
    """Where the trainer's trajectories come from: a replay set (offline) or the agent (online)."""

    def keys(self) -> list[str]:
        """The train dataset's rows: one key per group (TRL repeats each ``num_generations`` times)."""
        ...

    @property
    def max_group_size(self) -> int:
        """The most trajectories one key can stand for; must not exceed ``num_generations``."""
        ...

    def resolve(self, keys: Sequence[str], copies: Sequence[int]) -> list[ReplayTrajectory | None]:
        """The scored trajectory behind each (key, copy index) entry; None when there is none."""
        ...

    def group(self, group_id: str) -> Sequence[ReplayTrajectory]:
        """Every scored trajectory of a group (advantages are normalised over all of them)."""
        ...

    def after_step(self, trainer: IFPOTrainer) -> None:
        """Called after each optimizer step (online: save and hot-load the new adapter)."""
        ...

    @property
    def policy(self) -> str | None:
        """The served policy that collected the latest batch (None offline)."""
        ...


def _check_group_sizes(replay: ReplaySet) -> None:
    """A group of one trajectory has zero GRPO/IFPO advantage (its reward is its group's mean), so
    it adds no gradient: all such groups is an error (the step would train nothing), some a
    warning with the count (in ``replay.report.warnings`` too)."""
    singles = sum(1 for group in replay.groups if len(group) == 1)
    if not singles:
        return
    fix = "collect at least 2 samples per prompt (sca collect --n 2 or more)"
    if singles == len(replay.groups):
        raise ConfigError(
            f"every group of the traces holds a single trajectory ({singles} groups): advantages"
            f" are normalised within a group, so each is zero and training would change nothing;"
            f" {fix}"
        )
    message = (
        f"{singles} of {len(replay.groups)} groups hold a single trajectory: their advantage is"
        f" zero, so they add no gradient; {fix}"
    )
    replay.report.warnings.append(message)
    warnings.warn(message, stacklevel=3)


class ReplaySource:
    """Offline replay: the groups of a :class:`ReplaySet`, scored once up front."""

    def __init__(
        self, replay: ReplaySet, reward: CombinedReward | None = None, *, max_workers: int = 1
    ) -> None:
        if not replay.groups:
            raise ConfigError(
                "the traces hold no trajectory to train on (runs that errored or made no model "
                f"call are left out; report: {replay.report.model_dump_json()})"
            )
        _check_group_sizes(replay)
        self.replay = replay
        if reward is not None:
            score_trajectories(replay.trajectories(), reward, max_workers=max_workers)
        unscored = [t.trace_id for t in replay.trajectories() if t.reward is None]
        if unscored:
            raise ConfigError(
                f"trace {unscored[0]} (and {len(unscored) - 1} more) has no reward; pass "
                "reward=default_reward() (or your own CombinedReward) to score the replay set"
            )

    def keys(self) -> list[str]:
        return [group.group_id for group in self.replay.groups]

    @property
    def max_group_size(self) -> int:
        return self.replay.max_group_size

    def resolve(self, keys: Sequence[str], copies: Sequence[int]) -> list[ReplayTrajectory | None]:
        resolved: list[ReplayTrajectory | None] = []
        for key, copy in zip(keys, copies, strict=True):
            members = self.replay.group(key).trajectories
            resolved.append(members[copy] if copy < len(members) else None)
        return resolved

    def group(self, group_id: str) -> Sequence[ReplayTrajectory]:
        return self.replay.group(group_id).trajectories

    def after_step(self, trainer: IFPOTrainer) -> None:
        return None

    @property
    def policy(self) -> str | None:
        return None


@dataclass(frozen=True)
class Slot:
    """One TRL entry: a replay sample, or a fully masked filler (``sample`` None)."""

    sample: ReplaySample | None
    trajectory: ReplayTrajectory | None


FILLER = Slot(None, None)
"""The fully masked slot that pads a batch to TRL's shape."""


class _Layouts:
    """The slot layout of each generation batch in progress, by generation number.

    A layout is registered for the length of TRL's generation call only (that is when
    ``rollout_func`` reads it); everything later steps need travels in the batch dict. So a
    second generation (an evaluation pass between buffered micro-batches) gets its own number
    and cannot re-index the first.
    """

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self._by_generation: dict[int, Sequence[Slot]] = {}

    @contextlib.contextmanager
    def registered(self, slots: Sequence[Slot]) -> Iterator[list[str]]:
        """Register ``slots`` under a new generation number; yield one key per slot."""
        generation = next(self._numbers)
        self._by_generation[generation] = slots
        try:
            yield [f"{_SLOT_PREFIX}{generation}:{index}" for index in range(len(slots))]
        finally:
            del self._by_generation[generation]

    def slot_of(self, key: str) -> Slot:
        generation, _, index = key.removeprefix(_SLOT_PREFIX).partition(":")
        try:
            return self._by_generation[int(generation)][int(index)]
        except (KeyError, IndexError, ValueError):
            raise RuntimeError(
                f"rollout_func got {key!r}, which is no slot of a generation batch in progress "
                "(replay_rollout serves IFPOTrainer's own generation step only)"
            ) from None


def layout_slots(
    trajectories: Sequence[ReplayTrajectory | None], *, multiple: int, minimum: int = 0
) -> list[Slot]:
    """Entry ``i``'s first sample in slot ``i``, extra per-turn samples after, fillers to round up.

    The result has at least ``max(len(trajectories), minimum)`` slots, rounded up to a multiple of
    ``multiple``.
    """
    slots = [Slot(t.samples[0], t) if t is not None and t.samples else FILLER for t in trajectories]
    slots += [Slot(s, t) for t in trajectories if t is not None for s in t.samples[1:]]
    size = max(len(slots), minimum)
    size = -(-size // multiple) * multiple
    return slots + [FILLER] * (size - len(slots))


def slot_advantages(
    slots: Sequence[Slot],
    group_of: Callable[[str], Sequence[ReplayTrajectory]],
    args: IFPOConfig,
) -> tuple[list[float], AdvantageStats, list[ReplayTrajectory]]:
    """One advantage per trajectory, normalised over its full group, copied to each of its slots.

    ``group_of(group_id)`` returns every scored trajectory of a group, also the ones whose slots
    are not in this batch. Fillers get 0. GRPO and IFPO share this function; ``args.algo`` only
    picks the estimator. Returns the per-slot advantages, the batch's group statistics and the
    trajectories they were computed over.
    """
    group_ids = list(dict.fromkeys(s.trajectory.group_id for s in slots if s.trajectory))
    members = [t for group_id in group_ids for t in group_of(group_id)]
    rewards = [t.reward for t in members]
    consulted = [t.consulted for t in members]
    groups = [t.group_id for t in members]
    if args.algo == "ifpo":
        values = ifpo_advantages(
            rewards,  # type: ignore[arg-type]  # every trajectory is scored by now
            consulted,
            groups,
            scale=args.scale_rewards,  # type: ignore[arg-type]
            frequency_scope=args.frequency_scope,
            apply_to=args.apply_to,
            weight_clip=args.clip_bounds,
        )
    else:
        values = grpo_advantages(rewards, groups, scale=args.scale_rewards)  # type: ignore[arg-type]
    stats = group_statistics(
        rewards,  # type: ignore[arg-type]
        consulted,
        groups,
        frequency_scope=args.frequency_scope,
        weight_clip=args.clip_bounds,
    )
    by_trace = {t.trace_id: float(v) for t, v in zip(members, values, strict=True)}
    per_slot = [by_trace[s.trajectory.trace_id] if s.trajectory else 0.0 for s in slots]
    return per_slot, stats, members


_PROMPT_KEYS = frozenset({"prompt_ids", "prompt_mask"})


def compact_micro_batch(inputs: dict[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    """Drop the filler rows of a micro-batch and the padding columns no kept row needs.

    TRL pads every row of a generation batch to its longest prompt (left) and longest completion
    (right). A filler slot carries no loss (``env_mask`` 0, so no tokens in ``num_items_in_batch``
    either), yet the forward and backward pass would pay for it at full padded length; and once
    the rows of a micro-batch are known, columns that are padding in every one of them carry
    nothing. ``keep`` marks the rows to keep (if it marks none, the first row stays so that the
    step still has a graph to backpropagate: a filler trimmed to two tokens). Lists with one
    item per row (the trace ids) are compacted like the tensors.

    For TRL's token-normalised losses (``dapo``, the default, ``bnpo``, ``cispo``) the loss is
    unchanged; for the per-sequence means (``grpo``, ``dr_grpo``, ``luspo``) fillers no longer
    count as zero-loss rows in the mean.
    """
    if not bool(keep.any()):
        keep = torch.zeros_like(keep)
        keep[0] = True
    rows = int(keep.shape[0])
    prompt_width = int(inputs["prompt_ids"].shape[1])
    completion_width = int(inputs["completion_ids"].shape[1])
    prompt_used = inputs["prompt_mask"][keep].any(dim=0).nonzero()
    completion_used = inputs["completion_mask"][keep].any(dim=0).nonzero()
    # Prompts are left-padded: keep from the first column any kept row uses. Completions are
    # right-padded: keep up to the last such column.
    prompt_from = int(prompt_used[0]) if len(prompt_used) else prompt_width - 1
    completion_to = int(completion_used[-1]) + 1 if len(completion_used) else 1

    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if isinstance(value, list) and len(value) == rows:
            out[key] = [item for item, kept in zip(value, keep.tolist(), strict=True) if kept]
            continue
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != rows:
            out[key] = value
            continue
        value = value[keep]
        if value.dim() >= 2 and key in _PROMPT_KEYS:
            value = value[:, prompt_from:]
        elif value.dim() >= 2 and value.shape[1] == completion_width:
            value = value[:, :completion_to]
        out[key] = value
    return out


def replay_rollout(prompts: list[str], trainer: IFPOTrainer) -> dict[str, list[Any]]:
    """TRL ``rollout_func``: each prompt is a slot key; return its recorded ids and masks.

    The extra keys (``sca_reward``, ``sca_trace_id``, ``sca_filler``) reach the reward function.
    """
    pad = trainer.pad_token_id
    eos = trainer.eos_token_ids[0] if trainer.eos_token_ids else pad
    out: dict[str, list[Any]] = {
        key: []
        for key in (
            "prompt_ids",
            "completion_ids",
            "logprobs",
            "env_mask",
            "sca_reward",
            "sca_trace_id",
            "sca_filler",
        )
    }
    for key in prompts:
        slot = trainer.slot_of(key)
        if slot.sample is None or slot.trajectory is None:
            # A one-token stand-in that the loss never sees (env_mask 0) and no reward scores.
            sample_ids: tuple[list[int], list[int], list[float], list[int]] = (
                [pad],
                [eos],
                [0.0],
                [0],
            )
            reward, trace_id, filler = None, None, True
        else:
            s = slot.sample
            sample_ids = (s.prompt_ids, s.completion_ids, s.logprobs, s.env_mask)
            reward, trace_id, filler = slot.trajectory.reward, s.trace_id, False
        out["prompt_ids"].append(sample_ids[0])
        out["completion_ids"].append(sample_ids[1])
        out["logprobs"].append(sample_ids[2])
        out["env_mask"].append(sample_ids[3])
        out["sca_reward"].append(reward)
        out["sca_trace_id"].append(trace_id)
        out["sca_filler"].append(filler)
    return out


def replayed_reward(
    prompts: list[Any], completions: list[Any], **kwargs: Any
) -> list[float | None]:
    """TRL reward function: the reward scored on the trace (None for filler slots)."""
    return list(kwargs["sca_reward"])


def _truncate_metrics(path: Path, last_step: int) -> None:
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
        if line.endswith("\n") and StepMetrics.model_validate_json(line).step <= last_step
    ]
    path.write_text("".join(kept), encoding="utf-8")


class _StepCallback(TrainerCallback):
    """Writes one StepMetrics line per log and lets the source act after each optimizer step."""

    def __init__(self, trainer: IFPOTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 0:
            return
        # Resumed from a checkpoint: drop records a killed run wrote past it, and let the source
        # serve the restored weights (online: the adapter of that step).
        if state.is_world_process_zero:
            _truncate_metrics(self.trainer.metrics_path, state.global_step)
        self.trainer.source.after_step(self.trainer)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.source.after_step(self.trainer)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        record = StepMetrics.from_log(
            logs, step=state.global_step, algo=args.algo, policy=self.trainer.source.policy
        )
        path = self.trainer.metrics_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as sink:
            sink.write(record.model_dump_json() + "\n")
        for hook in self.trainer.step_hooks:
            hook(record)


class IFPOTrainer(GRPOSeams):
    """GRPO / IFPO on replayed traces, through TRL's ``rollout_func``.

    >>> replay = load_replay("runs/traces.jsonl")  # doctest: +SKIP
    >>> args = IFPOConfig(output_dir="runs/adapter", num_generations=4, per_device_train_batch_size=4)
    >>> IFPOTrainer(args=args, source=replay).train()  # doctest: +SKIP

    Args:
        model: A model folder, a loaded model, or None for the embedded SmolLM2 (fp32).
        args: The :class:`IFPOConfig`.
        source: A :class:`ReplaySet` (scored with ``reward``) or any :class:`RolloutSource`.
        reward: Scores a ``ReplaySet`` source; :func:`default_reward` when None.
        processing_class: The tokenizer; loaded from the model folder when None.
        peft_config: A PEFT config; None means a LoRA adapter from the ``lora_*`` fields (or full
            fine-tuning with ``full_finetune``, or continuing a model that already is a PeftModel).
        callbacks: More ``TrainerCallback`` objects.
        step_hooks: Called with each :class:`StepMetrics` record (e.g. to print progress).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | PreTrainedModel | None = None,
        args: IFPOConfig | None = None,
        *,
        source: RolloutSource | ReplaySet,
        reward: CombinedReward | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any = None,
        callbacks: Sequence[TrainerCallback] = (),
        step_hooks: Sequence[Callable[[StepMetrics], None]] = (),
    ) -> None:
        args = args or IFPOConfig(output_dir="ifpo-output")
        if not isinstance(args, IFPOConfig):
            raise ConfigError(f"IFPOTrainer needs an IFPOConfig, got {type(args).__name__}")
        if isinstance(source, ReplaySet):
            source = ReplaySource(source, reward or default_reward())
        self.source: RolloutSource = source
        self.step_hooks = list(step_hooks)
        self._layouts = _Layouts()
        self._check_shapes(args)

        if model is None or isinstance(model, str | os.PathLike):
            model, loaded_tokenizer = load_policy(model)
            processing_class = processing_class or loaded_tokenizer
        from peft import PeftModel

        if peft_config is None and not args.full_finetune and not isinstance(model, PeftModel):
            peft_config = lora_config(
                args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target_modules
            )

        from datasets import Dataset

        dataset = Dataset.from_dict({"prompt": source.keys()})
        super().__init__(
            model=model,
            reward_funcs=[replayed_reward],
            args=args,
            train_dataset=dataset,
            processing_class=processing_class,
            callbacks=[_StepCallback(self), *callbacks],
            peft_config=peft_config,
            rollout_func=replay_rollout,
            quiet_reward_marker=_FILLER_MARKER,
        )

    # -- checks and small accessors -----------------------------------------------------------
    def _check_shapes(self, args: IFPOConfig) -> None:
        group_size = self.source.max_group_size
        if group_size > args.num_generations:
            raise ConfigError(
                f"a group holds {group_size} trajectories but num_generations is "
                f"{args.num_generations}; set num_generations (sca train --group-size) to at "
                f"least {group_size}, the largest group"
            )
        groups_per_batch = args.generation_batch_size // args.num_generations
        if len(self.source.keys()) < groups_per_batch:
            raise ConfigError(
                f"one step needs {groups_per_batch} groups (generation batch "
                f"{args.generation_batch_size} / num_generations {args.num_generations}) but there "
                f"are {len(self.source.keys())}; lower per_device_train_batch_size or "
                "gradient_accumulation_steps, or collect more groups"
            )

    @property
    def pad_token_id(self) -> int:
        tokenizer = self.text_tokenizer
        pad = tokenizer.pad_token_id
        return int(pad if pad is not None else tokenizer.eos_token_id)

    @property
    def metrics_path(self) -> Path:
        return Path(self.args.metrics_file or Path(self.args.output_dir) / "metrics.jsonl")

    def slot_of(self, key: str) -> Slot:
        """The slot behind a ``rollout_func`` prompt key, while its generation is in progress."""
        return self._layouts.slot_of(key)

    # -- training -----------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
        """TRL's ``train``; a fresh run (not resuming) starts a new metrics file."""
        if not resume_from_checkpoint and self.is_world_process_zero():
            self.metrics_path.unlink(missing_ok=True)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def generation_batch(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Resolve, lay out, let TRL replay and score, then replace the advantages (see above)."""
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        offset = self.accelerator.process_index * len(inputs)
        copies = [(offset + i) % group_size for i in range(len(inputs))]
        started = time.perf_counter()
        trajectories = self.source.resolve([row["prompt"] for row in inputs], copies)
        collect_s = time.perf_counter() - started

        slots = self.lay_out(trajectories, group_size=group_size, mode=mode)
        with self._layouts.registered(slots) as keys:
            out = self.trl_generation_batch([{"prompt": key} for key in keys])

        advantages, stats, members = slot_advantages(slots, self.source.group, self.args)
        device = out["completion_ids"].device
        applied = torch.tensor(advantages, dtype=torch.float32, device=device)
        out["advantages"] = applied
        self.replace_logged_advantages(self.accelerator.gather(applied).tolist())
        if self.args.behaviour_logprobs == "ratio":
            out["old_per_token_logps"] = out["sampling_per_token_logps"]
        # What the loss needs per row rides with the rows through TRL's shuffle and split.
        out["sca_slot"] = torch.arange(len(slots), device=device)
        out["sca_filler"] = torch.tensor([s.sample is None for s in slots], device=device)
        out["sca_trace_id"] = [s.sample.trace_id if s.sample else None for s in slots]
        self._record(mode, slots, stats, members, collect_s)
        return out

    def lay_out(
        self, trajectories: Sequence[ReplayTrajectory | None], *, group_size: int, mode: str
    ) -> list[Slot]:
        """The slots of one generation batch: :func:`layout_slots`, rounded so that TRL's groups
        and micro-batches divide it, and the same size on every process."""
        steps = self.args.steps_per_generation if mode == "train" else 1
        multiple = math.lcm(group_size, steps)
        slots = layout_slots(trajectories, multiple=multiple)
        if self.accelerator.num_processes > 1:
            # Every process must hand TRL the same number of entries (it gathers rewards).
            sizes = self.accelerator.gather(
                torch.tensor([len(slots)], device=self.accelerator.device)
            )
            slots = layout_slots(trajectories, multiple=multiple, minimum=int(sizes.max()))
        return slots

    def _record(
        self,
        mode: str,
        slots: Sequence[Slot],
        stats: AdvantageStats,
        members: Sequence[ReplayTrajectory],
        collect_s: float,
    ) -> None:
        metrics = self.metric_buffer(mode)

        def put(name: str, value: float | None) -> None:
            if value is not None:
                metrics[METRIC_PREFIX + name].append(float(value))

        rewards = np.array([t.reward for t in members], dtype=np.float64)
        put("reward_mean", float(rewards.mean()))
        put("reward_std", float(rewards.std(ddof=1)) if len(rewards) > 1 else 0.0)
        put("consult_rate", stats.consult_rate)
        for label in ("harmful", "benign"):
            flags = [t.consulted for t in members if t.label == label]
            put(f"consult_rate_{label}", float(np.mean(flags)) if flags else None)
        put("weight_min", stats.weight_min)
        put("weight_mean", stats.weight_mean)
        put("weight_max", stats.weight_max)
        put("groups", stats.num_groups)
        put("trajectories", stats.num_rollouts)
        put("per_turn_trajectories", sum(not t.concatenated for t in members))
        put("filler_slots", sum(s.sample is None for s in slots))
        put("zero_variance_groups", stats.zero_variance_groups)
        put("nonzero_advantage_groups", stats.nonzero_advantage_groups)
        put("both_classes_groups", stats.both_classes_groups)
        put("mixed_groups", stats.mixed_groups)
        if self.source.policy is not None:
            put("collect_s", collect_s)
        components = {name for t in members for name in t.reward_components}
        for name in sorted(components):
            values = [t.reward_components.get(name) for t in members]
            present = [v for v in values if v is not None]
            put(f"reward/{name}", float(np.mean(present)) if present else None)

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor:
        inputs = compact_micro_batch(inputs, ~inputs["sca_filler"])
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not bool(torch.isfinite(loss).all()):
            traces = sorted({t for t in inputs["sca_trace_id"] if t is not None})
            raise NonFiniteLossError(
                f"step {self.state.global_step + 1}: the loss is {loss.item()} on the micro-batch "
                f"of traces {', '.join(traces) or '(fillers only)'}; no update was applied. Check "
                "the rewards and the model weights, lower learning_rate, then resume from the "
                "last checkpoint (resume_from_checkpoint)"
            )
        return loss


class TrainResult(BaseModel):
    """What an offline run produced (also written to ``<output_dir>/train_result.json``)."""

    schema_version: Literal[1] = 1
    algo: str
    output_dir: str
    """The final model: a LoRA adapter folder (or a full model with ``full_finetune``)."""
    metrics_file: str
    steps: int
    train_runtime_s: float
    replay: ReplayReport


def train_offline(
    traces: ReplaySet | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    args: IFPOConfig,
    *,
    reward: CombinedReward | None = None,
    model: str | os.PathLike[str] | None = None,
    adapter: str | os.PathLike[str] | None = None,
    resume_from_checkpoint: str | bool | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    step_hooks: Sequence[Callable[[StepMetrics], None]] = (),
) -> TrainResult:
    """Replay trace files into GRPO/IFPO updates and save the adapter to ``args.output_dir``.

    ``traces`` is one or more trace files, or a :class:`ReplaySet` already read. This is what
    ``sca train --traces ... --out DIR`` runs.
    """
    replay = traces if isinstance(traces, ReplaySet) else load_replay(traces, on_error=on_error)
    policy, tokenizer = load_policy(model, adapter=adapter)
    trainer = IFPOTrainer(
        policy,
        args,
        source=ReplaySource(replay, reward or default_reward()),
        processing_class=tokenizer,
        step_hooks=step_hooks,
    )
    output = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    out_dir = Path(args.output_dir)
    trainer.save_model(str(out_dir))
    result = TrainResult(
        algo=args.algo,
        output_dir=str(out_dir),
        metrics_file=str(trainer.metrics_path),
        steps=trainer.state.global_step,
        train_runtime_s=float(output.metrics.get("train_runtime", 0.0)),
        replay=replay.report,
    )
    if trainer.is_world_process_zero():
        (out_dir / "train_result.json").write_text(
            result.model_dump_json(indent=2), encoding="utf-8"
        )
    return result
