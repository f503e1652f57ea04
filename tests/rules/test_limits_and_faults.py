"""Rule pack faults (issue 13): size limits, links out of the pack, read-only and damaged indexes,
and the bound on rule text that reaches the prompt."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safe_context_agent.cli import app
from safe_context_agent.errors import RetrievalError, RulePackError
from safe_context_agent.graph._tool import RULES_RESULT_MAX_CHARS, format_rules
from safe_context_agent.rules import (
    IndexConfig,
    _index,
    _loader,
    _schema,
    inspect_index,
    load_rule_pack,
    open_index,
)

runner = CliRunner()


def _error(pack: Path) -> str:
    with pytest.raises(RulePackError) as caught:
        load_rule_pack(pack)
    return str(caught.value)


# --- size limits ----------------------------------------------------------------------------------


def test_a_5mb_statement_is_refused_with_the_rule_id(write_pack, valid_rules) -> None:
    rules = valid_rules()
    rules[1]["statement"] = "x" * 5_200_744
    pack = write_pack(rules=rules)
    result = runner.invoke(app, ["rules", "validate", str(pack)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {pack}/rules/rules.yaml: rule 'benign.homonyms': field 'statement': 5,200,744 "
        "characters, more than 1,000; write 1-3 sentences saying what the assistant does\n"
    )


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("rationale", "y" * 1_001, "field 'rationale': 1,001 characters, more than 1,000"),
        ("allowed", ["ok?", "z" * 501], "field 'allowed' item 2: 501 characters, more than 500"),
        (
            "disallowed",
            [f"no {i}?" for i in range(21)],
            "field 'disallowed': 21 items, more than 20",
        ),
        ("tags", [f"t{i}" for i in range(21)], "field 'tags': 21 items, more than 20"),
    ],
)
def test_rule_field_limits(write_pack, valid_rules, field: str, value, problem: str) -> None:
    rules = valid_rules()
    rules[0][field] = value
    pack = write_pack(rules=rules)
    assert f"rule 'cyber.defence': {problem}" in _error(pack)


def test_rules_per_pack_limit_names_the_first_rule_over_it(
    write_pack, valid_rules, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_loader, "MAX_RULES_PER_PACK", 1)
    pack = write_pack()
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'benign.homonyms' is rule 2 of the pack, more than the "
        "limit of 1; split the pack (see docs/rule-packs.md)"
    )


def test_pack_bytes_limit_is_checked_before_parsing(
    write_pack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_loader, "MAX_PACK_BYTES", 100)
    monkeypatch.setattr(_loader, "_read_yaml", lambda path: pytest.fail("parsed"))
    pack = write_pack()
    message = _error(pack)
    assert message.startswith(f"{pack}: the pack files hold ")
    assert "bytes, more than the limit of 100; shorten the rules or split the pack" in message


def test_the_limits_are_the_documented_ones() -> None:
    text = (Path(__file__).parents[2] / "docs" / "rule-packs.md").read_text()
    for value in (
        _schema.MAX_STATEMENT_CHARS,
        _schema.MAX_EXAMPLE_CHARS,
        _schema.MAX_EXAMPLES,
        _schema.MAX_RULES_PER_PACK,
    ):
        assert f"{value:,}" in text
    assert "16 MiB" in text and _schema.MAX_PACK_BYTES == 16 * 1024 * 1024
    assert f"{RULES_RESULT_MAX_CHARS:,}" in text


# --- links --------------------------------------------------------------------------------------


def test_a_rule_file_linked_outside_the_pack_is_refused(write_pack, tmp_path: Path) -> None:
    pack = write_pack()
    outside = tmp_path / "elsewhere.yaml"
    shutil.move(pack / "rules" / "rules.yaml", outside)
    (pack / "rules" / "rules.yaml").symlink_to(outside)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: a link to {outside.resolve()}, outside the pack folder "
        f"{pack.resolve()}; copy the file into the pack instead of linking to it"
    )


def test_a_rules_folder_linked_outside_the_pack_is_refused(write_pack, tmp_path: Path) -> None:
    pack = write_pack()
    outside = tmp_path / "shared_rules"
    shutil.move(pack / "rules", outside)
    (pack / "rules").symlink_to(outside, target_is_directory=True)
    assert _error(pack).startswith(f"{pack}/rules: a link to {outside.resolve()}, outside")


def test_links_inside_the_pack_and_a_linked_pack_folder_are_fine(
    write_pack, tmp_path: Path
) -> None:
    pack = write_pack()
    (pack / "rules" / "rules.yaml").rename(pack / "real.yaml")
    (pack / "rules" / "rules.yaml").symlink_to(pack / "real.yaml")
    alias = tmp_path / "alias"
    (alias).mkdir()
    (alias / "demo").symlink_to(pack, target_is_directory=True)
    assert len(load_rule_pack(alias / "demo").rules) == 2


# --- the rules text that reaches the prompt -------------------------------------------------------


class _Rule:
    def __init__(self, n: int, size: int) -> None:
        self.id, self.category, self.title = f"r{n}", "c", f"Rule {n}"
        self.statement = "s" * size
        self.allowed, self.disallowed = ["a" * size], ["d" * size]


class _Hit:
    def __init__(self, rule: _Rule) -> None:
        self.rule, self.score = rule, 0.5


def test_rules_text_is_bounded_whatever_the_retriever_returns() -> None:
    hits = [_Hit(_Rule(n, 5_000_000 if n == 0 else 900)) for n in range(20)]
    text = format_rules(hits)
    assert len(text) < RULES_RESULT_MAX_CHARS + 500
    assert text.count("[r") < 20 and "less relevant rules left out for length" in text
    assert "[r0]" in text  # the best rule always stays, cut to the pack's field limits


# --- read-only, tampered and damaged indexes ------------------------------------------------------


@pytest.fixture
def built(mini_pack_dir: Path, memo_embedder, tmp_path: Path) -> Path:
    folder = tmp_path / "prebuilt"
    open_index(mini_pack_dir, embedder=memo_embedder, index_dir=folder)
    (folder / ".lock").unlink()  # as a prebuilt index baked into an image may well lack it
    return folder


def _no_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any lock or folder creation raises, as in a folder the user cannot write (tests run as
    root, for whom chmod does not take write access away)."""

    def refuse(directory: Path):
        raise PermissionError(13, "Permission denied", str(directory))

    monkeypatch.setattr(_index, "locked", refuse)


def test_a_read_only_prebuilt_index_serves_searches(
    built: Path, mini_pack_dir: Path, memo_embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_writes(monkeypatch)
    before = sorted(p.name for p in built.iterdir())
    index = open_index(mini_pack_dir, embedder=memo_embedder, index_dir=built)
    assert index.loaded_from_disk and index.consult("mixing bleach and ammonia", k=1)
    assert sorted(p.name for p in built.iterdir()) == before  # no .lock written


def test_a_read_only_index_that_needs_building_says_so(
    built: Path, mini_pack_dir: Path, memo_embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    (built / "manifest.json").unlink()
    _no_writes(monkeypatch)
    with pytest.raises(RetrievalError) as caught:
        open_index(mini_pack_dir, embedder=memo_embedder, index_dir=built)
    assert str(caught.value) == (
        f"{built}: the rule index needs building (missing: no manifest.json in {built}) but the "
        "folder cannot be written (Permission denied); build it where it can be written (sca "
        "rules build PACK --index-dir DIR) and open it with index_dir=DIR"
    )


def test_stats_on_a_missing_index_creates_nothing(mini_pack_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "nowhere" / "ix"
    result = runner.invoke(app, ["rules", "stats", str(mini_pack_dir), "--index-dir", str(folder)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "nowhere").exists()


def test_stats_and_open_agree_on_tampered_rows(
    built: Path, mini_pack_dir: Path, memo_embedder
) -> None:
    import hashlib

    rows = json.loads((built / "rows.json").read_text())
    rows["rule_ids"][0], rows["rule_ids"][-1] = rows["rule_ids"][-1], rows["rule_ids"][0]
    data = json.dumps(rows).encode()
    (built / "rows.json").write_bytes(data)
    manifest = json.loads((built / "manifest.json").read_text())
    manifest["rows_sha256"] = hashlib.sha256(data).hexdigest()  # a consistent-looking tamper
    (built / "manifest.json").write_text(json.dumps(manifest))
    pack = load_rule_pack(mini_pack_dir)
    inspection = inspect_index(pack, IndexConfig(index_dir=built), embedder=memo_embedder)
    assert (inspection.state, inspection.reason) == (
        "corrupt",
        "its rows do not match the pack's rules",
    )
    opened = open_index(pack, embedder=memo_embedder, index_dir=built)
    assert opened.built_because == "corrupt: its rows do not match the pack's rules"


def test_an_index_file_that_is_a_folder_is_named_and_the_manifest_kept(
    built: Path, mini_pack_dir: Path, memo_embedder
) -> None:
    (built / "index.faiss").unlink()
    (built / "index.faiss").mkdir()
    manifest = (built / "manifest.json").read_bytes()
    pack = load_rule_pack(mini_pack_dir)
    inspection = inspect_index(pack, IndexConfig(index_dir=built), embedder=memo_embedder)
    assert inspection.reason == f"{built / 'index.faiss'} is a folder, not a file"
    with pytest.raises(RetrievalError) as caught:
        open_index(pack, embedder=memo_embedder, index_dir=built)
    assert str(caught.value) == (
        f"{built / 'index.faiss'} is a folder where the index file index.faiss belongs; remove it "
        f"(rm -r '{built / 'index.faiss'}') and build again (sca rules build)"
    )
    assert (built / "manifest.json").read_bytes() == manifest
    assert os.path.isdir(built / "index.faiss")
