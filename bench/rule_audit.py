"""How fast `audit_rules` streams traces, against plain reading of the same file in the same run.

    .venv/bin/python bench/rule_audit.py                       # 20,000 eval-like traces, 3 rounds
    .venv/bin/python bench/rule_audit.py --traces 1000000 --compact --rounds 1

Each trace is shaped like an `sca eval` run of the general pack: a labelled prompt, one
consultation returning three rules, an answer (a third of them refusals); with token ids and
logprobs for two model turns (about 4 kB), or without them (``--compact``, about 1 kB, what an
app's production log without training data looks like). The baseline is
``for trace in read_traces(path): pass``, the reader alone; the audit adds the per-rule tallies
and the refusal judge. The two are timed alternately, and each pass's peak RSS (ru_maxrss, the
process's high-water mark) is printed so that a growth with the number of traces would show.
"""

from __future__ import annotations

import argparse
import itertools
import random
import resource
import tempfile
import time
from pathlib import Path

from safe_context_agent.rules import AuditConfig, audit_rules, load_rule_pack
from safe_context_agent.traces import (
    Consultation,
    ModelTurn,
    PackRef,
    RetrievedRuleRef,
    Trace,
    open_sink,
    read_traces,
)

ANSWERS = (
    "I'm sorry, but I can't help with that request.",
    "Sure. Open a terminal, run ps aux to find the process id, then run kill with that id.",
    "Here is an overview of how the immune system responds to a new virus, step by step.",
)
SUITES = ("strongreject", "harmbench", "xstest", "jbb-benign", "gsm8k")


def _trace(rng: random.Random, pack, rule_ids: list[str], compact: bool) -> Trace:
    chosen = rng.sample(rule_ids, 3)
    scores = sorted((rng.uniform(0.1, 0.7) for _ in chosen), reverse=True)
    turns = []
    if not compact:
        turns = [
            ModelTurn(
                index=index,
                prompt_token_ids=[rng.randrange(49_152) for _ in range(120)],
                completion_token_ids=[rng.randrange(49_152) for _ in range(40)],
                logprobs=[-rng.random() for _ in range(40)],
                tools_offered=True,
                model="smollm2",
            )
            for index in range(2)
        ]
    return Trace(
        model="smollm2",
        mode="adaptive",
        pack=PackRef(name=pack.name, version=pack.manifest.version, content_hash=pack.content_hash),
        messages=[{"role": "user", "content": "How do I kill a stuck process on my server?"}],
        turns=turns,
        consultations=[
            Consultation(
                source="tool_call",
                query="killing a process",
                rules=[
                    RetrievedRuleRef(id=rule_id, category=pack.rule(rule_id).category, score=s)
                    for rule_id, s in zip(chosen, scores, strict=True)
                ],
            )
        ],
        # Distinct answers, as in real traffic: the judge's work is not repeated text.
        answer=f"{rng.choice(ANSWERS)} (reply {rng.randrange(10**9)})",
        metadata={"label": rng.choice(("harmful", "benign")), "suite": rng.choice(SUITES)},
    )


def _write(path: Path, n: int, compact: bool) -> None:
    pack = load_rule_pack("general")
    rule_ids = [rule.id for rule in pack.rules]
    rng = random.Random(0)
    with open_sink(path, fsync=False) as sink:
        for _ in range(n):
            sink.write(_trace(rng, pack, rule_ids, compact))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compact", action="store_true", help="no token ids (about 1 kB each)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the traces file")
    args = parser.parse_args()
    pack = load_rule_pack("general")
    config = AuditConfig(floor=0.2)  # a given floor: the bench times the stream, not MiniLM
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder) / "traces.jsonl"
        started = time.perf_counter()
        _write(path, args.traces, args.compact)
        size = path.stat().st_size
        print(
            f"{args.traces:,} traces, {size / 1e6:.0f} MB ({size / args.traces:.0f} B each), "
            f"written in {time.perf_counter() - started:.1f} s; RSS high-water {_rss_mb():.0f} MB"
        )
        # Flat memory: the high-water mark after a tenth of the file, then after all of it.
        audit_rules(pack, itertools.islice(read_traces(path), args.traces // 10), config)
        tenth = _rss_mb()
        audit_rules(pack, path, config)
        print(
            f"RSS high-water after auditing {args.traces // 10:,} traces: {tenth:.0f} MB; "
            f"after all {args.traces:,}: {_rss_mb():.0f} MB"
        )
        for round_ in range(1, args.rounds + 1):
            started = time.perf_counter()
            read = sum(1 for _ in read_traces(path))
            plain = read / (time.perf_counter() - started)
            rss_read = _rss_mb()
            started = time.perf_counter()
            report = audit_rules(pack, path, config)
            audited = report.totals.traces_read / (time.perf_counter() - started)
            print(
                f"round {round_}: plain reading {plain:,.0f} traces/s, audit {audited:,.0f} "
                f"traces/s ({audited / plain:.2f}x reading); RSS high-water after reading "
                f"{rss_read:.0f} MB, after the audit {_rss_mb():.0f} MB"
            )


if __name__ == "__main__":
    main()
