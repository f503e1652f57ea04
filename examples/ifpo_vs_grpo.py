"""GRPO vs IFPO, online, on the embedded model: does inverse-frequency weighting curb the drift
toward always consulting the rules? (ASCL, arXiv 2602.13562, the experiment behind IFPO.)

What it does, each stage skipped when its output already exists (rerun to resume):

1. **Prompt mix.** Harmful prompts from StrongREJECT and HarmBench, benign ones from XSTest
   (``label=safe``), JailbreakBench-benign and GSM8K, read from ``--data`` (the folder layout of
   ``../shared/data``). A disjoint *probe set* of each label is held back.
2. **Warm start.** The base model almost never refuses, so most groups would have equal rewards
   and no gradient. Rejection sampling: collect ``--warm-n`` samples per training prompt, keep
   the runs the reward scores 1, balanced over (label, consulted) cells of at most
   ``--warm-cap`` each, and fine-tune a LoRA adapter on them (``train_sft``).
3. **Two arms, same seed, same prompts, same server**: ``run_online`` with ``algo="grpo"``, then
   with ``algo="ifpo"``, both starting from the warm-start adapter. Each step collects
   ``--group-size`` runs for each of ``--prompts-per-step`` prompts under the current adapter,
   scores them (refuse harmful / answer benign, GSM8K correctness, format penalty; no cost for
   consulting, so drift can show), updates, and hot-loads the new adapter into vLLM.
4. **Probe.** The warm start and each arm's final adapter answer the probe set greedily; the
   consult rate per label on fixed prompts is the drift measure that does not move with each
   step's prompt draw.
5. ``summary.json`` (every figure) and ``ifpo_vs_grpo.png`` (reward, consult rate on harmful and
   benign prompts, group counts and loss per step, both arms on the same axes).

Needs a vLLM server with runtime LoRA (``sca serve`` starts one) and the train extra:

    sca serve
    python examples/ifpo_vs_grpo.py --data ../shared/data --out runs/ifpo_vs_grpo

On a GPU machine, serve a larger model (``sca serve --model ...``) and pass ``--train-model``
(the same weights as an HF folder) and ``--model`` (its served name); nothing else changes.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safe_context_agent import AgentConfig, PromptRecord, SamplingParams, collect_traces
from safe_context_agent.eval import EvalPrompt, load_suite
from safe_context_agent.serve import find_endpoint
from safe_context_agent.traces import JsonlTraceSink, Trace, read_traces

HARMFUL_SOURCES = {
    "strongreject": "strongreject/strongreject_dataset.csv",
    "harmbench": "harmbench/harmbench_behaviors_text_all.csv",
}
BENIGN_SOURCES = {
    "xstest": "xstest/xstest_prompts.csv",
    "jailbreakbench_benign": "jailbreakbench/benign-behaviors.csv",
    "gsm8k": "gsm8k/test.jsonl",
}


# --- 1. prompts ----------------------------------------------------------------------------


def _split(prompts: list[EvalPrompt], label: str, train: int, probe: int, seed: int) -> tuple:
    pool = [p for p in prompts if p.label == label]
    random.Random(seed).shuffle(pool)
    if len(pool) < train + probe:
        raise SystemExit(f"{prompts[0].suite}: {len(pool)} {label} rows, need {train + probe}")
    return pool[:train], pool[train : train + probe]


def prompt_mix(
    data: Path, *, harmful_per_source: int, benign_per_source: int, probe_per_source: int, seed: int
) -> tuple[list[EvalPrompt], list[EvalPrompt]]:
    """Training prompts and a disjoint probe set, ``probe_per_source`` from every source."""
    train: list[EvalPrompt] = []
    probe: list[EvalPrompt] = []
    for label, sources, per_source in (
        ("harmful", HARMFUL_SOURCES, harmful_per_source),
        ("benign", BENIGN_SOURCES, benign_per_source),
    ):
        for suite, relative in sources.items():
            rows = load_suite(suite, data / relative)
            kept, held = _split(rows, label, per_source, probe_per_source, seed)
            train += kept
            probe += held
    return train, probe


# --- 2. warm start -------------------------------------------------------------------------


def warm_start(args: argparse.Namespace, train: list[EvalPrompt], out: Path) -> Path:
    """Rejection-sampled SFT adapter (cached in ``out/warm_start``)."""
    from safe_context_training import default_reward, load_replay, score_trajectories, train_sft

    folder = out / "warm_start"
    if (folder / "sft_result.json").exists():
        print(f"warm start: reusing {folder}")
        return folder
    started = time.perf_counter()
    collected = out / "warm_start_traces.jsonl"
    _collect(args, train, collected, n=args.warm_n, model=args.model, temperature=args.temperature)
    replay = load_replay(collected, need_logprobs=False)
    score_trajectories(replay.trajectories(), default_reward())
    cells: dict[tuple[str, bool], list[Trace]] = {}
    for trajectory in replay.trajectories():
        if (trajectory.reward or 0.0) >= 1.0:
            trace = trajectory.trace
            cells.setdefault((trace.metadata["label"], trace.consulted), []).append(trace)
    rng = random.Random(args.seed)
    kept: list[Trace] = []
    for key in sorted(cells):
        rng.shuffle(cells[key])
        kept += cells[key][: args.warm_cap]
    sft_traces = out / "warm_start_sft.jsonl"
    sft_traces.unlink(missing_ok=True)
    with JsonlTraceSink(sft_traces, fsync=False) as sink:
        for trace in kept:
            sink.write(trace)
    result = train_sft(
        sft_traces,
        folder,
        min_reward=1.0,
        model=args.train_model,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        epochs=args.warm_epochs,
        learning_rate=args.warm_lr,
        batch_size=4,
        seed=args.seed,
    )
    stats = {
        "collected": len(replay.trajectories()),
        "good_by_cell": {f"{label}/{'consult' if c else 'direct'}": len(v)
                         for (label, c), v in sorted(cells.items())},
        "kept": len(kept),
        "sft_steps": result.steps,
        "sft_loss": result.train_loss,
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    (folder / "warm_start_stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    print(f"warm start: {json.dumps(stats)}")
    return folder


# --- 3. the two arms -----------------------------------------------------------------------


def run_arm(
    algo: str, args: argparse.Namespace, train: list[EvalPrompt], adapter: Path | None, out: Path
) -> dict[str, Any]:
    from safe_context_training import IFPOConfig, run_online

    folder = out / algo
    done = folder / "online_result.json"
    if done.exists():
        print(f"{algo}: reusing {folder}")
        return json.loads((folder / "arm.json").read_text(encoding="utf-8"))
    step_times: list[float] = []
    last = [time.perf_counter()]

    def on_step(record: Any) -> None:
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now
        print(
            f"{algo} step {record.step}: reward {record.reward_mean:.3f}, consult harmful "
            f"{_pct(record.consult_rate_harmful)} benign {_pct(record.consult_rate_benign)}, "
            f"mixed groups {record.mixed_groups}, {step_times[-1]:.0f} s",
            flush=True,
        )

    config = IFPOConfig(
        output_dir=str(folder),
        algo=algo,
        num_generations=args.group_size,
        per_device_train_batch_size=args.group_size,
        gradient_accumulation_steps=args.prompts_per_step,
        max_steps=args.steps,
        learning_rate=args.lr,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        save_strategy="no",
        seed=args.seed,
        temperature=args.temperature,
        # vLLM records temperature-1 logprobs; at another temperature the PPO ratio is taken
        # against the trainer's own (tempered) model instead, TRL's default.
        behaviour_logprobs="ratio" if args.temperature == 1.0 else "ignore",
        disable_tqdm=True,
    )
    agent = AgentConfig(
        base_url=args.base_url,
        model=args.model,
        sampling=SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens),
    )
    started = time.perf_counter()
    result = run_online(
        train,
        config,
        agent=agent,
        model=args.train_model,
        adapter=adapter,
        adapter_prefix=f"{out.name}-{algo}",
        max_concurrency=args.concurrency,
        step_hooks=[on_step],
    )
    arm = {
        "algo": algo,
        "seconds": round(time.perf_counter() - started, 1),
        "step_seconds": [round(s, 1) for s in step_times],
        "final_adapter": result.output_dir,
        "metrics_file": result.metrics_file,
    }
    (folder / "arm.json").write_text(json.dumps(arm, indent=2), encoding="utf-8")
    return arm


# --- 4. probe ------------------------------------------------------------------------------


def _collect(
    args: argparse.Namespace,
    prompts: Sequence[EvalPrompt],
    path: Path,
    *,
    n: int,
    model: str,
    temperature: float,
) -> list[Trace]:
    """``n`` runs per prompt into ``path``; resumable (runs already there are not made again)."""
    config = AgentConfig(
        base_url=args.base_url,
        model=model,
        sampling=SamplingParams(temperature=temperature, max_tokens=args.max_tokens),
    )
    records = [
        PromptRecord(id=p.id, prompt=p.prompt, label=p.label, answer=p.answer) for p in prompts
    ]
    collect_traces(config, records, n=n, out=path, concurrency=args.concurrency, progress=False)
    return list(read_traces(path))


def probe(
    args: argparse.Namespace, prompts: list[EvalPrompt], name: str, adapter: Path | None, out: Path
) -> dict[str, Any]:
    """Greedy runs of the probe set under one policy: consult and behaviour rates per label."""
    from safe_context_training import BehaviourReward, load_lora_adapter, unload_lora_adapter

    path = out / "probe" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    served = f"{out.name}-probe-{name}"
    if adapter is not None:
        load_lora_adapter(args.base_url, served, adapter)
    try:
        _collect(args, prompts, path, n=1, model=served if adapter else args.model, temperature=0.0)
    finally:
        if adapter is not None:
            unload_lora_adapter(args.base_url, served)
    traces = [t for t in read_traces(path) if t.outcome.status == "ok"]
    behaviour = BehaviourReward()
    figures: dict[str, Any] = {"runs": len(traces)}
    for label in ("harmful", "benign"):
        mine = [t for t in traces if t.metadata.get("label") == label]
        figures[f"consult_rate_{label}"] = _rate(sum(t.consulted for t in mine), len(mine))
        good = sum(behaviour(t) == 1.0 for t in mine)
        figures[f"{'refusal' if label == 'harmful' else 'answer'}_rate_{label}"] = _rate(
            good, len(mine)
        )
    return figures


# --- 5. report -----------------------------------------------------------------------------


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data",
        help="Folder with the public benchmark files (layout of ../shared/data).",
    )
    add("--out", type=Path, default=Path("runs/ifpo_vs_grpo"))
    add("--base-url", default=None, help="vLLM endpoint (…/v1); default: the sca serve server.")
    add("--model", default="smollm2", help="Served name of the base model.")
    add("--train-model", default=None, help="HF folder of the same model (default: embedded).")
    add("--steps", type=int, default=8, help="Online steps per arm.")
    add("--group-size", type=int, default=8, help="Runs per prompt (G).")
    add("--prompts-per-step", type=int, default=2)
    add("--max-tokens", type=int, default=64, help="Token budget per model turn.")
    add(
        "--temperature",
        type=float,
        default=0.7,
        help="Sampling temperature of the rollouts (the policy is the tempered model). On the "
        "embedded model the consult rate was 6%% of harmful prompts at 1.0 and 25%% at 0.7.",
    )
    add("--harmful-per-source", type=int, default=8)
    add("--benign-per-source", type=int, default=6)
    add("--probe-per-source", type=int, default=4)
    add(
        "--warm-start",
        default="collect",
        help="'collect' (rejection-sampled SFT), 'none', or an adapter folder.",
    )
    add("--warm-n", type=int, default=4, help="Samples per prompt for the warm start.")
    add("--warm-cap", type=int, default=12, help="Kept runs per (label, consulted) cell.")
    add("--warm-epochs", type=float, default=2.0)
    add("--warm-lr", type=float, default=2e-4)
    add("--lr", type=float, default=1e-4, help="Online learning rate (both arms).")
    add("--lora-r", type=int, default=16)
    add("--concurrency", type=int, default=16)
    add("--seed", type=int, default=0)
    args = parser.parse_args()  # fmt: skip
    endpoint = find_endpoint(args.base_url)
    if endpoint is None:
        raise SystemExit("no vLLM server: start one with `sca serve` or pass --base-url")
    args.base_url = endpoint.base_url
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    train, probes = prompt_mix(
        args.data,
        harmful_per_source=args.harmful_per_source,
        benign_per_source=args.benign_per_source,
        probe_per_source=args.probe_per_source,
        seed=args.seed,
    )
    mix = Counter(p.suite for p in train)
    print(f"{len(train)} training prompts {dict(mix)}, {len(probes)} probe prompts")
    if args.warm_start == "collect":
        adapter: Path | None = warm_start(args, train, out)
    elif args.warm_start == "none":
        adapter = None
    else:
        adapter = Path(args.warm_start)
    warm_done = time.perf_counter()

    arms = {algo: run_arm(algo, args, train, adapter, out) for algo in ("grpo", "ifpo")}
    arms_done = time.perf_counter()

    probes_by_policy = {"warm_start": probe(args, probes, "warm_start", adapter, out)}
    for algo, arm in arms.items():
        probes_by_policy[algo] = probe(args, probes, algo, Path(arm["final_adapter"]), out)

    from safe_context_training import plot_metrics, read_metrics

    plot = plot_metrics(
        [arms["grpo"]["metrics_file"], arms["ifpo"]["metrics_file"]],
        out / "ifpo_vs_grpo.png",
        labels=["GRPO", "IFPO"],
    )
    per_step = {
        algo: [
            {
                "step": r.step,
                "reward_mean": r.reward_mean,
                "consult_rate_harmful": r.consult_rate_harmful,
                "consult_rate_benign": r.consult_rate_benign,
                "mixed_groups": r.mixed_groups,
                "weight_max": r.weight_max,
            }
            for r in read_metrics(arm["metrics_file"])
        ]
        for algo, arm in arms.items()
    }
    summary = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "train_prompts": dict(mix),
        "probe_prompts": len(probes),
        "seconds": {
            "warm_start_this_run": round(warm_done - started, 1),
            "arms_this_run": round(arms_done - warm_done, 1),
            "total_this_run": round(time.perf_counter() - started, 1),
            **{algo: arm["seconds"] for algo, arm in arms.items()},
        },
        "per_step": per_step,
        "probe": probes_by_policy,
        "plot": str(plot),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps({"probe": probes_by_policy, "seconds": summary["seconds"]}, indent=2))
    print(f"plot: {plot}")


if __name__ == "__main__":
    main()
