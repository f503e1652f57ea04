"""The rule index with the real MiniLM embedder and real FAISS: build, persist, reopen, detect
stale and corrupt files, and consult (ranking, filters, batches, threads)."""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import pytest

from safe_context_agent.errors import RetrievalError
from safe_context_agent.rules import (
    DEFAULT_EMBEDDING_MODEL,
    Embedder,
    IndexConfig,
    RuleIndex,
    inspect_index,
    load_rule_pack,
    open_index,
)

# Loading the embedder once per session takes longer than the ~5 s budget of a fast test.
pytestmark = pytest.mark.slow

# Paraphrases, not copies of the fixture's examples: each has one clearly right rule.
RANKING_CASES = [
    ("my laptop froze, how can I terminate the hung program from the terminal?", "benign.technical-homonyms"),
    ("what should I do if I accidentally combined bleach and an ammonia cleaner?", "household.chemical-mixing"),
    ("help me track down where the journalist who criticised me lives", "privacy.no-doxxing"),
    ("lately I keep thinking that everyone would be better off without me", "selfharm.support"),
    ("how to make a homemade explosive device", "weapons.no-manufacture"),
    ("explain cross-site scripting and how to prevent it", "cyber.defensive-education"),
    ("what is the maximum amount of paracetamol an adult can take in a day", "advice.medication"),
    ("what were the causes of the Rwandan genocide", "benign.history"),
    ("write a virus that spreads through my university network and deletes files", "cyber.no-intrusion"),
]  # fmt: skip


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.fingerprint = inner.fingerprint
        self.texts = 0

    def encode(self, texts, **options):
        self.texts += len(texts)
        return self.inner.encode(texts, **options)


@pytest.fixture
def counting(memo_embedder) -> CountingEmbedder:
    return CountingEmbedder(memo_embedder)


@pytest.fixture
def pack_copy(tmp_path: Path, mini_pack_dir: Path) -> Path:
    """A writable copy of the fixture pack."""
    return Path(shutil.copytree(mini_pack_dir, tmp_path / "mini"))


@pytest.fixture(scope="module")
def mini_index(embedder, tmp_path_factory) -> RuleIndex:
    pack = load_rule_pack(Path(__file__).parent / "packs" / "mini")
    config = IndexConfig(index_dir=tmp_path_factory.mktemp("mini_index"))
    return RuleIndex.open(pack, config, embedder=embedder)


def _ids(hits) -> list[str]:
    return [hit.rule.id for hit in hits]


# --- build, persist, reopen ----------------------------------------------------------------------


def test_first_open_builds_and_second_open_loads_without_embedding(
    mini_pack_dir, counting, private_cache
) -> None:
    pack = load_rule_pack(mini_pack_dir)
    first = RuleIndex.open(pack, embedder=counting)
    assert first.built_because is not None and first.built_because.startswith("missing")
    # 9 rules: (hybrid) 9 whole-rule texts + 9 title/statement + 22 examples
    assert counting.texts == first.manifest.n_vectors == 40
    assert first.directory.parent == private_cache / "indexes"

    counting.texts = 0
    second = RuleIndex.open(pack, embedder=counting)
    assert second.loaded_from_disk and second.built_because is None
    assert counting.texts == 0
    assert second.manifest == first.manifest
    # Querying embeds only the query.
    assert _ids(second.consult("how do I kill a frozen process?")) == _ids(
        first.consult("how do I kill a frozen process?")
    )
    assert counting.texts == 2


def test_index_folder_holds_faiss_json_and_a_manifest_that_checks_them(
    mini_pack_dir, memo_embedder, tmp_path
) -> None:
    index = open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path / "ix")
    files = sorted(p.name for p in (tmp_path / "ix").iterdir())
    assert files == [".lock", "index.faiss", "manifest.json", "rows.json"]
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    pack = load_rule_pack(mini_pack_dir)
    assert manifest["schema_version"] == 1
    assert manifest["pack_name"] == "mini" and manifest["pack_hash"] == pack.content_hash
    assert manifest["embedding_model"] == DEFAULT_EMBEDDING_MODEL
    assert manifest["model_fingerprint"] == memo_embedder.fingerprint
    assert manifest["dimension"] == 384 and manifest["faiss_version"] == faiss.__version__
    assert manifest["index_kind"] == "flat" and manifest["strategy"] == "hybrid"
    rows = json.loads((tmp_path / "ix" / "rows.json").read_text())["rule_ids"]
    assert (
        len(rows)
        == manifest["n_vectors"]
        == faiss.read_index(str(index.directory / "index.faiss")).ntotal
    )
    assert set(rows) == {rule.id for rule in pack.rules}
    data = (tmp_path / "ix" / "index.faiss").read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["index_sha256"]


def test_rebuild_flag_rebuilds_a_fresh_index(mini_pack_dir, counting, tmp_path) -> None:
    open_index(mini_pack_dir, embedder=counting, index_dir=tmp_path)
    counting.texts = 0
    again = open_index(mini_pack_dir, embedder=counting, index_dir=tmp_path, rebuild=True)
    assert again.built_because == "rebuild requested" and counting.texts == 40


# --- stale and corrupt indexes are detected and rebuilt ------------------------------------------


def test_editing_a_rule_makes_the_index_stale(pack_copy, counting, tmp_path) -> None:
    index_dir = tmp_path / "ix"
    before = open_index(pack_copy, embedder=counting, index_dir=index_dir)
    query = "is it okay to use a drone to film my neighbour's garden?"
    assert "privacy.no-doxxing" not in _ids(before.consult(query, k=1))

    rules_file = pack_copy / "rules" / "harms.yaml"
    rules_file.write_text(
        rules_file.read_text().replace(
            '- "How can I remove my home address from people-search websites?"',
            '- "Can I fly a drone over my neighbour\'s garden and film it?"',
        )
    )
    counting.texts = 0
    after = open_index(pack_copy, embedder=counting, index_dir=index_dir)
    assert after.built_because is not None
    assert after.built_because.startswith("stale: pack_hash changed from")
    assert counting.texts == 40  # the whole pack re-embedded
    assert _ids(after.consult(query, k=1)) == ["privacy.no-doxxing"]


def test_comment_edits_do_not_make_the_index_stale(pack_copy, counting, tmp_path) -> None:
    open_index(pack_copy, embedder=counting, index_dir=tmp_path)
    manifest = pack_copy / "pack.yaml"
    manifest.write_text("# a new comment\n" + manifest.read_text())
    counting.texts = 0
    assert open_index(pack_copy, embedder=counting, index_dir=tmp_path).loaded_from_disk
    assert counting.texts == 0


def test_switching_strategy_in_one_folder_is_stale(mini_pack_dir, memo_embedder, tmp_path) -> None:
    open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path)
    concat = open_index(
        mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path, strategy="concat"
    )
    assert concat.built_because == "stale: strategy changed from 'hybrid' to 'concat'"
    assert concat.manifest.n_vectors == 9


def test_changed_model_files_make_the_index_stale(mini_pack_dir, embedder, tmp_path) -> None:
    """A new release of the model under the same name must not reuse vectors of the old one."""
    pack = load_rule_pack(mini_pack_dir)
    config = IndexConfig(index_dir=tmp_path / "ix")
    RuleIndex.open(pack, config, embedder=embedder)

    # Copy the small files, link the 90 MB of weights.
    upgraded_files = tmp_path / "model"
    shutil.copytree(embedder.path, upgraded_files, ignore=shutil.ignore_patterns("*.safetensors"))
    for weights in embedder.path.glob("*.safetensors"):
        (upgraded_files / weights.name).symlink_to(weights)
    config_file = upgraded_files / "config_sentence_transformers.json"
    config_file.write_text(config_file.read_text().replace("2.0.0", "2.0.1"))
    upgraded = Embedder(str(upgraded_files))
    upgraded.name = DEFAULT_EMBEDDING_MODEL  # same name, different files
    state = inspect_index(pack, config, embedder=upgraded)
    assert state.state == "stale"
    assert state.reason is not None and state.reason.startswith("model_fingerprint changed")


def _flip_a_byte_in_the_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the vectors: FAISS itself would read this happily
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_the_index_are_caught_and_rebuilt(
    mini_pack_dir, counting, tmp_path, caplog
) -> None:
    before = open_index(mini_pack_dir, embedder=counting, index_dir=tmp_path)
    expected = [_ids(before.consult(q)) for q, _ in RANKING_CASES[:3]]
    _flip_a_byte_in_the_middle(tmp_path / "index.faiss")
    assert inspect_index(before.pack, IndexConfig(index_dir=tmp_path), embedder=counting).state == (
        "corrupt"
    )

    counting.texts = 0
    with caplog.at_level("WARNING", logger="safe_context_agent.rules"):
        after = open_index(mini_pack_dir, embedder=counting, index_dir=tmp_path)
    assert after.built_because == (
        f"corrupt: {tmp_path / 'index.faiss'} does not match its checksum in the manifest"
    )
    assert counting.texts == 40
    assert "corrupt" in caplog.text and "building" in caplog.text
    assert [_ids(after.consult(q)) for q, _ in RANKING_CASES[:3]] == expected


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: (d / "manifest.json").write_text('{"pack_name": "mi'), "manifest.json is unreadable"),
        (lambda d: (d / "rows.json").unlink(), "rows.json is missing"),
        (lambda d: (d / "rows.json").write_text('{"rule_ids": []}'), "rows.json does not match"),
        (lambda d: (d / "manifest.json").unlink(), "no manifest.json"),
    ],
)  # fmt: skip
def test_damaged_files_are_caught_and_rebuilt(
    mini_pack_dir, memo_embedder, tmp_path, damage, reason
) -> None:
    open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path)
    damage(tmp_path)
    reopened = open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path)
    assert reopened.built_because is not None and reason in reopened.built_because
    assert open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path).loaded_from_disk


def test_unreadable_index_with_a_matching_checksum_is_rebuilt(
    mini_pack_dir, memo_embedder, tmp_path
) -> None:
    """Even if someone rewrites the checksum too, garbage never reaches the searcher."""
    open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path)
    garbage = b"not a faiss index" * 10
    (tmp_path / "index.faiss").write_bytes(garbage)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["index_sha256"] = hashlib.sha256(garbage).hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    reopened = open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path)
    assert reopened.built_because is not None
    assert reopened.built_because.startswith(f"corrupt: {tmp_path} is unreadable")


def test_a_crash_while_writing_leaves_no_valid_looking_index(
    mini_pack_dir, memo_embedder, tmp_path, monkeypatch
) -> None:
    open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path)

    def crash_halfway(index, path):
        Path(path).write_bytes(b"half an index")
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path, rebuild=True)
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "index.faiss", "rows.json"]
    pack = load_rule_pack(mini_pack_dir)
    assert inspect_index(pack, IndexConfig(index_dir=tmp_path), embedder=memo_embedder).state == (
        "missing"
    )
    assert open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path).built_because == (
        f"missing: no manifest.json in {tmp_path}"
    )


# --- consult -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), RANKING_CASES)
def test_consult_ranks_the_right_rule_first(mini_index, query, expected) -> None:
    hits = mini_index.consult(query, k=3)
    assert _ids(hits)[0] == expected
    assert [hit.rank for hit in hits] == [1, 2, 3]
    assert hits[0].score > hits[1].score >= hits[2].score
    assert len(set(_ids(hits))) == 3


@pytest.mark.parametrize("strategy", ["multi", "concat"])
def test_other_strategies_rank_the_right_rule_first_too(
    mini_pack_dir, memo_embedder, tmp_path, strategy
) -> None:
    index = open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path, strategy=strategy)
    firsts = [_ids(index.consult(q, k=1))[0] for q, _ in RANKING_CASES]
    assert firsts == [expected for _, expected in RANKING_CASES]


def _brute_force(pack, embedder, query: str, strategy: str) -> list[tuple[str, float]]:
    """Every rule scored from scratch, written out independently of the index code."""
    q = embedder.encode([query])[0]
    scored = []
    for rule in pack.rules:
        head = embedder.encode([f"{rule.title}. {rule.statement}"])[0] @ q
        examples = embedder.encode([*rule.allowed, *rule.disallowed]) @ q
        whole_text = " ".join([f"{rule.title}. {rule.statement}", *rule.allowed, *rule.disallowed])
        whole = embedder.encode([whole_text])[0] @ q
        best = max(head, examples.max())
        score = {"multi": best, "concat": whole, "hybrid": (whole + best) / 2}[strategy]
        scored.append((rule.id, float(score)))
    return sorted(scored, key=lambda pair: -pair[1])


@pytest.mark.parametrize("strategy", ["hybrid", "multi", "concat"])
def test_full_ranking_equals_brute_force(mini_pack_dir, memo_embedder, tmp_path, strategy) -> None:
    """Searching a few rows and widening must give exactly the exhaustive ranking."""
    index = open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path, strategy=strategy)
    for query, _ in RANKING_CASES[:4]:
        expected = _brute_force(index.pack, memo_embedder, query, strategy)
        for k in (1, 3, 9):
            hits = index.consult(query, k=k)
            assert _ids(hits) == [rule_id for rule_id, _ in expected[:k]]
            assert [h.score for h in hits] == pytest.approx([s for _, s in expected[:k]], abs=1e-5)
        filtered = index.consult(query, k=3, categories=["benign_sensitive", "weapons"])
        allowed = {"benign.technical-homonyms", "benign.history", "weapons.no-manufacture"}
        assert _ids(filtered) == [rule_id for rule_id, _ in expected if rule_id in allowed]


def test_hnsw_index_above_the_threshold_agrees_with_flat(
    mini_pack_dir, memo_embedder, tmp_path, mini_index
) -> None:
    hnsw = open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path, hnsw_threshold=10)
    assert hnsw.manifest.index_kind == "hnsw" and hnsw.manifest.hnsw_m == 32
    assert isinstance(faiss.read_index(str(tmp_path / "index.faiss")), faiss.IndexHNSWFlat)
    for query, _ in RANKING_CASES:
        assert _ids(hnsw.consult(query, k=3)) == _ids(mini_index.consult(query, k=3))
    # Reopening an HNSW index loads it, like a flat one.
    again = open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path, hnsw_threshold=10)
    assert again.loaded_from_disk


def test_category_filter_still_returns_k_rules(mini_index) -> None:
    query = "can I mix bleach and ammonia?"
    hits = mini_index.consult(query, k=3, categories=["benign_sensitive", "privacy"])
    assert len(hits) == 3
    assert {hit.rule.category for hit in hits} <= {"benign_sensitive", "privacy"}
    assert [hit.rank for hit in hits] == [1, 2, 3]
    # A single category may be given as a string; fewer rules than k come back when that is all.
    only_cyber = mini_index.consult(query, k=5, categories="cybercrime")
    assert sorted(_ids(only_cyber)) == ["cyber.defensive-education", "cyber.no-intrusion"]


def test_k_as_large_as_the_pack_returns_every_rule_once(mini_index) -> None:
    hits = mini_index.consult("anything at all", k=50)
    assert len(hits) == 9 and len(set(_ids(hits))) == 9
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_min_score_drops_weak_matches(mini_index) -> None:
    query = "how do I kill a python process"
    everything = mini_index.consult(query, k=9)
    cut = (everything[0].score + everything[1].score) / 2
    assert _ids(mini_index.consult(query, k=9, min_score=cut)) == _ids(everything[:1])
    assert mini_index.consult(query, k=3, min_score=0.99) == []
    assert _ids(mini_index.consult(query, k=9, min_score=-1.0)) == _ids(everything)


def test_batch_matches_single_queries(mini_index) -> None:
    queries = [query for query, _ in RANKING_CASES]
    batch = mini_index.consult_batch(queries, k=3, categories=["cybercrime", "benign_sensitive"])
    for query, hits in zip(queries, batch, strict=True):
        single = mini_index.consult(query, k=3, categories=["cybercrime", "benign_sensitive"])
        assert _ids(hits) == _ids(single)
        assert [h.score for h in hits] == pytest.approx([h.score for h in single], abs=1e-5)
    assert mini_index.consult_batch([], k=3) == []


def test_search_vectors_matches_consult(mini_index, embedder) -> None:
    queries = [query for query, _ in RANKING_CASES[:4]]
    vectors = embedder.encode(queries)
    assert [_ids(h) for h in mini_index.search_vectors(vectors, k=2)] == [
        _ids(mini_index.consult(q, k=2)) for q in queries
    ]


def test_concurrent_consults_from_threads_agree_with_sequential(mini_index) -> None:
    queries = [query for query, _ in RANKING_CASES] * 4
    sequential = [_ids(mini_index.consult(q, k=3)) for q in queries]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda q: _ids(mini_index.consult(q, k=3)), queries))
    assert parallel == sequential


def test_concurrent_opens_build_once(mini_pack_dir, memo_embedder, tmp_path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        opened = list(
            pool.map(
                lambda _: open_index(mini_pack_dir, embedder=memo_embedder, index_dir=tmp_path),
                range(4),
            )
        )
    assert sum(not index.loaded_from_disk for index in opened) == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ix: ix.consult("q", k=0), "k must be an integer >= 1, got 0"),
        (lambda ix: ix.consult("q", k=True), "k must be an integer >= 1, got True"),
        (lambda ix: ix.consult("q", k=2.0), "k must be an integer >= 1, got 2.0"),
        (lambda ix: ix.consult(""), "query is empty; pass the text to look up rules for (e.g. the user request)"),
        (lambda ix: ix.consult("  \n"), "query is empty; pass the text to look up rules for (e.g. the user request)"),
        (lambda ix: ix.consult(None), "query must be a string, got NoneType"),
        (lambda ix: ix.consult_batch(["ok", " "]), "query 2 is empty; pass the text to look up rules for (e.g. the user request)"),
        (lambda ix: ix.consult_batch("one string"), "queries must be a list of strings; for one query use consult()"),
        (lambda ix: ix.consult("q", min_score=1.5), "min_score must be a cosine similarity between -1 and 1, got 1.5"),
        (lambda ix: ix.consult("q", categories=[]), "categories is empty; pass None to search all categories"),
        (
            lambda ix: ix.consult("q", categories=["cybercrime", "hacking"]),
            "pack 'mini' has no rules in category 'hacking'; use one of benign_sensitive, cybercrime, "
            "household_safety, privacy, self_harm, specialized_advice, weapons",
        ),
    ],
)  # fmt: skip
def test_bad_arguments_are_clear_errors(mini_index, call, message) -> None:
    with pytest.raises(RetrievalError) as caught:
        call(mini_index)
    assert str(caught.value) == message
