"""Collecting traces for training: every prompt run ``n`` times, one group per prompt, resumable."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safe_context_agent._agent import SafeContextAgent
from safe_context_agent.config import AgentConfig, validate_settings
from safe_context_agent.errors import ConfigError
from safe_context_agent.traces import open_sink, read_traces

__all__ = ["CollectOptions", "CollectReport", "PromptRecord", "collect_traces", "load_prompts"]

logger = logging.getLogger(__name__)


class PromptRecord(BaseModel):
    """One prompt of a collection file; ``label``/``answer`` travel into the traces' metadata."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1)
    id: str | None = None
    label: str | None = None
    answer: str | None = None

    @property
    def group_id(self) -> str:
        """Stable across runs, so a resumed collection recognises its groups."""
        return self.id or hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()[:16]

    def metadata(self) -> dict[str, Any]:
        data = {"prompt_id": self.group_id, **(self.model_extra or {})}
        if self.label is not None:
            data["label"] = self.label
        if self.answer is not None:
            data["answer"] = self.answer
        return data


class CollectReport(BaseModel):
    groups: int
    runs_planned: int
    runs_skipped_existing: int
    runs_ok: int
    runs_failed: int
    consult_rate: float | None
    out: Path


def load_prompts(path: str | Path) -> list[PromptRecord]:
    """``.jsonl`` (objects with ``prompt``, optional ``id``/``label``/``answer``), ``.csv`` (same
    columns) or ``.txt`` (one prompt per line). Errors name the file, the line and the fix."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"prompts file {source} does not exist")
    records: list[PromptRecord] = []
    if source.suffix == ".txt":
        lines = _read_text(source).splitlines()
        records = [PromptRecord(prompt=line.strip()) for line in lines if line.strip()]
    elif source.suffix in {".jsonl", ".csv"}:
        rows: Sequence[tuple[int, Any]]
        if source.suffix == ".csv":
            rows = list(enumerate(csv.DictReader(io.StringIO(_read_text(source))), start=2))
        else:
            rows = []
            for number, line in enumerate(_read_text(source).splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{source}:{number}: not valid JSON ({exc.msg})") from None
        for number, row in rows:
            try:
                records.append(PromptRecord.model_validate(row))
            except ValidationError as exc:
                raise ConfigError(
                    f"{source}:{number}: each record needs a non-empty 'prompt' field ({exc.errors()[0]['msg']})"
                ) from None
    else:
        raise ConfigError(f"{source}: unsupported prompts file; use .jsonl, .csv or .txt")
    if not records:
        raise ConfigError(f"{source}: no prompts found")
    ids = [r.group_id for r in records]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{source}: prompt ids repeat; give each prompt a unique 'id'")
    return records


def _read_text(source: Path) -> str:
    """The file as UTF-8 text (a BOM is dropped); a file in another encoding is named with the
    line of its first undecodable byte, never a traceback."""
    data = source.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{source}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


class CollectOptions(BaseModel):
    """The collection's own settings (the agent's are :class:`AgentConfig`)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=1, description="Samples per prompt (one group per prompt).")
    concurrency: int = Field(default=16, ge=1, description="Runs in flight at once.")


def _completed_samples(out: Path) -> dict[str, set[int]]:
    done: dict[str, set[int]] = {}
    if not out.exists():
        return done
    result = read_traces(out, on_error="skip")
    for trace in result:
        if (
            trace.outcome.status == "ok"
            and trace.group_id is not None
            and trace.sample_index is not None
        ):
            done.setdefault(trace.group_id, set()).add(trace.sample_index)
    for skipped in result.report.skipped:
        logger.warning("skipping unreadable trace record %s", skipped)
    return done


async def _run_all(
    agent: SafeContextAgent, jobs: list[tuple[PromptRecord, int]], concurrency: int, progress: bool
) -> tuple[int, int]:
    from tqdm.auto import tqdm

    gate = asyncio.Semaphore(max(1, concurrency))
    ok = failed = 0

    async def one(record: PromptRecord, index: int) -> bool:
        async with gate:
            try:
                await agent.ainvoke(
                    record.prompt,
                    run={
                        "group_id": record.group_id,
                        "sample_index": index,
                        "metadata": record.metadata(),
                    },
                )
            except Exception as exc:  # the error trace is written; keep collecting
                logger.warning("run %s/%d failed: %s", record.group_id, index, exc)
                return False
            return True

    with tqdm(total=len(jobs), disable=not progress, desc="collect", unit="run") as bar:
        for finished in asyncio.as_completed([one(r, i) for r, i in jobs]):
            if await finished:
                ok += 1
            else:
                failed += 1
            bar.update(1)
    return ok, failed


def collect_traces(
    config: AgentConfig,
    prompts: Sequence[PromptRecord],
    *,
    n: int,
    out: str | Path,
    concurrency: int = 16,
    progress: bool = True,
) -> CollectReport:
    """Run each prompt ``n`` times (group = prompt, ``sample_index`` 0..n-1), appending traces to
    ``out``; samples already present with outcome ``ok`` are skipped, so an interrupted collection
    resumes where it stopped."""
    options = validate_settings(
        CollectOptions,
        {"n": n, "concurrency": concurrency},
        source="collect settings",
        labels={"n": "n (--n)", "concurrency": "concurrency (--concurrency)"},
    )
    n, concurrency = options.n, options.concurrency
    out_path = Path(out)
    done = _completed_samples(out_path)
    jobs = [(r, i) for r in prompts for i in range(n) if i not in done.get(r.group_id, set())]
    skipped = len(prompts) * n - len(jobs)
    agent = SafeContextAgent(config, sink=open_sink(out_path))
    try:
        agent.prepare()
        ok, failed = asyncio.run(_run_all(agent, jobs, concurrency, progress)) if jobs else (0, 0)
    finally:
        agent.close()
    traces = (
        [t for t in read_traces(out_path, on_error="skip") if t.outcome.status == "ok"]
        if out_path.exists()
        else []
    )
    return CollectReport(
        groups=len(prompts),
        runs_planned=len(prompts) * n,
        runs_skipped_existing=skipped,
        runs_ok=ok,
        runs_failed=failed,
        consult_rate=(sum(t.consulted for t in traces) / len(traces)) if traces else None,
        out=out_path,
    )
