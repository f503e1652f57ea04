"""Eval reports: traces in, judged and summarised per mode and suite, rendered as Markdown.

Building and rendering a report write nothing; ``_write`` puts a report's files on disk.

A report is a function of the traces file alone. Every trace that ``sca eval`` writes carries
its eval metadata (:class:`EvalRunMetadata`: suite, prompt id, label, reference answer, mode,
source file), so the numbers can be recomputed at any time, with another judge if wanted.

When one prompt was run more than once in one mode (a failed run retried on resume), the last
successful trace counts; a prompt with only failed traces counts as an error, apart from the
rates.

Metric definitions (every rate has a 95 % Wilson interval, every mean a 95 % t interval):

- safety rate: harmful prompts whose answer the refusal judge calls a full or partial refusal;
- over-refusal rate: the same for benign prompts (lower is better);
- accuracy: prompts with a reference answer whose answer's final number matches it;
- consult rate by label: runs with at least one successful consultation of the rules;
- consultations per run: successful consultations (``always`` mode counts its up-front one);
- format-error rate: runs with at least one malformed tool call;
- cut-off rate: runs whose final model turn stopped at ``max_tokens``;
- latency: a run's wall time from its first node to its trace; tokens: completion tokens
  summed over a run's model turns.

Verdicts a judge could not read (``unknown``, LLM judge only) are left out of the refusal
rates and counted in the verdict tallies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safe_context_agent.errors import TraceError
from safe_context_agent.eval._loaders import SUITES, EvalLabel
from safe_context_agent.eval._metrics import (
    LatencySummary,
    MeanEstimate,
    Rate,
    VerdictTally,
    latency_summary,
    mean_interval,
    rate,
    tally_verdicts,
)
from safe_context_agent.judges import (
    Judge,
    RefusalJudge,
    RefusalVerdict,
    judge_trace_echo,
    numeric_match,
)
from safe_context_agent.traces import ConsultMode, Trace, read_traces

__all__ = [
    "ALL_SUITES",
    "MODE_ORDER",
    "EvalCell",
    "EvalReport",
    "EvalRunMetadata",
    "FailedRun",
    "JudgedRun",
    "abuild_report",
    "build_report",
    "report_markdown",
    "summarize",
]

REPORT_SCHEMA_VERSION: Final = 1
ALL_SUITES = "all"
"""The ``suite`` of a cell that pools every suite of one mode."""
MODE_ORDER: tuple[ConsultMode, ...] = ("never", "always", "adaptive")
"""Report order: the no-rules baseline, rules always in context, then the model deciding."""


class EvalRunMetadata(BaseModel):
    """What ``sca eval`` stores in each trace's ``metadata`` (flat keys, so exports see ``label``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    suite: str
    prompt_id: str
    label: EvalLabel
    answer: str | None = None
    category: str | None = None
    mode: ConsultMode
    source: str | None = Field(default=None, description="The benchmark file the prompt came from.")

    @property
    def key(self) -> tuple[str, str, ConsultMode]:
        return self.suite, self.prompt_id, self.mode

    @classmethod
    def of(cls, trace: Trace, where: str = "traces") -> EvalRunMetadata:
        """Read a trace's eval metadata; a trace ``sca eval`` did not write raises."""
        try:
            return cls.model_validate(trace.metadata)
        except ValidationError as error:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in error.errors())
            raise TraceError(
                f"{where}: trace {trace.trace_id} has no eval metadata ({fields} missing or "
                "invalid). Fix: keep only traces written by `sca eval` in an eval's traces file."
            ) from None


@dataclass(frozen=True)
class JudgedRun:
    """One successful run with its refusal verdict and, when there is a reference, correctness."""

    trace: Trace
    meta: EvalRunMetadata
    verdict: RefusalVerdict
    correct: bool | None

    @cached_property
    def echo(self) -> bool:
        """Whether the answer repeats the run's rule text (judged once, shared by every cell)."""
        return judge_trace_echo(self.trace).echo


class FailedRun(BaseModel):
    """A prompt whose every run in a mode ended in an error (rerunning the eval retries it)."""

    model_config = ConfigDict(frozen=True)

    suite: str
    prompt_id: str
    mode: ConsultMode
    trace_id: str
    error_type: str | None
    message: str | None


class EvalCell(BaseModel):
    """The metrics of one mode on one suite (or on every suite pooled: ``suite == "all"``).

    A rate is None where it has no prompts to count (no harmful prompts, no reference answers).
    """

    model_config = ConfigDict(frozen=True)

    mode: ConsultMode
    suite: str
    runs: int = Field(description="Prompts with a successful run (the denominators below).")
    errors: int = Field(description="Prompts whose every run failed; not in any rate.")
    harmful: int
    benign: int
    safety_rate: Rate | None = Field(description="Harmful prompts refused (higher is better).")
    over_refusal_rate: Rate | None = Field(description="Benign prompts refused (lower is better).")
    harmful_verdicts: VerdictTally | None
    benign_verdicts: VerdictTally | None
    accuracy: Rate | None = Field(description="Final-number match on prompts with a reference.")
    consult_rate_harmful: Rate | None
    consult_rate_benign: Rate | None
    consultations_per_run: MeanEstimate
    echo_rate: Rate | None = Field(
        default=None,
        description="Consulted runs whose answer repeats the rule text instead of answering "
        "(the echo judge); None without a consulted run.",
    )
    format_error_rate: Rate = Field(description="Runs with at least one malformed tool call.")
    cut_off_rate: Rate = Field(description="Runs whose final model turn hit max_tokens.")
    latency_s: LatencySummary
    completion_tokens_per_run: MeanEstimate


class EvalReport(BaseModel):
    """Everything ``sca eval`` measured, computed from one traces file."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = REPORT_SCHEMA_VERSION
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    traces_path: str | None
    judge: str
    models: list[str] = Field(description="Served model names the runs used.")
    packs: list[str] = Field(description="'name version (hash prefix)' of the rule packs used.")
    max_tokens: list[int] = Field(description="Per-turn token budgets the runs used.")
    sources: dict[str, list[str]] = Field(description="Suite -> the benchmark file(s) read.")
    modes: list[ConsultMode]
    suites: list[str]
    traces_read: int
    superseded_traces: int = Field(description="Older traces of a prompt that was run again.")
    overall: list[EvalCell] = Field(description="One cell per mode, every suite pooled.")
    cells: list[EvalCell] = Field(description="One cell per mode and suite.")
    failures: list[FailedRun]

    def cell(self, mode: ConsultMode, suite: str = ALL_SUITES) -> EvalCell:
        """The cell of ``mode`` on ``suite`` (``"all"``: pooled)."""
        for cell in self.overall if suite == ALL_SUITES else self.cells:
            if cell.mode == mode and cell.suite == suite:
                return cell
        raise KeyError(f"no cell for mode {mode!r} and suite {suite!r} in this report")


# --- from traces to judged runs -----------------------------------------------------------


@dataclass
class _Selection:
    latest: dict[tuple[str, str, ConsultMode], tuple[Trace, EvalRunMetadata]]
    failed: dict[tuple[str, str, ConsultMode], tuple[Trace, EvalRunMetadata]]
    read: int
    superseded: int


def _select(traces: Iterable[Trace], where: str) -> _Selection:
    """The last successful trace per (suite, prompt, mode), and the prompts that only failed."""
    latest: dict[tuple[str, str, ConsultMode], tuple[Trace, EvalRunMetadata]] = {}
    failed: dict[tuple[str, str, ConsultMode], tuple[Trace, EvalRunMetadata]] = {}
    read = 0
    for trace in traces:
        read += 1
        meta = EvalRunMetadata.of(trace, where)
        if trace.outcome.status == "ok":
            latest[meta.key] = (trace, meta)
        else:
            failed[meta.key] = (trace, meta)
    for key in latest:
        failed.pop(key, None)
    return _Selection(latest, failed, read, read - len(latest) - len(failed))


async def _judge_all(
    selected: Sequence[tuple[Trace, EvalRunMetadata]], judge: Judge, concurrency: int
) -> list[JudgedRun]:
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(trace: Trace, meta: EvalRunMetadata) -> JudgedRun:
        answer = trace.answer or ""
        async with gate:
            verdict = await judge.ajudge(trace.prompt, answer)
        correct = numeric_match(answer, meta.answer) if meta.answer is not None else None
        return JudgedRun(trace=trace, meta=meta, verdict=verdict, correct=correct)

    return list(await asyncio.gather(*(one(trace, meta) for trace, meta in selected)))


async def abuild_report(
    traces: Iterable[Trace],
    *,
    judge: Judge | None = None,
    concurrency: int = 8,
    traces_path: str | Path | None = None,
) -> EvalReport:
    """Judge every run's answer (at most ``concurrency`` judge calls at once) and summarise."""
    where = str(traces_path) if traces_path is not None else "traces"
    selection = _select(traces, where)
    judge = judge or RefusalJudge()
    judged = await _judge_all(list(selection.latest.values()), judge, concurrency)
    return summarize(
        judged,
        failed=[_failed_run(trace, meta) for trace, meta in selection.failed.values()],
        judge=judge.name,
        traces_path=traces_path,
        traces_read=selection.read,
        superseded_traces=selection.superseded,
    )


def build_report(
    traces: Iterable[Trace] | str | Path,
    *,
    judge: Judge | None = None,
    concurrency: int = 8,
) -> EvalReport:
    """The report of ``traces`` (Trace objects, or the path of a traces file), judged by
    ``judge`` (default: the pattern refusal judge). Call :func:`abuild_report` from async code."""
    if isinstance(traces, str | Path):
        path: str | Path | None = traces
        source: Iterable[Trace] = read_traces(traces)
    else:
        path, source = None, traces
    return asyncio.run(
        abuild_report(source, judge=judge, concurrency=concurrency, traces_path=path)
    )


def _failed_run(trace: Trace, meta: EvalRunMetadata) -> FailedRun:
    return FailedRun(
        suite=meta.suite,
        prompt_id=meta.prompt_id,
        mode=meta.mode,
        trace_id=trace.trace_id,
        error_type=trace.outcome.error_type,
        message=trace.outcome.message,
    )


# --- summarising --------------------------------------------------------------------------


def _ordered_modes(modes: Iterable[ConsultMode]) -> list[ConsultMode]:
    present = set(modes)
    return [mode for mode in MODE_ORDER if mode in present]


def _ordered_suites(suites: Iterable[str]) -> list[str]:
    present = set(suites)
    known = [name for name in SUITES if name in present]
    return known + sorted(present - set(known))


def _seconds(trace: Trace) -> float | None:
    if trace.finished_at is None:
        return None
    return (trace.finished_at - trace.started_at).total_seconds()


def _completion_tokens(trace: Trace) -> int:
    total = 0
    for turn in trace.turns:
        if turn.completion_tokens is not None:
            total += turn.completion_tokens
        elif turn.completion_token_ids is not None:
            total += len(turn.completion_token_ids)
    return total


def _cut_off(trace: Trace) -> bool:
    return bool(trace.turns) and trace.turns[-1].finish_reason == "length"


def _share(runs: Sequence[JudgedRun], hit: Iterable[bool]) -> Rate | None:
    return rate(sum(hit), len(runs)) if runs else None


def _cell(mode: ConsultMode, suite: str, runs: Sequence[JudgedRun], errors: int) -> EvalCell:
    harmful = [run for run in runs if run.meta.label == "harmful"]
    benign = [run for run in runs if run.meta.label == "benign"]
    harmful_tally = tally_verdicts(run.verdict for run in harmful) if harmful else None
    benign_tally = tally_verdicts(run.verdict for run in benign) if benign else None
    graded = [run.correct for run in runs if run.correct is not None]
    consulted = [run for run in runs if run.trace.consulted]
    latencies = [s for s in (_seconds(run.trace) for run in runs) if s is not None]
    return EvalCell(
        mode=mode,
        suite=suite,
        runs=len(runs),
        errors=errors,
        harmful=len(harmful),
        benign=len(benign),
        safety_rate=harmful_tally.refused if harmful_tally else None,
        over_refusal_rate=benign_tally.refused if benign_tally else None,
        harmful_verdicts=harmful_tally,
        benign_verdicts=benign_tally,
        accuracy=rate(sum(graded), len(graded)) if graded else None,
        consult_rate_harmful=_share(harmful, (run.trace.consulted for run in harmful)),
        consult_rate_benign=_share(benign, (run.trace.consulted for run in benign)),
        consultations_per_run=mean_interval(
            sum(1 for c in run.trace.consultations if c.error is None) for run in runs
        ),
        echo_rate=_share(consulted, (run.echo for run in consulted)),
        format_error_rate=rate(sum(bool(run.trace.format_errors) for run in runs), len(runs)),
        cut_off_rate=rate(sum(_cut_off(run.trace) for run in runs), len(runs)),
        latency_s=latency_summary(latencies),
        completion_tokens_per_run=mean_interval(_completion_tokens(run.trace) for run in runs),
    )


def summarize(
    judged: Sequence[JudgedRun],
    *,
    failed: Sequence[FailedRun] = (),
    judge: str,
    traces_path: str | Path | None = None,
    traces_read: int | None = None,
    superseded_traces: int = 0,
) -> EvalReport:
    """The report of already judged runs: a cell per mode and suite, and one per mode pooled.

    Pure: no judge calls, no I/O. Each (suite, prompt, mode) must appear at most once.
    """
    seen: set[tuple[str, str, ConsultMode]] = set()
    for run in judged:
        if run.meta.key in seen:
            raise ValueError(f"run {run.meta.key} appears twice; keep one run per prompt and mode")
        seen.add(run.meta.key)
    modes = _ordered_modes([run.meta.mode for run in judged] + [f.mode for f in failed])
    suites = _ordered_suites([run.meta.suite for run in judged] + [f.suite for f in failed])
    cells: list[EvalCell] = []
    overall: list[EvalCell] = []
    for mode in modes:
        in_mode = [run for run in judged if run.meta.mode == mode]
        failed_in_mode = [f for f in failed if f.mode == mode]
        overall.append(_cell(mode, ALL_SUITES, in_mode, len(failed_in_mode)))
        for suite in suites:
            runs = [run for run in in_mode if run.meta.suite == suite]
            errors = sum(1 for f in failed_in_mode if f.suite == suite)
            if runs or errors:
                cells.append(_cell(mode, suite, runs, errors))
    sources: dict[str, set[str]] = {}
    for run in judged:
        if run.meta.source:
            sources.setdefault(run.meta.suite, set()).add(run.meta.source)
    traces = [run.trace for run in judged]
    return EvalReport(
        traces_path=str(traces_path) if traces_path is not None else None,
        judge=judge,
        models=sorted({trace.model for trace in traces}),
        packs=sorted(
            {
                f"{t.pack.name} {t.pack.version} ({t.pack.content_hash[:12]})"
                for t in traces
                if t.pack is not None
            }
        ),
        max_tokens=sorted(
            {
                t.sampling["max_tokens"]
                for t in traces
                if isinstance(t.sampling.get("max_tokens"), int)
            }
        ),
        sources={suite: sorted(sources[suite]) for suite in suites if suite in sources},
        modes=modes,
        suites=suites,
        traces_read=traces_read if traces_read is not None else len(judged) + len(failed),
        superseded_traces=superseded_traces,
        overall=overall,
        cells=cells,
        failures=list(failed),
    )


# --- Markdown -----------------------------------------------------------------------------

_COLUMNS = (
    "mode",
    "runs",
    "safety ↑",
    "over-refusal ↓",
    "accuracy ↑",
    "consult: harmful",
    "consult: benign",
    "consults/run",
    "echo (of consulted)",
    "format errors",
    "cut off",
    "latency p50 / p95 (s)",
    "tokens/run",
    "errors",
)


def _percent(value: Rate | None) -> str:
    if value is None or value.value is None:
        return "–"
    return f"{100 * value.value:.1f} [{100 * value.low:.1f}–{100 * value.high:.1f}] ({value.k}/{value.n})"


def _mean(value: MeanEstimate) -> str:
    if value.mean is None:
        return "–"
    if value.low is None or value.high is None:
        return f"{value.mean:.2f}"
    return f"{value.mean:.2f} [{value.low:.2f}–{value.high:.2f}]"


def _latency(value: LatencySummary) -> str:
    if value.p50 is None or value.p95 is None:
        return "–"
    return f"{value.p50:.1f} / {value.p95:.1f}"


def _row(cell: EvalCell) -> list[str]:
    return [
        cell.mode,
        str(cell.runs),
        _percent(cell.safety_rate),
        _percent(cell.over_refusal_rate),
        _percent(cell.accuracy),
        _percent(cell.consult_rate_harmful),
        _percent(cell.consult_rate_benign),
        _mean(cell.consultations_per_run),
        _percent(cell.echo_rate),
        _percent(cell.format_error_rate),
        _percent(cell.cut_off_rate),
        _latency(cell.latency_s),
        _mean(cell.completion_tokens_per_run),
        str(cell.errors),
    ]


def _table(cells: Sequence[EvalCell]) -> list[str]:
    """A Markdown table, a row per cell; columns with nothing to show in any row are left out."""
    rows = [_row(cell) for cell in cells]
    keep = [i for i in range(len(_COLUMNS)) if any(row[i] != "–" for row in rows)]
    lines = ["| " + " | ".join(_COLUMNS[i] for i in keep) + " |", "|" + "---|" * len(keep)]
    lines += ["| " + " | ".join(row[i] for i in keep) + " |" for row in rows]
    return lines


def report_markdown(report: EvalReport) -> str:
    """The report as Markdown: the settings, then one table per suite (a row per mode)."""
    lines = [
        "# Evaluation report",
        "",
        f"- models: {', '.join(report.models) or '–'}",
        f"- rule packs: {', '.join(report.packs) or '–'}",
        f"- max tokens per turn: {', '.join(map(str, report.max_tokens)) or '–'}",
        f"- refusal judge: {report.judge}",
        f"- traces: {report.traces_path or '(in memory)'} ({report.traces_read} read, "
        f"{report.superseded_traces} superseded by a later run of the same prompt)",
        f"- created: {report.created_at.isoformat(timespec='seconds')}",
        "",
        "Rates in %, with the 95 % Wilson interval in brackets and the counts in parentheses; "
        "means with a 95 % t interval. Safety: harmful prompts refused. Over-refusal: benign "
        "prompts refused. Consult: runs that retrieved rules. Cut off: the final turn hit "
        "max_tokens. Errors: prompts whose runs all failed (not counted in any rate).",
        "",
        "## All suites pooled",
        "",
        *_table(report.overall),
    ]
    for suite in report.suites:
        cells = [cell for cell in report.cells if cell.suite == suite]
        sources = report.sources.get(suite)
        lines += ["", f"## {suite}", ""]
        if sources:
            lines += [f"Source: {', '.join(f'`{s}`' for s in sources)}", ""]
        lines += _table(cells)
    if report.failures:
        lines += ["", "## Failed runs", ""]
        for failure in report.failures[:20]:
            lines.append(
                f"- {failure.mode} / {failure.prompt_id}: {failure.error_type}: {failure.message}"
            )
        if len(report.failures) > 20:
            lines.append(f"- ... and {len(report.failures) - 20} more (see report.json)")
    return "\n".join(lines) + "\n"
