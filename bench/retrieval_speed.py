"""Retrieval speed: what `consult` adds over the encoder + FAISS, and search at 100k rules.

1. Overhead. For the same queries, per-query latency of ``RuleIndex.consult`` against the
   embedding model's ``encode`` followed by ``faiss.Index.search`` called directly on the same
   index (k=3). Both are timed alternately, query by query, so machine noise hits both alike;
   the ratio of the medians is printed (target <= 1.10x).

2. Scale. A synthetic pack of 100,000 rules. Embedding 100k rules for real would take hours on
   a CPU, so the vectors are made from the real embeddings of the built-in packs' texts: each
   synthetic rule copies the four rows (whole rule, title + statement, first allowed and first
   disallowed example) of a random real rule, and each row gets Gaussian noise of norm
   ``--noise`` (the rows have unit length) before being normalised again. The index is built through
   ``RuleIndex.open``, so the build time includes writing and checksumming the files (the
   vectors are given, so it excludes embedding). Printed:
   build time and, for each ``--ef-search`` value, p50/p95 of the FAISS search alone and of
   ``search_vectors`` (search + re-scoring, no encoding) and recall@3 against exhaustive search,
   of the HNSW rows and of the rules ``search_vectors`` returns; and the latency of exact (flat)
   search over the same rows.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/retrieval_speed.py [--rules 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from safe_context_agent.rules import (
    IndexConfig,
    PackManifest,
    Rule,
    RuleIndex,
    RulePack,
    get_embedder,
    open_index,
)

REPO = Path(__file__).resolve().parents[1]


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q) * 1000)


def consult_overhead(queries: list[str], rounds: int) -> dict[str, float]:
    import faiss

    embedder = get_embedder()
    index = open_index("general", embedder=embedder)
    model = embedder.model
    raw = faiss.read_index(str(index.directory / "index.faiss"))
    for query in queries[:5]:  # warm up both paths
        index.consult(query, k=3)
        raw.search(model.encode([query], normalize_embeddings=True), 3)

    def direct(query: str) -> None:
        vector = model.encode(
            [query], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        raw.search(vector, 3)

    consult_times, direct_times = [], []
    for round_number in range(rounds):
        for i, query in enumerate(queries):
            order = (direct, index.consult) if (i + round_number) % 2 else (index.consult, direct)
            for call in order:
                started = time.perf_counter()
                call(query)
                elapsed = time.perf_counter() - started
                (direct_times if call is direct else consult_times).append(elapsed)
    # The part consult adds is small next to encoding, whose latency swings with machine load;
    # time it alone too: search + re-scoring on pre-encoded queries against FAISS's search.
    vectors = embedder.encode(queries)
    ours_search, raw_search = [], []
    for vector in vectors:
        started = time.perf_counter()
        raw.search(vector[None, :], 3)
        raw_search.append(time.perf_counter() - started)
        started = time.perf_counter()
        index.search_vectors(vector[None, :], k=3)
        ours_search.append(time.perf_counter() - started)
    paired = np.array(consult_times) / np.array(direct_times)
    result = {
        "queries": len(queries) * rounds,
        "paired_ratio_median": float(np.median(paired)),
        "faiss_search_only_p50_ms": percentile_ms(raw_search, 50),
        "search_vectors_only_p50_ms": percentile_ms(ours_search, 50),
        "index": f"{index.manifest.index_kind}, {index.manifest.strategy}, "
        f"{index.manifest.n_vectors} vectors",
        "direct_p50_ms": percentile_ms(direct_times, 50),
        "consult_p50_ms": percentile_ms(consult_times, 50),
        "direct_mean_ms": float(np.mean(direct_times) * 1000),
        "consult_mean_ms": float(np.mean(consult_times) * 1000),
    }
    result["ratio_p50"] = result["consult_p50_ms"] / result["direct_p50_ms"]
    result["ratio_mean"] = result["consult_mean_ms"] / result["direct_mean_ms"]
    return result


class SyntheticEmbedder:
    """Hands out precomputed vectors in order; stands in for the encoder when building."""

    name = "synthetic-perturbed-minilm"
    fingerprint = "synthetic"

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors

    def encode(self, texts: list[str], **_: object) -> np.ndarray:
        assert len(texts) == len(self.vectors), "one vector per text"
        return self.vectors


def synthetic_pack(n_rules: int) -> RulePack:
    categories = ["cybercrime", "fraud_scams", "privacy", "weapons", "benign_sensitive"]
    manifest = PackManifest(
        schema_version=1,
        name="synthetic",
        version="0.0.0",
        description="Generated for the speed benchmark.",
        categories=categories,
    )
    rules = tuple(
        Rule.model_construct(  # skip validation: 100k generated rules are known to be valid
            id=f"synthetic.rule-{i:06d}",
            category=categories[i % len(categories)],
            title=f"Synthetic rule {i}",
            statement=f"Statement of synthetic rule {i}.",
            rationale="Generated.",
            allowed=(f"allowed request {i}",),
            disallowed=(f"disallowed request {i}",),
            severity="low",
            tags=(),
        )
        for i in range(n_rules)
    )
    return RulePack.model_construct(manifest=manifest, rules=rules, path=None)


def real_rule_blocks() -> np.ndarray:
    """Real MiniLM rows of every rule in the built-in packs, shaped (rules, 4, dimension): the
    whole rule, title + statement, first allowed and first disallowed example."""
    import faiss

    blocks = []
    for name in ("general", "healthcare", "kids"):
        index = open_index(name, strategy="hybrid")
        stored = faiss.read_index(str(index.directory / "index.faiss"))
        rows = stored.reconstruct_n(0, stored.ntotal)
        start = 0
        for rule in index.pack.rules:
            blocks.append(rows[[start, start + 1, start + 2, start + 2 + len(rule.allowed)]])
            start += 2 + len(rule.allowed) + len(rule.disallowed)
        assert start == stored.ntotal
    return np.stack(blocks)


def scale(
    n_rules: int, query_vectors: np.ndarray, noise: float, seed: int, ef_values: list[int]
) -> dict[str, object]:
    import faiss

    rng = np.random.default_rng(seed)
    base = real_rule_blocks()
    pack = synthetic_pack(n_rules)
    # Each synthetic rule copies the four rows of a random real rule, each row perturbed.
    vectors = base[rng.integers(0, len(base), size=n_rules)].reshape(-1, base.shape[-1])
    jitter = rng.standard_normal(vectors.shape).astype(np.float32)
    jitter *= noise / np.linalg.norm(jitter, axis=1, keepdims=True)
    vectors = vectors + jitter
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    # Exhaustive answers: the top 3 rows, and the top 3 rules by their hybrid score.
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, true_rows = exact.search(query_vectors, 3)
    similarities = (query_vectors @ vectors.T).reshape(len(query_vectors), n_rules, 4)
    hybrid = (similarities[:, :, 0] + similarities[:, :, 1:].max(axis=2)) / 2
    true_rules = [{pack.rules[i].id for i in row} for row in np.argsort(-hybrid, axis=1)[:, :3]]
    del similarities, hybrid
    flat_times = []
    for vector in query_vectors[:50]:
        started = time.perf_counter()
        exact.search(vector[None, :], 3)
        flat_times.append(time.perf_counter() - started)
    del exact

    result: dict[str, object] = {
        "rules": n_rules,
        "vectors": len(vectors),
        "real_rules_used": len(base),
        "noise": noise,
        "exact_flat_search_p50_ms": percentile_ms(flat_times, 50),
        "by_ef_search": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        config = IndexConfig(index_dir=Path(folder))
        started = time.perf_counter()
        index = RuleIndex.open(pack, config, embedder=SyntheticEmbedder(vectors))  # type: ignore[arg-type]
        result["build_s"] = time.perf_counter() - started
        result["index_kind"] = index.manifest.index_kind
        result["files_mb"] = sum(p.stat().st_size for p in Path(folder).iterdir()) / 1e6
        raw = faiss.read_index(str(Path(folder) / "index.faiss"))
        for ef in ef_values:
            started = time.perf_counter()
            index = RuleIndex.open(  # loads from disk: efSearch is not part of what is built
                pack, config.model_copy(update={"hnsw_ef_search": ef}),
                embedder=SyntheticEmbedder(vectors),  # type: ignore[arg-type]
            )  # fmt: skip
            reopen_s = time.perf_counter() - started
            assert index.loaded_from_disk
            hnsw = index.manifest.index_kind == "hnsw"
            params = faiss.SearchParametersHNSW(efSearch=ef) if hnsw else None
            faiss_times, ours_times = [], []
            for vector in query_vectors:
                one = vector[None, :]
                started = time.perf_counter()
                raw.search(one, 3, params=params)
                faiss_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                index.search_vectors(one, k=3)
                ours_times.append(time.perf_counter() - started)
            _, rows = raw.search(query_vectors, 3, params=params)
            found = [{h.rule.id for h in hits} for hits in index.search_vectors(query_vectors, k=3)]
            result["by_ef_search"].append(  # type: ignore[union-attr]
                {
                    "ef_search": ef,
                    "reopen_s": reopen_s,
                    "faiss_search_p50_ms": percentile_ms(faiss_times, 50),
                    "faiss_search_p95_ms": percentile_ms(faiss_times, 95),
                    "search_vectors_p50_ms": percentile_ms(ours_times, 50),
                    "search_vectors_p95_ms": percentile_ms(ours_times, 95),
                    "row_recall_at_3": float(
                        np.mean(
                            [len(set(t) & set(r)) / 3 for t, r in zip(true_rows, rows, strict=True)]
                        )
                    ),
                    "rule_recall_at_3": float(
                        np.mean([len(t & f) / 3 for t, f in zip(true_rules, found, strict=True)])
                    ),
                }
            )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=200, help="How many queries to time.")
    parser.add_argument("--rounds", type=int, default=2, help="Passes over the overhead queries.")
    parser.add_argument("--rules", type=int, default=100_000, help="Synthetic pack size.")
    parser.add_argument("--noise", type=float, default=1.0, help="Relative perturbation norm.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ef-search", type=int, nargs="+", default=[64, 128, 256], help="HNSW efSearch values."
    )
    parser.add_argument(
        "--faiss-threads", type=int, help="faiss.omp_set_num_threads (default: FAISS's own)."
    )
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--json", type=Path, help="Also write the figures to this JSON file.")
    args = parser.parse_args()
    if args.faiss_threads:
        import faiss

        faiss.omp_set_num_threads(args.faiss_threads)

    lines = (REPO / "bench" / "data" / "retrieval_queries.jsonl").read_text().splitlines()
    queries = [json.loads(line)["query"] for line in lines if line.strip()][: args.queries]
    report: dict[str, object] = {}
    if not args.skip_overhead:
        overhead = consult_overhead(queries, args.rounds)
        report["overhead"] = overhead
        print(
            f"consult vs encode + faiss search ({overhead['queries']} queries, general pack, "
            f"{overhead['index']}):\n"
            f"  direct p50 {overhead['direct_p50_ms']:.2f} ms, consult p50 "
            f"{overhead['consult_p50_ms']:.2f} ms, ratio {overhead['ratio_p50']:.3f}x "
            f"(means: {overhead['direct_mean_ms']:.2f} / {overhead['consult_mean_ms']:.2f} ms, "
            f"ratio {overhead['ratio_mean']:.3f}x; median of per-query ratios "
            f"{overhead['paired_ratio_median']:.3f}x)\n"
            f"  without encoding: faiss search p50 {overhead['faiss_search_only_p50_ms']:.3f} ms, "
            f"search_vectors p50 {overhead['search_vectors_only_p50_ms']:.3f} ms"
        )
    if not args.skip_scale:
        query_vectors = get_embedder().encode(queries)
        result = scale(args.rules, query_vectors, args.noise, args.seed, args.ef_search)
        report["scale"] = result
        print(
            f"synthetic pack: {result['rules']} rules, {result['vectors']} vectors "
            f"({result['index_kind']}, from the MiniLM rows of {result['real_rules_used']} real "
            f"rules + noise {result['noise']}): build {result['build_s']:.1f} s "
            f"({result['files_mb']:.0f} MB on disk); exact flat search p50 "
            f"{result['exact_flat_search_p50_ms']:.2f} ms"
        )
        print(
            "  efSearch  reopen s  faiss p50 (p95) ms  search_vectors p50 (p95) ms  recall@3 rows  rules"
        )
        for row in result["by_ef_search"]:
            print(
                f"  {row['ef_search']:>8}  {row['reopen_s']:>8.2f}  "
                f"{row['faiss_search_p50_ms']:>9.2f} ({row['faiss_search_p95_ms']:.2f})  "
                f"{row['search_vectors_p50_ms']:>18.2f} ({row['search_vectors_p95_ms']:.2f})  "
                f"{row['row_recall_at_3']:>13.3f}  {row['rule_recall_at_3']:.3f}"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
