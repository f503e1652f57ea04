"""Append rate of the trace sinks (traces per second), every configuration in one run.

    .venv/bin/python bench/trace_append.py                  # defaults: 2000 traces, 3 repeats
    .venv/bin/python bench/trace_append.py --dir /data/runs  # measure the disk you will log to

Each trace is realistic: 3 model turns, each with 150 prompt and 150 completion token ids and 150
logprobs, one consultation returning 3 rules, a short conversation (about 17 kB of JSON). Every
configuration writes the same traces to a fresh file; the median of the repeats is reported, with
each rate's ratio to the JSONL rate without fsync measured in the same run. "Shared" means all
threads write through one sink (group commit); "a sink each" gives every thread its own sink on
the same file (for SQLite: a connection per thread).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from safe_context_agent.traces import (
    Consultation,
    JsonlTraceSink,
    ModelTurn,
    RetrievedRuleRef,
    SqliteTraceSink,
    ToolCallRecord,
    Trace,
    TraceSink,
    new_trace_id,
)
from safe_context_agent.traces._encode import trace_json

SinkFactory = Callable[[Path], TraceSink]


def realistic_trace(seed: int, tokens_per_turn: int) -> Trace:
    rng = random.Random(seed)

    def turn(index: int, content: str | None, calls: list[ToolCallRecord]) -> ModelTurn:
        return ModelTurn(
            index=index,
            prompt_token_ids=[rng.randrange(49_152) for _ in range(tokens_per_turn)],
            completion_token_ids=[rng.randrange(49_152) for _ in range(tokens_per_turn)],
            logprobs=[-rng.random() * 4 for _ in range(tokens_per_turn)],
            content=content,
            tool_calls=calls,
            finish_reason="tool_calls" if calls else "stop",
            tools_offered=True,
            prompt_tokens=tokens_per_turn,
            completion_tokens=tokens_per_turn,
            latency_s=rng.random(),
            model="smollm2",
        )

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


@dataclass(frozen=True)
class Config:
    name: str
    make_sink: SinkFactory
    threads: int
    shared: bool
    suffix: str


def run_once(config: Config, traces: list[Trace], folder: Path) -> tuple[float, int]:
    """Write every trace once; return (traces per second, fsync calls made)."""
    path = folder / f"{new_trace_id()}{config.suffix}"
    # Fresh ids per run: SQLite refuses a trace_id it already stored.
    batch = [t.model_copy(update={"trace_id": new_trace_id()}) for t in traces]
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
    parser.add_argument("--tokens-per-turn", type=int, default=150)
    parser.add_argument("--dir", type=Path, default=None, help="folder to write in (a temp dir)")
    args = parser.parse_args()

    traces = [realistic_trace(seed, args.tokens_per_turn) for seed in range(args.traces)]
    size = len(traces[0].model_dump_json()) + 1
    pydantic_rate = _serialise_rate(traces, lambda trace: trace.model_dump_json())
    sink_rate = _serialise_rate(traces, trace_json)

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="trace-append-") as tmp:
        folder = Path(tmp)
        print(
            f"{args.traces} traces of {size} bytes, median of {args.repeats} runs, in {folder}"
            f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)"
        )
        print(
            f"serialising alone: model_dump_json {pydantic_rate:.0f} traces/s, the sinks'"
            f" trace_json {sink_rate:.0f} traces/s ({sink_rate / pydantic_rate:.2f}x)"
        )
        print(f"{'configuration':44} {'traces/s':>9} {'ratio':>6} {'traces/fsync':>13}")
        baseline: float | None = None
        for config in configs(args.threads):
            runs = [run_once(config, traces, folder) for _ in range(args.repeats)]
            rate = statistics.median(r for r, _ in runs)
            fsyncs = statistics.median(f for _, f in runs)
            baseline = baseline or rate
            per_sync = f"{args.traces / fsyncs:13.1f}" if fsyncs else f"{'-':>13}"
            print(f"{config.name:44} {rate:9.0f} {rate / baseline:6.2f} {per_sync}")


if __name__ == "__main__":
    main()
