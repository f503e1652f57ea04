"""Read traces back, one at a time, from any file a sink or ``export_traces`` wrote.

The reader is strict about what it cannot be sure of and tolerant of what a crash leaves behind:

- a JSON lines file whose last line is cut short (no newline, not valid JSON: a writer stopped
  mid-record) loses that line, which the report lists; it is never an error. The same holds for
  a cut-short line *followed by* newer lines: the sink starts a fresh line after a torn tail, so
  a crash and a later append leave a record that is a JSON prefix, then a newline;
- any other malformed record raises a :class:`~safe_context_agent.errors.TraceError` naming the
  file, the line (or SQLite row), the trace id when it can be recovered and the offending field,
  or, with ``on_error="skip"``, is left out and listed in the report;
- a record written by a newer schema always raises: skipping it would silently drop data that an
  upgraded reader can read; so does a version below 1, which no writer ever produced (a damaged
  record, or a file from another program).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from safe_context_agent.errors import TraceError
from safe_context_agent.traces._rows import (
    EXPORT_SCHEMA_VERSION,
    VERSION_COLUMN,
    is_export_row,
    trace_data_from_row,
)
from safe_context_agent.traces._schema import TRACE_SCHEMA_VERSION, Trace
from safe_context_agent.traces._sinks import (
    JSONL_SUFFIXES,
    SQLITE_LAYOUT_VERSION,
    SQLITE_SUFFIXES,
    SQLITE_TABLE,
)

__all__ = [
    "PARQUET_SUFFIXES",
    "OnError",
    "SkippedRecord",
    "TraceReadReport",
    "TraceReadResult",
    "group_traces",
    "read_traces",
]

OnError = Literal["raise", "skip"]

PARQUET_SUFFIXES = (".parquet",)
"""Parquet files are only ever written by ``export_traces``."""

_UPGRADE = "upgrade safe-context-agent (pip install -U safe-context-agent) to read it"
_TRACE_ID_IN_TEXT = re.compile(rb'"trace_id"\s*:\s*"([^"\\]{1,200})"')
_PARQUET_BATCH_ROWS = 256
_MAX_FIELD_ERRORS = 3


class SkippedRecord(BaseModel):
    """A record the reader left out, and why."""

    location: str
    """``file:line`` for JSON lines, ``file row N`` for SQLite and Parquet."""
    trace_id: str | None = None
    reason: str


class TraceReadReport(BaseModel):
    """What the last pass over a trace file found."""

    schema_version: int = 1
    path: str
    records_read: int = 0
    skipped: list[SkippedRecord] = Field(default_factory=list)
    complete: bool = False
    """True once a pass reached the end of the file."""


class TraceReadResult:
    """The traces of one file, read lazily: iterate it (again) to stream them.

    ``report`` describes the latest pass and is final once ``report.complete`` is true.
    """

    def __init__(self, path: Path, on_error: OnError) -> None:
        self.path = path
        self.on_error = on_error
        self.report = TraceReadReport(path=str(path))

    def __repr__(self) -> str:
        return f"read_traces({str(self.path)!r}, on_error={self.on_error!r})"

    def __iter__(self) -> Iterator[Trace]:
        self.report = TraceReadReport(path=str(self.path))
        for location, raw in _records(self.path):
            trace = self._decode(location, raw)
            if trace is not None:
                self.report.records_read += 1
                yield trace
        self.report.complete = True

    def _decode(self, location: str, raw: _Raw) -> Trace | None:
        try:
            return _decode_record(location, raw)
        except _Truncated as cut:
            self.report.skipped.append(
                SkippedRecord(location=location, trace_id=cut.trace_id, reason=cut.reason)
            )
        except _Malformed as bad:
            message = f"{location}: {bad}"
            if self.on_error == "raise":
                raise TraceError(
                    f"{message}; repair or remove the record, or read with on_error='skip'"
                ) from None
            self.report.skipped.append(
                SkippedRecord(location=location, trace_id=bad.trace_id, reason=bad.reason)
            )
        return None


def read_traces(path: str | os.PathLike[str], *, on_error: OnError = "raise") -> TraceReadResult:
    """Stream the traces of a ``.jsonl``, ``.sqlite``/``.db`` or exported ``.parquet`` file.

    ```python
    result = read_traces("runs/traces.jsonl", on_error="skip")
    for trace in result:
        ...
    print(result.report.records_read, result.report.skipped)
    ```
    """
    if on_error not in ("raise", "skip"):
        raise TraceError(f"on_error={on_error!r} is not an option; use 'raise' or 'skip'")
    source = Path(path)
    if not source.is_file():
        raise TraceError(f"{source}: no such trace file; check the path")
    _format_of(source)  # fail now on an unknown suffix, not at the first iteration
    return TraceReadResult(source, on_error)


def group_traces(traces: Iterable[Trace]) -> dict[str, list[Trace]]:
    """Group traces by ``group_id`` (groups in order of first appearance), each by ``sample_index``.

    A trace without a ``group_id`` is a group of its own, keyed by its ``trace_id``. The same
    ``trace_id`` twice, or two successful traces (``outcome.status == "ok"``) with one
    ``sample_index`` in a group, raise a :class:`TraceError`: training would count those samples
    twice. Error traces sharing a ``sample_index`` are retries of that sample (a resumed
    ``sca collect`` runs a failed sample again): the successful trace supersedes them, and of
    several error traces only the latest (by ``started_at``) is kept.
    """
    groups: dict[str, list[Trace]] = {}
    seen: set[str] = set()
    for trace in traces:
        if trace.trace_id in seen:
            raise TraceError(
                f"trace {trace.trace_id} appears twice; read each trace file once"
                " (or remove the duplicate records)"
            )
        seen.add(trace.trace_id)
        groups.setdefault(trace.group_id or trace.trace_id, []).append(trace)
    for group_id, members in groups.items():
        members.sort(key=lambda t: (t.sample_index is None, t.sample_index or 0, t.started_at))
        groups[group_id] = _latest_attempts(group_id, members)
    return groups


def _latest_attempts(group_id: str, members: list[Trace]) -> list[Trace]:
    """One trace per ``sample_index`` (see :func:`group_traces`); members sorted by index, time."""
    by_index: dict[int, list[Trace]] = {}
    for trace in members:
        if trace.sample_index is not None:
            by_index.setdefault(trace.sample_index, []).append(trace)
    dropped: set[str] = set()
    for index, attempts in by_index.items():
        ok = [t for t in attempts if t.outcome.status == "ok"]
        if len(ok) > 1:
            ids = ", ".join(t.trace_id for t in ok)
            raise TraceError(
                f"group {group_id} has several traces with sample_index {index} ({ids}); give"
                " each sample of a group its own sample_index"
            )
        keep = ok[0] if ok else attempts[-1]
        dropped.update(t.trace_id for t in attempts if t is not keep)
    return [t for t in members if t.trace_id not in dropped]


class _Malformed(Exception):
    def __init__(self, reason: str, trace_id: str | None = None) -> None:
        super().__init__(f"trace {trace_id}: {reason}" if trace_id else reason)
        self.reason = reason
        self.trace_id = trace_id


class _Truncated(_Malformed):
    pass


# Where a JSON lines record sits: the last line without a newline ("cut": a writer stopped
# mid-record), a line with more lines after it ("followed": a cut-short one there was resumed
# after, see JsonlTraceSink), or the final newline-terminated line / an SQLite row ("whole").
_Ending = Literal["cut", "followed", "whole"]
# A record as stored: text and where it sits, or a row.
_Raw = tuple[bytes, _Ending] | dict[str, Any]


def _format_of(path: Path) -> Literal["jsonl", "sqlite", "parquet"]:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in SQLITE_SUFFIXES:
        return "sqlite"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    known = ", ".join(JSONL_SUFFIXES + SQLITE_SUFFIXES + PARQUET_SUFFIXES)
    raise TraceError(
        f"{path}: cannot read traces from a {suffix or 'suffix-less'} file; use {known}"
    )


def _records(path: Path) -> Iterator[tuple[str, _Raw]]:
    kind = _format_of(path)
    if kind == "jsonl":
        return _jsonl_records(path)
    if kind == "sqlite":
        return _sqlite_records(path)
    return _parquet_records(path)


def _jsonl_records(path: Path) -> Iterator[tuple[str, _Raw]]:
    with path.open("rb") as lines:
        pending: tuple[str, bytes] | None = None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if pending is not None:
                yield pending[0], (pending[1], "followed")
            pending = (f"{path}:{number}", line)
        if pending is not None:
            yield pending[0], (pending[1], "whole" if pending[1].endswith(b"\n") else "cut")


def _sqlite_records(path: Path) -> Iterator[tuple[str, _Raw]]:
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise TraceError(f"{path}: cannot open the SQLite file ({exc})") from exc
    try:
        try:
            (layout,) = conn.execute("PRAGMA user_version").fetchone()
            rows = conn.execute(f"SELECT rowid, trace_json FROM {SQLITE_TABLE} ORDER BY rowid")
        except sqlite3.Error as exc:
            raise TraceError(
                f"{path}: not a trace database ({exc}); read a file written by SqliteTraceSink"
            ) from exc
        if layout > SQLITE_LAYOUT_VERSION:
            raise TraceError(
                f"{path}: the trace table has layout version {layout}, newer than this"
                f" safe-context-agent reads ({SQLITE_LAYOUT_VERSION}); {_UPGRADE}"
            )
        for rowid, trace_json in rows:
            yield f"{path} row {rowid}", (str(trace_json).encode(), "whole")
    finally:
        conn.close()


def _parquet_records(path: Path) -> Iterator[tuple[str, _Raw]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise TraceError(
            f"{path}: reading Parquet needs pyarrow; pip install pyarrow, or export to .jsonl"
        ) from exc
    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            number += 1
            yield f"{path} row {number}", row


def _decode_record(location: str, raw: _Raw) -> Trace:
    if isinstance(raw, dict):
        data: Any = raw
    else:
        line, ending = raw
        try:
            data = json.loads(line)
        except ValueError as exc:
            found = _TRACE_ID_IN_TEXT.search(line)
            trace_id = found.group(1).decode(errors="replace") if found else None
            if ending == "cut":
                raise _Truncated(
                    "the last line is cut short (a writer stopped mid-record); left out",
                    trace_id,
                ) from None
            if ending == "followed" and _is_cut_short(line, exc):
                raise _Truncated(
                    "the line is cut short (a writer stopped mid-record, later writers went on "
                    "after it); left out",
                    trace_id,
                ) from None
            detail = (
                f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else exc
            )
            raise _Malformed(f"not valid JSON ({detail})", trace_id) from None
    if not isinstance(data, dict):
        raise _Malformed(f"expected a JSON object (one trace), found {type(data).__name__}")
    trace_id = data.get("trace_id") if isinstance(data.get("trace_id"), str) else None
    if is_export_row(data):
        _check_version(location, trace_id, VERSION_COLUMN, data, EXPORT_SCHEMA_VERSION)
        try:
            data = trace_data_from_row(data)
        except ValueError as exc:
            raise _Malformed(str(exc), trace_id) from None
    _check_version(location, trace_id, "schema_version", data, TRACE_SCHEMA_VERSION)
    try:
        return Trace.model_validate(data)
    except ValidationError as exc:
        raise _Malformed(_describe(exc), trace_id) from None


def _is_cut_short(line: bytes, exc: ValueError) -> bool:
    """A trace record that stops early: the decoder ran off the end of the line, not into junk."""
    if not isinstance(exc, json.JSONDecodeError) or not line.lstrip().startswith(b"{"):
        return False
    text = line.rstrip()
    tail = text[exc.pos :]
    cut_in_literal = bool(tail) and any(
        word.startswith(tail) for word in (b"true", b"false", b"null")
    )
    return exc.msg.startswith("Unterminated string") or exc.pos >= len(text) - 1 or cut_in_literal


def _check_version(
    location: str, trace_id: str | None, field: str, data: dict[str, Any], supported: int
) -> None:
    version = data.get(field)
    record = f"trace {trace_id}" if trace_id else "the record"
    if isinstance(version, int) and version > supported:
        raise TraceError(
            f"{location}: {record} has {field} {version}, newer than this safe-context-agent"
            f" reads ({supported}); {_UPGRADE}"
        )
    if isinstance(version, int) and version < 1:
        raise TraceError(
            f"{location}: {record} has {field} {version}; versions start at 1, so the record is"
            " damaged or was not written by safe-context-agent; repair its"
            f" {field} (1 to {supported}) or remove the record"
        )


def _describe(error: ValidationError) -> str:
    problems = error.errors(include_url=False)
    described = "; ".join(
        f"field {'.'.join(map(str, p['loc'])) or '(record)'}: {p['msg']}"
        for p in problems[:_MAX_FIELD_ERRORS]
    )
    more = len(problems) - _MAX_FIELD_ERRORS
    return described + (f" (and {more} more)" if more > 0 else "")
