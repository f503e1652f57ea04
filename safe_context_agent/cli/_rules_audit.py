"""`sca rules lint` and `sca rules audit`: what a pack's text and its traces say about each rule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer

from safe_context_agent.cli._common import cli_errors
from safe_context_agent.cli._rules import (
    _JsonOption,
    _ModelOption,
    _Pack,
    _Strategy,
    _StrategyOption,
)
from safe_context_agent.config import validate_settings
from safe_context_agent.errors import ConfigError

__all__ = ["audit", "lint"]

# The flag each LintConfig / AuditConfig field is set by: the thresholds are checked by those
# models' own bounds (one path for Python and flags), and an error names what the user typed.
_LINT_FLAG_OF_FIELD = {
    "k": "--k",
    "min_hit_rate": "--min-hit-rate",
    "duplicate_threshold": "--duplicate-threshold",
    "overlap_margin": "--overlap-margin",
}
_AUDIT_FLAG_OF_FIELD = {
    "floor": "--floor",
    "min_benign_runs": "--min-benign-runs",
    "benign_share": "--benign-share",
    "refusal_share": "--refusal-share",
}


def _parse_kinds(text: str) -> list[str]:
    from safe_context_agent.rules import LintKind

    known = get_args(LintKind)
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [kind for kind in kinds if kind not in known]
    if unknown or not kinds:
        raise ConfigError(
            f"--fail-on {text!r}: unknown kind {', '.join(unknown) or '(none given)'}; use a "
            f"comma-separated list of {', '.join(known)}"
        )
    return kinds


def lint(
    pack: _Pack,
    k: Annotated[int, typer.Option("--k", "-k", help="An example hits in the top k.")] = 3,
    min_hit_rate: Annotated[
        float,
        typer.Option(help="example_miss below this share (0 to 1) of a rule's examples."),
    ] = 0.5,
    duplicate_threshold: Annotated[
        float, typer.Option(help="duplicate at this whole-rule cosine (-1 to 1) or more.")
    ] = 0.85,
    overlap_margin: Annotated[
        float,
        typer.Option(
            help="example_overlap when examples are this much (0 or more) closer to each "
            "other than to the statement.",
        ),
    ] = 0.15,
    fail_on: Annotated[
        str,
        typer.Option(help="Finding kinds that count toward the exit status (comma-separated)."),
    ] = "duplicate,example_miss,no_allowed_rule,example_overlap",
    max_findings: Annotated[
        int, typer.Option(help="Exit 1 when more findings than this count (0 or more).")
    ] = 0,
    strategy: _StrategyOption = _Strategy.hybrid,
    model: _ModelOption = None,
    as_json: _JsonOption = False,
) -> None:
    """Check that a pack's examples retrieve their own rules, that no two rules are
    near-duplicates, that every category has a rule saying what is allowed, and that each rule's
    statement is what its examples are about. Exit 1 on more findings than --max-findings."""
    from safe_context_agent.rules import LintConfig, lint_pack

    with cli_errors():
        counted = _parse_kinds(fail_on)
        if max_findings < 0:
            raise ConfigError(
                f"invalid sca rules lint flags: --max-findings {max_findings}: use 0 or more"
            )
        config = validate_settings(
            LintConfig,
            {
                "k": k,
                "strategy": strategy.value,
                "embedding_model": model,
                "min_hit_rate": min_hit_rate,
                "duplicate_threshold": duplicate_threshold,
                "overlap_margin": overlap_margin,
            },
            source="sca rules lint flags",
            labels=_LINT_FLAG_OF_FIELD,
        )
        report = lint_pack(pack, config)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        typer.echo(
            f"pack {report.pack} {report.pack_version}: {len(report.rules)} rules, held-out "
            f"example hit@{k} {report.hit_rate:.3f}, floor {report.floor:.3f}"
        )
        for finding in report.findings:
            typer.echo(f"{finding.kind}: {', '.join(finding.rule_ids)}: {finding.detail}")
        typer.echo(f"{len(report.findings)} finding(s)")
    gating = sum(finding.kind in counted for finding in report.findings)
    if gating > max_findings:
        raise typer.Exit(1)


def audit(
    pack: _Pack,
    traces: Annotated[
        Path,
        typer.Option(
            "--traces", "-t", help="Traces file (.jsonl, .sqlite, .parquet).", show_default=False
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write audit.json, audit.md and the PNGs here."),
    ] = None,
    floor: Annotated[
        float | None,
        typer.Option(
            help="no_match below this best score, -1 to 1 (default: the pack's floor, "
            "from its own examples; loads the embedding model).",
        ),
    ] = None,
    judge: Annotated[str, typer.Option(help="Refusal judge: pattern | llm.")] = "pattern",
    judge_base_url: Annotated[str | None, typer.Option(help="Endpoint of the LLM judge.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Model of the LLM judge.")] = None,
    judge_api_key_env: Annotated[
        str, typer.Option(help="Variable holding the judge's API key.")
    ] = "OPENAI_API_KEY",
    min_benign_runs: Annotated[
        int, typer.Option(help="over_broad needs this many benign runs (1 or more).")
    ] = 3,
    benign_share: Annotated[
        float, typer.Option(help="over_broad: benign share (0 to 1) of labelled runs.")
    ] = 0.5,
    refusal_share: Annotated[
        float, typer.Option(help="over_broad: share (0 to 1) of benign runs refused.")
    ] = 0.5,
    skip_bad_records: Annotated[
        bool, typer.Option(help="Leave out malformed trace records instead of stopping.")
    ] = False,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the PNGs.")] = False,
    strategy: _StrategyOption = _Strategy.hybrid,
    model: _ModelOption = None,
    as_json: _JsonOption = False,
) -> None:
    """Per rule, from traces: retrievals by rank and score, benign vs harmful share, refusals
    that followed, over-refusal attribution, safety credit; and the rules that are over-broad,
    dead, or the consultations the pack had no rule for."""
    from safe_context_agent.judges import JudgeKind, make_judge
    from safe_context_agent.rules import (
        AuditConfig,
        audit_markdown,
        audit_rules,
        what_to_change,
        write_audit,
    )

    with cli_errors():
        config = validate_settings(
            AuditConfig,
            {
                "floor": floor,
                "strategy": strategy.value,
                "embedding_model": model,
                "min_benign_runs": min_benign_runs,
                "benign_share": benign_share,
                "refusal_share": refusal_share,
                "on_error": "skip" if skip_bad_records else "raise",
            },
            source="sca rules audit flags",
            labels=_AUDIT_FLAG_OF_FIELD,
        )
        kinds: tuple[JudgeKind, ...] = ("pattern", "llm")
        if judge not in kinds:
            raise ConfigError(f"--judge {judge!r}: use pattern or llm")
        refusal_judge = make_judge(
            judge,
            base_url=judge_base_url,
            model=judge_model,
            api_key_env=judge_api_key_env,
        )
        report = audit_rules(pack, traces, config, judge=refusal_judge)
        written = write_audit(report, out, plots=not no_plots) if out is not None else []
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    if out is None:
        typer.echo(audit_markdown(report))
        return
    t = report.totals
    typer.echo(
        f"pack {report.pack}: {t.runs} runs, {t.consultations} consultations, "
        f"{len(report.findings)} finding(s); what to change:"
    )
    for number, item in enumerate(what_to_change(report), start=1):
        typer.echo(f"{number}. {item.replace('**', '')}")
    typer.echo("wrote " + ", ".join(str(path) for path in written))
