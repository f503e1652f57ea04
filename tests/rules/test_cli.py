"""`sca rules` through typer's CliRunner: output shapes, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safe_context_agent.cli import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["rules", *args])


@pytest.mark.parametrize("command", [[], ["validate"], ["build"], ["stats"], ["search"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = _run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_validate_prints_a_summary(mini_pack_dir: Path) -> None:
    result = _run("validate", str(mini_pack_dir))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: pack 'mini' 0.1.0: 9 rules in 7 categories, content hash ")


def test_validate_error_is_one_line_and_exit_2(write_pack, valid_rules) -> None:
    rules = valid_rules()
    rules[0]["severity"] = "urgent"
    pack = write_pack(rules=rules)
    result = _run("validate", str(pack))
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {pack}/rules/rules.yaml: rule 'cyber.defence': field 'severity': 'urgent' is "
        "not allowed; use one of low, medium, high, critical\n"
    )
    assert "Traceback" not in result.output


def test_unknown_builtin_pack_is_exit_2() -> None:
    result = _run("validate", "nosuchpack")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no built-in rule pack named 'nosuchpack'")


def test_stats_without_an_index_builds_nothing(mini_pack_dir: Path, tmp_path: Path) -> None:
    result = _run("stats", str(mini_pack_dir), "--index-dir", str(tmp_path / "ix"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pack"] == "mini" and report["rules"] == 9
    assert report["categories"]["cybercrime"] == 2 and sum(report["categories"].values()) == 9
    assert report["severities"] == {"low": 2, "medium": 3, "high": 2, "critical": 2}
    assert len(report["content_hash"]) == 64
    assert report["index"]["state"] == "missing"
    assert not (tmp_path / "ix" / "index.faiss").exists()
    text = _run("stats", str(mini_pack_dir), "--index-dir", str(tmp_path / "ix"))
    assert f"index missing at {tmp_path / 'ix'}: no manifest.json" in text.stdout
    assert f"run `sca rules build {mini_pack_dir}`" in text.stdout


@pytest.mark.slow
def test_build_then_stats_then_search_json(mini_pack_dir: Path, tmp_path: Path, embedder) -> None:
    index_dir = str(tmp_path / "ix")
    built = _run("build", str(mini_pack_dir), "--index-dir", index_dir)
    assert built.exit_code == 0, built.output
    assert built.stdout.startswith("built (missing: no manifest.json in ")
    assert "9 rules, 40 vectors, flat index, strategy hybrid" in built.stdout

    again = _run("build", str(mini_pack_dir), "--index-dir", index_dir)
    assert again.stdout.startswith("loaded: pack 'mini'")
    forced = _run("build", str(mini_pack_dir), "--index-dir", index_dir, "--rebuild")
    assert forced.stdout.startswith("built (rebuild requested)")

    stats = json.loads(_run("stats", str(mini_pack_dir), "--index-dir", index_dir, "--json").stdout)
    assert stats["index"]["state"] == "fresh" and stats["index"]["vectors"] == 40

    found = _run(
        "search", str(mini_pack_dir), "how do I kill a stuck process?", "--k", "2",
        "--index-dir", index_dir, "--json",
    )  # fmt: skip
    assert found.exit_code == 0, found.output
    items = json.loads(found.stdout)
    assert items[0]["id"] == "benign.technical-homonyms"
    assert len(items) == 2
    for rank, item in enumerate(items, start=1):
        assert {"id", "category", "title", "score", "rank"} <= item.keys()
        assert item["rank"] == rank and isinstance(item["score"], float)

    filtered = _run(
        "search", str(mini_pack_dir), "how do I kill a stuck process?", "--category", "privacy",
        "-c", "weapons", "--index-dir", index_dir, "--json",
    )  # fmt: skip
    assert {item["category"] for item in json.loads(filtered.stdout)} == {"privacy", "weapons"}

    text = _run("search", str(mini_pack_dir), "mixing bleach", "-k", "1", "--index-dir", index_dir)
    assert text.stdout.splitlines()[0].endswith("household.chemical-mixing [household_safety]")


@pytest.mark.slow
def test_search_argument_errors_are_one_line(mini_pack_dir: Path, tmp_path: Path, embedder) -> None:
    index_dir = str(tmp_path / "ix")
    result = _run("search", str(mini_pack_dir), "q", "--k", "0", "--index-dir", index_dir)
    assert result.exit_code == 2
    assert result.stderr == "error: k must be an integer >= 1, got 0\n"
    result = _run("search", str(mini_pack_dir), "q", "-c", "hacking", "--index-dir", index_dir)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: pack 'mini' has no rules in category 'hacking'")
