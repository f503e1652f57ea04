"""Export traces to one flat row per trace, for ``datasets.load_dataset`` and dataframes.

The columns are the export row format (``_rows``). The export is lossless:
:func:`~safe_context_agent.traces.read_traces` reads the exported file back into the same traces.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from safe_context_agent._io import atomic_path
from safe_context_agent.errors import TraceError
from safe_context_agent.traces._reader import (
    PARQUET_SUFFIXES,
    OnError,
    TraceReadReport,
    read_traces,
)
from safe_context_agent.traces._rows import COLUMNS, trace_to_row

__all__ = ["EXPORT_SUFFIXES", "ExportReport", "export_traces"]

EXPORT_SUFFIXES = (".jsonl", *PARQUET_SUFFIXES)

_PARQUET_BATCH_ROWS = 512


class ExportReport(BaseModel):
    """What ``export_traces`` wrote, and what it had to leave out of the source."""

    schema_version: int = 1
    dest: str
    rows: int
    read: TraceReadReport


def export_traces(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    on_error: OnError = "raise",
    overwrite: bool = False,
) -> ExportReport:
    """Write every trace of ``src`` (any file ``read_traces`` reads) to ``dest`` as flat rows.

    ``dest`` ends in ``.jsonl`` (JSON lines) or ``.parquet`` (needs pyarrow). Either loads with
    ``datasets.load_dataset("json" | "parquet", data_files=dest)``. The file appears complete or
    not at all: rows go to a temporary file that is renamed at the end.
    """
    target = Path(dest)
    suffix = target.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise TraceError(
            f"{target}: cannot export to a {suffix or 'suffix-less'} file;"
            f" use one of {', '.join(EXPORT_SUFFIXES)}"
        )
    if target.exists() and not overwrite:
        raise TraceError(f"{target}: already exists; pass overwrite=True or choose a new path")
    if Path(src).resolve() == target.resolve():
        raise TraceError(f"{target}: is the source itself; export to a different path")
    source = read_traces(src, on_error=on_error)
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = (trace_to_row(trace) for trace in source)
    with atomic_path(target) as partial:
        if suffix in PARQUET_SUFFIXES:
            count = _write_parquet(partial, rows, target)
        else:
            count = _write_jsonl(partial, rows)
    return ExportReport(dest=str(target), rows=count, read=source.report)


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def _write_parquet(path: Path, rows: Iterator[dict[str, Any]], target: Path) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise TraceError(
            f"{target}: Parquet export needs pyarrow; pip install pyarrow, or export to .jsonl"
        ) from exc
    arrow_types = {
        "int": pa.int64(),
        "str": pa.string(),
        "bool": pa.bool_(),
        "str_list": pa.list_(pa.string()),
    }
    schema = pa.schema([(name, arrow_types[kind]) for name, kind in COLUMNS.items()])
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == _PARQUET_BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count += len(batch)
                batch = []
        if batch or count == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    return count
