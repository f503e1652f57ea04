"""Retrieval quality of the built-in rule packs: does `consult` bring back rules of the right
category?

For each pack and each index strategy (hybrid, multi, concat):

* our query set (``bench/data/retrieval_queries.jsonl``: query + expected category): category
  hit@1, hit@3 and MRR@10 (a query hits when a rule of its category is among the first k rules);
* public prompts, StrongREJECT and HarmBench, whose categories are mapped to sets of our ids by
  ``bench/data/public_category_map.yaml``: hit@3.

Next to each hit@3 it prints "chance": the hit@3 of three rules drawn at random from the pack,
so that broad category sets are not mistaken for good retrieval.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/retrieval_quality.py [--details] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from safe_context_agent.rules import RuleIndex, get_embedder, load_rule_pack, open_index

REPO = Path(__file__).resolve().parents[1]
PACKS = ("general", "healthcare", "kids")
STRATEGIES = ("hybrid", "multi", "concat")
DEPTH = 10  # MRR is computed over the first 10 rules


@dataclass
class Query:
    text: str
    accepted: frozenset[str]  # categories that count as a hit
    group: str  # what the per-group breakdown is keyed by
    source: str  # "ours", "strongreject" or "harmbench"
    label: str = ""


@dataclass
class Scores:
    n: int = 0
    hit1: float = 0.0
    hit3: float = 0.0
    mrr: float = 0.0
    chance3: float = 0.0
    skipped: int = 0
    misses: list[tuple[str, str, list[str]]] = field(default_factory=list)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "hit@1": round(self.hit1, 4),
            "hit@3": round(self.hit3, 4),
            "mrr@10": round(self.mrr, 4),
            "chance_hit@3": round(self.chance3, 4),
            "skipped": self.skipped,
        }


def load_our_queries(path: Path) -> list[Query]:
    queries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            queries.append(
                Query(
                    row["query"],
                    frozenset([row["category"]]),
                    row["category"],
                    "ours",
                    row["label"],
                )
            )
    return queries


def load_public_queries(data_dir: Path, mapping: dict[str, dict[str, list[str]]]) -> list[Query]:
    queries = []
    with open(data_dir / "strongreject" / "strongreject_dataset.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            accepted = frozenset(mapping["strongreject"][row["category"]])
            queries.append(
                Query(row["forbidden_prompt"], accepted, row["category"], "strongreject")
            )
    with open(data_dir / "harmbench" / "harmbench_behaviors_text_all.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            # Contextual rows: the Behavior alone (the context is a long pasted document).
            accepted = frozenset(mapping["harmbench"][row["SemanticCategory"]])
            queries.append(Query(row["Behavior"], accepted, row["SemanticCategory"], "harmbench"))
    return queries


def chance_hit3(counts: dict[str, int], accepted: frozenset[str]) -> float:
    """P(at least one of 3 rules drawn without replacement from the pack is accepted)."""
    total = sum(counts.values())
    good = sum(counts.get(c, 0) for c in accepted)
    return 1.0 - math.comb(total - good, 3) / math.comb(total, 3)


def score(index: RuleIndex, queries: list[Query], vectors: np.ndarray) -> dict[str, Scores]:
    """Scores overall ("all") and per group; queries whose categories the pack lacks are skipped."""
    counts = index.pack.category_counts()
    results = index.search_vectors(vectors, k=DEPTH)
    scores: dict[str, Scores] = defaultdict(Scores)
    for query, hits in zip(queries, results, strict=True):
        accepted = query.accepted & counts.keys()
        keys = ["all", query.group] + ([f"label:{query.label}"] if query.label else [])
        for key in keys:
            if not accepted:
                scores[key].skipped += 1
                continue
            categories = [hit.rule.category for hit in hits]
            rank = next((i + 1 for i, c in enumerate(categories) if c in accepted), None)
            s = scores[key]
            s.n += 1
            s.hit1 += rank == 1
            s.hit3 += rank is not None and rank <= 3
            s.mrr += 1.0 / rank if rank else 0.0
            s.chance3 += chance_hit3(counts, accepted)
            if key == "all" and (rank is None or rank > 3):
                s.misses.append((query.text, query.group, [h.rule.id for h in hits[:3]]))
    for s in scores.values():
        if s.n:
            s.hit1, s.hit3, s.mrr, s.chance3 = (v / s.n for v in (s.hit1, s.hit3, s.mrr, s.chance3))
    return dict(scores)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument(
        "--queries", type=Path, default=REPO / "bench" / "data" / "retrieval_queries.jsonl"
    )
    parser.add_argument(
        "--map", type=Path, default=REPO / "bench" / "data" / "public_category_map.yaml"
    )
    parser.add_argument("--packs", nargs="+", default=list(PACKS))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--index-root", type=Path, help="Folder for the indexes (default: cache).")
    parser.add_argument("--details", action="store_true", help="Per-category figures and misses.")
    parser.add_argument("--json", type=Path, help="Also write all figures to this JSON file.")
    args = parser.parse_args()

    ours = load_our_queries(args.queries)
    mapping = yaml.safe_load(args.map.read_text())
    public = load_public_queries(args.data_dir, mapping)
    embedder = get_embedder()
    started = time.perf_counter()
    our_vectors = embedder.encode([q.text for q in ours])
    public_vectors = embedder.encode([q.text for q in public])
    print(
        f"embedded {len(ours)} of our queries and {len(public)} public prompts "
        f"({sum(q.source == 'strongreject' for q in public)} StrongREJECT, "
        f"{sum(q.source == 'harmbench' for q in public)} HarmBench) in "
        f"{time.perf_counter() - started:.1f} s"
    )

    report: dict[str, dict[str, object]] = {}
    header = (
        f"{'pack':<11}{'strategy':<9}{'ours n':>7}{'hit@1':>7}{'hit@3':>7}{'MRR':>7}"
        f"{'chance':>8} |{'public n':>9}{'hit@3':>7}{'chance':>8}"
    )
    print(header)
    print("-" * len(header))
    details: list[str] = []
    for name in args.packs:
        pack = load_rule_pack(name)
        for strategy in args.strategies:
            index_dir = args.index_root / f"{name}-{strategy}" if args.index_root else None
            index = open_index(pack, embedder=embedder, strategy=strategy, index_dir=index_dir)
            own = score(index, ours, our_vectors)
            pub = score(index, public, public_vectors)
            o, p = own["all"], pub["all"]
            print(
                f"{name:<11}{strategy:<9}{o.n:>7}{o.hit1:>7.3f}{o.hit3:>7.3f}{o.mrr:>7.3f}"
                f"{o.chance3:>8.3f} |{p.n:>9}{p.hit3:>7.3f}{p.chance3:>8.3f}"
            )
            report[f"{name}/{strategy}"] = {
                "ours": {group: s.as_dict() for group, s in sorted(own.items())},
                "public": {group: s.as_dict() for group, s in sorted(pub.items())},
                "rules": len(pack.rules),
                "vectors": index.manifest.n_vectors,
            }
            if args.details:
                details.append(_details(name, strategy, own, pub))
    for block in details:
        print(block)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


def _details(name: str, strategy: str, own: dict[str, Scores], pub: dict[str, Scores]) -> str:
    lines = [
        f"\n== {name} / {strategy}: per category (ours: hit@1 hit@3 n; public: hit@3 chance n)"
    ]
    for group, s in sorted(own.items(), key=lambda item: (item[0].startswith("label:"), item[0])):
        if group != "all":
            lines.append(f"  ours   {group:<32}{s.hit1:>6.2f}{s.hit3:>6.2f}{s.n:>5}")
    for group, s in sorted(pub.items()):
        if group != "all":
            lines.append(f"  public {group:<36}{s.hit3:>6.2f}{s.chance3:>6.2f}{s.n:>5}")
    lines.append("  our misses at 3 (expected category: top-3 rule ids):")
    for text, group, top in own["all"].misses:
        lines.append(f"    [{group}] {text[:90]!r} -> {', '.join(top)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
