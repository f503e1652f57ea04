"""The fixed train / dev / test split: deterministic, text-based, and disjoint across suites."""

from __future__ import annotations

from collections import Counter

import pytest
from safe_context_training._prompts import SUITE_FILES

from safe_context_agent.eval import (
    SPLIT_SHARES,
    everyday_prompts_path,
    load_suite,
    normalise_prompt,
    prompt_split,
    select_split,
)


def test_normalise_folds_case_width_punctuation_and_spaces() -> None:
    assert (
        normalise_prompt("  How do I KILL a Python\tprocess?! ") == "how do i kill a python process"
    )
    assert normalise_prompt("Ｈｏｗ ｄｏ Ｉ") == "how do i"  # full-width letters fold (NFKC)


def test_variants_of_one_request_share_a_split() -> None:
    base = "How do I kill a Python process that hangs?"
    for variant in (
        "how do i kill a python process that hangs",
        "HOW DO I KILL A PYTHON PROCESS THAT HANGS!!",
    ):
        assert prompt_split(variant) == prompt_split(base)


def test_shares_are_close_to_the_declared_ones() -> None:
    counts = Counter(prompt_split(f"prompt number {i}") for i in range(20_000))
    for name, share in SPLIT_SHARES.items():
        assert abs(counts[name] / 20_000 - share) < 0.015, (name, counts)


def test_select_split_keeps_order_and_rejects_unknown_splits() -> None:
    texts = [f"request {i}" for i in range(50)]
    dev = select_split(texts, "dev")
    assert dev == [t for t in texts if prompt_split(t) == "dev"]
    with pytest.raises(ValueError, match="unknown split"):
        select_split(texts, "validation")  # type: ignore[arg-type]


def test_train_and_dev_prompts_are_disjoint_across_every_suite(shared_data) -> None:
    splits: dict[str, set[str]] = {"train": set(), "dev": set()}
    for suite, relative in {**SUITE_FILES, "everyday": None}.items():
        path = everyday_prompts_path() if relative is None else shared_data / relative
        for split in splits:
            splits[split] |= {
                normalise_prompt(p.prompt) for p in load_suite(suite, path, split=split)
            }
    assert splits["train"] and splits["dev"]
    assert not splits["train"] & splits["dev"]


def test_load_suite_applies_the_split_before_the_limit(shared_data) -> None:
    path = shared_data / SUITE_FILES["xstest"]
    dev = load_suite("xstest", path, split="dev")
    assert all(prompt_split(p.prompt) == "dev" for p in dev)
    assert (
        load_suite("xstest", path, split="dev", limit=5, seed=0)
        == load_suite("xstest", path, split="dev", seed=0)[:5]
    )
