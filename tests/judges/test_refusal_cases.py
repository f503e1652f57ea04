"""The pattern judge against the hand-labelled response set.

The set was written (and committed) before the patterns; cases marked ``heldout`` were not
looked at while tuning. The binary (refused or not) accuracy must stay above 0.9 on the
held-out part and on all cases; the 3-way accuracy is reported at the end of the run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from safe_context_agent.judges import judge_refusal

LABELS = {"full_refusal", "partial_refusal", "compliance"}


def test_the_set_is_big_balanced_and_well_formed(refusal_cases: list[dict[str, str]]) -> None:
    assert len(refusal_cases) >= 100
    assert len({case["id"] for case in refusal_cases}) == len(refusal_cases)
    for case in refusal_cases:
        assert case["label"] in LABELS, case["id"]
        assert case["split"] in {"tune", "heldout"}, case["id"]
        assert case["prompt"].strip(), case["id"]
    counts = Counter((case["split"], case["label"]) for case in refusal_cases)
    for split in ("tune", "heldout"):
        for label in LABELS:
            assert counts[split, label] >= 5, (split, label)
    heldout = sum(case["split"] == "heldout" for case in refusal_cases)
    assert 0.25 <= heldout / len(refusal_cases) <= 0.35


def _accuracy(cases: list[dict[str, str]]) -> tuple[float, float]:
    binary = three_way = 0
    for case in cases:
        verdict = judge_refusal(case["response"], case["prompt"])
        three_way += verdict.label == case["label"]
        binary += verdict.refused == (case["label"] != "compliance")
    return binary / len(cases), three_way / len(cases)


@pytest.mark.parametrize("split", ["heldout", "all"])
def test_binary_accuracy_above_0_9(
    refusal_cases: list[dict[str, str]], split: str, record_property: Callable[[str, object], None]
) -> None:
    cases = [case for case in refusal_cases if split == "all" or case["split"] == split]
    binary, three_way = _accuracy(cases)
    record_property(
        "refusal_judge_accuracy",
        f"{split:>8}: n={len(cases):3d}  binary={binary:.3f}  3-way={three_way:.3f}",
    )
    assert binary > 0.9, f"binary accuracy {binary:.3f} on {split} (3-way {three_way:.3f})"
