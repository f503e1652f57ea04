"""`sca train`: replay traces into GRPO/IFPO updates, train online, SFT warm start, plot metrics.

``sca train --traces T.jsonl --out DIR`` is the offline command itself; ``online``, ``sft`` and
``plot`` are subcommands. Their training flags are built from the option dataclasses of
``safe_context_training._options`` (help, default, choices and bounds declared once, as TRL's
``TrlParser`` does with its configs); that module is torch-free, and the training stack (torch,
trl, peft) is imported inside each command, so the rest of ``sca`` runs without the ``train``
extra.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
from safe_context_training import (
    DEFAULT_ONLINE_SAMPLING,
    IFPOOptions,
    OnlineOptions,
    RewardOptions,
    SFTOptions,
    weight_clip_bounds,
)

from safe_context_agent.cli._common import cli_errors, setup_logging
from safe_context_agent.cli._flags import REQUIRED, Flags, FlagText, with_flags
from safe_context_agent.config import AgentConfig, option, validate_settings
from safe_context_agent.errors import ConfigError

__all__ = ["train_app"]

TRAIN_EXTRA_INSTALL = "pip install 'safe-context-agent[train]'"

train_app = typer.Typer(
    help="Train the consult policy: offline from traces (GRPO or IFPO), online against vLLM, "
    "SFT warm start, metric plots.",
    invoke_without_command=True,
    no_args_is_help=True,
)


def _weight_clip(text: str) -> list[float] | None:
    if text.strip().lower() == "none":
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--weight-clip {text!r} is not 'MIN,MAX' (e.g. 0.25,4) or 'none'"
        ) from None
    return weight_clip_bounds([low, high], "--weight-clip")


@dataclass
class _RunArguments:
    """The flags of ``sca train`` and ``sca train online`` that are not IFPOConfig options:
    where the data comes from and goes, the batch shape, the run's length and checkpoints."""

    traces: list[Path] | None = option(
        None, help="Trace file (.jsonl, .sqlite, .parquet); repeatable."
    )
    prompts: Path | None = option(
        None, help="JSONL/CSV with prompt and label (harmful|benign), optional answer."
    )
    out: Path | None = option(None, help="Folder for the adapter, checkpoints, metrics, traces.")
    group_size: int | None = option(
        None, ge=2, help="Samples per prompt (num_generations); offline default: the largest group."
    )
    groups_per_step: int = option(1, ge=1, help="Groups (prompts) per optimizer step.")
    steps: int = option(-1, ge=-1, help="Optimizer steps (-1: use --epochs).")
    epochs: float = option(1.0, gt=0.0, allow_inf_nan=False, help="Passes over the groups.")
    beta: float = option(
        0.0,
        ge=0.0,
        allow_inf_nan=False,
        help="KL coefficient to the base model (KL is logged when > 0).",
    )
    save_steps: int = option(50, ge=0, help="Checkpoint every N steps (0: never).")
    resume: str | None = option(
        None, help="Resume from a checkpoint folder, or 'last' for the newest in --out."
    )
    seed: int = option(42, ge=0, help="Random seed.")
    model: Path | None = option(
        None, help="HF model folder to train (default: the embedded SmolLM2)."
    )
    adapter: Path | None = option(
        None, help="Start from this LoRA adapter (e.g. an SFT warm start)."
    )
    skip_bad_traces: bool = option(False, help="Leave malformed records out (listed).")


# Shared by sca train and sca train online (sca train sft has its own update options).
_ADVANTAGES = {
    "algo": "--algo",
    "frequency_scope": "--frequency-scope",
    "apply_to": "--apply-to",
    "weight_clip": "--weight-clip",
    "behaviour_logprobs": "--behaviour-logprobs",
}
_WEIGHT_CLIP_TEXT = FlagText(
    _weight_clip,
    ",".join(f"{bound:g}" for bound in IFPOOptions().clip_bounds or ()),
    metavar="MIN,MAX",
    note="Here: MIN,MAX, or none.",
)
_REWARD_FLAGS = Flags(
    RewardOptions,
    {name: "--" + name.replace("_", "-") for name in RewardOptions.__dataclass_fields__},
    panel="Reward",
)
_RUN_FLAGS = {"steps": "--steps", "beta": "--beta", "resume": "--resume", "seed": "--seed"}
_POLICY_FLAGS = {"model": "--model", "adapter": "--adapter"}


def _ifpo_flags(*, full_finetune: bool) -> Flags:
    names = {**_ADVANTAGES, "learning_rate": "--lr", "lora_r": "--lora-r"}
    if full_finetune:
        names["full_finetune"] = "--full-finetune"
    return Flags(IFPOOptions, names, texts={"weight_clip": _WEIGHT_CLIP_TEXT}, panel="IFPO")


_OFFLINE_FLAGS = (
    Flags(
        _RunArguments,
        {
            "traces": "--traces",
            "out": "--out",
            "group_size": "--group-size",
            "groups_per_step": "--groups-per-step",
            "epochs": "--epochs",
            "save_steps": "--save-steps",
            **_RUN_FLAGS,
            **_POLICY_FLAGS,
            "skip_bad_traces": "--skip-bad-traces",
        },
    ),
    _ifpo_flags(full_finetune=True),
    _REWARD_FLAGS,
)
_ONLINE_FLAGS = (
    Flags(
        _RunArguments,
        {
            "prompts": "--prompts",
            "out": "--out",
            "group_size": "--group-size",
            "groups_per_step": "--prompts-per-step",
            "save_steps": "--save-steps",
            **_RUN_FLAGS,
            **_POLICY_FLAGS,
        },
        defaults={
            "prompts": REQUIRED,
            "out": REQUIRED,
            "steps": REQUIRED,
            "group_size": 4,
            "groups_per_step": 2,
            "save_steps": 10,
        },
    ),
    Flags(
        OnlineOptions,
        {"max_concurrency": "--max-concurrency", "adapter_prefix": "--adapter-prefix"},
        panel="Serving",
    ),
    _ifpo_flags(full_finetune=False),
    _REWARD_FLAGS,
)
_SFT_FLAGS = (
    Flags(
        _RunArguments,
        {"traces": "--traces", "out": "--out", "model": "--model"},
        defaults={"traces": REQUIRED, "out": REQUIRED},
    ),
    Flags(
        SFTOptions,
        {
            "min_reward": "--min-reward",
            "epochs": "--epochs",
            "max_steps": "--steps",
            "learning_rate": "--lr",
            "batch_size": "--batch-size",
            "full_finetune": "--full-finetune",
            "lora_r": "--lora-r",
            "seed": "--seed",
        },
        panel="SFT",
    ),
    _REWARD_FLAGS,
)

_SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
_VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")]


def _flag_values(flag_sets: tuple[Flags, ...], given: dict[str, Any], command: str) -> Any:
    """Each flag set's values, checked (one-line error naming the flag), in one namespace."""
    values: dict[str, Any] = {}
    for flags in flag_sets:
        values.update(flags.values(given, source=f"{command} flags"))
    return _Values(values)


class _Values(dict[str, Any]):
    """The checked flag values, by field name; ``pick(cls)`` keeps a dataclass's fields."""

    def pick(self, options: type) -> dict[str, Any]:
        names = {f.name for f in dataclasses.fields(options)}
        return {k: v for k, v in self.items() if k in names}


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


def _config(training: ModuleType, flags: _Values, **fields: Any) -> Any:
    """The IFPOConfig of a run: the IFPO flags as given (LoRA alpha is 2 r), the run's length,
    KL, seed and checkpoints, and the batch shape in ``fields``."""
    save_steps = flags["save_steps"]
    return training.IFPOConfig(
        **flags.pick(IFPOOptions),
        lora_alpha=2 * flags["lora_r"],
        max_steps=flags["steps"],
        beta=flags["beta"],
        seed=flags["seed"],
        save_strategy="steps" if save_steps > 0 else "no",
        save_steps=max(save_steps, 1),
        disable_tqdm=False,
        **fields,
    )


def _run_options(flags: _Values) -> dict[str, Any]:
    """The keyword arguments ``train_offline`` and ``run_online`` share."""
    return {
        "reward": _training().reward_from_options(RewardOptions(**flags.pick(RewardOptions))),
        "model": flags["model"],
        "adapter": flags["adapter"],
        "resume_from_checkpoint": _resume(flags["resume"]),
        "step_hooks": [_print_step],
    }


@train_app.callback()
@with_flags(*_OFFLINE_FLAGS)
def train(ctx: typer.Context, verbose: _VerboseOpt = False, **given: Any) -> None:
    """Offline: replay logged traces into GRPO or IFPO updates and save a LoRA adapter in --out."""
    if ctx.invoked_subcommand is not None:
        return
    setup_logging(verbose)
    with cli_errors():
        flags = _flag_values(_OFFLINE_FLAGS, given, "sca train")
        traces, out = flags["traces"], flags["out"]
        if not traces or out is None:
            raise ConfigError("sca train needs --traces FILE and --out DIR (see sca train --help)")
        training = _training()
        replay = training.load_replay(
            traces, on_error="skip" if flags["skip_bad_traces"] else "raise"
        )
        report = replay.report
        typer.echo(
            f"replay: {report.groups} groups, {report.trajectories} trajectories "
            f"({report.concatenated} as one sequence, {report.per_turn} turn by turn), "
            f"{report.samples} samples; left out: {report.error_traces} errored, "
            f"{report.empty_traces} without model turns, {len(report.skipped_records)} records"
        )
        size = flags["group_size"] or max(2, replay.max_group_size)
        args = _config(
            training,
            flags,
            output_dir=str(out),
            num_generations=size,
            per_device_train_batch_size=size * flags["groups_per_step"],
            num_train_epochs=flags["epochs"],
        )
        result = training.train_offline(replay, args, **_run_options(flags))
    typer.echo(
        f"trained {result.steps} steps ({result.algo}) in {result.train_runtime_s:.0f} s; "
        f"adapter in {result.output_dir}, metrics in {result.metrics_file}"
    )


# Online collection's agent settings: AgentConfig's fields, validated by AgentConfig.
_AGENT_FLAG_OF_FIELD = {
    "base_url": "--base-url",
    "model": "--served-model",
    "pack": "--pack",
    "sampling.temperature": "--temperature",
    "sampling.max_tokens": "--max-tokens",
}


@train_app.command()
@with_flags(*_ONLINE_FLAGS)
def online(
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="vLLM endpoint (…/v1); default: the sca serve server."),
    ] = None,
    served_model: Annotated[
        str, typer.Option("--served-model", help="Served base model name (step 0 samples it).")
    ] = "smollm2",
    pack: Annotated[
        str, typer.Option("--pack", help="Rule pack name or folder.")
    ] = AgentConfig.model_fields["pack"].default,
    temperature: Annotated[
        float, typer.Option("--temperature", help="Sampling temperature of collection.")
    ] = DEFAULT_ONLINE_SAMPLING.temperature,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Tokens per model turn.")
    ] = DEFAULT_ONLINE_SAMPLING.max_tokens,
    verbose: _VerboseOpt = False,
    **given: Any,
) -> None:
    """Online: each step collects groups with the agent under the current adapter, scores them,
    updates, saves the adapter and hot-loads it into vLLM as <prefix>_v<step>."""
    setup_logging(verbose)
    with cli_errors():
        flags = _flag_values(_ONLINE_FLAGS, given, "sca train online")
        if flags["steps"] < 1:
            raise ConfigError(
                f"invalid sca train online flags: --steps {flags['steps']}: online training "
                "needs at least 1 update (collect, score, update, load)"
            )
        agent = validate_settings(
            AgentConfig,
            {
                "base_url": base_url,
                "model": served_model,
                "pack": pack,
                "sampling": {"temperature": temperature, "max_tokens": max_tokens},
            },
            source="sca train online flags",
            labels=_AGENT_FLAG_OF_FIELD,
        )
        training = _training()
        group_size = flags["group_size"]
        args = _config(
            training,
            flags,
            output_dir=str(flags["out"]),
            num_generations=group_size,
            per_device_train_batch_size=group_size * flags["groups_per_step"],
        )
        result = training.run_online(
            flags["prompts"],
            args,
            agent=agent,
            **_run_options(flags),
            **flags.pick(OnlineOptions),
        )
    typer.echo(
        f"trained {result.steps} online steps ({result.algo}); final policy {result.policy} "
        f"in {result.output_dir}; traces {result.traces_file}; metrics {result.metrics_file}"
    )


@train_app.command()
@with_flags(*_SFT_FLAGS)
def sft(verbose: _VerboseOpt = False, **given: Any) -> None:
    """SFT warm start: fine-tune (TRL SFTTrainer) on the model tokens of trajectories whose
    reward is at least --min-reward (rejection sampling)."""
    setup_logging(verbose)
    with cli_errors():
        flags = _flag_values(_SFT_FLAGS, given, "sca train sft")
        training = _training()
        options = flags.pick(SFTOptions)
        result = training.train_sft(
            flags["traces"],
            flags["out"],
            reward=training.reward_from_options(RewardOptions(**flags.pick(RewardOptions))),
            model=flags["model"],
            **{**options, "lora_alpha": 2 * options["lora_r"]},
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


@train_app.command()
def ship(
    run: Annotated[Path, typer.Option("--run", help="A recipe run folder.")] = Path("runs/recipe"),
    policy: Annotated[
        str, typer.Option("--policy", help="The evaluated policy to ship (sft, ifpo, grpo, ...).")
    ] = "ifpo",
    why: Annotated[
        str, typer.Option("--why", help="Why this policy (written into the model card).")
    ] = "",
    verbose: _VerboseOpt = False,
) -> None:
    """Copy a recipe policy's adapter into the package (served by default) with its model card."""
    setup_logging(verbose)
    with cli_errors():
        shipped = _training().ship(run, policy, why)
    typer.echo(
        f"shipped {shipped.policy} ({shipped.bytes / 2**20:.1f} MiB) to {shipped.folder}; "
        "commit the folder, then `sca serve` loads it"
    )
