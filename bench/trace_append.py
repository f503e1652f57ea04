"""Trace size and append rate of the sinks, in the stored format and the old one, in one run.

    .venv/bin/python bench/trace_append.py                  # defaults: 2000 traces, 3 repeats
    .venv/bin/python bench/trace_append.py --dir /data/runs  # measure the disk you will log to

Each trace is realistic (the shape of the embedded model's traces): a 400-token prompt (system
prompt with the tool, the user's question), 3 model turns of 60 sampled tokens with their
logprobs, a 120-token tool result between turns, one consultation returning 3 rules. As in served
runs, each later turn's prompt is the previous prompt and completion plus the tool result; in
``--non-extending`` of the traces (15 %) the template re-renders an earlier turn, so it is not.

Two formats are written: the stored one (schema 2: a later turn keeps only the prompt ids it
adds) and schema 1 (every turn's whole prompt), both through the same sinks and the same fast
encoder. The report gives bytes per trace of each and, for every sink configuration, the median
rate of the repeats in each format, the ratio between them, and each rate's ratio to the JSONL rate
without fsync. "Shared" means all threads write through one sink (group commit); "a sink each"
gives every thread its own sink on the same file (for SQLite: a connection per thread).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from safe_context_agent.traces import (
    Consultation,
    JsonlTraceSink,
    ModelTurn,
    RetrievedRuleRef,
    SqliteTraceSink,
    ToolCallRecord,
    Trace,
    TraceSink,
    _sinks,
    new_trace_id,
)
from safe_context_agent.traces._encode import _model_fields, trace_json

SinkFactory = Callable[[Path], TraceSink]


@dataclass(frozen=True)
class Shape:
    prompt_tokens: int
    completion_tokens: int
    tool_tokens: int
    non_extending: float


def realistic_trace(seed: int, shape: Shape) -> Trace:
    rng = random.Random(seed)

    def ids(n: int) -> list[int]:
        return [rng.randrange(49_152) for _ in range(n)]

    re_rendered = rng.random() < shape.non_extending
    prompt = ids(shape.prompt_tokens)

    def turn(index: int, content: str | None, calls: list[ToolCallRecord]) -> ModelTurn:
        nonlocal prompt
        completion = ids(shape.completion_tokens)
        made = ModelTurn(
            index=index,
            prompt_token_ids=prompt,
            completion_token_ids=completion,
            logprobs=[-rng.random() * 4 for _ in range(shape.completion_tokens)],
            content=content,
            tool_calls=calls,
            finish_reason="tool_calls" if calls else "stop",
            tools_offered=True,
            prompt_tokens=len(prompt),
            completion_tokens=len(completion),
            latency_s=rng.random(),
            model="smollm2",
        )
        # The next prompt as the server renders it; a re-rendering template changes one token.
        served = completion if not re_rendered else [completion[0] + 1, *completion[1:]]
        prompt = prompt + served + ids(shape.tool_tokens)
        return made

    call = ToolCallRecord(id="call_1", name="consult_safety_rules", arguments='{"query": "q"}')
    answer = "Here is a careful answer that explains the allowed part of the request. " * 4
    return Trace(
        group_id=f"group-{seed // 8}",
        sample_index=seed % 8,
        model="smollm2",
        mode="adaptive",
        sampling={"temperature": 0.8, "top_p": 0.95, "max_tokens": 512},
        messages=[
            {"role": "system", "content": "You are a helpful assistant. " * 8},
            {"role": "user", "content": "How do I safely dispose of old lithium batteries?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Rule GEN-01 ... " * 10},
            {"role": "assistant", "content": answer},
        ],
        turns=[turn(0, None, [call]), turn(1, None, []), turn(2, answer, [])],
        consultations=[
            Consultation(
                source="tool_call",
                query="battery disposal",
                rules=[
                    RetrievedRuleRef(id=f"GEN-0{n}", category="hazards", score=0.6 - n / 10)
                    for n in range(3)
                ],
                turn_index=0,
                tool_call_id="call_1",
                latency_s=0.004,
            )
        ],
        answer=answer,
        metadata={"label": "safe", "source": "bench"},
    )


def schema_1_json(trace: Trace, *, newline: bool = False) -> bytes:
    """The old stored form (every turn's whole prompt): the fast encoder without compaction."""
    option = orjson.OPT_UTC_Z | (orjson.OPT_APPEND_NEWLINE if newline else 0)
    return orjson.dumps(trace, default=_model_fields, option=option)


@contextmanager
def sinks_writing(encoder: Callable[..., bytes]) -> Iterator[None]:
    """Let the sinks serialise with ``encoder`` (the old format's) for the runs inside."""
    real = _sinks.trace_json
    _sinks.trace_json = encoder
    try:
        yield
    finally:
        _sinks.trace_json = real


@dataclass(frozen=True)
class Config:
    name: str
    make_sink: SinkFactory
    threads: int
    shared: bool
    suffix: str


def run_once(
    config: Config, traces: list[Trace], folder: Path, schema_version: int
) -> tuple[float, int]:
    """Write every trace once; return (traces per second, fsync calls made)."""
    path = folder / f"{new_trace_id()}{config.suffix}"
    # Fresh ids per run: SQLite refuses a trace_id it already stored.
    batch = [
        t.model_copy(update={"trace_id": new_trace_id(), "schema_version": schema_version})
        for t in traces
    ]
    encoder = trace_json if schema_version == 2 else schema_1_json
    with sinks_writing(encoder):
        return _write_all(config, batch, path)


def _write_all(config: Config, batch: list[Trace], path: Path) -> tuple[float, int]:
    folder = path.parent
    shards = [batch[i :: config.threads] for i in range(config.threads)]
    shared = config.make_sink(path) if config.shared else None
    sinks = [shared or config.make_sink(path) for _ in range(config.threads)]
    fsyncs = _FsyncCounter()

    def write(sink: TraceSink, shard: list[Trace]) -> None:
        for trace in shard:
            sink.write(trace)

    workers = [
        threading.Thread(target=write, args=(sink, shard))
        for sink, shard in zip(sinks, shards, strict=True)
    ]
    with fsyncs:
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - start
    for sink in {id(s): s for s in sinks}.values():
        sink.close()
    for leftover in folder.glob(f"{path.name}*"):
        leftover.unlink()
    return len(batch) / elapsed, fsyncs.calls


class _FsyncCounter:
    """Counts os.fsync calls (the JSONL sink's only sync) while the writers run."""

    def __init__(self) -> None:
        self.calls = 0
        self._real = os.fsync
        self._lock = threading.Lock()

    def _counting(self, fd: int) -> None:
        with self._lock:
            self.calls += 1
        self._real(fd)

    def __enter__(self) -> None:
        os.fsync = self._counting

    def __exit__(self, *exc_info: object) -> None:
        os.fsync = self._real


def configs(threads: int) -> list[Config]:
    def jsonl(fsync: bool) -> SinkFactory:
        return lambda path: JsonlTraceSink(path, fsync=fsync)

    def sqlite(fsync: bool) -> SinkFactory:
        return lambda path: SqliteTraceSink(path, fsync=fsync)

    many = f"{threads} threads"
    return [
        Config("jsonl, no fsync, 1 thread", jsonl(False), 1, True, ".jsonl"),
        Config("jsonl, fsync, 1 thread", jsonl(True), 1, True, ".jsonl"),
        Config(f"jsonl, fsync, {many}, shared", jsonl(True), threads, True, ".jsonl"),
        Config(f"jsonl, fsync, {many}, a sink each", jsonl(True), threads, False, ".jsonl"),
        Config("sqlite, synchronous=NORMAL, 1 thread", sqlite(False), 1, True, ".sqlite"),
        Config("sqlite, synchronous=FULL, 1 thread", sqlite(True), 1, True, ".sqlite"),
        Config(f"sqlite, FULL, {many}, shared", sqlite(True), threads, True, ".sqlite"),
        Config(f"sqlite, FULL, {many}, a sink each", sqlite(True), threads, False, ".sqlite"),
    ]


def _serialise_rate(traces: list[Trace], serialise: Callable[[Trace], object]) -> float:
    start = time.perf_counter()
    for trace in traces:
        serialise(trace)
    return len(traces) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=int, default=2000, help="traces per configuration")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    parser.add_argument("--threads", type=int, default=64, help="writers in the threaded runs")
    parser.add_argument("--prompt-tokens", type=int, default=400, help="the first turn's prompt")
    parser.add_argument("--completion-tokens", type=int, default=60, help="sampled per turn")
    parser.add_argument("--tool-tokens", type=int, default=120, help="tool result between turns")
    parser.add_argument(
        "--non-extending", type=float, default=0.15, help="share of re-rendering traces"
    )
    parser.add_argument("--dir", type=Path, default=None, help="folder to write in (a temp dir)")
    args = parser.parse_args()

    shape = Shape(args.prompt_tokens, args.completion_tokens, args.tool_tokens, args.non_extending)
    traces = [realistic_trace(seed, shape) for seed in range(args.traces)]
    old = [t.model_copy(update={"schema_version": 1}) for t in traces]
    new_size = statistics.mean(len(trace_json(t, newline=True)) for t in traces)
    old_size = statistics.mean(len(schema_1_json(t, newline=True)) for t in old)
    pydantic_rate = _serialise_rate(traces, lambda trace: trace.model_dump_json())
    sink_rate = _serialise_rate(traces, trace_json)
    old_rate = _serialise_rate(old, schema_1_json)

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="trace-append-") as tmp:
        folder = Path(tmp)
        print(
            f"{args.traces} traces, median of {args.repeats} runs, in {folder}"
            f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)"
        )
        print(
            f"bytes per trace: schema 2 {new_size:.0f}, schema 1 {old_size:.0f}"
            f" ({new_size / old_size:.2f}x)"
        )
        print(
            f"serialising alone: model_dump_json {pydantic_rate:.0f} traces/s, the sinks'"
            f" trace_json {sink_rate:.0f} traces/s ({sink_rate / pydantic_rate:.2f}x),"
            f" schema 1 {old_rate:.0f} traces/s (schema 2 / 1: {sink_rate / old_rate:.2f}x)"
        )
        print(
            f"{'configuration':40} {'schema 2/s':>10} {'schema 1/s':>10} {'2 / 1':>6}"
            f" {'ratio':>6} {'traces/fsync':>13}"
        )
        baseline: float | None = None
        for config in configs(args.threads):
            # The formats take turns, so both meet the same machine (load drifts during a run).
            runs: dict[int, list[tuple[float, int]]] = {2: [], 1: []}
            for _ in range(args.repeats):
                for version, done in runs.items():
                    done.append(run_once(config, traces, folder, version))
            rates = {
                version: statistics.median(r for r, _ in done) for version, done in runs.items()
            }
            fsyncs = statistics.median(f for _, f in runs[2])
            baseline = baseline or rates[2]
            per_sync = f"{args.traces / fsyncs:13.1f}" if fsyncs else f"{'-':>13}"
            print(
                f"{config.name:40} {rates[2]:10.0f} {rates[1]:10.0f} {rates[2] / rates[1]:6.2f}"
                f" {rates[2] / baseline:6.2f} {per_sync}"
            )


if __name__ == "__main__":
    main()
