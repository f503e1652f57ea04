"""Judge-test pieces: the labelled response set and an accuracy line at the end of the run.

(``shared_data`` and ``vllm_server`` come from ``tests/conftest.py``.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CASES_PATH = Path(__file__).parent / "data" / "refusal_cases.jsonl"

# test_refusal_cases.py records its accuracy lines under this user-property name; they are
# printed at the end of the run.
ACCURACY_PROPERTY = "refusal_judge_accuracy"


@pytest.fixture(scope="session")
def refusal_cases() -> list[dict[str, str]]:
    with CASES_PATH.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [
        value
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        for name, value in getattr(report, "user_properties", ())
        if name == ACCURACY_PROPERTY and report.when == "call"
    ]
    if lines:
        terminalreporter.section("refusal judge accuracy (tests/judges/data/refusal_cases.jsonl)")
        for line in lines:
            terminalreporter.write_line(str(line))
