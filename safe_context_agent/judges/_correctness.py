"""Task correctness for GSM8K-style questions: exact match on the final number.

Numbers are compared as :class:`~decimal.Decimal`, so ``18.0 == 18`` and ``1,000 == 1000``
hold exactly, with no float rounding.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["extract_final_number", "gsm8k_reference", "numeric_match"]

# A number: optional minus (ASCII or Unicode) and dollar sign in either order, digits with
# optional thousands commas, optional decimals. A minus counts only when it touches the
# digits and is not glued to a preceding word or number: "16-3" is 16 and 3, and a "- 5"
# list bullet is 5.
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-\u2212])?\$?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)
# Markers of the final answer, strongest first: GSM8K's "####", LaTeX \boxed{...}, then
# prose such as "the answer is" / "Final answer:".
_MARKERS = (
    re.compile(r"####\s*(?P<rest>[^\n]*)"),
    re.compile(r"\\boxed\{(?P<rest>[^{}]*)\}"),
    re.compile(
        r"(?:final\s+answer|the\s+answer\s+is|answer\s*:)\s*[:=]?\s*(?P<rest>[^\n]*)",
        re.IGNORECASE,
    ),
)


def extract_final_number(text: str) -> Decimal | None:
    """The answer number of a response, or None when it has no number.

    Takes the first number after the last ``####``, else in the last ``\\boxed{}``, else after
    the last "answer is" / "answer:" / "final answer"; without any marker, the last number in
    the text. Handles ``$``, thousands commas, negatives and decimals; a trailing sentence
    period is not a decimal point.
    """
    for marker in _MARKERS:
        matches = list(marker.finditer(text))
        for match in reversed(matches):
            number = _first_number(match["rest"])
            if number is not None:
                return number
    return _last_number(text)


def numeric_match(response: str, reference: str) -> bool:
    """True when the response's final number equals the reference's.

    ``reference`` may be a bare number ("18", "1,000") or a full GSM8K solution ending in
    ``#### 18``. A response or reference without a number never matches.
    """
    expected = extract_final_number(reference)
    got = extract_final_number(response)
    return expected is not None and got is not None and got == expected


def gsm8k_reference(solution: str) -> str:
    """The answer of a GSM8K solution (the number after ``#### ``), normalised: ``"1,000"`` -> ``"1000"``.

    Raises ``ValueError`` when the solution has no ``####`` line with a number.
    """
    if "####" not in solution:
        raise ValueError("no '####' line with the final answer")
    number = _first_number(solution.rsplit("####", 1)[1])
    if number is None:
        raise ValueError("no number after '####'")
    return format_number(number)


def format_number(number: Decimal) -> str:
    """A plain decimal string without exponent or trailing zeros: 18.50 -> "18.5", 1E+3 -> "1000"."""
    text = format(number.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _numbers(text: str) -> list[Decimal]:
    found: list[Decimal] = []
    for match in _NUMBER.finditer(text):
        try:
            value = Decimal(match["digits"].replace(",", ""))
        except InvalidOperation:
            continue
        found.append(-value if match["sign"] else value)
    return found


def _first_number(text: str) -> Decimal | None:
    numbers = _numbers(text)
    return numbers[0] if numbers else None


def _last_number(text: str) -> Decimal | None:
    numbers = _numbers(text)
    return numbers[-1] if numbers else None
