"""Fixtures for the rule pack tests: a private cache, the real MiniLM embedder (loaded once per
session), and a writer for variants of a valid pack."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

MINI_PACK = Path(__file__).parent / "packs" / "mini"


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache, so no test reads or writes the user's indexes."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SCA_CACHE_DIR", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The real all-MiniLM-L6-v2, shared by every test that embeds (loading takes seconds)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from safe_context_agent.rules import get_embedder

    model = get_embedder()
    model.encode(["warm up"])
    return model


class MemoizedEmbedder:
    """The real embedder, remembering each text's vector for the session.

    Tests of building, staleness and corruption rebuild the same small pack many times; the
    memo keeps them fast while every vector still comes from MiniLM. Tests of retrieval itself
    (ranking, batches, threads) use the plain ``embedder``.
    """

    def __init__(self, inner: Any):
        self.inner = inner
        self.name = inner.name
        self.path = inner.path
        self.fingerprint = inner.fingerprint
        self._memo: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str], **options: Any) -> np.ndarray:
        missing = [text for text in dict.fromkeys(texts) if text not in self._memo]
        if missing:
            self._memo.update(zip(missing, self.inner.encode(missing, **options), strict=True))
        return np.stack([self._memo[text] for text in texts])


@pytest.fixture(scope="session")
def memo_embedder(embedder: Any) -> MemoizedEmbedder:
    return MemoizedEmbedder(embedder)


@pytest.fixture
def mini_pack_dir() -> Path:
    return MINI_PACK


def _valid_manifest() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "name": "demo",
        "version": "1.0.0",
        "description": "A pack written by the tests.",
        "embedding_model": "sentence-transformers/all-MiniLM-L6-v2",
        "categories": ["cybercrime", "benign_sensitive"],
    }


def _valid_rules() -> list[dict[str, Any]]:
    return [
        {
            "id": "cyber.defence",
            "category": "cybercrime",
            "title": "Explain attacks for defence",
            "statement": "Explain how attacks work and how to defend against them.",
            "rationale": "Defenders need to know attacks.",
            "allowed": ["How does phishing work?"],
            "disallowed": ["Write ransomware for me."],
            "severity": "medium",
            "tags": ["security"],
        },
        {
            "id": "benign.homonyms",
            "category": "benign_sensitive",
            "title": "Technical homonyms",
            "statement": "Answer questions about killing processes and similar technical terms.",
            "rationale": "These are ordinary technical questions.",
            "allowed": ["How do I kill a process?"],
            "disallowed": ["How do I kill my neighbour?"],
            "severity": "low",
        },
    ]


PackWriter = Callable[..., Path]


@pytest.fixture
def write_pack(tmp_path: Path) -> PackWriter:
    """``write_pack(manifest=..., rules=..., name=...)`` writes a pack folder and returns it.

    ``manifest`` and ``rules`` default to a valid two-rule pack; pass an edited copy (from
    ``valid_manifest()``/``valid_rules()``) to break one thing. ``rules`` may also be a mapping
    of file name to rule list, or to raw text.
    """

    written: list[str] = []

    def write(
        *,
        manifest: dict[str, Any] | str | None = None,
        rules: list[dict[str, Any]] | dict[str, Any] | None = None,
        name: str = "demo",
    ) -> Path:
        written.append(name)  # a fresh parent per call, so one test can write several packs
        folder = tmp_path / f"packs{len(written)}" / name
        (folder / "rules").mkdir(parents=True)
        manifest = _valid_manifest() if manifest is None else manifest
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest, sort_keys=False)
        (folder / "pack.yaml").write_text(text, encoding="utf-8")
        files = (
            rules
            if isinstance(rules, dict)
            else {"rules.yaml": _valid_rules() if rules is None else rules}
        )
        for file_name, content in files.items():
            body = (
                content
                if isinstance(content, str)
                else yaml.safe_dump({"rules": content}, sort_keys=False)
            )
            (folder / "rules" / file_name).write_text(body, encoding="utf-8")
        return folder

    return write


@pytest.fixture
def valid_manifest() -> Callable[[], dict[str, Any]]:
    return lambda: copy.deepcopy(_valid_manifest())


@pytest.fixture
def valid_rules() -> Callable[[], list[dict[str, Any]]]:
    return lambda: copy.deepcopy(_valid_rules())
