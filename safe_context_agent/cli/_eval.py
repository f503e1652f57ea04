"""`sca eval`: benchmark suites through the agent in each consult mode; report and plots."""

from __future__ import annotations

from pathlib import Path
from typing import cast, get_args

import typer

from safe_context_agent.cli._common import cli_errors, setup_logging
from safe_context_agent.config import AgentConfig, validate_settings
from safe_context_agent.errors import ConfigError
from safe_context_agent.eval import (
    SUITE_ALIASES,
    SUITES,
    EvalConfig,
    EvalReport,
    SuiteSource,
    parse_modes,
    report_markdown,
    rewrite_report,
    run_eval,
)
from safe_context_agent.judges import JudgeKind, make_judge

__all__ = ["eval_app"]

_SUITE_NAMES = ", ".join([*SUITES, *(alias.replace("_", "-") for alias in SUITE_ALIASES)])

eval_app = typer.Typer(
    help=(
        "Evaluate the agent on benchmark files in each consult mode: safety, over-refusal, "
        "utility, consult rates. Resumable: rerun the same command to finish an interrupted "
        "eval. `sca eval report OUT` recomputes a report from its traces."
    ),
    invoke_without_command=True,
)


_AGENT_FLAGS = {"base_url": "--base-url", "model": "--model", "pack": "--pack"}
_AGENT_FLAGS["sampling.max_tokens"] = "--max-tokens"
_EVAL_FLAGS = {
    "limit": "--limit",
    "seed": "--seed",
    "split": "--split",
    "concurrency": "--concurrency",
    "out": "--out",
}


@eval_app.callback()
def evaluate(
    ctx: typer.Context,
    suite: list[str] = typer.Option(
        [],
        "--suite",
        "-s",
        help=f"A benchmark file and its suite, repeatable. Names: {_SUITE_NAMES}.",
        metavar="NAME=PATH",
        show_default=False,
    ),
    modes: str = typer.Option(
        "never,always,adaptive", "--modes", help="Comma-separated consult modes to compare."
    ),
    limit: int | None = typer.Option(None, "--limit", help="Prompts per suite (default: all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the shuffled subset that --limit takes."),
    split: str | None = typer.Option(
        None,
        "--split",
        help="Only prompts of this fixed split: train | dev | test (default: all prompts).",
    ),
    concurrency: int = typer.Option(8, "--concurrency", help="Agent runs at once."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run folder: traces.jsonl, report.json, report.md, plots."
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="OpenAI-compatible endpoint (default: the `sca serve` server, else start the "
        "embedded model for this eval).",
    ),
    model: str | None = typer.Option(
        None, "--model", help="Served model name (default: the server's)."
    ),
    pack: str = typer.Option("general", "--pack", help="Built-in rule pack name or pack folder."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Token budget per model turn."),
    judge: str = typer.Option("pattern", "--judge", help="Refusal judge: pattern | llm."),
    judge_base_url: str | None = typer.Option(
        None, "--judge-base-url", help="Endpoint of the LLM judge."
    ),
    judge_model: str | None = typer.Option(None, "--judge-model", help="Model of the LLM judge."),
    judge_api_key_env: str = typer.Option(
        "OPENAI_API_KEY", "--judge-api-key-env", help="Variable holding the judge's API key."
    ),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens."),
) -> None:
    """Run each --suite through the agent in each of --modes and write the report into --out."""
    if ctx.invoked_subcommand is not None:
        return
    setup_logging(verbose)
    with cli_errors():
        if not suite:
            raise ConfigError(
                "no --suite given. Fix: e.g. sca eval --suite xstest=PATH --out runs/eval1"
            )
        if out is None:
            raise ConfigError("no --out folder given. Fix: e.g. --out runs/eval1")
        agent_options: dict[str, object] = {
            "base_url": base_url,
            "pack": pack,
            "sampling": {"max_tokens": max_tokens},
        }
        if model is not None:
            agent_options["model"] = model
        # One validation path for every flag: the same pydantic models the Python API takes,
        # with errors naming the flag (issue 13).
        agent = validate_settings(
            AgentConfig, agent_options, source="agent settings", labels=_AGENT_FLAGS
        )
        config = validate_settings(
            EvalConfig,
            {
                "suites": [SuiteSource.parse(text) for text in suite],
                "modes": parse_modes(modes),
                "limit": limit,
                "seed": seed,
                "split": split,
                "concurrency": concurrency,
                "out": out,
                "agent": agent,
                "judge": _judge_kind(judge),
                "judge_base_url": judge_base_url,
                "judge_model": judge_model,
                "judge_api_key_env": judge_api_key_env,
                "plots": not no_plots,
            },
            source="eval settings",
            labels=_EVAL_FLAGS,
        )
        result = run_eval(config, progress=not quiet)
    typer.echo(_overall_table(result.report))
    typer.echo(
        f"{result.ran} runs made, {result.reused} already done, {result.failed} failed, "
        f"in {result.seconds:.0f} s; wrote {', '.join(str(p) for p in result.files)}"
    )
    if result.report.failures:
        typer.secho(
            f"error: {len(result.report.failures)} prompt(s) have no successful run (see "
            f"{result.out_dir / 'report.md'}). Fix: rerun the same command to retry them.",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(code=1)


@eval_app.command("report")
def report(
    out: Path = typer.Argument(..., help="The --out folder of an earlier `sca eval`."),
    judge: str = typer.Option("pattern", "--judge", help="Refusal judge: pattern | llm."),
    judge_base_url: str | None = typer.Option(None, "--judge-base-url"),
    judge_model: str | None = typer.Option(None, "--judge-model"),
    judge_api_key_env: str = typer.Option("OPENAI_API_KEY", "--judge-api-key-env"),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Judge calls at once."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
) -> None:
    """Recompute report.json, report.md and the plots from OUT/traces.jsonl (no model calls)."""
    with cli_errors():
        refusal_judge = make_judge(
            _judge_kind(judge),
            base_url=judge_base_url,
            model=judge_model,
            api_key_env=judge_api_key_env,
        )
        result, files = rewrite_report(
            out, judge=refusal_judge, concurrency=concurrency, plots=not no_plots
        )
    typer.echo(_overall_table(result))
    typer.echo(f"wrote {', '.join(str(p) for p in files)}")


def _judge_kind(name: str) -> JudgeKind:
    kind = name.strip().lower()
    if kind not in get_args(JudgeKind):
        raise ConfigError(f"unknown --judge {name!r}. Fix: use --judge pattern or --judge llm")
    return cast(JudgeKind, kind)


def _overall_table(report: EvalReport) -> str:
    """The pooled table of report.md, for the terminal."""
    markdown = report_markdown(report)
    start = markdown.index("## All suites pooled")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None].strip()
