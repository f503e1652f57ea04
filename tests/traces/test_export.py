"""Export to flat rows, loaded by the real ``datasets`` library, and read back losslessly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from safe_context_agent.errors import TraceError
from safe_context_agent.traces import (
    ExportReport,
    JsonlTraceSink,
    SqliteTraceSink,
    Trace,
    export_features,
    export_traces,
    read_traces,
)
from safe_context_agent.traces._rows import COLUMNS

datasets = pytest.importorskip("datasets")

TraceFactory = Callable[..., Trace]


def sample_traces(make_trace: TraceFactory) -> list[Trace]:
    """Varied on purpose: nulls, no consultation, labels of several JSON types, a newer field."""
    return [
        make_trace(0),
        make_trace(1, consultations=[], group_id=None, sample_index=None, answer=None, pack=None),
        make_trace(2, metadata={"label": True, "note": [1, 2]}),
        make_trace(3, metadata={}, thread_id="thread-9"),
        make_trace(4, field_from_a_newer_writer={"kept": True}),
    ]


def write_source(path: Path, traces: list[Trace]) -> Path:
    sink = SqliteTraceSink(path) if path.suffix == ".sqlite" else JsonlTraceSink(path)
    with sink:
        for trace in traces:
            sink.write(trace)
    return path


def load(dest: Path, cache: Path, **options: Any) -> Any:
    kind = "parquet" if dest.suffix == ".parquet" else "json"
    return datasets.load_dataset(
        kind, data_files=str(dest), split="train", cache_dir=str(cache), **options
    )


@pytest.mark.parametrize("dest_name", ["export.jsonl", "export.parquet"])
def test_datasets_loads_the_export_with_flat_columns(
    tmp_path: Path, make_trace: TraceFactory, dest_name: str
) -> None:
    traces = sample_traces(make_trace)
    source = write_source(tmp_path / "runs.sqlite", traces)
    report = export_traces(source, tmp_path / dest_name)
    assert report.rows == 5 and report.read.skipped == []
    rows = load(tmp_path / dest_name, tmp_path / "hf")
    assert rows.column_names == list(COLUMNS)
    assert rows["trace_id"] == [t.trace_id for t in traces]
    assert rows["group_id"] == ["group-0", None, "group-0", "group-0", "group-1"]
    assert rows["sample_index"] == [0, None, 2, 3, 0]
    assert rows["consulted"] == [True, False, True, True, True]
    assert rows["rule_ids"][0] == ["GEN-PHYS-03", "GEN-CRIME-01"] and rows["rule_ids"][1] == []
    assert rows["label"] == ["safe", "safe", "true", None, "safe"]
    assert rows["prompt"][3] == "How does lock picking work? (3)"
    assert rows["n_turns"] == [2] * 5 and rows["n_format_errors"] == [1] * 5
    assert rows["outcome_status"] == ["ok"] * 5
    assert json.loads(rows["messages"][0]) == traces[0].messages
    assert json.loads(rows["turns"][0])[1]["logprobs"] == traces[0].turns[1].logprobs
    assert rows["pack"][1] == "null"
    assert json.loads(rows["extra"][4]) == {"field_from_a_newer_writer": {"kept": True}}


@pytest.mark.parametrize("dest_name", ["export.jsonl", "export.parquet"])
def test_export_reads_back_into_the_same_traces(
    tmp_path: Path, make_trace: TraceFactory, dest_name: str
) -> None:
    traces = sample_traces(make_trace)
    source = write_source(tmp_path / "runs.jsonl", traces)
    export_traces(source, tmp_path / dest_name)
    back = list(read_traces(tmp_path / dest_name))
    assert [t.model_dump() for t in back] == [t.model_dump() for t in traces]
    assert back[4].model_extra == {"field_from_a_newer_writer": {"kept": True}}


def test_export_features_survive_a_column_that_starts_null(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    # thread_id is null in every row of the first chunk and set in the last one: without the
    # features, datasets would type the column null from the first chunk and fail on the value.
    traces = [make_trace(n) for n in range(12)] + [make_trace(12, thread_id="t-1")]
    export_traces(write_source(tmp_path / "runs.jsonl", traces), tmp_path / "e.jsonl")
    rows = load(tmp_path / "e.jsonl", tmp_path / "hf", features=export_features(), chunksize=8192)
    assert rows["thread_id"] == [None] * 12 + ["t-1"]


def test_export_skips_bad_records_on_request_and_reports_them(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    source = write_source(tmp_path / "runs.jsonl", [make_trace(1), make_trace(2)])
    source.write_text(source.read_text() + "{not json}\n" + '{"trace_id": "cut')
    dest = tmp_path / "e.jsonl"
    with pytest.raises(TraceError, match=r"runs\.jsonl:3: not valid JSON"):
        export_traces(source, dest)
    assert list(tmp_path.iterdir()) == [source]  # no half-written export is left behind
    report = export_traces(source, dest, on_error="skip")
    assert isinstance(report, ExportReport) and report.rows == 2
    assert [(s.location, s.trace_id) for s in report.read.skipped] == [
        (f"{source}:3", None),
        (f"{source}:4", None),
    ]
    assert len(dest.read_text().splitlines()) == 2


def test_export_argument_errors(tmp_path: Path, make_trace: TraceFactory) -> None:
    source = write_source(tmp_path / "runs.jsonl", [make_trace(1)])
    with pytest.raises(TraceError) as caught:
        export_traces(source, tmp_path / "e.csv")
    assert str(caught.value) == (
        f"{tmp_path / 'e.csv'}: cannot export to a .csv file; use one of .jsonl, .parquet"
    )
    with pytest.raises(TraceError, match="is the source itself; export to a different path"):
        export_traces(source, source, overwrite=True)
    export_traces(source, tmp_path / "e.jsonl")
    with pytest.raises(TraceError, match="already exists; pass overwrite=True"):
        export_traces(source, tmp_path / "e.jsonl")
    assert export_traces(source, tmp_path / "e.jsonl", overwrite=True).rows == 1


def test_export_from_a_newer_exporter_is_refused(tmp_path: Path, make_trace: TraceFactory) -> None:
    source = write_source(tmp_path / "runs.jsonl", [make_trace(1)])
    dest = tmp_path / "e.jsonl"
    export_traces(source, dest)
    row = json.loads(dest.read_text())
    row["export_schema_version"] = 2
    dest.write_text(json.dumps(row) + "\n")
    with pytest.raises(TraceError, match="has export_schema_version 2, newer than this"):
        list(read_traces(dest))


def test_export_row_with_broken_json_column_names_it(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    source = write_source(tmp_path / "runs.jsonl", [make_trace(1)])
    dest = tmp_path / "e.jsonl"
    export_traces(source, dest)
    row = json.loads(dest.read_text())
    row["turns"] = "[{"
    dest.write_text(json.dumps(row) + "\n")
    with pytest.raises(TraceError, match=r"e\.jsonl:1: trace [0-9a-f]+: column turns: not a JSON"):
        list(read_traces(dest))
