"""IFPOTrainer on TRL: configuration, slot layout, advantages, the loss mask as gradients,
resume, and the NaN guard. The slow tests train the embedded SmolLM2 (fp32, LoRA) on CPU."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safe_context_training import (
    IFPOConfig,
    IFPOTrainer,
    NonFiniteLossError,
    ReplaySet,
    RewardError,
    RewardTerm,
    default_reward,
    group_statistics,
    grpo_advantages,
    ifpo_advantages,
    load_policy,
    read_metrics,
    score_trajectories,
)
from safe_context_training._rewards import CombinedReward
from safe_context_training._trainer import (
    FILLER,
    compact_micro_batch,
    layout_slots,
    slot_advantages,
)

from safe_context_agent.errors import ConfigError


def config(tmp_path: Path, **overrides: Any) -> IFPOConfig:
    values: dict[str, Any] = {
        "output_dir": str(tmp_path / "run"),
        "num_generations": 4,
        "per_device_train_batch_size": 4,
        "max_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        "disable_tqdm": True,
    }
    values.update(overrides)
    return IFPOConfig(**values)


# --- configuration ------------------------------------------------------------------------


def test_config_defaults(tmp_path: Path) -> None:
    args = config(tmp_path)
    assert (args.algo, args.frequency_scope, args.apply_to) == ("ifpo", "group", "all")
    assert args.clip_bounds == (0.25, 4.0)
    assert args.behaviour_logprobs == "ratio"
    # bf16 exactly where the device supports it: fp32 on a CPU, bf16 on a recent GPU.
    assert args.bf16 is bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert args.logging_steps == 1 and args.gradient_checkpointing is True  # as in TRL
    assert not args.full_finetune and args.lora_r == 16


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algo": "ppo"}, "IFPOConfig.algo='ppo' is not an option"),
        ({"frequency_scope": "prompt"}, "frequency_scope"),
        ({"apply_to": "negative"}, "apply_to"),
        ({"weight_clip": [4.0, 0.25]}, "weight_clip"),
        ({"weight_clip": [0.5]}, "weight_clip"),
        ({"behaviour_logprobs": "maybe"}, "behaviour_logprobs"),
        ({"temperature": 0.7}, "raw .temperature 1. logprobs"),
    ],
)
def test_config_rejects_bad_options(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, **overrides)


def test_config_allows_no_clip_and_a_tempered_trainer_without_ratio(tmp_path: Path) -> None:
    assert config(tmp_path, weight_clip=None).clip_bounds is None
    assert config(tmp_path, temperature=0.7, behaviour_logprobs="ignore").temperature == 0.7


# --- slots --------------------------------------------------------------------------------


def replay_of(build: Any, *, fallback: bool = True) -> ReplaySet:
    parts = build.small_parts()
    traces = [
        build.consult(parts, group="g", index=0, label="harmful", answer="I can't do that."),
        build.consult(parts, group="g", index=1, extends=not fallback, answer="Sure: step one."),
        build.direct(
            parts.prompt, [9, 2], group="g", index=2, label="harmful", answer="I won't help."
        ),
    ]
    replay = ReplaySet.from_traces(traces)
    score_trajectories(replay.trajectories(), default_reward())
    return replay


def test_slots_keep_entry_order_and_put_extra_turns_and_fillers_after(build: Any) -> None:
    replay = replay_of(build)
    first, split, direct = replay.trajectories()
    slots = layout_slots([first, split, direct, None], multiple=4)
    # Entry i's first sample sits in slot i (a missing trajectory leaves a filler there), so
    # TRL's groups of num_generations slots line up with ours.
    assert [s.sample for s in slots[:4]] == [
        first.samples[0],
        split.samples[0],
        direct.samples[0],
        None,
    ]
    assert slots[4].sample is split.samples[1] and slots[4].trajectory is split
    assert slots[5:] == [FILLER] * 3
    assert len(layout_slots([first, direct], multiple=2, minimum=5)) == 6


def padded_micro_batch() -> dict[str, Any]:
    """Three rows as TRL pads them: prompts left-padded to 4, completions right-padded to 5.

    Row 0 is a real sample (prompt 2, completion 3), row 1 a filler (1 + 1 tokens), row 2 a
    real sample (prompt 3, completion 2).
    """
    return {
        "prompt_ids": torch.tensor([[0, 0, 11, 12], [0, 0, 0, 9], [0, 21, 22, 23]]),
        "prompt_mask": torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1], [0, 1, 1, 1]]),
        "completion_ids": torch.tensor([[31, 32, 33, 0, 0], [8, 0, 0, 0, 0], [41, 42, 0, 0, 0]]),
        "completion_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]),
        "tool_mask": torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 0, 0, 0]]),
        "advantages": torch.tensor([0.5, 0.0, -0.5]),
        "importance_sampling_ratio": torch.ones(3, 1),
        "num_items_in_batch": torch.tensor(4.0),
        "sca_slot": torch.tensor([7, 3, 0]),
        "sca_trace_id": ["t7", None, "t0"],
        "note": "left as is",
    }


def test_compacting_drops_filler_rows_and_padding_no_kept_row_needs() -> None:
    out = compact_micro_batch(padded_micro_batch(), torch.tensor([True, False, True]))
    assert out["prompt_ids"].tolist() == [[0, 11, 12], [21, 22, 23]]
    assert out["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert out["completion_ids"].tolist() == [[31, 32, 33], [41, 42, 0]]
    assert out["completion_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out["tool_mask"].tolist() == [[1, 0, 1], [1, 1, 0]]
    assert out["advantages"].tolist() == [0.5, -0.5]
    assert out["importance_sampling_ratio"].shape == (2, 1)
    assert out["sca_slot"].tolist() == [7, 0]
    assert out["sca_trace_id"] == ["t7", "t0"]  # lists of one item per row follow the rows
    # The token count that normalises TRL's loss spans the whole generation batch: untouched.
    assert float(out["num_items_in_batch"]) == 4.0 and out["note"] == "left as is"


def test_a_micro_batch_of_fillers_only_keeps_its_first_row_trimmed_to_its_tokens() -> None:
    # TRL still needs a graph to backpropagate; the kept row carries no loss in real batches.
    batch = padded_micro_batch()
    out = compact_micro_batch(batch, torch.tensor([False, False, False]))
    assert out["prompt_ids"].tolist() == [[11, 12]]
    assert out["completion_ids"].tolist() == [[31, 32, 33]]
    assert out["advantages"].tolist() == [0.5]


def test_slot_advantages_follow_the_full_group(build: Any, tmp_path: Path) -> None:
    replay = replay_of(build)
    members = replay.trajectories()
    rewards = [t.reward for t in members]
    consulted = [t.consulted for t in members]
    assert rewards == [1.0, 0.0, 1.0] and consulted == [True, True, False]
    # Only two of the group's trajectories are in this batch; both still use the whole group.
    first, split, _direct = members
    slots = layout_slots([first, split], multiple=4)
    ifpo, stats, used = slot_advantages(
        slots, lambda gid: replay.group(gid).trajectories, config(tmp_path)
    )
    expected = ifpo_advantages(rewards, consulted, ["g"] * 3)
    assert used == members
    assert ifpo == pytest.approx([expected[0], expected[1], expected[1], 0.0])
    assert stats == group_statistics(rewards, consulted, ["g"] * 3)
    assert stats.mixed_groups == 1
    grpo, _, _ = slot_advantages(
        slots, lambda gid: replay.group(gid).trajectories, config(tmp_path, algo="grpo")
    )
    plain = grpo_advantages(rewards, ["g"] * 3)
    assert grpo == pytest.approx([plain[0], plain[1], plain[1], 0.0])
    # IFPO moves weight to the rare (direct) class: it differs from GRPO on this group.
    assert not np.allclose(expected, plain)


def test_a_nan_reward_stops_before_training_and_names_the_trace(build: Any, tmp_path: Path) -> None:
    replay = replay_of(build)
    broken = CombinedReward([RewardTerm("judge", lambda trace: math.nan)])
    with pytest.raises(
        RewardError, match=rf"trace {replay.trajectories()[0].trace_id}: reward term 'judge'"
    ):
        IFPOTrainer(args=config(tmp_path), source=replay, reward=broken)


def test_groups_larger_than_num_generations_are_refused(build: Any, tmp_path: Path) -> None:
    replay = replay_of(build)
    with pytest.raises(ConfigError, match=r"num_generations .* at least 3"):
        IFPOTrainer(
            args=config(tmp_path, num_generations=2, per_device_train_batch_size=2),
            source=replay,
        )


def test_too_few_groups_for_one_step_is_refused(build: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="one step needs 2 groups"):
        IFPOTrainer(
            args=config(tmp_path, per_device_train_batch_size=8),
            source=replay_of(build),
        )


# --- real training steps on the embedded model --------------------------------------------


class RecordingTrainer(IFPOTrainer):
    """Keeps each slot layout, each micro-batch and its per-token logprobs (with their
    gradients) for inspection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[dict[str, Any], torch.Tensor]] = []
        self.layouts: list[list[Any]] = []

    def lay_out(self, *args: Any, **kwargs: Any) -> list[Any]:
        slots = super().lay_out(*args, **kwargs)
        self.layouts.append(slots)
        return slots

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if logps.requires_grad:
            logps.retain_grad()
            self._last_logps = logps
        return logps, entropies, aux

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Any:
        # TRL's loss, on the micro-batch as compute_loss compacted it.
        loss = super()._compute_loss(model, inputs)
        self.seen.append((inputs, self._last_logps))
        return loss


@pytest.mark.slow
def test_tool_tokens_get_no_gradient_and_model_tokens_get_minus_a_over_n(
    labelled_groups: list[Any], tmp_path: Path, torch_threads: None
) -> None:
    harmful = ReplaySet.from_traces(labelled_groups[:4])  # one group, one trajectory per turn
    assert harmful.report.per_turn == 1
    args = config(tmp_path, behaviour_logprobs="ignore")  # ratio 1: the gradient is exactly -A/N
    trainer = RecordingTrainer(args=args, source=harmful)
    trainer.train()

    ((inputs, logps),) = trainer.seen
    grad = logps.grad
    mask = inputs["completion_mask"] * inputs["tool_mask"]
    n_items = float(inputs["num_items_in_batch"])
    # 4 entries + 1 extra turn sample, padded to a multiple of num_generations with fillers ...
    (layout,) = trainer.layouts
    assert len(layout) == 8 and sum(s.sample is None for s in layout) == 3
    # ... which never reach the forward pass, nor does padding no kept row needs.
    slots = [layout[i] for i in inputs["sca_slot"].tolist()]
    assert inputs["sca_trace_id"] == [s.sample.trace_id for s in slots]
    assert len(slots) == 5 and all(s.sample is not None for s in slots)
    assert inputs["prompt_ids"].shape[1] == max(len(s.sample.prompt_ids) for s in slots)
    assert inputs["completion_ids"].shape[1] == max(len(s.sample.completion_ids) for s in slots)
    assert n_items == sum(s.sample.model_tokens for s in slots)

    members = harmful.trajectories()
    expected = ifpo_advantages(
        [t.reward for t in members], [t.consulted for t in members], [members[0].group_id] * 4
    )
    by_trace = {t.trace_id: a for t, a in zip(members, expected, strict=True)}
    for row, slot in enumerate(slots):
        sample = slot.sample
        width = len(sample.completion_ids)
        assert mask[row, :width].tolist() == sample.env_mask
        advantage = by_trace[sample.trace_id]
        assert float(inputs["advantages"][row]) == pytest.approx(advantage, abs=1e-6)
        model_tokens = mask[row].bool()
        # Tool-result tokens (and padding) get exactly no gradient ...
        assert grad[row][~model_tokens].abs().max() == 0
        # ... and every model token gets -A/N.
        assert torch.allclose(
            grad[row][model_tokens], torch.full_like(grad[row][model_tokens], -advantage / n_items)
        )
    assert any(s.sample is not None and 0 in s.sample.env_mask for s in slots)

    (record,) = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert record.step == 1 and record.algo == "ifpo"
    assert (record.groups, record.trajectories, record.per_turn_trajectories) == (1, 4, 1)
    assert record.filler_slots == 3 and record.consult_rate == 0.5
    assert record.consult_rate_harmful == 0.5 and record.consult_rate_benign is None
    assert record.rewards["behaviour"] == 0.5 and record.loss is not None


@pytest.mark.slow
def test_a_nan_loss_stops_training_and_names_the_step_and_traces(
    labelled_groups: list[Any], tmp_path: Path, torch_threads: None
) -> None:
    harmful = ReplaySet.from_traces(labelled_groups[:4])
    trainer = IFPOTrainer(args=config(tmp_path), source=harmful)
    lora = next(p for name, p in trainer.model.named_parameters() if "lora_A" in name)
    with torch.no_grad():
        lora.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 1: the loss is nan") as caught:
        trainer.train()
    assert labelled_groups[0].trace_id in str(caught.value)


def lora_state(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.slow
def test_resume_from_a_checkpoint_continues_where_the_run_stopped(
    labelled_groups: list[Any], tmp_path: Path, torch_threads: None
) -> None:
    replay = ReplaySet.from_traces(labelled_groups)
    args = config(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    full = IFPOTrainer(args=args, source=replay)
    full.train()
    finished = lora_state(full.model)
    run = Path(args.output_dir)
    assert (run / "checkpoint-1" / "adapter_model.safetensors").is_file()
    assert [r.step for r in read_metrics(run / "metrics.jsonl")] == [1, 2]

    model, tokenizer = load_policy()
    resumed = IFPOTrainer(
        model,
        config(tmp_path, max_steps=2, save_strategy="no"),
        source=replay,
        processing_class=tokenizer,
    )
    resumed.train(resume_from_checkpoint=str(run / "checkpoint-1"))
    assert resumed.state.global_step == 2
    # Same data order, same weights at step 1, same update: the same adapter.
    for name, value in lora_state(resumed.model).items():
        assert torch.allclose(value, finished[name], atol=1e-6), name
    # The step-2 record of the first run was replaced, not duplicated.
    assert [r.step for r in read_metrics(run / "metrics.jsonl")] == [1, 2]


@pytest.mark.slow
def test_the_logged_advantages_are_the_applied_ones(
    labelled_groups: list[Any], tmp_path: Path, torch_threads: None
) -> None:
    harmful = ReplaySet.from_traces(labelled_groups[:4])
    trainer = RecordingTrainer(args=config(tmp_path), source=harmful)
    trainer.train()

    ((inputs, _logps),) = trainer.seen
    (layout,) = trainer.layouts
    applied = dict.fromkeys(range(len(layout)), 0.0)  # fillers never reach the loss: 0
    for row, slot in enumerate(inputs["sca_slot"].tolist()):
        applied[slot] = float(inputs["advantages"][row])
    # TRL keeps the last generation_batch_size rows of the batch in its completions log; TRL's
    # own GRPO value of the extra-turn row (slot 4, alone in its TRL group) would be 0.
    logged = trainer.logged_advantages()
    assert len(logged) == 4 and applied[4] != 0.0
    assert logged == pytest.approx([applied[i] for i in range(4, 8)], abs=1e-6)


@pytest.mark.slow
def test_an_evaluation_pass_between_micro_batches_does_not_change_what_is_trained(
    labelled_groups: list[Any], tmp_path: Path, torch_threads: None
) -> None:
    from transformers import TrainerCallback

    replay = ReplaySet.from_traces(labelled_groups)
    # One generation batch (one group, 8 slots) feeds two optimizer steps of one micro-batch each.
    shape = {"per_device_train_batch_size": 2, "steps_per_generation": 2, "max_steps": 2}

    def trained(folder: str, *, evaluate: bool) -> tuple[dict[str, torch.Tensor], list[float]]:
        trainer = IFPOTrainer(args=config(tmp_path / folder, **shape), source=replay)
        losses: list[float] = []

        class EvaluateAfterTheFirstStep(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.global_step != 1:
                    return
                # What an evaluation does: a generation batch of its own (2 entries, 4 slots).
                trainer.model.eval()
                loss, _, _ = trainer.prediction_step(
                    trainer.model, [{"prompt": "benign-group"}] * 2, prediction_loss_only=True
                )
                trainer.model.train()
                losses.append(float(loss))

        if evaluate:
            trainer.add_callback(EvaluateAfterTheFirstStep())
        trainer.train()
        steps = [r.loss for r in read_metrics(Path(trainer.args.output_dir) / "metrics.jsonl")]
        assert len(losses) == int(evaluate)
        return lora_state(trainer.model), steps

    plain, plain_losses = trained("plain", evaluate=False)
    interleaved, interleaved_losses = trained("interleaved", evaluate=True)
    assert interleaved_losses == pytest.approx(plain_losses, abs=1e-6)
    for name, value in interleaved.items():
        assert torch.allclose(value, plain[name], atol=1e-6), name


def test_another_trl_release_is_refused_with_the_version_read() -> None:
    from safe_context_training._trl_compat import TRL_VERSION_READ, check_trl_version

    check_trl_version("1.16.3")  # a patch release of the series read
    with pytest.raises(ConfigError, match=rf"TRL 1.17.0 is installed.*trl=={TRL_VERSION_READ}"):
        check_trl_version("1.17.0")


def test_trls_experimental_switch_is_set_only_while_the_trainer_is_built(
    build: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    from safe_context_training._trl_compat import rollout_func_allowed

    monkeypatch.delenv("TRL_EXPERIMENTAL_SILENCE", raising=False)
    with rollout_func_allowed():
        assert os.environ["TRL_EXPERIMENTAL_SILENCE"] == "1"
    assert "TRL_EXPERIMENTAL_SILENCE" not in os.environ
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        IFPOTrainer(args=config(tmp_path), source=replay_of(build, fallback=False))
    assert not [w for w in caught if "rollout_func" in str(w.message)]
    assert os.environ["TRL_EXPERIMENTAL_SILENCE"] == "0"
