"""Update speed: tokens/s of an SFT step, before and after the recipe's settings, against the
machine's matmul floor measured in the same run.

    python bench/update_speed.py                 # 4 sequences of ~500 tokens, 3 timed steps
    python bench/update_speed.py --demos runs/recipe/sft_demos.jsonl --sequences 8

Arms (each in its own process, alternating, the first arm swapping every round):

- ``before``: what SFT did before issue 11 — gradient checkpointing on, one torch thread;
- ``after``: the recipe's settings — no gradient checkpointing, all cores, length-grouped
  batches.

The floor is the best fp32 matmul rate torch reaches here on the model's own shapes
([tokens x 576] @ [576 x 1536]); an update's share of it is its model FLOPs (about
6 x parameters x tokens for the forward and backward passes through the frozen base; the LoRA
weights add under 2 %) over its time, divided by the floor. Prints one JSON line per run and a
summary with the after/before ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def matmul_floor(threads: int, tokens: int = 2048, repeats: int = 20) -> float:
    """Best GFLOP/s of an fp32 [tokens x 576] @ [576 x 1536] matmul (SmolLM2-135M's MLP)."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(tokens, 576)
    b = torch.randn(576, 1536)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * tokens * 576 * 1536 / best / 1e9


def synthetic_rows(sequences: int, length: int) -> list[dict[str, list[int]]]:
    import random

    rng = random.Random(0)
    rows = []
    for _ in range(sequences):
        ids = [rng.randrange(100, 49000) for _ in range(length)]
        labels = [-100] * (length - 80) + ids[length - 80 :]
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def demo_rows(path: str, sequences: int) -> list[dict[str, list[int]]]:
    from safe_context_training import load_replay, sft_dataset

    dataset = sft_dataset(load_replay(path, need_logprobs=False), min_reward=None)
    return [dataset[i] for i in range(min(sequences, len(dataset)))]


def run_arm(arm: str, options: argparse.Namespace) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from safe_context_training._trainer import cuda_bf16_supported, load_policy, lora_config
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    threads = 1 if arm == "before" else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    rows = (
        demo_rows(options.demos, options.sequences)
        if options.demos
        else synthetic_rows(options.sequences, options.length)
    )
    dataset = Dataset.from_list(rows * (options.steps + 1))
    times: list[float] = []

    class _Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            times.append(time.perf_counter() - self.started)

    policy, tokenizer = load_policy()
    params = sum(p.numel() for p in policy.parameters())
    trainer = SFTTrainer(
        model=policy,
        args=SFTConfig(
            output_dir=str(Path(options.tmp) / arm),
            per_device_train_batch_size=len(rows),
            max_steps=options.steps + 1,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            bf16=cuda_bf16_supported(),
            max_length=None,
            gradient_checkpointing=arm == "before",
            train_sampling_strategy="sequential" if arm == "before" else "group_by_length",
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(16, 32),
        callbacks=[_Timer()],
    )
    trainer.train()
    tokens = sum(len(row["input_ids"]) for row in rows)
    step_s = statistics.median(times[1:])  # the first step is a warm-up
    floor = matmul_floor(threads)
    achieved = 6 * params * tokens / step_s / 1e9
    return {
        "arm": arm,
        "threads": threads,
        "tokens_per_step": tokens,
        "step_s": round(step_s, 2),
        "tokens_per_s": round(tokens / step_s, 1),
        "gflops": round(achieved, 1),
        "floor_gflops": round(floor, 1),
        "share_of_floor": round(achieved / floor, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--length", type=int, default=500, help="Synthetic sequence length.")
    parser.add_argument("--demos", help="Demonstrations (JSONL traces) instead of synthetic ids.")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per run.")
    parser.add_argument("--repeats", type=int, default=2, help="Rounds of both arms.")
    parser.add_argument("--tmp", default="/tmp/sca-update-speed")
    parser.add_argument("--arm", choices=["before", "after"], help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.arm:
        print(json.dumps(run_arm(options.arm, options)))
        return
    results: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for round_ in range(options.repeats):
        order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
        for arm in order:
            argv = [sys.executable, __file__, "--arm", arm, *sys.argv[1:]]
            line = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            record = json.loads(line.strip().splitlines()[-1])
            print(json.dumps(record), flush=True)
            results[arm].append(record)
    before = statistics.median(r["tokens_per_s"] for r in results["before"])
    after = statistics.median(r["tokens_per_s"] for r in results["after"])
    print(
        json.dumps(
            {
                "before_tokens_per_s": before,
                "after_tokens_per_s": after,
                "ratio": round(after / before, 2),
                "target": ">= 2.0",
            }
        )
    )


if __name__ == "__main__":
    main()
