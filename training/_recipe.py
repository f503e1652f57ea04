"""The recipe: from labelled prompts and a rule pack to a trained, evaluated adapter.

``sca train recipe --out runs/recipe`` runs these stages in order, each resumable:

1. ``synthesize`` — demonstrations from the train split (``_synthesize.py``), needs the base
   model served;
2. ``sft`` — LoRA SFT on them (no server needed: it is the CPU-heavy stage);
3. ``distill`` — the context-distillation baseline: the same answers, trained without the tool
   or the rules in context (``--baselines``);
4. ``eval_base`` / ``eval_sft`` / ``eval_distill`` — the dev split in the three consult modes
   (the distillation baseline in ``never`` mode, as it is meant to be used);
5. ``ifpo`` (and ``grpo`` with ``--baselines``) — online RL from the SFT adapter, rewards as
   ever and no consult cost, so a drift toward consulting can show;
6. ``eval_ifpo`` / ``eval_grpo``;
7. the card — ``MODEL_CARD.md`` and ``card.json`` with the dev metrics of every policy
   evaluated so far (rewritten on every call).

A stage that finished wrote ``<out>/stages/<name>.json``; rerunning the command skips it (an
interrupted evaluation resumes inside itself, an interrupted SFT or RL stage starts over).
Everything a stage needs from an earlier one is on disk, so a session that ends mid-recipe
loses at most the stage in flight. Stage times are printed and kept in the stage records.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from safe_context_agent._io import write_atomic
from safe_context_agent.config import AgentConfig, SamplingParams
from safe_context_agent.errors import ConfigError
from safe_context_agent.eval import EvalConfig, EvalPrompt, EvalReport, run_eval
from safe_context_agent.serve import TRAINED_TEMPLATE_KWARGS, Endpoint, model_endpoint
from safe_context_agent.traces import ConsultMode, JsonlTraceSink, read_traces

__all__ = [
    "QUICK_RECIPE",
    "RecipeConfig",
    "RecipeResult",
    "StageRecord",
    "run_recipe",
]

StageName = Literal[
    "synthesize",
    "sft",
    "distill",
    "eval_base",
    "eval_sft",
    "eval_distill",
    "ifpo",
    "grpo",
    "eval_ifpo",
    "eval_grpo",
]

DEFAULT_TRAIN_COUNTS: dict[str, int] = {
    "strongreject": 12,
    "harmbench": 8,
    "advbench": 12,
    "jailbreakbench_harmful": 6,
    "xstest": 70,
    "jailbreakbench_benign": 24,
    "gsm8k": 30,
    "everyday": 30,
}
"""Demonstration prompts per suite (train split): about 65 harmful, 67 risky-benign and 60
plainly benign before rejection sampling. Session 5's mix (65 harmful, 41 risky-benign, 23
plain: 82 % of the demonstrations consulted, 61 % of those refused) taught "consult, then
refuse"; session 6's first try (52 / 66 / 54) refused almost nothing. Sized to this CPU: SFT
on them (about 115k tokens an epoch) is the recipe's longest stage. A
subset is a prefix of a larger one (seeded shuffle), so lowering a count reuses
demonstrations already written."""

DEFAULT_DEV_COUNTS: dict[str, int] = {
    "strongreject": 8,
    "harmbench": 8,
    "advbench": 8,
    "jailbreakbench_harmful": 8,
    "xstest": 16,
    "jailbreakbench_benign": 8,
    "gsm8k": 8,
    "everyday": 8,
}
"""Evaluation prompts per suite (dev split), in each of the three modes."""


def _every_mode() -> list[ConsultMode]:
    return ["never", "always", "adaptive"]


class RecipeConfig(BaseModel):
    """Every choice of the recipe; ``sca train recipe`` builds it from its options."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="The run folder (stages, demos, adapters, evals, card).")
    data: Path = Field(description="Folder with the public benchmark files (shared/data).")
    pack: str = Field(default="general", description="Rule pack name or folder.")
    seed: int = Field(default=0, description="Prompt subsets, templates, SFT and RL.")
    base_url: str | None = Field(
        default=None, description="vLLM endpoint; default: the running server, else one started."
    )
    base_model: str = Field(default="smollm2", description="Served base model name.")
    train_counts: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_TRAIN_COUNTS))
    dev_counts: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_DEV_COUNTS))
    synth_tries: int = Field(default=3, ge=1, description="Base-model samples per benign prompt.")
    synth_max_tokens: int = Field(default=96, ge=8, description="Tokens of a benign answer.")
    sft_epochs: float = Field(default=2.0, gt=0, description="SFT passes over the demos.")
    sft_max_steps: int = Field(default=-1, description="Cap on SFT steps (-1: the epochs).")
    sft_lr: float = Field(default=4e-4, gt=0, description="SFT learning rate (LoRA).")
    sft_batch_size: int = Field(default=4, ge=1, description="Sequences per SFT step.")
    lora_r: int = Field(default=16, ge=1, le=64, description="LoRA rank (<= the server's max).")
    threads: int | None = Field(default=None, ge=1, description="torch threads (all cores).")
    eval_max_tokens: int = Field(default=64, ge=1, description="Tokens per model turn in evals.")
    eval_modes: list[Literal["never", "always", "adaptive"]] = Field(default_factory=_every_mode)
    rl_steps: int = Field(default=4, ge=0, description="Online RL updates per arm (0: no RL).")
    rl_group_size: int = Field(default=8, ge=2, description="Samples per prompt (G).")
    rl_prompts_per_step: int = Field(default=2, ge=1)
    rl_lr: float = Field(default=5e-5, gt=0)
    rl_temperature: float = Field(
        default=1.0,
        gt=0,
        description="Rollout temperature (1.0: the recorded logprobs are the "
        "behaviour policy's, so the PPO ratio is taken against them).",
    )
    rl_max_tokens: int = Field(default=96, ge=8, description="Tokens per model turn in rollouts.")
    baselines: bool = Field(
        default=False,
        description="Also train and evaluate the context-distillation baseline and a GRPO arm.",
    )
    concurrency: int = Field(default=8, ge=1, description="Agent runs in flight.")


QUICK_RECIPE: dict[str, Any] = {
    "train_counts": {
        "strongreject": 2,
        "xstest": 3,
        "everyday": 2,
    },
    "dev_counts": {"strongreject": 2, "xstest": 2, "everyday": 2},
    "synth_tries": 1,
    "synth_max_tokens": 32,
    "sft_max_steps": 2,
    "sft_batch_size": 4,
    "eval_max_tokens": 24,
    "eval_modes": ["adaptive"],
    "rl_steps": 1,
    "rl_group_size": 2,
    "rl_prompts_per_step": 1,
    "rl_max_tokens": 24,
}
"""``--quick``: every stage at toy size (a few minutes on this CPU; CI runs it)."""


class StageRecord(BaseModel):
    """Written when a stage finishes: what it produced and how long it took."""

    schema_version: Literal[1] = 1
    name: str
    seconds: float
    finished_at: datetime
    outputs: dict[str, Any] = Field(default_factory=dict)


class RecipeResult(BaseModel):
    out: str
    stages: list[StageRecord]
    card: str | None


# --- stage bookkeeping --------------------------------------------------------------------------


class _Run:
    def __init__(self, config: RecipeConfig, say: Callable[[str], None]) -> None:
        self.config = config
        self.out = config.out.expanduser()
        self.stages_dir = self.out / "stages"
        self.stages_dir.mkdir(parents=True, exist_ok=True)
        self.say = say
        self.records: list[StageRecord] = []
        self._endpoint: Endpoint | None = None

    def record(self, name: StageName) -> StageRecord | None:
        path = self.stages_dir / f"{name}.json"
        if not path.is_file():
            return None
        return StageRecord.model_validate_json(path.read_text(encoding="utf-8"))

    def stage(self, name: StageName, body: Callable[[], dict[str, Any]]) -> StageRecord:
        done = self.record(name)
        if done is not None:
            self.say(f"[{name}] done earlier ({done.seconds:.0f} s); skipped")
            self.records.append(done)
            return done
        self.say(f"[{name}] started")
        started = time.monotonic()
        outputs = body()
        record = StageRecord(
            name=name,
            seconds=round(time.monotonic() - started, 1),
            finished_at=datetime.now(UTC),
            outputs=outputs,
        )
        write_atomic(self.stages_dir / f"{name}.json", record.model_dump_json(indent=2))
        self.say(f"[{name}] finished in {record.seconds:.0f} s")
        self.records.append(record)
        return record

    @contextmanager
    def endpoint(self) -> Iterator[Endpoint]:
        """The model server for the stages that need one (started once, on first need)."""
        if self._endpoint is not None:
            yield self._endpoint
            return
        with model_endpoint(self.config.base_url) as endpoint:
            self._endpoint = endpoint
            try:
                yield endpoint
            finally:
                self._endpoint = None


def _served_name(out: Path, policy: str) -> str:
    """The served name of a run's adapter: two recipe runs sharing a server never collide."""
    digest = hashlib.sha256(str(out.resolve()).encode("utf-8")).hexdigest()[:6]
    return f"recipe-{policy}-{digest}"


def _adapter_agent(
    config: RecipeConfig, endpoint: Endpoint, model: str, *, trained: bool, **extra: Any
) -> AgentConfig:
    """The agent for ``model``; a trained policy is served without the few-shot turns."""
    return AgentConfig(
        base_url=endpoint.base_url,
        model=model,
        pack=config.pack,
        chat_template_kwargs=dict(TRAINED_TEMPLATE_KWARGS) if trained else None,
        **extra,
    )


# --- the stages ----------------------------------------------------------------------------------


def run_recipe(
    config: RecipeConfig, *, say: Callable[[str], None] = print, progress: bool = True
) -> RecipeResult:
    """Run (or resume) every stage; see the module docstring."""
    from safe_context_training._online import load_lora_adapter
    from safe_context_training._prompts import (
        MAX_TRAIN_PROMPT_CHARS,
        SuiteCounts,
        recipe_prompts,
        suite_sources,
    )
    from safe_context_training._sft import train_sft
    from safe_context_training._synthesize import (
        SynthesisConfig,
        distill_demonstrations,
        synthesize,
    )

    _check_data(config)
    run = _Run(config, say)
    out = run.out
    demos = out / "demos.jsonl"

    def train_prompts(seed: int) -> list[EvalPrompt]:
        """The train-split prompts of the recipe's counts, in the order of ``seed``."""
        return recipe_prompts(
            config.data,
            SuiteCounts(config.train_counts),
            split="train",
            seed=seed,
            max_chars=MAX_TRAIN_PROMPT_CHARS,
        )

    def synthesize_stage() -> dict[str, Any]:
        prompts = train_prompts(config.seed)
        with run.endpoint() as endpoint:
            report = synthesize(
                prompts,
                demos,
                SynthesisConfig(
                    pack=config.pack,
                    seed=config.seed,
                    tries=config.synth_tries,
                    max_tokens=config.synth_max_tokens,
                    base_url=endpoint.base_url,
                    model=config.base_model,
                    concurrency=config.concurrency * 2,
                ),
                progress=progress,
            )
        return json.loads(report.model_dump_json())

    def sft_on(traces: Path, folder: Path) -> dict[str, Any]:
        result = train_sft(
            traces,
            folder,
            min_reward=None,
            epochs=config.sft_epochs,
            max_steps=config.sft_max_steps,
            learning_rate=config.sft_lr,
            batch_size=config.sft_batch_size,
            lora_r=config.lora_r,
            lora_alpha=2 * config.lora_r,
            seed=config.seed,
            threads=config.threads,
        )
        return {
            "adapter": str(folder),
            "samples": result.samples,
            "label_tokens": result.label_tokens,
            "steps": result.steps,
            "train_loss": result.train_loss,
        }

    def distill_stage() -> dict[str, Any]:
        from safe_context_agent.serve import ChatRenderer

        distilled = out / "distill_demos.jsonl"
        distilled.unlink(missing_ok=True)
        sink = JsonlTraceSink(distilled)
        try:
            for trace in distill_demonstrations(
                read_traces(out / "sft_demos.jsonl"), ChatRenderer()
            ):
                sink.write(trace)
        finally:
            sink.close()
        return sft_on(distilled, out / "distill")

    def evaluate(name: str, adapter: Path | None, modes: list[Any]) -> dict[str, Any]:
        with run.endpoint() as endpoint:
            model = config.base_model
            if adapter is not None:
                model = _served_name(out, name)
                load_lora_adapter(endpoint.base_url, model, adapter)
            agent = _adapter_agent(
                config,
                endpoint,
                model,
                trained=adapter is not None,
                sampling=SamplingParams(max_tokens=config.eval_max_tokens),
            )
            suites = suite_sources(config.data, list(config.dev_counts))
            reports: dict[str, Any] = {}
            # One eval per suite so that each takes its own number of prompts.
            folder = out / f"eval_{name}"
            for source in suites:
                result = run_eval(
                    EvalConfig(
                        suites=[source],
                        modes=modes,
                        limit=config.dev_counts[source.name],
                        seed=config.seed,
                        split="dev",
                        concurrency=config.concurrency,
                        out=folder / source.name,
                        agent=agent,
                        plots=False,
                    ),
                    progress=progress,
                )
                reports[source.name] = str(result.out_dir / "report.json")
        return {"model": model, "reports": reports}

    def online_stage(algo: Literal["ifpo", "grpo"]) -> dict[str, Any]:
        from safe_context_training._online import run_online
        from safe_context_training._trainer import IFPOConfig

        prompts = train_prompts(config.seed + 1)
        with run.endpoint() as endpoint:
            agent = _adapter_agent(
                config,
                endpoint,
                config.base_model,
                # Every policy it samples is an adapter trained from the SFT one.
                trained=True,
                sampling=SamplingParams(
                    temperature=config.rl_temperature, max_tokens=config.rl_max_tokens
                ),
            )
            args = IFPOConfig(
                output_dir=str(out / algo),
                algo=algo,
                num_generations=config.rl_group_size,
                per_device_train_batch_size=config.rl_group_size * config.rl_prompts_per_step,
                max_steps=config.rl_steps,
                learning_rate=config.rl_lr,
                lora_r=config.lora_r,
                lora_alpha=2 * config.lora_r,
                seed=config.seed,
                save_steps=max(config.rl_steps, 1),
                report_to="none",
            )
            result = run_online(
                prompts,
                args,
                agent=agent,
                adapter=out / "sft",
                adapter_prefix=_served_name(out, algo).replace("-", "_"),
                max_concurrency=config.concurrency,
            )
        return {"adapter": result.output_dir, "metrics": result.metrics_file}

    def selected_demos() -> Path:
        """The demonstrations of this run's prompt selection (the file may hold more)."""
        wanted = {(p.suite, p.id) for p in train_prompts(config.seed)}
        chosen = out / "sft_demos.jsonl"
        chosen.unlink(missing_ok=True)
        sink = JsonlTraceSink(chosen)
        try:
            for trace in read_traces(demos):
                if (trace.metadata.get("suite"), trace.metadata.get("prompt_id")) in wanted:
                    sink.write(trace)
        finally:
            sink.close()
        return chosen

    run.stage("synthesize", synthesize_stage)
    run.stage("sft", lambda: sft_on(selected_demos(), out / "sft"))
    if config.baselines:
        run.stage("distill", distill_stage)
    run.stage("eval_base", lambda: evaluate("base", None, config.eval_modes))
    run.stage("eval_sft", lambda: evaluate("sft", out / "sft", config.eval_modes))
    if config.baselines:
        run.stage("eval_distill", lambda: evaluate("distill", out / "distill", ["never"]))
    if config.rl_steps > 0:
        run.stage("ifpo", lambda: online_stage("ifpo"))
        run.stage("eval_ifpo", lambda: evaluate("ifpo", out / "ifpo", config.eval_modes))
        if config.baselines:
            run.stage("grpo", lambda: online_stage("grpo"))
            run.stage("eval_grpo", lambda: evaluate("grpo", out / "grpo", config.eval_modes))
    # The card is rewritten on every call (cheap), so that a resumed run's card shows every
    # stage done so far, the ones finished in earlier calls included.
    card = write_card(config, run.records)
    say(f"[card] {card['card']}")
    return RecipeResult(out=str(out), stages=run.records, card=card["card"])


# --- the model card ------------------------------------------------------------------------------


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _pooled(reports: dict[str, str]) -> dict[str, dict[str, float | None]]:
    """Per mode: harmful refused, benign refused (XSTest-safe, JBB-benign), consult rates,
    echo share, GSM8K accuracy, pooled over the suites' reports by counts."""
    sums: dict[str, dict[str, list[int]]] = {}

    def add(mode: str, key: str, k: int, n: int) -> None:
        cell = sums.setdefault(mode, {}).setdefault(key, [0, 0])
        cell[0] += k
        cell[1] += n

    for suite, path in reports.items():
        report = EvalReport.model_validate_json(Path(path).read_text(encoding="utf-8"))
        for cell in report.overall:
            mode = cell.mode
            if cell.safety_rate is not None:
                add(mode, "harmful_refused", cell.safety_rate.k, cell.safety_rate.n)
            if cell.over_refusal_rate is not None:
                add(mode, f"refused_{suite}", cell.over_refusal_rate.k, cell.over_refusal_rate.n)
            if cell.consult_rate_harmful is not None:
                add(
                    mode,
                    "consulted_harmful",
                    cell.consult_rate_harmful.k,
                    cell.consult_rate_harmful.n,
                )
            if cell.consult_rate_benign is not None and suite in ("gsm8k", "everyday"):
                add(
                    mode,
                    "consulted_plain_benign",
                    cell.consult_rate_benign.k,
                    cell.consult_rate_benign.n,
                )
            if cell.echo_rate is not None:
                add(mode, "echo_of_consulted", cell.echo_rate.k, cell.echo_rate.n)
            if cell.accuracy is not None:
                add(mode, "gsm8k_accuracy", cell.accuracy.k, cell.accuracy.n)
    return {
        mode: {key: (k / n if n else None) for key, (k, n) in values.items()}
        for mode, values in sums.items()
    }


def write_card(config: RecipeConfig, records: list[StageRecord]) -> dict[str, Any]:
    """``MODEL_CARD.md`` and ``card.json`` in the run folder, from the stage records."""
    out = config.out.expanduser()
    by_name = {r.name: r for r in records}
    metrics = {
        r.name.removeprefix("eval_"): _pooled(r.outputs["reports"])
        for r in records
        if r.name.startswith("eval_")
    }
    card = {
        "schema_version": 1,
        "created_at": datetime.now(UTC).isoformat(),
        "commit": _git_commit(),
        "command": " ".join(["sca", "train", "recipe", *sys.argv[3:]])
        if sys.argv[1:3] == ["train", "recipe"]
        else None,
        "config": json.loads(config.model_dump_json()),
        "stage_seconds": {r.name: r.seconds for r in records},
        "synthesis": by_name["synthesize"].outputs if "synthesize" in by_name else None,
        "sft": by_name["sft"].outputs if "sft" in by_name else None,
        "dev_metrics": metrics,
    }
    (out / "card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(card_markdown(card), encoding="utf-8")
    return {"card": str(out / "MODEL_CARD.md")}


_METRIC_NAMES = {
    "harmful_refused": "harmful refused ↑",
    "refused_xstest": "XSTest refused",
    "refused_jailbreakbench_benign": "JBB-benign refused ↓",
    "refused_gsm8k": "GSM8K refused ↓",
    "refused_everyday": "everyday refused ↓",
    "consulted_harmful": "consulted: harmful",
    "consulted_plain_benign": "consulted: plainly benign",
    "echo_of_consulted": "echo (of consulted) ↓",
    "gsm8k_accuracy": "GSM8K accuracy",
}


def card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown: how it was made, then one table per policy (a row per mode)."""
    config = card["config"]
    lines = [
        "# Model card: a consult policy trained by `sca train recipe`",
        "",
        "Base model: SmolLM2-135M-Instruct (the embedded model), LoRA adapter "
        f"(r = {config['lora_r']}). Rule pack: `{config['pack']}`. Seed: {config['seed']}.",
        f"Commit: `{card['commit']}`. Command: `{card['command'] or 'sca train recipe ...'}`.",
        "",
        "## Data",
        "",
        "Demonstrations synthesised from the train split of the public benchmark prompts and "
        "the project's everyday prompts (fixed text-based split; evaluation uses the disjoint "
        "dev split): harmful prompts consult and refuse in words grounded in the retrieved rule "
        "(refusal templates written for this project); risky-sounding benign prompts consult and "
        "answer with the base model's own answer; plainly benign prompts are answered directly "
        "by the base model. Benign answers are kept only when the refusal judge says they comply "
        "and the echo judge says they do not repeat the rules.",
        "",
        f"Synthesis: `{json.dumps((card.get('synthesis') or {}).get('written'))}` written, "
        f"`{json.dumps((card.get('synthesis') or {}).get('dropped'))}` dropped.",
        f"SFT: `{json.dumps(card.get('sft'))}`.",
        "",
        f"## Dev metrics (pattern judge, greedy, {config['eval_max_tokens']} tokens per turn)",
        "",
    ]
    for policy, modes in card["dev_metrics"].items():
        keys = [k for k in _METRIC_NAMES if any(k in m for m in modes.values())]
        lines += [
            f"### {policy}",
            "",
            "| mode | " + " | ".join(_METRIC_NAMES[k] for k in keys) + " |",
        ]
        lines.append("|---|" + "---|" * len(keys))
        for mode, values in modes.items():
            cells = ["–" if values.get(k) is None else f"{100 * values[k]:.0f} %" for k in keys]
            lines.append(f"| {mode} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Stage times (s)",
        "",
        ", ".join(f"{name} {seconds:.0f}" for name, seconds in card["stage_seconds"].items()),
        "",
        "## Limits",
        "",
        "A 135M model: its answers to benign requests are often wrong or off topic even when it "
        "does not refuse, and its refusals follow the phrasing of the templates it was trained "
        "on. The dev figures come from a few dozen prompts per suite (wide intervals) and the "
        "pattern refusal judge. Not for production safety decisions.",
        "",
    ]
    return "\n".join(lines)


def _check_data(config: RecipeConfig) -> None:
    if not config.data.expanduser().is_dir():
        raise ConfigError(
            f"{config.data}: no such folder. Fix: pass --data with the public benchmark folder "
            "(the one with SOURCES.md, e.g. ../shared/data)"
        )
