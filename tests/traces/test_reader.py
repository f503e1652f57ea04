"""The tolerant reader on real damaged files: cut-off tails, corrupt lines, newer schemas."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from safe_context_agent.errors import TraceError
from safe_context_agent.traces import (
    TRACE_SCHEMA_VERSION,
    JsonlTraceSink,
    SkippedRecord,
    SqliteTraceSink,
    Trace,
    group_traces,
    read_traces,
)

TraceFactory = Callable[..., Trace]

FIX = "; repair or remove the record, or read with on_error='skip'"


def write_jsonl(path: Path, traces: list[Trace]) -> list[str]:
    """The traces' lines, written by the real sink."""
    with JsonlTraceSink(path, fsync=False) as sink:
        for trace in traces:
            sink.write(trace)
    return path.read_text().splitlines()


def rewrite(path: Path, lines: list[str], *, final_newline: bool = True) -> None:
    path.write_text("\n".join(lines) + ("\n" if final_newline else ""))


def test_truncated_last_line_is_left_out_and_reported(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    path = tmp_path / "t.jsonl"
    traces = [make_trace(seed) for seed in range(4)]
    lines = write_jsonl(path, traces)
    # The writer of the fourth record died after half of it reached the disk.
    rewrite(path, [*lines[:3], lines[3][: len(lines[3]) // 2]], final_newline=False)
    result = read_traces(path)
    assert [t.trace_id for t in result] == [t.trace_id for t in traces[:3]]
    assert result.report.records_read == 3
    assert result.report.complete
    assert result.report.skipped == [
        SkippedRecord(
            location=f"{path}:4",
            trace_id=traces[3].trace_id,
            reason="the last line is cut short (a writer stopped mid-record); left out",
        )
    ]


def test_zero_filled_tail_after_power_loss_is_a_truncated_line(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    path = tmp_path / "t.jsonl"
    lines = write_jsonl(path, [make_trace(1)])
    path.write_bytes(path.read_bytes() + b"\0" * 4096)
    result = read_traces(path)
    assert len(list(result)) == 1 and len(lines) == 1
    assert result.report.skipped[0].location == f"{path}:2"
    assert result.report.skipped[0].trace_id is None


def test_complete_last_record_without_newline_is_read(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    path = tmp_path / "t.jsonl"
    lines = write_jsonl(path, [make_trace(1), make_trace(2)])
    rewrite(path, lines, final_newline=False)
    result = read_traces(path)
    assert len(list(result)) == 2 and result.report.skipped == []


def corrupt_second_line(path: Path, traces: list[Trace]) -> tuple[str, int]:
    """Break the JSON of line 2 (of 3); return its trace id and the column of the damage."""
    lines = write_jsonl(path, traces)
    column = lines[1].index('"smollm2"') + 1
    lines[1] = lines[1].replace('"smollm2"', "smollm2", 1)
    rewrite(path, lines)
    return traces[1].trace_id, column


def test_corrupt_middle_line_raises_naming_file_line_and_trace(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    path = tmp_path / "t.jsonl"
    trace_id, column = corrupt_second_line(path, [make_trace(s) for s in range(3)])
    result = read_traces(path)
    stream = iter(result)
    # Streaming: the good first record arrives before the reader reaches the bad one.
    assert next(stream).sample_index == 0
    with pytest.raises(TraceError) as caught:
        next(stream)
    assert str(caught.value) == (
        f"{path}:2: trace {trace_id}: not valid JSON (Expecting value at column {column})" + FIX
    )


def test_corrupt_middle_line_is_skipped_and_reported_on_request(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    path = tmp_path / "t.jsonl"
    traces = [make_trace(s) for s in range(3)]
    trace_id, column = corrupt_second_line(path, traces)
    result = read_traces(path, on_error="skip")
    assert [t.trace_id for t in result] == [traces[0].trace_id, traces[2].trace_id]
    assert result.report.skipped == [
        SkippedRecord(
            location=f"{path}:2",
            trace_id=trace_id,
            reason=f"not valid JSON (Expecting value at column {column})",
        )
    ]


def test_invalid_field_is_named_by_its_location(tmp_path: Path, make_trace: TraceFactory) -> None:
    path = tmp_path / "t.jsonl"
    traces = [make_trace(s) for s in range(3)]
    lines = write_jsonl(path, traces)
    record = json.loads(lines[1])
    record["turns"][1]["logprobs"][3] = "very likely"
    del record["mode"]
    lines[1] = json.dumps(record)
    rewrite(path, lines)
    with pytest.raises(TraceError) as caught:
        list(read_traces(path))
    assert str(caught.value) == (
        f"{path}:2: trace {traces[1].trace_id}: field mode: Field required;"
        " field turns.1.logprobs.3: Input should be a valid number, unable to parse string as a"
        " number" + FIX
    )


def test_middle_line_that_is_not_an_object(tmp_path: Path, make_trace: TraceFactory) -> None:
    path = tmp_path / "t.jsonl"
    lines = write_jsonl(path, [make_trace(1), make_trace(2)])
    rewrite(path, [lines[0], "[1, 2, 3]", lines[1]])
    with pytest.raises(TraceError) as caught:
        list(read_traces(path))
    assert str(caught.value) == (f"{path}:2: expected a JSON object (one trace), found list" + FIX)


def test_bad_last_line_with_newline_is_corruption_not_truncation(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    path = tmp_path / "t.jsonl"
    lines = write_jsonl(path, [make_trace(1), make_trace(2)])
    rewrite(path, [lines[0], lines[1][:100]])
    with pytest.raises(TraceError, match=r":2: trace [0-9a-f]{32}: not valid JSON"):
        list(read_traces(path))


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_newer_schema_version_always_raises_with_the_fix(
    tmp_path: Path, make_trace: TraceFactory, on_error: str
) -> None:
    path = tmp_path / "t.jsonl"
    traces = [make_trace(1), make_trace(2)]
    lines = write_jsonl(path, traces)
    newer = json.loads(lines[1])
    newer["schema_version"] = TRACE_SCHEMA_VERSION + 1
    newer["a_field_from_the_future"] = {"x": 1}
    rewrite(path, [lines[0], json.dumps(newer)])
    with pytest.raises(TraceError) as caught:
        list(read_traces(path, on_error=on_error))  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"{path}:2: trace {traces[1].trace_id} has schema_version {TRACE_SCHEMA_VERSION + 1},"
        f" newer than this safe-context-agent reads ({TRACE_SCHEMA_VERSION}); upgrade"
        " safe-context-agent (pip install -U safe-context-agent) to read it"
    )


def test_blank_lines_are_ignored_and_iterating_again_rereads(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    path = tmp_path / "t.jsonl"
    lines = write_jsonl(path, [make_trace(1), make_trace(2)])
    rewrite(path, ["", lines[0], "   ", lines[1], ""])
    result = read_traces(path)
    first = [t.trace_id for t in result]
    second = [t.trace_id for t in result]
    assert first == second and len(first) == 2
    assert result.report.records_read == 2 and result.report.skipped == []


def test_read_traces_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such trace file; check the path"):
        read_traces(tmp_path / "missing.jsonl")
    (tmp_path / "t.txt").write_text("{}\n")
    with pytest.raises(TraceError) as caught:
        read_traces(tmp_path / "t.txt")
    assert str(caught.value) == (
        f"{tmp_path / 't.txt'}: cannot read traces from a .txt file;"
        " use .jsonl, .sqlite, .db, .parquet"
    )
    (tmp_path / "t.jsonl").write_text("")
    with pytest.raises(TraceError, match="on_error='ignore' is not an option"):
        read_traces(tmp_path / "t.jsonl", on_error="ignore")  # type: ignore[arg-type]


def test_sqlite_bad_row_is_named_by_rowid(tmp_path: Path, make_trace: TraceFactory) -> None:
    path = tmp_path / "t.sqlite"
    traces = [make_trace(1), make_trace(2)]
    with SqliteTraceSink(path) as sink:
        for trace in traces:
            sink.write(trace)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE traces SET trace_json = replace(trace_json, '\"adaptive\"', '\"sometimes\"')"
            " WHERE trace_id = ?",
            (traces[1].trace_id,),
        )
    conn.close()
    with pytest.raises(TraceError) as caught:
        list(read_traces(path))
    assert str(caught.value) == (
        f"{path} row 2: trace {traces[1].trace_id}: field mode: Input should be 'adaptive',"
        " 'never' or 'always'" + FIX
    )
    result = read_traces(path, on_error="skip")
    assert [t.trace_id for t in result] == [traces[0].trace_id]
    assert result.report.skipped[0].location == f"{path} row 2"


def test_sqlite_file_without_trace_table(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE people (name TEXT)")
    conn.close()
    with pytest.raises(TraceError, match=r"not a trace database .*read a file written by"):
        list(read_traces(path))


def test_sqlite_newer_layout_is_refused_on_read(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    SqliteTraceSink(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with pytest.raises(TraceError, match=r"layout version 2, newer .* upgrade safe-context-agent"):
        list(read_traces(path))


def test_group_traces_orders_by_sample_index(make_trace: TraceFactory) -> None:
    a = [make_trace(0, group_id="a", sample_index=i) for i in (2, 0, 1)]
    b = [make_trace(0, group_id="b", sample_index=i) for i in (1, 0)]
    loose = make_trace(0, group_id=None, sample_index=None)
    groups = group_traces([a[0], b[0], loose, a[1], b[1], a[2]])
    assert list(groups) == ["a", "b", loose.trace_id]
    assert [t.sample_index for t in groups["a"]] == [0, 1, 2]
    assert [t.sample_index for t in groups["b"]] == [0, 1]
    assert groups[loose.trace_id] == [loose]


def test_group_traces_refuses_double_counting(make_trace: TraceFactory) -> None:
    first = make_trace(0, group_id="g", sample_index=0)
    with pytest.raises(TraceError, match=f"trace {first.trace_id} appears twice"):
        group_traces([first, first])
    clash = make_trace(0, group_id="g", sample_index=0)
    with pytest.raises(TraceError) as caught:
        group_traces([first, clash])
    assert str(caught.value) == (
        f"group g has several traces with sample_index 0 ({first.trace_id}, {clash.trace_id});"
        " give each sample of a group its own sample_index"
    )


@pytest.mark.parametrize("cut", [0.5, 0.999, 13])
def test_appending_after_a_torn_tail_loses_only_the_torn_record(
    tmp_path: Path, make_trace: TraceFactory, cut: float
) -> None:
    path = tmp_path / "t.jsonl"
    traces = [make_trace(seed) for seed in range(4)]
    lines = write_jsonl(path, traces[:2])
    # The writer of the second record died part-way through it ...
    keep = int(len(lines[1]) * cut) if cut < 1 else cut
    rewrite(path, [lines[0], lines[1][:keep]], final_newline=False)
    # ... and a later run appends to the same file (a resumed collection does exactly this).
    write_jsonl(path, traces[2:])
    result = read_traces(path)  # on_error="raise": a torn record is a crash artefact, not an error
    assert [t.trace_id for t in result] == [traces[i].trace_id for i in (0, 2, 3)]
    assert [s.location for s in result.report.skipped] == [f"{path}:2"]
    assert "cut short" in result.report.skipped[0].reason


def test_junk_in_the_middle_of_a_file_is_still_an_error(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    path = tmp_path / "t.jsonl"
    lines = write_jsonl(path, [make_trace(seed) for seed in range(2)])
    rewrite(path, [lines[0].replace(",", ",,", 1), lines[1]])
    with pytest.raises(TraceError, match=r":1: .*not valid JSON"):
        list(read_traces(path))
