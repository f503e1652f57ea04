"""SFT warm start: supervised fine-tuning on the good trajectories of logged traces.

GRPO and IFPO learn nothing from groups whose rewards are all equal, and a base 135M model
rarely refuses or consults well-formed (see ``docs/training.md``). Rejection sampling fixes the
start: collect many samples, keep the trajectories the reward scores at least ``min_reward``,
and fine-tune on them with TRL's ``SFTTrainer``.

The dataset is built from the recorded token ids (the same replay as RL, so multi-turn
trajectories are one sequence when their turns extend each other) and only model-generated
tokens are labels: system, user and tool tokens get ``-100``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from safe_context_training._options import SFTOptions
from safe_context_training._replay import ReplayReport, ReplaySet, load_replay
from safe_context_training._rewards import CombinedReward, default_reward, score_trajectories
from safe_context_training._trainer import cuda_bf16_supported, load_policy, lora_config

from safe_context_agent.errors import ConfigError

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = ["IGNORE_INDEX", "SFTResult", "sft_dataset", "train_sft"]

_DEFAULTS = SFTOptions()

IGNORE_INDEX = -100
"""The label that keeps a token out of the loss (the value transformers' loss skips)."""


def sft_dataset(replay: ReplaySet, *, min_reward: float | None = 1.0) -> Dataset:
    """``input_ids`` and ``labels`` for every sample of the trajectories scored ``>= min_reward``.

    ``labels`` equal the ids on model-generated tokens and ``-100`` elsewhere (the prompt, tool
    results and the chat scaffolding between turns). ``min_reward=None`` keeps every trajectory.
    """
    from datasets import Dataset

    rows: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
    for trajectory in replay.trajectories():
        if min_reward is not None:
            if trajectory.reward is None:
                raise ConfigError(
                    f"trace {trajectory.trace_id} has no reward; score the replay set before "
                    "filtering by min_reward"
                )
            if trajectory.reward < min_reward:
                continue
        for sample in trajectory.samples:
            rows["input_ids"].append(sample.prompt_ids + sample.completion_ids)
            rows["labels"].append(
                [IGNORE_INDEX] * len(sample.prompt_ids)
                + [
                    token if keep else IGNORE_INDEX
                    for token, keep in zip(sample.completion_ids, sample.env_mask, strict=True)
                ]
            )
    return Dataset.from_dict(rows)


class SFTResult(BaseModel):
    """What an SFT run produced (also written to ``<output_dir>/sft_result.json``)."""

    schema_version: Literal[1] = 1
    output_dir: str = Field(description="The LoRA adapter (or full model with full_finetune).")
    min_reward: float | None
    trajectories: int = Field(description="Trajectories in the traces.")
    kept: int = Field(description="Trajectories with reward >= min_reward, trained on.")
    samples: int
    label_tokens: int = Field(description="Tokens that carried a loss.")
    steps: int
    train_loss: float | None
    replay: ReplayReport


def train_sft(
    traces: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    min_reward: float | None = _DEFAULTS.min_reward,
    reward: CombinedReward | None = None,
    model: str | os.PathLike[str] | None = None,
    full_finetune: bool = _DEFAULTS.full_finetune,
    lora_r: int = _DEFAULTS.lora_r,
    lora_alpha: int = _DEFAULTS.lora_alpha,
    epochs: float = _DEFAULTS.epochs,
    max_steps: int = _DEFAULTS.max_steps,
    learning_rate: float = _DEFAULTS.learning_rate,
    batch_size: int = _DEFAULTS.batch_size,
    seed: int = _DEFAULTS.seed,
    gradient_checkpointing: bool = False,
    padding_free: bool = False,
    threads: int | None = None,
    **sft_overrides: Any,
) -> SFTResult:
    """Fine-tune on the trajectories that score ``>= min_reward`` (this is ``sca train sft``).

    Speed on a CPU (bench/train_step.py --sft measures each): gradient checkpointing is off by
    default (it recomputes the forward pass; a 135M model's activations for a batch of agent
    turns fit in a few GB), batches group rows of similar length so that little of a batch is
    padding, and ``threads`` sets torch's thread count (all cores by default; leave
    one to a vLLM server that shares the machine). ``padding_free`` flattens each batch into
    one sequence instead (transformers then masks attention block-diagonally).
    ``sft_overrides`` go to TRL's ``SFTConfig`` unchanged (e.g. ``gradient_accumulation_steps``).
    The hyper-parameters and their bounds are :class:`SFTOptions`' (checked before any work).
    """
    import torch
    from trl import SFTConfig, SFTTrainer

    SFTOptions(
        min_reward=min_reward,
        epochs=epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        full_finetune=full_finetune,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        seed=seed,
    )

    if threads is not None:
        torch.set_num_threads(threads)

    replay = load_replay(traces, need_logprobs=False)
    score_trajectories(replay.trajectories(), reward or default_reward())
    dataset = sft_dataset(replay, min_reward=min_reward)
    kept = sum(
        1 for t in replay.trajectories() if min_reward is None or (t.reward or 0.0) >= min_reward
    )
    if len(dataset) == 0:
        raise ConfigError(
            f"no trajectory scored >= {min_reward} among {len(replay.trajectories())}; collect "
            "more samples per prompt (rejection sampling needs some good ones) or lower --min-reward"
        )
    out = Path(output_dir)
    config = SFTConfig(
        output_dir=str(out),
        num_train_epochs=epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=cuda_bf16_supported(),
        max_length=None,
        seed=seed,
        gradient_checkpointing=gradient_checkpointing,
        padding_free=padding_free,
        # Batches of similar lengths: a batch pads to its longest row, and a 300-token direct
        # answer beside a 450-token consultation would waste a third of the compute.
        train_sampling_strategy="random" if padding_free else "group_by_length",
        **sft_overrides,
    )
    policy, tokenizer = load_policy(model)
    trainer = SFTTrainer(
        model=policy,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=None if full_finetune else lora_config(lora_r, lora_alpha),
    )
    output = trainer.train()
    trainer.save_model(str(out))
    label_tokens = sum(sum(1 for x in labels if x != IGNORE_INDEX) for labels in dataset["labels"])
    result = SFTResult(
        output_dir=str(out),
        min_reward=min_reward,
        trajectories=len(replay.trajectories()),
        kept=kept,
        samples=len(dataset),
        label_tokens=label_tokens,
        steps=trainer.state.global_step,
        train_loss=output.metrics.get("train_loss"),
        replay=replay.report,
    )
    if trainer.is_world_process_zero():
        (out / "sft_result.json").write_text(result.model_dump_json(indent=2), encoding="utf-8")
    return result
