"""Where finished traces go: JSON lines, SQLite, several at once, or a sink of your own.

Durability: by default a sink's ``write`` returns only once the trace is on disk (fsync for JSON
lines, ``synchronous=FULL`` commits for SQLite). Writers that overlap in time share that cost by
*group commit*: while one flush is on disk, the traces that other threads hand in queue up and go
to disk together in the next flush, and each ``write`` returns only after a flush that contains
its own trace. A lone writer still pays one sync per trace; many concurrent runs pay one per batch.

Failure: sinks raise (:class:`~safe_context_agent.errors.TraceError`). The agent writes through
:class:`SafeSink`, the one place that turns a failure into a log line and a counter, so that
losing a trace never fails a run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, Self, TypeVar

from safe_context_agent.errors import SafeContextError, TraceError
from safe_context_agent.traces._encode import trace_json
from safe_context_agent.traces._schema import Trace

__all__ = [
    "SQLITE_LAYOUT_VERSION",
    "JsonlTraceSink",
    "MultiSink",
    "SafeSink",
    "SqliteTraceSink",
    "TraceSink",
    "open_sink",
]

logger = logging.getLogger("safe_context_agent.traces")

JSONL_SUFFIXES = (".jsonl",)
SQLITE_SUFFIXES = (".sqlite", ".db")

SQLITE_LAYOUT_VERSION = 1
"""Version of the SQLite table layout, kept in the file's ``PRAGMA user_version``."""

SQLITE_TABLE = "traces"

_SQLITE_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {SQLITE_TABLE} (
        trace_id TEXT PRIMARY KEY,
        group_id TEXT,
        sample_index INTEGER,
        started_at TEXT NOT NULL,
        model TEXT NOT NULL,
        mode TEXT NOT NULL,
        consulted INTEGER NOT NULL,
        schema_version INTEGER NOT NULL,
        trace_json TEXT NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {SQLITE_TABLE}_group ON {SQLITE_TABLE} (group_id, sample_index)",
)

_SQLITE_INSERT = (
    f"INSERT INTO {SQLITE_TABLE} (trace_id, group_id, sample_index, started_at, model, mode,"
    " consulted, schema_version, trace_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class TraceSink(Protocol):
    """Anything that stores finished traces.

    Implement ``write`` and ``close``; subclass ``TraceSink`` to get the context manager for free.
    ``write`` is called once per finished run, possibly from many threads at once, and may raise
    on failure (wrap the sink in :class:`SafeSink` where a failure must not propagate).
    """

    @abstractmethod
    def write(self, trace: Trace) -> None:
        """Store one trace; return only once it is as durable as the sink promises."""

    @abstractmethod
    def close(self) -> None:
        """Release the file or connection. Closing twice is harmless; writing after raises."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


T = TypeVar("T")


@dataclass
class _Ticket(Generic[T]):
    item: T
    wakeup: threading.Condition | None = None
    """Created only when the caller has to wait for a flush that is already running."""
    done: bool = False
    error: BaseException | None = None


class _GroupCommit(Generic[T]):
    """Hand items to ``flush`` in batches; each caller returns after the flush with its item.

    ``flush(items)`` returns one error (or None) per item, or raises to fail the whole batch. One
    flush runs at a time; items submitted meanwhile queue up and go together in the next one, run
    by the caller at the head of the queue. Each waiting caller sleeps on its own condition, so a
    finished flush wakes exactly its own callers and the next leader, not every waiting thread; a
    caller that finds no flush running pays for no condition at all.
    """

    def __init__(self, flush: Callable[[list[T]], list[BaseException | None]]) -> None:
        self._flush = flush
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._idle_waiters = 0
        self._queue: list[_Ticket[T]] = []
        self._busy = False

    def submit(self, item: T) -> None:
        ticket = _Ticket(item)
        with self._lock:
            self._queue.append(ticket)
            if self._busy:
                ticket.wakeup = threading.Condition(self._lock)
                while self._busy and not ticket.done:
                    ticket.wakeup.wait()
            leading = not ticket.done
            if leading:
                batch, self._queue = self._queue, []
                self._busy = True
        if leading:
            try:
                self._run(batch)
            finally:
                self._release(batch)
        if ticket.error is not None:
            raise ticket.error

    def exclusive(self, action: Callable[[], None]) -> None:
        """Run ``action`` (closing the file, say) while no flush is running."""
        with self._lock:
            self._idle_waiters += 1
            while self._busy:
                self._idle.wait()
            self._idle_waiters -= 1
            self._busy = True
        try:
            action()
        finally:
            self._release([])

    def _release(self, batch: list[_Ticket[T]]) -> None:
        with self._lock:
            self._busy = False
            for ticket in batch:
                if not ticket.done:  # the leader was interrupted (KeyboardInterrupt) mid-flush
                    ticket.error = TraceError(
                        "the flush carrying this trace was interrupted; it may not be stored"
                    )
                    ticket.done = True
                if ticket.wakeup is not None:
                    ticket.wakeup.notify()
            # Everyone still queued arrived during the flush, so has a condition to wake.
            if self._queue and self._queue[0].wakeup is not None:
                self._queue[0].wakeup.notify()
            if self._idle_waiters:
                self._idle.notify()

    def _run(self, batch: list[_Ticket[T]]) -> None:
        try:
            errors = self._flush([ticket.item for ticket in batch])
        except Exception as exc:
            # Each waiting caller gets its own exception object: they are raised in many threads.
            failures = [TraceError(str(exc)) for _ in batch]
            for failure in failures:
                failure.__cause__ = exc
            errors = list(failures)
        for ticket, error in zip(batch, errors, strict=True):
            ticket.error = error
            ticket.done = True


def _ends_mid_line(path: Path) -> bool:
    with path.open("rb") as handle:
        if handle.seek(0, os.SEEK_END) == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


class JsonlTraceSink(TraceSink):
    """Append one JSON line per trace (the bytes of ``trace.model_dump_json()``).

    The file is opened with ``O_APPEND`` and every flush is a single ``write`` of whole lines, so
    several processes can append to one file without their lines interleaving (on local file
    systems; not on NFS). With ``fsync=True`` (the default) ``write`` returns after ``os.fsync``;
    pass ``fsync=False`` for bulk copies, where a crash may lose the last traces but never
    corrupts earlier lines.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            self._fd: int | None = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
            if created and fsync:
                _fsync_folder(self.path.parent)
            # A writer that died mid-line left a torn last record: start on a fresh line so the
            # first new trace is not glued to it (the reader then skips only the torn line).
            self._torn_tail = not created and _ends_mid_line(self.path)
        except OSError as exc:
            raise TraceError(
                f"{self.path}: cannot open the trace file for appending ({exc.strerror});"
                " choose a path in a folder you can write to"
            ) from exc
        self._commit: _GroupCommit[bytes] = _GroupCommit(self._flush)

    def __repr__(self) -> str:
        return f"JsonlTraceSink({str(self.path)!r}, fsync={self.fsync})"

    def write(self, trace: Trace) -> None:
        self._commit.submit(trace_json(trace, newline=True))

    def close(self) -> None:
        self._commit.exclusive(self._close_file)

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _flush(self, lines: list[bytes]) -> list[BaseException | None]:
        if self._fd is None:
            raise TraceError(f"{self.path}: the sink is closed; open a new one to write")
        data = b"".join(lines)
        if self._torn_tail:
            data = b"\n" + data
        try:
            written = os.write(self._fd, data)
            # A short write (disk full, a signal) is finished by further writes; the lines may
            # then interleave with another process's, which the reader reports line by line.
            while written < len(data):
                written += os.write(self._fd, data[written:])
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            raise TraceError(
                f"{self.path}: appending {len(lines)} trace(s) failed ({exc.strerror});"
                " check free disk space and permissions"
            ) from exc
        self._torn_tail = False
        return [None] * len(lines)


def _fsync_folder(folder: Path) -> None:
    # A new file survives a crash only once the folder entry naming it is on disk too.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _SqliteRow:
    trace_id: str
    values: tuple[object, ...]


class SqliteTraceSink(TraceSink):
    """Insert each trace as a row of the ``traces`` table (WAL mode), with the full JSON.

    Columns: ``trace_id`` (primary key), ``group_id``, ``sample_index``, ``started_at``,
    ``model``, ``mode``, ``consulted``, ``schema_version`` and ``trace_json``; indexed on
    ``(group_id, sample_index)``. One connection per sink; threads share it by group commit
    (several traces per transaction), which ``bench/trace_append.py`` measured at 2.5 to 6 times
    the rate of a connection per thread with 64 writers. Several processes may write one file: each waits up to
    ``busy_timeout_s`` for the write lock. ``fsync=False`` uses ``synchronous=NORMAL``: a power
    loss may drop the last commits, never corrupt the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = True,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One connection shared by threads: every use is under the group-commit lock.
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._prepare(self._conn)
        except BaseException as exc:
            if self._conn is not None:
                self._conn.close()
            if isinstance(exc, OSError | sqlite3.Error):
                raise TraceError(
                    f"{self.path}: cannot open the SQLite trace file ({exc}); choose a writable"
                    " path that is a trace database or does not exist yet"
                ) from exc
            raise
        self._commit: _GroupCommit[_SqliteRow] = _GroupCommit(self._flush)

    def __repr__(self) -> str:
        return f"SqliteTraceSink({str(self.path)!r}, fsync={self.fsync})"

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {'FULL' if self.fsync else 'NORMAL'}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            (layout,) = conn.execute("PRAGMA user_version").fetchone()
            if layout > SQLITE_LAYOUT_VERSION:
                raise TraceError(
                    f"{self.path}: the trace table has layout version {layout}, newer than this"
                    f" safe-context-agent writes ({SQLITE_LAYOUT_VERSION}); upgrade"
                    " safe-context-agent or write to a new file"
                )
            for statement in _SQLITE_SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SQLITE_LAYOUT_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def write(self, trace: Trace) -> None:
        values = (
            trace.trace_id,
            trace.group_id,
            trace.sample_index,
            trace.started_at.isoformat(),
            trace.model,
            trace.mode,
            int(trace.consulted),
            trace.schema_version,
            trace_json(trace).decode(),
        )
        self._commit.submit(_SqliteRow(trace.trace_id, values))

    def close(self) -> None:
        self._commit.exclusive(self._close_connection)

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _flush(self, rows: list[_SqliteRow]) -> list[BaseException | None]:
        conn = self._conn
        if conn is None:
            raise TraceError(f"{self.path}: the sink is closed; open a new one to write")
        errors: list[BaseException | None] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    errors.append(self._insert(conn, row))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise TraceError(
                f"{self.path}: storing {len(rows)} trace(s) failed ({exc}); if the database is"
                " locked, another writer held it longer than busy_timeout_s"
                f" ({self.busy_timeout_s:g} s)"
            ) from exc
        return errors

    def _insert(self, conn: sqlite3.Connection, row: _SqliteRow) -> BaseException | None:
        try:
            conn.execute(_SQLITE_INSERT, row.values)
        except sqlite3.IntegrityError:
            # A failed statement leaves the transaction open: the rest of the batch still commits.
            return TraceError(
                f"{self.path}: trace {row.trace_id} is already stored (trace_id is the primary"
                " key); give every run a new trace_id"
            )
        return None


class MultiSink(TraceSink):
    """Write every trace to each of several sinks (e.g. a JSONL file and a SQLite database).

    A failing sink does not keep the trace from the others; the failures are raised afterwards,
    together, as one :class:`TraceError`.
    """

    def __init__(self, sinks: Iterable[TraceSink]) -> None:
        self.sinks = tuple(sinks)
        if not self.sinks:
            raise TraceError("MultiSink got no sinks; pass at least one")

    def __repr__(self) -> str:
        return f"MultiSink([{', '.join(map(repr, self.sinks))}])"

    def write(self, trace: Trace) -> None:
        self._each(lambda sink: sink.write(trace), f"writing trace {trace.trace_id}")

    def close(self) -> None:
        self._each(lambda sink: sink.close(), "closing")

    def _each(self, action: Callable[[TraceSink], None], what: str) -> None:
        failures: list[tuple[TraceSink, Exception]] = []
        for sink in self.sinks:
            try:
                action(sink)
            except Exception as exc:
                failures.append((sink, exc))
        if failures:
            detail = "; ".join(f"{sink!r}: {exc}" for sink, exc in failures)
            raise TraceError(
                f"{what} failed in {len(failures)} of {len(self.sinks)} sinks: {detail}"
            ) from failures[0][1]


class SafeSink(TraceSink):
    """Wrap a sink so that ``write`` and ``close`` never raise: failures are logged and counted.

    This is how the agent writes traces: a full disk or a locked database costs the trace, never
    the run. ``written`` and ``errors`` count outcomes; ``last_error`` keeps the latest message.
    Use ``await sink.awrite(trace)`` from async code so the sync to disk does not block the event
    loop (the write runs in a worker thread, where concurrent writes share their flushes).
    """

    def __init__(self, inner: TraceSink) -> None:
        self.inner = inner
        self.written = 0
        self.errors = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SafeSink({self.inner!r})"

    def write(self, trace: Trace) -> None:
        try:
            self.inner.write(trace)
        except Exception as exc:
            trace_id = getattr(trace, "trace_id", None)
            self._failed(f"trace {trace_id} was not stored in {self.inner!r}", exc)
        else:
            with self._lock:
                self.written += 1

    async def awrite(self, trace: Trace) -> None:
        await asyncio.to_thread(self.write, trace)

    def close(self) -> None:
        try:
            self.inner.close()
        except Exception as exc:
            self._failed(f"closing {self.inner!r} failed", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
        # Our own errors carry their explanation; anything else is a bug worth a traceback.
        logger.error("%s: %s", what, exc, exc_info=not isinstance(exc, SafeContextError))


def open_sink(path: str | os.PathLike[str], *, fsync: bool = True) -> TraceSink:
    """Open the sink the file suffix names: ``.jsonl`` (JSON lines) or ``.sqlite``/``.db``."""
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return JsonlTraceSink(path, fsync=fsync)
    if suffix in SQLITE_SUFFIXES:
        return SqliteTraceSink(path, fsync=fsync)
    known = ", ".join(JSONL_SUFFIXES + SQLITE_SUFFIXES)
    raise TraceError(
        f"{path}: no trace sink for the suffix {suffix or '(none)'!r}; name the file with one of"
        f" {known}, or pass your own TraceSink to the agent"
    )
