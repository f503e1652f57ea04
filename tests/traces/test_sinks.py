"""Sinks against real files and a real SQLite database: round trips, durability, concurrency."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from safe_context_agent.errors import TraceError
from safe_context_agent.traces import (
    TRACE_SCHEMA_VERSION,
    JsonlTraceSink,
    MultiSink,
    SafeSink,
    SqliteTraceSink,
    Trace,
    TraceSink,
    open_sink,
    read_traces,
)

SUFFIXES = [".jsonl", ".sqlite", ".db"]

TraceFactory = Callable[..., Trace]


def stored_ids(path: Path) -> list[str]:
    return [trace.trace_id for trace in read_traces(path)]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_keeps_every_field(
    tmp_path: Path, make_trace: TraceFactory, suffix: str
) -> None:
    path = tmp_path / "nested" / "folder" / f"traces{suffix}"
    written = [make_trace(seed) for seed in range(5)]
    with open_sink(path) as sink:
        for trace in written:
            sink.write(trace)
    read = list(read_traces(path))
    assert [t.model_dump() for t in read] == [t.model_dump() for t in written]
    assert read[0].consulted and read[0].rule_ids == ["GEN-PHYS-03", "GEN-CRIME-01"]


def test_open_sink_picks_the_class_by_suffix(tmp_path: Path) -> None:
    with open_sink(tmp_path / "a.JSONL") as jsonl, open_sink(tmp_path / "b.db") as db:
        assert isinstance(jsonl, JsonlTraceSink)
        assert isinstance(db, SqliteTraceSink)


def test_unknown_suffix_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError) as caught:
        open_sink(tmp_path / "traces.csv")
    assert str(caught.value) == (
        f"{tmp_path / 'traces.csv'}: no trace sink for the suffix '.csv'; name the file with one"
        " of .jsonl, .sqlite, .db, or pass your own TraceSink to the agent"
    )
    assert not (tmp_path / "traces.csv").exists()


def test_jsonl_writes_one_line_per_trace_with_derived_fields(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    path = tmp_path / "t.jsonl"
    first, second = make_trace(1), make_trace(2, consultations=[])
    with JsonlTraceSink(path) as sink:
        sink.write(first)
        sink.write(second)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert json.loads(lines[0]) == json.loads(first.model_dump_json())
    # The derived fields are in the raw JSON, for readers that do not use the schema.
    assert json.loads(lines[0])["consulted"] is True
    assert json.loads(lines[0])["rule_ids"] == ["GEN-PHYS-03", "GEN-CRIME-01"]
    assert json.loads(lines[1])["consulted"] is False


def test_jsonl_appends_to_an_existing_file(tmp_path: Path, make_trace: TraceFactory) -> None:
    path = tmp_path / "t.jsonl"
    first, second = make_trace(1), make_trace(2)
    with JsonlTraceSink(path) as sink:
        sink.write(first)
    with JsonlTraceSink(path) as sink:
        sink.write(second)
    assert stored_ids(path) == [first.trace_id, second.trace_id]


class FsyncCounter:
    """Counts real fsyncs of one file (the folder fsync on creation is left out)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
        self.calls = 0
        self.path = path
        real = os.fsync

        def counting(fd: int) -> None:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                self.calls += 1
            real(fd)

        monkeypatch.setattr(os, "fsync", counting)


@pytest.mark.parametrize(("fsync", "expected"), [(True, 5), (False, 0)])
def test_jsonl_fsyncs_every_record_unless_told_not_to(
    tmp_path: Path,
    make_trace: TraceFactory,
    monkeypatch: pytest.MonkeyPatch,
    fsync: bool,
    expected: int,
) -> None:
    path = tmp_path / "t.jsonl"
    path.touch()
    counter = FsyncCounter(monkeypatch, path)
    with JsonlTraceSink(path, fsync=fsync) as sink:
        for seed in range(5):
            sink.write(make_trace(seed))
            # Each write returns only after its own record went through fsync.
            assert counter.calls == (seed + 1 if fsync else 0)
    assert counter.calls == expected


def test_new_jsonl_file_fsyncs_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    JsonlTraceSink(tmp_path / "new.jsonl").close()
    assert synced == [tmp_path.stat().st_ino]


def test_concurrent_writers_share_fsyncs_and_each_returns_after_its_own(
    tmp_path: Path, make_trace: TraceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: fewer fsyncs than writes, yet no write returns before a sync covering it."""
    path = tmp_path / "t.jsonl"
    path.touch()
    synced_ids: set[str] = set()
    calls = 0
    real = os.fsync
    snapshot_lock = threading.Lock()

    def slow_recording_fsync(fd: int) -> None:
        nonlocal calls
        real(fd)
        # What this sync made durable: every line in the file when it ran.
        contents = {json.loads(line)["trace_id"] for line in path.read_text().splitlines()}
        threading.Event().wait(0.002)
        with snapshot_lock:
            calls += 1
            synced_ids.update(contents)

    monkeypatch.setattr(os, "fsync", slow_recording_fsync)
    acknowledged_early: list[str] = []
    sink = JsonlTraceSink(path)

    def writer(worker: int) -> None:
        for n in range(5):
            trace = make_trace(worker * 100 + n)
            sink.write(trace)
            with snapshot_lock:
                if trace.trace_id not in synced_ids:
                    acknowledged_early.append(trace.trace_id)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()
    assert acknowledged_early == []
    assert len(stored_ids(path)) == 80
    assert calls < 80


@pytest.mark.parametrize("suffix", [".jsonl", ".sqlite"])
def test_32_threads_lose_nothing(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    per_thread = 20
    expected: set[str] = set()
    traces = [
        [Trace(model="m", mode="adaptive", sample_index=n) for n in range(per_thread)]
        for _ in range(32)
    ]
    for batch in traces:
        expected.update(t.trace_id for t in batch)
    with open_sink(path) as sink:

        def writer(batch: list[Trace]) -> None:
            for trace in batch:
                sink.write(trace)

        threads = [threading.Thread(target=writer, args=(batch,)) for batch in traces]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    ids = stored_ids(path)
    assert len(ids) == len(expected) == 32 * per_thread
    assert set(ids) == expected


def _append_from_process(path: str, make_trace: TraceFactory, worker: int, count: int) -> None:
    # Without fsync the processes append back to back, which is when lines would interleave.
    with open_sink(path, fsync=False) as sink:
        for n in range(count):
            # Padding makes each record span several pages, so an interleaving would show.
            sink.write(
                make_trace(
                    worker * 1000 + n,
                    group_id=f"proc-{worker}",
                    sample_index=n,
                    answer="x" * 10_000,
                )
            )


@pytest.mark.parametrize("suffix", [".jsonl", ".sqlite"])
def test_several_processes_append_to_one_file(
    tmp_path: Path, make_trace: TraceFactory, suffix: str
) -> None:
    path = tmp_path / f"t{suffix}"
    workers, count = 4, 60
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_append_from_process, args=(str(path), make_trace, w, count))
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0] * workers
    result = read_traces(path)  # raises on any line that does not parse
    by_worker: dict[str, list[int]] = {}
    for trace in result:
        by_worker.setdefault(str(trace.group_id), []).append(int(trace.sample_index or 0))
    assert result.report.skipped == []
    assert {group: sorted(indices) for group, indices in by_worker.items()} == {
        f"proc-{w}": list(range(count)) for w in range(workers)
    }


def test_sqlite_table_layout(tmp_path: Path, make_trace: TraceFactory) -> None:
    path = tmp_path / "t.sqlite"
    trace = make_trace(6)
    with SqliteTraceSink(path) as sink:
        sink.write(trace)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        row = conn.execute(
            "SELECT trace_id, group_id, sample_index, started_at, model, mode, consulted,"
            " schema_version, trace_json FROM traces"
        ).fetchone()
        indexes = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM traces WHERE group_id = 'group-1'"
        ).fetchall()
    finally:
        conn.close()
    assert row[:8] == (
        trace.trace_id,
        "group-1",
        2,
        trace.started_at.isoformat(),
        "smollm2",
        "adaptive",
        1,
        TRACE_SCHEMA_VERSION,
    )
    assert Trace.model_validate_json(row[8]) == trace
    assert ("traces_group",) in indexes
    assert "traces_group" in str(plan)


def test_sqlite_duplicate_trace_id_fails_only_that_write(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    path = tmp_path / "t.sqlite"
    trace = make_trace(1)
    with SqliteTraceSink(path) as sink:
        sink.write(trace)
        with pytest.raises(TraceError) as caught:
            sink.write(trace)
        sink.write(make_trace(2))
    assert str(caught.value) == (
        f"{path}: trace {trace.trace_id} is already stored (trace_id is the primary key);"
        " give every run a new trace_id"
    )
    assert len(stored_ids(path)) == 2


def test_sqlite_refuses_a_newer_table_layout(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    SqliteTraceSink(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    with pytest.raises(TraceError, match="layout version 7, newer than this safe-context-agent"):
        SqliteTraceSink(path)


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    path.write_text("hello, not sqlite\n" * 100)
    with pytest.raises(TraceError, match="cannot open the SQLite trace file"):
        SqliteTraceSink(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".sqlite"])
def test_writing_after_close_raises_and_close_twice_is_fine(
    tmp_path: Path, make_trace: TraceFactory, suffix: str
) -> None:
    path = tmp_path / f"t{suffix}"
    sink = open_sink(path)
    sink.close()
    sink.close()
    with pytest.raises(TraceError, match="the sink is closed; open a new one to write"):
        sink.write(make_trace())


def test_unserialisable_metadata_names_the_trace_and_fix(tmp_path: Path) -> None:
    trace = Trace(model="m", mode="never", metadata={"when": object()})
    with JsonlTraceSink(tmp_path / "t.jsonl") as sink, pytest.raises(TraceError) as caught:
        sink.write(trace)
    assert str(caught.value).startswith(f"trace {trace.trace_id} cannot be written as JSON")
    assert "keep `metadata`" in str(caught.value)


def test_unwritable_folder_is_a_trace_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TraceError, match="cannot open the trace file for appending"):
        JsonlTraceSink(blocker / "t.jsonl")


class FailingSink(TraceSink):
    def __init__(self) -> None:
        self.closed = False

    def __repr__(self) -> str:
        return "FailingSink()"

    def write(self, trace: Trace) -> None:
        raise OSError("disk on fire")

    def close(self) -> None:
        self.closed = True


def test_multisink_writes_to_all_and_reports_every_failure(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    trace = make_trace()
    failing = FailingSink()
    multi = MultiSink([open_sink(tmp_path / "a.jsonl"), failing, open_sink(tmp_path / "b.db")])
    with pytest.raises(TraceError) as caught:
        multi.write(trace)
    multi.close()
    assert str(caught.value) == (
        f"writing trace {trace.trace_id} failed in 1 of 3 sinks: FailingSink(): disk on fire"
    )
    assert stored_ids(tmp_path / "a.jsonl") == stored_ids(tmp_path / "b.db") == [trace.trace_id]
    assert failing.closed


def test_multisink_needs_a_sink() -> None:
    with pytest.raises(TraceError, match="MultiSink got no sinks"):
        MultiSink([])


def test_safe_sink_counts_and_logs_failures_without_raising(
    tmp_path: Path, make_trace: TraceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sink = SafeSink(FailingSink())
    good = SafeSink(open_sink(tmp_path / "t.jsonl"))
    trace = make_trace()
    with caplog.at_level(logging.ERROR, logger="safe_context_agent.traces"):
        sink.write(trace)
        sink.write(trace)
        good.write(trace)
    assert (sink.written, sink.errors, sink.last_error) == (0, 2, "OSError: disk on fire")
    assert (good.written, good.errors) == (1, 0)
    assert f"trace {trace.trace_id} was not stored in FailingSink(): disk on fire" in caplog.text
    good.close()


def test_safe_sink_swallows_a_failing_close(caplog: pytest.LogCaptureFixture) -> None:
    class BadClose(FailingSink):
        def close(self) -> None:
            raise TraceError("cannot close")

    sink = SafeSink(BadClose())
    with caplog.at_level(logging.ERROR, logger="safe_context_agent.traces"):
        sink.close()
    assert sink.errors == 1 and "cannot close" in caplog.text


def test_safe_sink_awrite_from_many_coroutines(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    traces = [Trace(model="m", mode="adaptive", sample_index=n) for n in range(64)]

    async def run_all(sink: SafeSink) -> None:
        await asyncio.gather(*(sink.awrite(trace) for trace in traces))

    with SafeSink(open_sink(path)) as sink:
        asyncio.run(run_all(sink))
    assert (sink.written, sink.errors) == (64, 0)
    assert sorted(stored_ids(path)) == sorted(t.trace_id for t in traces)


class _Interrupted(BaseException):
    """Stands in for a KeyboardInterrupt that hits the thread running a flush."""


def test_callers_in_an_interrupted_flush_get_an_error_not_a_silent_success() -> None:
    from safe_context_agent.traces._sinks import _GroupCommit

    first_flush_running, release_first = threading.Event(), threading.Event()
    batches: list[list[str]] = []

    def flush(items: list[str]) -> list[BaseException | None]:
        batches.append(items)
        if items == ["first"]:
            first_flush_running.set()
            release_first.wait(5)
            return [None]
        raise _Interrupted

    commit = _GroupCommit(flush)
    outcomes: dict[str, str] = {}

    def submit(item: str) -> None:
        try:
            commit.submit(item)
            outcomes[item] = "stored"
        except TraceError as exc:
            outcomes[item] = str(exc)
        except _Interrupted:
            outcomes[item] = "interrupted"

    threads = {name: threading.Thread(target=submit, args=(name,)) for name in ("first", "a", "b")}
    threads["first"].start()
    assert first_flush_running.wait(5)
    threads["a"].start()
    threads["b"].start()
    while len(commit._queue) < 2:  # both queued behind the running flush
        threading.Event().wait(0.001)
    release_first.set()
    for thread in threads.values():
        thread.join(5)
    assert batches == [["first"], ["a", "b"]]
    assert outcomes["first"] == "stored"
    # Whichever of a and b led the second flush saw the interrupt; the other must not pass.
    assert sorted(outcomes[name] for name in ("a", "b")) == [
        "interrupted",
        "the flush carrying this trace was interrupted; it may not be stored",
    ]
