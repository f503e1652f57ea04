"""One IFPO training step against one plain TRL GRPO step: same batch, same model, same settings.

Both arms replay the same groups through TRL's ``rollout_func``. The GRPO arm is an unmodified
``trl.GRPOTrainer`` (TRL's own advantages); the IFPO arm is ``IFPOTrainer(algo="ifpo")``
(slot layout, inverse-frequency advantages, per-step metrics). Each arm runs in its own process,
so peak memory is per arm; arms alternate for ``--repeats`` rounds, the first arm of a round
swapping every round, so that a busy machine slows both alike. The first step of every run is a
warm-up and is not timed.

    python bench/train_step.py                    # synthetic groups shaped like agent traces
    python bench/train_step.py --traces runs/traces.jsonl --group-size 4

Prints one JSON line per run and a summary with the IFPO/GRPO time and memory ratios
(target: time <= 1.05x, peak memory within 10 %).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def synthetic_traces(
    group_size: int, groups: int, prompt_tokens: int, answer_tokens: int
) -> list[Any]:
    """Groups shaped like the agent's: a long system prompt, half the runs consult (call, tool
    result, answer), rewards mixed within each group. Ids are real token ids, content random."""
    import random

    from transformers import AutoTokenizer

    from safe_context_agent.serve import prepare_embedded_model
    from safe_context_agent.traces import Consultation, ModelTurn, RetrievedRuleRef, Trace

    tokenizer = AutoTokenizer.from_pretrained(str(prepare_embedded_model()))
    rng = random.Random(0)
    vocab = tokenizer.vocab_size
    eos = tokenizer.eos_token_id

    def ids(n: int) -> list[int]:
        return [rng.randrange(100, vocab) for _ in range(n)]

    traces = []
    for group in range(groups):
        prompt = ids(prompt_tokens)
        label = "harmful" if group % 2 == 0 else "benign"
        for index in range(group_size):
            answer = [*ids(answer_tokens - 1), eos]
            refuses = rng.random() < 0.5
            text = "I can't help with that." if refuses else "Here is how it works."
            if index % 2 == 0:
                call, suffix = [*ids(24), eos], ids(60)
                turns = [
                    ModelTurn(index=0, prompt_token_ids=prompt, completion_token_ids=call,
                              logprobs=[-0.3] * len(call)),
                    ModelTurn(index=1, prompt_token_ids=prompt + call + suffix,
                              completion_token_ids=answer, logprobs=[-0.3] * len(answer)),
                ]  # fmt: skip
                consultations = [
                    Consultation(source="tool_call", query="q", turn_index=0,
                                 rules=[RetrievedRuleRef(id="R", category="c", score=0.5)])
                ]  # fmt: skip
            else:
                turns = [ModelTurn(index=0, prompt_token_ids=prompt, completion_token_ids=answer,
                                   logprobs=[-0.3] * len(answer))]  # fmt: skip
                consultations = []
            traces.append(
                Trace(group_id=f"g{group}", sample_index=index, model="smollm2", mode="adaptive",
                      messages=[{"role": "user", "content": "q"}], turns=turns,
                      consultations=consultations, answer=text, metadata={"label": label})
            )  # fmt: skip
    return traces


def run_arm(arm: str, options: argparse.Namespace) -> dict[str, Any]:
    import torch
    from safe_context_training import (
        IFPOConfig,
        IFPOTrainer,
        ReplaySet,
        default_reward,
        load_policy,
        load_replay,
        score_trajectories,
    )
    from safe_context_training._trainer import lora_config
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    if options.threads:
        torch.set_num_threads(options.threads)
    replay = (
        load_replay(options.traces)
        if options.traces
        else ReplaySet.from_traces(
            synthetic_traces(
                options.group_size, options.groups, options.prompt_tokens, options.answer_tokens
            )
        )
    )
    score_trajectories(replay.trajectories(), default_reward())
    steps = options.steps + 1  # + warm-up
    shared = {
        "output_dir": str(Path(options.workdir) / arm),
        "num_generations": options.group_size,
        "per_device_train_batch_size": options.group_size,
        "max_steps": steps,
        "learning_rate": 2e-5,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "gradient_checkpointing": True,
        "bf16": torch.cuda.is_available(),
        "seed": 0,
        "disable_tqdm": True,
    }
    step_times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step_times.append(time.perf_counter() - self.started)

    model, tokenizer = load_policy(options.model)
    if torch.cuda.is_available():
        model = model.cuda()
        torch.cuda.reset_peak_memory_stats()
    if arm == "ifpo":
        trainer: Any = IFPOTrainer(
            model, IFPOConfig(algo="ifpo", **shared), source=replay, processing_class=tokenizer,
            callbacks=[Timer()],
        )  # fmt: skip
    else:
        from datasets import Dataset

        groups = {g.group_id: g.trajectories for g in replay.groups}

        def rollout(prompts: list[str], trainer: Any) -> dict[str, list[Any]]:
            out: dict[str, list[Any]] = {
                k: [] for k in ("prompt_ids", "completion_ids", "logprobs", "env_mask", "r")
            }
            for i, key in enumerate(prompts):
                sample = groups[key][i % options.group_size].samples[0]
                out["prompt_ids"].append(sample.prompt_ids)
                out["completion_ids"].append(sample.completion_ids)
                out["logprobs"].append(sample.logprobs)
                out["env_mask"].append(sample.env_mask)
                out["r"].append(groups[key][i % options.group_size].reward)
            return out

        def logged(
            prompts: list[Any], completions: list[Any], r: list[float], **kwargs: Any
        ) -> list[float]:
            return r

        trainer = GRPOTrainer(
            model, reward_funcs=[logged], args=GRPOConfig(**shared),
            train_dataset=Dataset.from_dict({"prompt": list(groups)}), processing_class=tokenizer,
            peft_config=lora_config(), rollout_func=rollout, callbacks=[Timer()],
        )  # fmt: skip
    trainer.train()
    timed = step_times[1:]
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "arm": arm,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "sequences_per_step": options.group_size,
        "steps_timed": len(timed),
        "step_s_median": statistics.median(timed),
        "step_s_all": [round(t, 3) for t in timed],
        "peak_mib": round(peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", help="trace file to replay (default: synthetic groups)")
    parser.add_argument("--model", help="HF model folder (default: the embedded SmolLM2)")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--groups", type=int, default=4, help="synthetic groups (one per step)")
    parser.add_argument("--prompt-tokens", type=int, default=455, help="as the agent's prompt")
    parser.add_argument("--answer-tokens", type=int, default=48)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run (+1 warm-up)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per arm, alternating")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--workdir", default="/tmp/sca-bench-train-step")
    parser.add_argument("--arm", choices=["ifpo", "grpo"], help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.steps + 1 > options.groups and not options.traces:
        options.groups = options.steps + 1

    if options.arm:  # child process: one run, one JSON line
        print("RESULT " + json.dumps(run_arm(options.arm, options)), flush=True)
        return

    forwarded = [a for a in sys.argv[1:]]
    results: dict[str, list[dict[str, Any]]] = {"grpo": [], "ifpo": []}
    for repeat in range(options.repeats):
        # Swap which arm goes first every repeat: on a shared VM the second process of a pair
        # ran measurably slower (CPU steal), whichever arm it was.
        for arm in ("grpo", "ifpo") if repeat % 2 == 0 else ("ifpo", "grpo"):
            done = subprocess.run(
                [sys.executable, __file__, *forwarded, "--arm", arm],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                sys.exit(f"{arm} run failed:\n{done.stderr[-3000:]}")
            result = json.loads(lines[-1].removeprefix("RESULT "))
            results[arm].append(result)
            print(json.dumps(result))
    grpo_time = statistics.median(r["step_s_median"] for r in results["grpo"])
    ifpo_time = statistics.median(r["step_s_median"] for r in results["ifpo"])
    grpo_peak = max(r["peak_mib"] for r in results["grpo"])
    ifpo_peak = max(r["peak_mib"] for r in results["ifpo"])
    summary = {
        "device": results["ifpo"][0]["device"],
        "grpo_step_s": round(grpo_time, 3),
        "ifpo_step_s": round(ifpo_time, 3),
        "time_ratio": round(ifpo_time / grpo_time, 3),
        "grpo_peak_mib": grpo_peak,
        "ifpo_peak_mib": ifpo_peak,
        "memory_ratio": round(ifpo_peak / grpo_peak, 3),
    }
    print(json.dumps(summary))
    print(
        f"IFPO/GRPO step time ratio {summary['time_ratio']:.3f} (target <= 1.05), "
        f"peak memory ratio {summary['memory_ratio']:.3f} (target within 10 %)"
    )


if __name__ == "__main__":
    main()
