"""Export traces to one flat row per trace, for ``datasets.load_dataset`` and dataframes.

Every row has the same columns, each of one type, so Arrow's type inference never meets a
column that is a string in one row and a list in the next:

- scalars of the trace (``trace_id``, ``group_id``, ``sample_index``, ``model``, ``mode``, ...);
- derived columns for analysis: ``prompt``, ``consulted``, ``rule_ids``, ``label`` (from
  ``metadata["label"]``, as text), ``outcome_status``, ``n_turns``, ``n_consultations``,
  ``n_format_errors``;
- every nested field (``messages``, ``turns``, ``consultations``, ...) as a JSON string, and the
  fields a newer writer added as one JSON object in ``extra``.

The export is lossless: :func:`~safe_context_agent.traces.read_traces` reads the exported file
back into the same traces.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from safe_context_agent._io import atomic_path
from safe_context_agent.errors import TraceError
from safe_context_agent.traces._reader import (
    PARQUET_SUFFIXES,
    OnError,
    TraceReadReport,
    read_traces,
)
from safe_context_agent.traces._schema import Trace

if TYPE_CHECKING:
    import datasets

__all__ = [
    "EXPORT_SCHEMA_VERSION",
    "EXPORT_SUFFIXES",
    "VERSION_COLUMN",
    "ExportReport",
    "export_features",
    "export_traces",
    "is_export_row",
    "trace_data_from_row",
    "trace_to_row",
]

EXPORT_SCHEMA_VERSION = 1

EXPORT_SUFFIXES = (".jsonl", *PARQUET_SUFFIXES)

_ColumnType = Literal["int", "str", "bool", "str_list"]

# The trace's own scalar fields, copied as they are.
_SCALAR_COLUMNS: dict[str, _ColumnType] = {
    "schema_version": "int",
    "trace_id": "str",
    "group_id": "str",
    "sample_index": "int",
    "thread_id": "str",
    "started_at": "str",
    "finished_at": "str",
    "model": "str",
    "base_url": "str",
    "mode": "str",
    "answer": "str",
}
# Computed from the trace for convenience; ignored when a row is read back.
_DERIVED_COLUMNS: dict[str, _ColumnType] = {
    "prompt": "str",
    "consulted": "bool",
    "rule_ids": "str_list",
    "label": "str",
    "outcome_status": "str",
    "n_turns": "int",
    "n_consultations": "int",
    "n_format_errors": "int",
}
# The trace's nested fields, each stored as a JSON string.
_JSON_COLUMNS = (
    "messages",
    "turns",
    "consultations",
    "format_errors",
    "tool_runs",
    "outcome",
    "metadata",
    "sampling",
    "pack",
    "node_latencies",
)
_EXTRA_COLUMN = "extra"
VERSION_COLUMN = "export_schema_version"

COLUMNS: dict[str, _ColumnType] = {
    VERSION_COLUMN: "int",
    **_SCALAR_COLUMNS,
    **_DERIVED_COLUMNS,
    **dict.fromkeys(_JSON_COLUMNS, "str"),
    _EXTRA_COLUMN: "str",
}
"""Every exported column and its type, in order."""

_PARQUET_BATCH_ROWS = 512


class ExportReport(BaseModel):
    """What ``export_traces`` wrote, and what it had to leave out of the source."""

    schema_version: int = 1
    dest: str
    rows: int
    read: TraceReadReport


def trace_to_row(trace: Trace) -> dict[str, Any]:
    """The flat export row of one trace (see the module docstring for the columns)."""
    data = trace.model_dump(mode="json")
    label = trace.metadata.get("label")
    row: dict[str, Any] = {VERSION_COLUMN: EXPORT_SCHEMA_VERSION}
    row.update({name: data.pop(name) for name in _SCALAR_COLUMNS})
    row.update(
        prompt=trace.prompt,
        consulted=data.pop("consulted"),
        rule_ids=data.pop("rule_ids"),
        label=label if label is None or isinstance(label, str) else json.dumps(label),
        outcome_status=trace.outcome.status,
        n_turns=len(trace.turns),
        n_consultations=len(trace.consultations),
        n_format_errors=len(trace.format_errors),
    )
    # JSON columns always hold text (``"null"`` for None), so none of them is ever null-typed.
    for name in _JSON_COLUMNS:
        row[name] = json.dumps(data.pop(name), ensure_ascii=False)
    # Whatever is left are fields this version does not know (kept by the schema's extra=allow).
    row[_EXTRA_COLUMN] = json.dumps(data, ensure_ascii=False)
    return row


def export_features() -> datasets.Features:
    """The exported columns as ``datasets.Features``, for loading a JSON lines export.

    ``datasets`` infers a JSON file's column types from its first 10 MB. A column that is null
    all through that part (``thread_id``, say) is typed null, and a later value then fails the
    load; passing these features avoids that. Parquet exports carry their types and need nothing.

    ```python
    datasets.load_dataset("json", data_files="traces.export.jsonl", features=export_features())
    ```
    """
    try:
        import datasets
    except ImportError as exc:
        raise TraceError(
            "export_features needs the datasets package; pip install 'safe-context-agent[train]'"
        ) from exc
    value_types = {"int": "int64", "str": "string", "bool": "bool"}
    return datasets.Features(
        {
            name: datasets.List(datasets.Value("string"))
            if kind == "str_list"
            else datasets.Value(value_types[kind])
            for name, kind in COLUMNS.items()
        }
    )


def is_export_row(data: dict[str, Any]) -> bool:
    return VERSION_COLUMN in data


def trace_data_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """Undo :func:`trace_to_row`: the trace's fields, ready for ``Trace.model_validate``.

    Raises ``ValueError`` naming the column whose JSON does not parse.
    """
    data = {name: row[name] for name in _SCALAR_COLUMNS if name in row}
    for name in (*_JSON_COLUMNS, _EXTRA_COLUMN):
        text = row.get(name)
        if text is None:  # left out of a hand-made row
            continue
        try:
            value = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {name}: not a JSON string ({exc})") from None
        if name == _EXTRA_COLUMN:
            if not isinstance(value, dict):
                raise ValueError(f"column {name}: expected a JSON object")
            data.update(value)
        else:
            data[name] = value
    return data


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
