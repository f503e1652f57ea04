"""The eval runner: benchmark prompts through the agent in each consult mode, resumable.

```python
from pathlib import Path
from safe_context_agent import AgentConfig
from safe_context_agent.eval import EvalConfig, SuiteSource, run_eval

result = run_eval(
    EvalConfig(
        suites=[SuiteSource.parse("xstest=data/xstest_prompts.csv")],
        modes=["never", "always", "adaptive"],
        limit=50,
        out=Path("runs/eval1"),
        agent=AgentConfig(pack="general"),
    )
)
print(result.report.cell("adaptive").over_refusal_rate)
```

The run folder holds ``traces.jsonl`` (one trace per run, with the prompt's eval metadata),
``report.json``, ``report.md`` and the plots. Every run's trace is on disk before it counts as
done, so an interrupted eval restarted with the same folder runs only the prompts that have no
successful trace yet for that mode; the report is always recomputed from the whole file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from safe_context_agent._agent import SafeContextAgent
from safe_context_agent.config import AgentConfig
from safe_context_agent.errors import AgentRunError, ConfigError, TraceError
from safe_context_agent.eval._loaders import SUITES, EvalPrompt, load_suite
from safe_context_agent.eval._report import (
    MODE_ORDER,
    EvalReport,
    EvalRunMetadata,
    abuild_report,
)
from safe_context_agent.eval._splits import Split
from safe_context_agent.eval._write import write_report
from safe_context_agent.graph import Retriever, RunInput
from safe_context_agent.judges import Judge, JudgeKind, make_judge
from safe_context_agent.serve import Endpoint, model_endpoint
from safe_context_agent.traces import ConsultMode, JsonlTraceSink, Trace, TraceSink, read_traces

if TYPE_CHECKING:
    from safe_context_agent.rules import RulePack

__all__ = [
    "SUITE_ALIASES",
    "TRACES_FILE",
    "EvalConfig",
    "EvalResult",
    "SuiteSource",
    "arun_eval",
    "parse_modes",
    "resolve_suite_name",
    "rewrite_report",
    "run_eval",
]

logger = logging.getLogger(__name__)

TRACES_FILE = "traces.jsonl"
SUITE_ALIASES = {"jbb_harmful": "jailbreakbench_harmful", "jbb_benign": "jailbreakbench_benign"}
"""Short names accepted for suites (after lower-casing and ``-`` to ``_``)."""


def resolve_suite_name(name: str) -> str:
    """The loader's name for a suite name or alias (``jbb-harmful`` -> ``jailbreakbench_harmful``)."""
    key = name.strip().lower().replace("-", "_")
    key = SUITE_ALIASES.get(key, key)
    if key not in SUITES:
        aliases = ", ".join(alias.replace("_", "-") for alias in SUITE_ALIASES)
        raise ConfigError(
            f"unknown benchmark suite {name!r}. Fix: use one of {', '.join(SUITES)} "
            f"(or the short names {aliases})"
        )
    return key


def parse_modes(text: str) -> list[ConsultMode]:
    """``"never,always,adaptive"`` -> modes in the order given, duplicates dropped."""
    modes: list[ConsultMode] = []
    for part in text.split(","):
        mode = part.strip().lower()
        if not mode:
            continue
        if mode not in MODE_ORDER:
            raise ConfigError(
                f"unknown mode {part.strip()!r} in --modes {text!r}. Fix: give a comma-separated "
                f"list of {', '.join(MODE_ORDER)}, e.g. --modes never,always,adaptive"
            )
        if mode not in modes:
            modes.append(mode)
    if not modes:
        raise ConfigError(
            f"--modes {text!r} names no mode. Fix: e.g. --modes never,always,adaptive"
        )
    return modes


class SuiteSource(BaseModel):
    """One benchmark file to evaluate, read by the loader of suite ``name``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Suite name or alias, e.g. 'xstest', 'jbb-benign', 'generic'.")
    path: Path
    columns: dict[str, str] | None = Field(
        default=None, description="Field -> file column overrides (see load_suite)."
    )

    @field_validator("name")
    @classmethod
    def _canonical_name(cls, name: str) -> str:
        return resolve_suite_name(name)

    @classmethod
    def parse(cls, text: str) -> SuiteSource:
        """``"NAME=PATH"``, the form of ``sca eval --suite``."""
        name, separator, path = text.partition("=")
        if not separator or not name.strip() or not path.strip():
            raise ConfigError(
                f"--suite {text!r} is not NAME=PATH. Fix: e.g. --suite xstest=data/xstest_prompts.csv"
            )
        return cls(name=name.strip(), path=Path(path.strip()).expanduser())


class EvalConfig(BaseModel):
    """What to evaluate, how, and where the run folder is."""

    model_config = ConfigDict(extra="forbid")

    suites: list[SuiteSource] = Field(min_length=1)
    modes: list[ConsultMode] = Field(default_factory=lambda: list(MODE_ORDER), min_length=1)
    limit: int | None = Field(default=None, ge=1, description="Prompts per suite (all if None).")
    seed: int | None = Field(
        default=0, description="Shuffle seed for the subset; None takes the first rows."
    )
    split: Split | None = Field(
        default=None,
        description="Only the prompts of this fixed split (train, dev, test; see prompt_split); "
        "None: every prompt. Applied before the seed and limit.",
    )
    concurrency: int = Field(default=8, ge=1, description="Agent runs (and judge calls) at once.")
    out: Path = Field(description="The run folder: traces, report and plots.")
    agent: AgentConfig = Field(
        default_factory=AgentConfig,
        description="The agent's settings; ``mode`` is set per run. With no ``base_url``, the "
        "server `sca serve` started is used, else the embedded model is started for the eval; "
        "with no explicit ``model``, the found or started server's model name is used.",
    )
    judge: JudgeKind = "pattern"
    judge_base_url: str | None = None
    judge_model: str | None = None
    judge_api_key_env: str = "OPENAI_API_KEY"
    plots: bool = True

    @field_validator("suites")
    @classmethod
    def _one_file_per_suite(cls, suites: list[SuiteSource]) -> list[SuiteSource]:
        seen: dict[str, Path] = {}
        for source in suites:
            if source.name in seen:
                raise ConfigError(
                    f"suite {source.name!r} is given twice ({seen[source.name]} and "
                    f"{source.path}); prompt ids would collide. Fix: one file per suite, or "
                    "evaluate the other file into another --out folder"
                )
            seen[source.name] = source.path
        return suites

    @field_validator("modes")
    @classmethod
    def _distinct_modes(cls, modes: list[ConsultMode]) -> list[ConsultMode]:
        return list(dict.fromkeys(modes))

    def refusal_judge(self) -> Judge:
        """The judge these settings name (raises ConfigError on a missing LLM-judge setting)."""
        return make_judge(
            self.judge,
            base_url=self.judge_base_url,
            model=self.judge_model,
            api_key_env=self.judge_api_key_env,
        )


# --- running ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalResult:
    """What one call of :func:`run_eval` did, and the report of the whole run folder."""

    report: EvalReport
    out_dir: Path
    traces_path: Path
    files: list[Path]
    """The report and plot files written."""
    selected: int
    """(prompt, mode) pairs this call asked for."""
    reused: int
    """Of those, already done by an earlier call (a successful trace in the file)."""
    ran: int
    """Agent runs made by this call."""
    failed: int
    """Of those, runs that ended in an error (rerun the eval to retry them)."""
    endpoint: Endpoint | None
    """None when every pair was already done and no model was needed."""
    seconds: float


@dataclass(frozen=True)
class _Pending:
    mode: ConsultMode
    prompt: EvalPrompt
    source: Path


def _load_prompts(config: EvalConfig) -> list[tuple[EvalPrompt, Path]]:
    prompts: list[tuple[EvalPrompt, Path]] = []
    for source in config.suites:
        path = source.path.expanduser().resolve()
        for prompt in load_suite(
            source.name,
            path,
            columns=source.columns,
            limit=config.limit,
            seed=config.seed,
            split=config.split,
        ):
            prompts.append((prompt, path))
    return prompts


def _done_runs(traces_path: Path) -> list[tuple[Trace, EvalRunMetadata]]:
    """The successful runs already in the file (a record cut short by a kill is skipped)."""
    if not traces_path.exists():
        return []
    done: list[tuple[Trace, EvalRunMetadata]] = []
    for trace in read_traces(traces_path):
        meta = EvalRunMetadata.of(trace, str(traces_path))
        if trace.outcome.status == "ok":
            done.append((trace, meta))
    return done


def _check_resumable(
    done: Sequence[tuple[Trace, EvalRunMetadata]],
    agent: AgentConfig,
    pack: RulePack,
    traces_path: Path,
) -> None:
    """Refuse to mix runs of another model, sampling or rule pack into one report."""
    wanted_sampling = agent.sampling.model_dump(mode="json")
    for trace, _meta in done:
        differences = []
        if trace.model != agent.model:
            differences.append(f"model {trace.model!r}, not {agent.model!r}")
        if trace.sampling != wanted_sampling:
            differences.append(f"sampling {trace.sampling}, not {wanted_sampling}")
        if trace.pack is not None and trace.pack.content_hash != pack.content_hash:
            differences.append(
                f"rule pack {trace.pack.name} {trace.pack.version} "
                f"({trace.pack.content_hash[:12]}), not {pack.name} ({pack.content_hash[:12]})"
            )
        if differences:
            raise ConfigError(
                f"{traces_path}: the earlier runs in this folder used {'; '.join(differences)} "
                f"(trace {trace.trace_id}). Fix: evaluate into a new --out folder, or resume with "
                "the settings of the first run."
            )


def _cut_torn_tail(traces_path: Path) -> None:
    """Drop a last record that a killed eval left without its newline.

    The sink appends, so new records would otherwise be glued onto the torn one and turn it
    into a malformed line in the middle of the file. The torn record's run never counted as
    done (its trace was not on disk), so it is simply run again.
    """
    if not traces_path.exists():
        return
    with traces_path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        keep = size
        while keep > 0:
            step = min(keep, 1 << 16)
            handle.seek(keep - step)
            newline = handle.read(step).rfind(b"\n")
            if newline != -1:
                keep = keep - step + newline + 1
                break
            keep -= step
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    logger.warning(
        "%s: dropped %d bytes of a record cut short at the end (an interrupted eval); "
        "its run is made again",
        traces_path,
        size - keep,
    )


class _ProgressSink(TraceSink):
    """Forwards each trace to the run's file, then ticks the progress bar (a run is done once
    its trace is on disk)."""

    def __init__(self, inner: TraceSink, progress: Any) -> None:
        self.inner = inner
        self.progress = progress

    def write(self, trace: Trace) -> None:
        self.inner.write(trace)
        self.progress.update(1)

    def close(self) -> None:
        self.inner.close()


async def _run_pending(
    agent_config: AgentConfig,
    pending: Sequence[_Pending],
    traces_path: Path,
    *,
    concurrency: int,
    progress: bool,
) -> int:
    """Run every pending (prompt, mode) pair, mode by mode; returns how many runs failed."""
    from tqdm.auto import tqdm

    failed = 0
    _cut_torn_tail(traces_path)
    bar = tqdm(total=len(pending), unit="run", desc="sca eval", disable=not progress, mininterval=1)
    sink = _ProgressSink(JsonlTraceSink(traces_path), bar)
    retriever: Retriever | None = None
    try:
        for mode in MODE_ORDER:
            items = [item for item in pending if item.mode == mode]
            if not items:
                continue
            bar.set_postfix_str(mode)
            agent = SafeContextAgent(
                agent_config.model_copy(update={"mode": mode}), sink=sink, retriever=retriever
            )
            if mode != "never":
                await asyncio.to_thread(agent.prepare)  # loads the embedder once, off the loop
                retriever = agent.resources.retriever
            runs: list[RunInput] = [
                {
                    "metadata": EvalRunMetadata(
                        suite=item.prompt.suite,
                        prompt_id=item.prompt.id,
                        label=item.prompt.label,
                        answer=item.prompt.answer,
                        category=item.prompt.category,
                        mode=mode,
                        source=str(item.source),
                    ).model_dump(mode="json")
                }
                for item in items
            ]
            results = await agent.abatch(
                [item.prompt.prompt for item in items],
                runs=runs,
                max_concurrency=concurrency,
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, AgentRunError):
                    failed += 1  # its trace (outcome "error") is in the file; a rerun retries it
                elif isinstance(result, BaseException):
                    raise result
            written = agent.resources.sink
            if written is not None and written.errors:
                raise TraceError(
                    f"{traces_path}: {written.errors} trace(s) could not be written "
                    f"({written.last_error}). Fix: check the disk and rerun; runs without a "
                    "trace are run again."
                )
    finally:
        bar.close()
        sink.close()
    return failed


async def arun_eval(config: EvalConfig, *, progress: bool = True) -> EvalResult:
    """Run what the run folder still lacks, then judge and report the whole folder."""
    started = time.perf_counter()
    # Fail on a bad judge setting, benchmark file or rule pack before starting anything.
    judge = config.refusal_judge()
    prompts = _load_prompts(config)
    from safe_context_agent.rules import load_rule_pack

    pack = load_rule_pack(config.agent.pack)
    out = config.out.expanduser()
    out.mkdir(parents=True, exist_ok=True)
    traces_path = out / TRACES_FILE
    done = _done_runs(traces_path)
    done_keys = {meta.key for _trace, meta in done}
    pending = [
        _Pending(mode, prompt, path)
        for mode in config.modes
        for prompt, path in prompts
        if (prompt.suite, prompt.id, mode) not in done_keys
    ]
    selected = len(prompts) * len(config.modes)
    endpoint: Endpoint | None = None
    failed = 0
    if pending:
        with model_endpoint(config.agent.base_url) as endpoint:
            update: dict[str, Any] = {"base_url": endpoint.base_url}
            if "model" not in config.agent.model_fields_set:
                update["model"] = endpoint.model(None, default=config.agent.model)
            agent_config = config.agent.model_copy(update=update)
            _check_resumable(done, agent_config, pack, traces_path)
            failed = await _run_pending(
                agent_config,
                pending,
                traces_path,
                concurrency=config.concurrency,
                progress=progress,
            )
    report = await abuild_report(
        read_traces(traces_path),
        judge=judge,
        concurrency=config.concurrency,
        traces_path=traces_path,
    )
    files = write_report(report, out, plots=config.plots)
    return EvalResult(
        report=report,
        out_dir=out,
        traces_path=traces_path,
        files=files,
        selected=selected,
        reused=selected - len(pending),
        ran=len(pending),
        failed=failed,
        endpoint=endpoint,
        seconds=time.perf_counter() - started,
    )


def run_eval(config: EvalConfig, *, progress: bool = True) -> EvalResult:
    """Sync :func:`arun_eval` (do not call it from a running event loop)."""
    return asyncio.run(arun_eval(config, progress=progress))


def rewrite_report(
    out_dir: str | Path,
    *,
    judge: Judge | None = None,
    concurrency: int = 8,
    plots: bool = True,
) -> tuple[EvalReport, list[Path]]:
    """Recompute a run folder's report from its traces (e.g. with another judge) and write it."""
    folder = Path(out_dir).expanduser()
    traces_path = folder / TRACES_FILE
    if not traces_path.is_file():
        raise ConfigError(
            f"{folder}: no {TRACES_FILE} here. Fix: pass the --out folder of an earlier `sca eval`."
        )

    async def build() -> EvalReport:
        return await abuild_report(
            read_traces(traces_path), judge=judge, concurrency=concurrency, traces_path=traces_path
        )

    report = asyncio.run(build())
    return report, write_report(report, folder, plots=plots)
