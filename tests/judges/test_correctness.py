"""GSM8K-style task correctness: final-number extraction and exact match."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from safe_context_agent.judges import (
    extract_final_number,
    format_number,
    gsm8k_reference,
    numeric_match,
)

EXTRACTIONS = [
    ("She makes 9 * 2 = $18 every day.\n#### 18", Decimal(18)),
    ("#### 1,000", Decimal(1000)),
    ("So the total is 5 + 7 = 12. The answer is 12.", Decimal(12)),
    ("The answer is $1,234.50.", Decimal("1234.5")),
    ("Final answer: -7", Decimal(-7)),
    ("The temperature dropped to \u22123 degrees.", Decimal(-3)),
    ("He lost -$5 on the bet.", Decimal(-5)),
    ("That leaves 18.0 eggs.", Decimal(18)),
    ("It costs .5 dollars", Decimal("0.5")),
    ("Step 1: 16-3-4=9 eggs are left. She sells them for 2 dollars each, so 18.", Decimal(18)),
    ("The answer is 72. Let me double check: 48 + 24 = 72, and 100 - 28 = 72.", Decimal(72)),
    ("Answer: 40\nWork: 8 * 5 = 40, plus 3 more is 43 if we count the spare.", Decimal(40)),
    ("Therefore $\\boxed{156}$ and not 150.", Decimal(156)),
    ("#### 5\nsome text 6\n#### 7", Decimal(7)),
    ("Items:\n- 5 apples\n- 3 pears", Decimal(3)),
    ("About 50% of them.", Decimal(50)),
    ("No numbers here.", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACTIONS)
def test_extract_final_number(text: str, expected: Decimal | None) -> None:
    assert extract_final_number(text) == expected


def test_numeric_match() -> None:
    assert numeric_match("so she earns $18.00", "#### 18")
    assert numeric_match("The answer is 1000.", "1,000")
    assert numeric_match("The answer is 1,000", "#### 1000")
    assert numeric_match("-3", "\u22123")
    assert not numeric_match("The answer is 17.", "#### 18")
    assert not numeric_match("I can't help with that.", "#### 18")
    assert not numeric_match("18", "no reference number")


def test_gsm8k_reference() -> None:
    assert gsm8k_reference("2 + 2 = <<2+2=4>>4\n#### 4") == "4"
    assert gsm8k_reference("...\n#### 1,450,000") == "1450000"
    assert gsm8k_reference("#### -3.50") == "-3.5"
    with pytest.raises(ValueError, match="####"):
        gsm8k_reference("The answer is 4.")
    with pytest.raises(ValueError, match="no number"):
        gsm8k_reference("#### n/a")


def test_format_number() -> None:
    assert [format_number(Decimal(x)) for x in ("18.50", "1E+3", "100", "-0", "0.25")] == [
        "18.5",
        "1000",
        "100",
        "0",
        "0.25",
    ]


def test_every_real_gsm8k_solution_matches_its_own_reference(shared_data) -> None:
    with (shared_data / "gsm8k" / "test.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    assert len(rows) == 1319
    for index, row in enumerate(rows, start=1):
        reference = gsm8k_reference(row["answer"])
        assert numeric_match(row["answer"], reference), (index, reference)
        # The worked solution without its "####" line still ends on the answer in most rows;
        # what must hold is that the marker wins over any later number.
        assert extract_final_number(row["answer"] + "\nCheck: 0") == Decimal(reference)
