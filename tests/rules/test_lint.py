"""`lint_pack`: the pure scoring on hand-made vectors, each planted problem found with the real
MiniLM embedder, nothing flagged on a clean pack, and what the built-in packs give."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from safe_context_agent.cli import app
from safe_context_agent.rules import (
    LintConfig,
    held_out_scores,
    lint_pack,
    load_rule_pack,
    similar_pairs,
)
from safe_context_agent.rules._lint import is_permissive, own_ranks

PACKS = Path(__file__).parent / "packs"


def _unit(*rows: list[float]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


# --- pure pieces, on numbers worked out by hand ------------------------------------------------


def test_held_out_scores_drop_the_example_from_its_own_rule() -> None:
    # Two rules in 2-D. Rule 0 owns examples 0 and 1, rule 1 owns example 2.
    heads = _unit([1, 0], [0, 1])
    wholes = _unit([1, 0], [0, 1])
    examples = _unit([1, 0], [1, 1], [0, 1])
    owner = np.array([0, 0, 1])
    without = _unit([1, 1], [1, 0], [0, 1])  # rule 0 joined without example 0, without 1, ...
    s = 1 / np.sqrt(2)

    multi = held_out_scores(examples, owner, heads, wholes, without, "multi")
    # Example 0 = (1,0): its own row is gone; rule 0's best part is the head (1.0) anyway.
    # Example 1 = (1,1)/√2: own rule's parts left are the head (s) and example 0 (s) -> s.
    # Example 2 = (0,1) has no other example in rule 1: the head (1.0); rule 0: max(0, s) = s.
    assert multi == pytest.approx(np.array([[1.0, 0.0], [s, s], [s, 1.0]]), abs=1e-6)

    concat = held_out_scores(examples, owner, heads, wholes, without, "concat")
    # Own-rule entries use `without`: example 0 . (1,1)/√2 = s; example 1 . (1,0) = s.
    assert concat == pytest.approx(np.array([[s, 0.0], [s, s], [0.0, 1.0]]), abs=1e-6)

    hybrid = held_out_scores(examples, owner, heads, wholes, without, "hybrid")
    assert hybrid == pytest.approx((multi + concat) / 2, abs=1e-6)


def test_own_ranks_count_rules_strictly_above() -> None:
    scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.4], [0.5, 0.5, 0.1]])
    assert own_ranks(scores, np.array([0, 0, 1])).tolist() == [1, 3, 1]


def test_similar_pairs_above_the_threshold_most_similar_first() -> None:
    vectors = _unit([1, 0], [1, 0.1], [0, 1], [0.1, 1])
    pairs = similar_pairs(vectors, threshold=0.99)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (2, 3)]
    assert pairs[0][2] == pytest.approx(1 / np.sqrt(1.01), abs=1e-6)
    assert similar_pairs(vectors, threshold=1.01) == []


def test_a_permissive_rule_is_low_severity_or_tagged_utility() -> None:
    rules = {rule.id: rule for rule in load_rule_pack(PACKS / "planted").rules}
    assert is_permissive(rules["weapons.gun-storage"])  # low
    assert not is_permissive(rules["fraud.no-fake-invoices"])  # high, no utility tag
    assert not is_permissive(rules["weapons.no-bombs"])


# --- the real embedder on the test packs ----------------------------------------------------


@pytest.fixture(scope="module")
def planted(embedder: Any) -> Any:
    return lint_pack(PACKS / "planted", embedder=embedder)


def _kinds(report: Any, kind: str) -> list[list[str]]:
    return [finding.rule_ids for finding in report.findings if finding.kind == kind]


def test_the_planted_duplicate_is_found(planted: Any) -> None:
    assert _kinds(planted, "duplicate") == [["cyber.no-ransomware-copy", "cyber.no-ransomware"]]


def test_examples_that_retrieve_another_rule_are_found(planted: Any) -> None:
    (rule_ids,) = _kinds(planted, "example_miss")
    assert rule_ids[0] == "garden.weeds"
    # Its examples retrieve the rules they are really about.
    assert set(rule_ids[1:]) == {"weapons.gun-storage", "cyber.no-ransomware"}
    row = next(r for r in planted.rules if r.rule_id == "garden.weeds")
    assert row.hits == 0 and row.hit_rate == 0.0
    assert {m.rule_id for m in planted.misses} == {"garden.weeds"}


def test_a_category_without_an_allowing_rule_is_found(planted: Any) -> None:
    assert _kinds(planted, "no_allowed_rule") == [["fraud.no-fake-invoices"]]


def test_examples_unrelated_to_the_statement_are_found(planted: Any) -> None:
    assert _kinds(planted, "example_overlap") == [["benign.judgement"]]
    row = next(r for r in planted.rules if r.rule_id == "benign.judgement")
    assert row.allowed_disallowed_similarity > row.example_statement_similarity + 0.15


def test_nothing_is_flagged_on_a_clean_pack(embedder: Any) -> None:
    report = lint_pack(PACKS / "clean", embedder=embedder)
    assert report.findings == []
    assert report.hit_rate == 1.0 and report.misses == []
    assert 0.0 < report.floor < 1.0
    assert report.schema_version == 1 and len(report.pack_hash) == 64


def test_the_floor_is_the_quantile_of_held_out_own_scores(embedder: Any) -> None:
    low = lint_pack(PACKS / "clean", LintConfig(floor_quantile=0.01), embedder=embedder)
    high = lint_pack(PACKS / "clean", LintConfig(floor_quantile=0.5), embedder=embedder)
    assert low.floor < high.floor


def test_thresholds_turn_checks_on(embedder: Any) -> None:
    # At k=1 every example must retrieve its own rule first; at a low threshold the clean
    # pack's related rules count as duplicates.
    strict = lint_pack(
        PACKS / "clean",
        LintConfig(duplicate_threshold=0.2, overlap_margin=0.0),
        embedder=embedder,
    )
    kinds = {finding.kind for finding in strict.findings}
    assert {"duplicate", "example_overlap"} <= kinds


# --- the built-in packs ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["general", "healthcare", "kids"])
def test_builtin_packs_lint(name: str, embedder: Any) -> None:
    """What the shipped packs give: no near-duplicates, an allowing rule in every category,
    every statement about its examples; examples that miss their rule remain (listed in
    docs/rule-packs.md), so the held-out hit rate is guarded, not the miss count."""
    report = lint_pack(name, embedder=embedder)
    kinds = {finding.kind for finding in report.findings}
    assert kinds <= {"example_miss"}, [f for f in report.findings if f.kind != "example_miss"]
    assert report.hit_rate >= 0.68


# --- sca rules lint --------------------------------------------------------------------------

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["rules", *args])


@pytest.mark.parametrize("command", ["lint", "audit"])
def test_help(command: str) -> None:
    result = _run(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_lint_json_lists_each_planted_problem_and_exits_1(embedder) -> None:
    result = _run("lint", str(PACKS / "planted"), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    kinds = {finding["kind"] for finding in report["findings"]}
    assert kinds == {"duplicate", "example_miss", "no_allowed_rule", "example_overlap"}
    for finding in report["findings"]:
        assert set(finding) == {"kind", "rule_ids", "detail"}
        assert finding["rule_ids"] and finding["detail"]


def test_lint_of_a_clean_pack_exits_0(embedder) -> None:
    result = _run("lint", str(PACKS / "clean"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("pack clean 0.1.0: 6 rules, held-out example hit@3 1.000")
    assert result.stdout.endswith("0 finding(s)\n")


def test_lint_gates_on_the_kinds_and_count_asked_for(embedder) -> None:
    planted = str(PACKS / "planted")
    assert _run("lint", planted, "--fail-on", "duplicate", "--max-findings", "1").exit_code == 0
    assert _run("lint", planted, "--fail-on", "duplicate").exit_code == 1


def test_lint_bad_kind_is_one_line_and_exit_2() -> None:
    result = _run("lint", str(PACKS / "clean"), "--fail-on", "dupes")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --fail-on 'dupes': unknown kind dupes; use a ")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("command", "flag", "value", "message"),
    [
        ("lint", "--k", "0", "--k 0: input should be greater than or equal to 1"),
        ("lint", "--min-hit-rate", "1.5", "--min-hit-rate 1.5: input should be less than or"),
        ("lint", "--duplicate-threshold", "-2", "--duplicate-threshold -2.0: input should be"),
        ("lint", "--overlap-margin", "-0.1", "--overlap-margin -0.1: input should be greater"),
        ("lint", "--max-findings", "-1", "--max-findings -1: use 0 or more"),
        ("audit", "--floor", "2", "--floor 2.0: input should be less than or equal to 1"),
        ("audit", "--min-benign-runs", "0", "--min-benign-runs 0: input should be greater"),
        ("audit", "--benign-share", "-0.5", "--benign-share -0.5: input should be greater"),
        ("audit", "--refusal-share", "7", "--refusal-share 7.0: input should be less than"),
    ],
)
def test_a_threshold_out_of_range_is_one_line_naming_the_flag(
    command: str, flag: str, value: str, message: str, tmp_path: Path
) -> None:
    # Checked by LintConfig / AuditConfig's own bounds before the pack or traces are read.
    traces = ["--traces", str(tmp_path / "none.jsonl")] if command == "audit" else []
    result = _run(command, str(PACKS / "clean"), *traces, flag, value)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: invalid sca rules {command} flags: {message}")
    assert result.stderr.count("\n") == 1
