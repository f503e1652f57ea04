"""`sca train`: replay traces into GRPO/IFPO updates, train online, SFT warm start, plot metrics.

``sca train --traces T.jsonl --out DIR`` is the offline command itself; ``online``, ``sft`` and
``plot`` are subcommands. The training package (torch, trl, peft) is imported inside each
command, so the rest of ``sca`` runs without the ``train`` extra.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from safe_context_agent.cli._common import cli_errors, setup_logging
from safe_context_agent.errors import ConfigError

__all__ = ["train_app"]

TRAIN_EXTRA_INSTALL = "pip install 'safe-context-agent[train]'"

train_app = typer.Typer(
    help="Train the consult policy: offline from traces (GRPO or IFPO), online against vLLM, "
    "SFT warm start, metric plots.",
    invoke_without_command=True,
    no_args_is_help=True,
)


class _Algo(StrEnum):
    ifpo = "ifpo"
    grpo = "grpo"


class _Scope(StrEnum):
    group = "group"
    batch = "batch"


class _ApplyTo(StrEnum):
    all = "all"
    positive = "positive"


class _Behaviour(StrEnum):
    ratio = "ratio"
    ignore = "ignore"


class _Judge(StrEnum):
    pattern = "pattern"
    llm = "llm"


_AlgoOpt = Annotated[
    _Algo, typer.Option("--algo", help="ifpo: inverse-frequency weighted GRPO; grpo: plain GRPO.")
]
_ScopeOpt = Annotated[
    _Scope, typer.Option("--frequency-scope", help="IFPO: count action classes per group or batch.")
]
_ApplyOpt = Annotated[
    _ApplyTo, typer.Option("--apply-to", help="IFPO: weight all advantages or positive ones only.")
]
_ClipOpt = Annotated[
    str,
    typer.Option("--weight-clip", help="IFPO weight bounds 'MIN,MAX', or 'none' for no clipping."),
]
_BehaviourOpt = Annotated[
    _Behaviour,
    typer.Option(
        "--behaviour-logprobs",
        help="ratio: PPO ratio against the recorded (behaviour) logprobs; ignore: TRL's default.",
    ),
]
_LrOpt = Annotated[float, typer.Option("--lr", help="Learning rate.")]
_BetaOpt = Annotated[
    float, typer.Option("--beta", help="KL coefficient to the base model (KL is logged when > 0).")
]
_FullOpt = Annotated[
    bool, typer.Option("--full-finetune", help="Train all weights instead of a LoRA adapter.")
]
_RankOpt = Annotated[int, typer.Option("--lora-r", help="LoRA rank (<= the server's max rank).")]
_SaveOpt = Annotated[int, typer.Option("--save-steps", help="Checkpoint every N steps (0: never).")]
_ResumeOpt = Annotated[
    str | None,
    typer.Option(
        "--resume", help="Resume from a checkpoint folder, or 'last' for the newest in --out."
    ),
]
_SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
_ModelOpt = Annotated[
    Path | None,
    typer.Option("--model", help="HF model folder to train (default: the embedded SmolLM2)."),
]
_AdapterOpt = Annotated[
    Path | None,
    typer.Option("--adapter", help="Start from this LoRA adapter (e.g. an SFT warm start)."),
]
_JudgeOpt = Annotated[
    _Judge, typer.Option("--judge", help="Refusal judge of the behaviour reward.")
]
_JudgeUrlOpt = Annotated[
    str | None, typer.Option("--judge-url", help="LLM judge endpoint (ends in /v1).")
]
_JudgeModelOpt = Annotated[str | None, typer.Option("--judge-model", help="LLM judge model.")]
_UnknownOpt = Annotated[
    float | None,
    typer.Option("--judge-unknown", help="Reward for an undecidable LLM verdict (default: error)."),
]
_WBehaviourOpt = Annotated[
    float, typer.Option("--behaviour-weight", help="Behaviour reward weight.")
]
_WCorrectOpt = Annotated[
    float, typer.Option("--correctness-weight", help="Task correctness (metadata.answer) weight.")
]
_WFormatOpt = Annotated[
    float, typer.Option("--format-weight", help="Weight of the -1 malformed-tool-call penalty.")
]
_VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")]


def _training() -> ModuleType:
    """The training package, or a one-line error naming the extra to install."""
    try:
        import accelerate  # noqa: F401
        import datasets  # noqa: F401
        import peft  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:
        typer.secho(
            f"error: sca train needs the training extra ({exc.name or 'a package'} is not "
            f"installed); install it with: {TRAIN_EXTRA_INSTALL}",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(code=2) from None
    import safe_context_training

    return safe_context_training


def _weight_clip(text: str) -> list[float] | None:
    if text.strip().lower() == "none":
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--weight-clip {text!r} is not 'MIN,MAX' (e.g. 0.25,4) or 'none'"
        ) from None
    return [low, high]


def _reward(
    training: ModuleType,
    judge: _Judge,
    judge_url: str | None,
    judge_model: str | None,
    unknown: float | None,
    weights: tuple[float, float, float],
) -> Any:
    from safe_context_agent.judges import make_judge

    behaviour, correctness, format_weight = weights
    return training.default_reward(
        make_judge(judge.value, base_url=judge_url, model=judge_model),
        behaviour=behaviour,
        correctness=correctness,
        format=format_weight,
        unknown=unknown,
    )


def _resume(resume: str | None) -> str | bool | None:
    if resume is None:
        return None
    return True if resume == "last" else resume


def _print_step(record: Any) -> None:
    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    typer.echo(
        f"step {record.step}: reward {show(record.reward_mean)}, consult {show(record.consult_rate)}"
        f" (harmful {show(record.consult_rate_harmful)}, benign {show(record.consult_rate_benign)}),"
        f" mixed groups {show(record.mixed_groups)}/{show(record.groups)},"
        f" loss {show(record.loss)}" + (f", policy {record.policy}" if record.policy else "")
    )


def _algorithm(
    algo: _Algo, scope: _Scope, apply_to: _ApplyTo, weight_clip: str, behaviour: _Behaviour
) -> dict[str, Any]:
    """The IFPOConfig fields of the advantage estimator, from the shared options."""
    return {
        "algo": algo.value,
        "frequency_scope": scope.value,
        "apply_to": apply_to.value,
        "weight_clip": _weight_clip(weight_clip),
        "behaviour_logprobs": behaviour.value,
    }


def _optimiser(lr: float, beta: float, lora_r: int, seed: int) -> dict[str, Any]:
    """The IFPOConfig fields of the update, from the shared options (LoRA alpha is 2 r)."""
    return {
        "learning_rate": lr,
        "beta": beta,
        "lora_r": lora_r,
        "lora_alpha": 2 * lora_r,
        "seed": seed,
    }


def _run_options(
    training: ModuleType,
    judging: tuple[_Judge, str | None, str | None, float | None],
    weights: tuple[float, float, float],
    model: Path | None,
    adapter: Path | None,
    resume: str | None,
) -> dict[str, Any]:
    """The keyword arguments ``train_offline`` and ``run_online`` share."""
    return {
        "reward": _reward(training, *judging, weights),
        "model": model,
        "adapter": adapter,
        "resume_from_checkpoint": _resume(resume),
        "step_hooks": [_print_step],
    }


def _config(training: ModuleType, **fields: Any) -> Any:
    save_steps = fields.pop("save_steps")
    return training.IFPOConfig(
        save_strategy="steps" if save_steps > 0 else "no",
        save_steps=max(save_steps, 1),
        disable_tqdm=False,
        **fields,
    )


@train_app.callback()
def train(
    ctx: typer.Context,
    traces: Annotated[
        list[Path] | None,
        typer.Option("--traces", help="Trace file (.jsonl, .sqlite, .parquet); repeatable."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for the adapter, checkpoints, metrics.")
    ] = None,
    algo: _AlgoOpt = _Algo.ifpo,
    group_size: Annotated[
        int | None,
        typer.Option("--group-size", help="num_generations (default: the largest group)."),
    ] = None,
    groups_per_step: Annotated[
        int, typer.Option("--groups-per-step", help="Groups per optimizer step.")
    ] = 1,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps (-1: use --epochs).")] = -1,
    epochs: Annotated[float, typer.Option("--epochs", help="Passes over the groups.")] = 1.0,
    lr: _LrOpt = 2e-5,
    beta: _BetaOpt = 0.0,
    frequency_scope: _ScopeOpt = _Scope.group,
    apply_to: _ApplyOpt = _ApplyTo.all,
    weight_clip: _ClipOpt = "0.25,4.0",
    behaviour_logprobs: _BehaviourOpt = _Behaviour.ratio,
    full_finetune: _FullOpt = False,
    lora_r: _RankOpt = 16,
    save_steps: _SaveOpt = 50,
    resume: _ResumeOpt = None,
    seed: _SeedOpt = 42,
    model: _ModelOpt = None,
    adapter: _AdapterOpt = None,
    judge: _JudgeOpt = _Judge.pattern,
    judge_url: _JudgeUrlOpt = None,
    judge_model: _JudgeModelOpt = None,
    judge_unknown: _UnknownOpt = None,
    behaviour_weight: _WBehaviourOpt = 1.0,
    correctness_weight: _WCorrectOpt = 1.0,
    format_weight: _WFormatOpt = 0.25,
    skip_bad_traces: Annotated[
        bool, typer.Option("--skip-bad-traces", help="Leave malformed records out (listed).")
    ] = False,
    verbose: _VerboseOpt = False,
) -> None:
    """Offline: replay logged traces into GRPO or IFPO updates and save a LoRA adapter in --out."""
    if ctx.invoked_subcommand is not None:
        return
    setup_logging(verbose)
    with cli_errors():
        if not traces or out is None:
            raise ConfigError("sca train needs --traces FILE and --out DIR (see sca train --help)")
        training = _training()
        replay = training.load_replay(traces, on_error="skip" if skip_bad_traces else "raise")
        report = replay.report
        typer.echo(
            f"replay: {report.groups} groups, {report.trajectories} trajectories "
            f"({report.concatenated} as one sequence, {report.per_turn} turn by turn), "
            f"{report.samples} samples; left out: {report.error_traces} errored, "
            f"{report.empty_traces} without model turns, {len(report.skipped_records)} records"
        )
        size = group_size or max(2, replay.max_group_size)
        args = _config(
            training,
            output_dir=str(out),
            num_generations=size,
            per_device_train_batch_size=size * groups_per_step,
            max_steps=steps,
            num_train_epochs=epochs,
            full_finetune=full_finetune,
            save_steps=save_steps,
            **_algorithm(algo, frequency_scope, apply_to, weight_clip, behaviour_logprobs),
            **_optimiser(lr, beta, lora_r, seed),
        )
        result = training.train_offline(
            replay,
            args,
            **_run_options(
                training,
                (judge, judge_url, judge_model, judge_unknown),
                (behaviour_weight, correctness_weight, format_weight),
                model,
                adapter,
                resume,
            ),
        )
    typer.echo(
        f"trained {result.steps} steps ({result.algo}) in {result.train_runtime_s:.0f} s; "
        f"adapter in {result.output_dir}, metrics in {result.metrics_file}"
    )


@train_app.command()
def online(
    prompts: Annotated[
        Path,
        typer.Option(
            "--prompts", help="JSONL/CSV with prompt and label (harmful|benign), optional answer."
        ),
    ],
    steps: Annotated[int, typer.Option("--steps", help="Updates (collect, score, update, load).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for adapters, traces, metrics.")],
    algo: _AlgoOpt = _Algo.ifpo,
    group_size: Annotated[int, typer.Option("--group-size", help="Samples per prompt.")] = 4,
    prompts_per_step: Annotated[
        int, typer.Option("--prompts-per-step", help="Prompts collected per step.")
    ] = 2,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="vLLM endpoint (…/v1); default: the sca serve server."),
    ] = None,
    served_model: Annotated[
        str, typer.Option("--served-model", help="Served base model name (step 0 samples it).")
    ] = "smollm2",
    pack: Annotated[str, typer.Option("--pack", help="Rule pack name or folder.")] = "general",
    temperature: Annotated[
        float, typer.Option("--temperature", help="Sampling temperature.")
    ] = 1.0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Tokens per model turn.")] = 128,
    max_concurrency: Annotated[
        int, typer.Option("--max-concurrency", help="Agent runs in flight.")
    ] = 8,
    adapter_prefix: Annotated[
        str, typer.Option("--adapter-prefix", help="Served names: <prefix>_v1, <prefix>_v2, ...")
    ] = "policy",
    lr: _LrOpt = 2e-5,
    beta: _BetaOpt = 0.0,
    frequency_scope: _ScopeOpt = _Scope.group,
    apply_to: _ApplyOpt = _ApplyTo.all,
    weight_clip: _ClipOpt = "0.25,4.0",
    behaviour_logprobs: _BehaviourOpt = _Behaviour.ratio,
    lora_r: _RankOpt = 16,
    save_steps: _SaveOpt = 10,
    resume: _ResumeOpt = None,
    seed: _SeedOpt = 42,
    model: _ModelOpt = None,
    adapter: _AdapterOpt = None,
    judge: _JudgeOpt = _Judge.pattern,
    judge_url: _JudgeUrlOpt = None,
    judge_model: _JudgeModelOpt = None,
    judge_unknown: _UnknownOpt = None,
    behaviour_weight: _WBehaviourOpt = 1.0,
    correctness_weight: _WCorrectOpt = 1.0,
    format_weight: _WFormatOpt = 0.25,
    verbose: _VerboseOpt = False,
) -> None:
    """Online: each step collects groups with the agent under the current adapter, scores them,
    updates, saves the adapter and hot-loads it into vLLM as <prefix>_v<step>."""
    setup_logging(verbose)
    with cli_errors():
        training = _training()
        from safe_context_agent import AgentConfig, SamplingParams

        agent = AgentConfig(
            base_url=base_url,
            model=served_model,
            pack=pack,
            sampling=SamplingParams(temperature=temperature, max_tokens=max_tokens),
        )
        args = _config(
            training,
            output_dir=str(out),
            num_generations=group_size,
            per_device_train_batch_size=group_size * prompts_per_step,
            max_steps=steps,
            save_steps=save_steps,
            **_algorithm(algo, frequency_scope, apply_to, weight_clip, behaviour_logprobs),
            **_optimiser(lr, beta, lora_r, seed),
        )
        result = training.run_online(
            prompts,
            args,
            agent=agent,
            **_run_options(
                training,
                (judge, judge_url, judge_model, judge_unknown),
                (behaviour_weight, correctness_weight, format_weight),
                model,
                adapter,
                resume,
            ),
            adapter_prefix=adapter_prefix,
            max_concurrency=max_concurrency,
        )
    typer.echo(
        f"trained {result.steps} online steps ({result.algo}); final policy {result.policy} "
        f"in {result.output_dir}; traces {result.traces_file}; metrics {result.metrics_file}"
    )


@train_app.command()
def sft(
    traces: Annotated[
        list[Path], typer.Option("--traces", help="Trace file to learn from; repeatable.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the SFT adapter.")],
    min_reward: Annotated[
        float, typer.Option("--min-reward", help="Keep trajectories scoring at least this.")
    ] = 1.0,
    epochs: Annotated[float, typer.Option("--epochs", help="Passes over the kept samples.")] = 1.0,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps (-1: use --epochs).")] = -1,
    lr: _LrOpt = 1e-4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per step.")] = 4,
    full_finetune: _FullOpt = False,
    lora_r: _RankOpt = 16,
    seed: _SeedOpt = 42,
    model: _ModelOpt = None,
    judge: _JudgeOpt = _Judge.pattern,
    judge_url: _JudgeUrlOpt = None,
    judge_model: _JudgeModelOpt = None,
    judge_unknown: _UnknownOpt = None,
    behaviour_weight: _WBehaviourOpt = 1.0,
    correctness_weight: _WCorrectOpt = 1.0,
    format_weight: _WFormatOpt = 0.25,
    verbose: _VerboseOpt = False,
) -> None:
    """SFT warm start: fine-tune (TRL SFTTrainer) on the model tokens of trajectories whose
    reward is at least --min-reward (rejection sampling)."""
    setup_logging(verbose)
    with cli_errors():
        training = _training()
        result = training.train_sft(
            traces,
            out,
            min_reward=min_reward,
            reward=_reward(
                training,
                judge,
                judge_url,
                judge_model,
                judge_unknown,
                (behaviour_weight, correctness_weight, format_weight),
            ),
            model=model,
            full_finetune=full_finetune,
            lora_r=lora_r,
            lora_alpha=2 * lora_r,
            epochs=epochs,
            max_steps=steps,
            learning_rate=lr,
            batch_size=batch_size,
            seed=seed,
        )
    typer.echo(
        f"SFT on {result.kept} of {result.trajectories} trajectories ({result.samples} samples, "
        f"{result.label_tokens} label tokens), {result.steps} steps; adapter in {result.output_dir}"
    )


@train_app.command()
def plot(
    metrics: Annotated[
        list[Path], typer.Argument(help="metrics.jsonl of a run; several are overlaid.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Image to write (.png, .svg, .pdf).")],
    label: Annotated[
        list[str] | None, typer.Option("--label", help="Legend name per file; repeatable.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Also print the last record of each file as JSON.")
    ] = False,
) -> None:
    """Plot reward, consult rates (all / harmful / benign), group counts, loss and KL per step."""
    from safe_context_training import plot_metrics, read_metrics

    with cli_errors():
        written = plot_metrics(metrics, out, labels=label or None)
        if as_json:
            for path in metrics:
                typer.echo(json.dumps(read_metrics(path)[-1].model_dump(mode="json")))
    typer.echo(f"wrote {written}")


@train_app.command()
def synthesize(
    prompts: Annotated[
        Path, typer.Argument(help="CSV/JSONL with prompt and label (harmful|benign).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Demonstrations file (JSONL traces).")],
    pack: Annotated[str, typer.Option("--pack", help="Rule pack name or folder.")] = "general",
    suite: Annotated[
        str,
        typer.Option(
            "--suite",
            help="Read PROMPTS as this benchmark suite (e.g. xstest: its benign rows consult); "
            "generic: prompt and label columns.",
        ),
    ] = "generic",
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Endpoint of the base model (default: sca serve's)."),
    ] = None,
    base_model: Annotated[
        str, typer.Option("--base-model", help="Served base model that answers benign prompts.")
    ] = "smollm2",
    tries: Annotated[int, typer.Option("--tries", help="Samples per benign prompt.")] = 4,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Token budget of a benign answer.")
    ] = 160,
    seed: _SeedOpt = 0,
    verbose: _VerboseOpt = False,
) -> None:
    """Demonstrations from labelled prompts and a rule pack, as traces: harmful prompts consult
    and refuse in the rule's words; risky-sounding benign ones consult and answer; plain ones
    answer directly (the base model's own answers, filtered). Resumable."""
    setup_logging(verbose)
    with cli_errors():
        training = _training()
        from safe_context_agent.eval import load_suite, resolve_suite_name

        items = load_suite(resolve_suite_name(suite), prompts)
        report = training.synthesize(
            items,
            out,
            training.SynthesisConfig(
                pack=pack,
                base_url=base_url,
                model=base_model,
                tries=tries,
                max_tokens=max_tokens,
                seed=seed,
            ),
            progress=not verbose,
        )
    typer.echo(
        f"wrote {sum(report.written.values())} demonstrations {report.written} to {report.out} "
        f"({report.already_done} already there, dropped {report.dropped}) in {report.seconds:.0f} s"
    )


@train_app.command()
def recipe(
    out: Annotated[Path, typer.Option("--out", help="Run folder; rerun to resume.")] = Path(
        "runs/recipe"
    ),
    data: Annotated[
        Path, typer.Option("--data", help="Public benchmark folder (shared/data).")
    ] = Path("../shared/data"),
    pack: Annotated[str, typer.Option("--pack", help="Rule pack name or folder.")] = "general",
    quick: Annotated[
        bool, typer.Option("--quick", help="Every stage at toy size (minutes; for CI).")
    ] = False,
    baselines: Annotated[
        bool,
        typer.Option("--baselines", help="Also the context-distillation baseline and a GRPO arm."),
    ] = False,
    rl_steps: Annotated[
        int | None, typer.Option("--rl-steps", help="Online RL updates per arm (0: none).")
    ] = None,
    sft_epochs: Annotated[
        float | None, typer.Option("--sft-epochs", help="SFT passes over the demonstrations.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="torch threads for training (all cores).")
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="vLLM endpoint (default: the running server, else one "
            "started for the stages that need it).",
        ),
    ] = None,
    seed: _SeedOpt = 0,
    verbose: _VerboseOpt = False,
) -> None:
    """The whole recipe, resumable by stage: synthesize -> SFT -> evaluate (dev split, three
    modes) -> online IFPO from the SFT adapter -> evaluate -> model card."""
    setup_logging(verbose)
    with cli_errors():
        training = _training()
        fields: dict[str, Any] = dict(training.QUICK_RECIPE) if quick else {}
        fields.update(
            {
                key: value
                for key, value in {
                    "rl_steps": rl_steps,
                    "sft_epochs": sft_epochs,
                    "threads": threads,
                    "base_url": base_url,
                }.items()
                if value is not None
            }
        )
        config = training.RecipeConfig(
            out=out, data=data, pack=pack, seed=seed, baselines=baselines, **fields
        )
        result = training.run_recipe(config, say=typer.echo, progress=not verbose)
    total = sum(stage.seconds for stage in result.stages)
    typer.echo(f"recipe finished ({total:.0f} s of stages); model card {result.card}")
