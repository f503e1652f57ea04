"""The packs shipped with the library: they load, and swapping them changes what the agent is
told for the same request."""

from __future__ import annotations

import subprocess
import sys

import pytest

from safe_context_agent.rules import IndexConfig, RuleIndex, load_rule_pack

BUILTIN = ["general", "healthcare", "kids"]


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_pack_is_valid(name: str) -> None:
    pack = load_rule_pack(name)
    assert pack.name == name
    assert pack.path is not None and pack.path.parent.name == "rule_packs"
    assert len(pack.rules) >= 20
    # Every shipped pack protects utility as well as refusing harm.
    assert pack.category_counts().get("benign_sensitive", 0) > 0


def test_importing_the_rules_api_loads_no_ml_library() -> None:
    """`import safe_context_agent` and loading a pack stay light; torch and faiss load lazily."""
    code = (
        "import sys, safe_context_agent, safe_context_agent.rules, safe_context_agent.cli._rules\n"
        "from safe_context_agent.rules import load_rule_pack\n"
        "load_rule_pack('general')\n"
        "heavy = {'torch', 'faiss', 'sentence_transformers', 'transformers'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def builtin_indexes(embedder, request) -> dict[str, RuleIndex]:
    """Indexes of the shipped packs, kept in pytest's cache folder between runs: embedding
    ~1,300 texts takes minutes on a busy CPU, and reopening is checked like any other open
    (pack hash, model fingerprint, checksums), so a stale one is rebuilt."""
    root = request.config.cache.mkdir("sca-rule-indexes")
    return {
        name: RuleIndex.open(
            load_rule_pack(name), IndexConfig(index_dir=root / name), embedder=embedder
        )
        for name in BUILTIN
    }


@pytest.mark.slow
def test_swapping_packs_changes_what_is_retrieved(builtin_indexes) -> None:
    query = "What is the maximum safe dose of acetaminophen for an adult?"
    top = {name: index.consult(query, k=1)[0].rule for name, index in builtin_indexes.items()}
    # A general assistant gives the usual dose; a hospital assistant answers as a clinical
    # reference; a children's tutor sends medicine questions to a trusted adult.
    assert top["general"].id == "advice.medication-dosing"
    assert top["healthcare"].id.startswith("hc.meds.")
    assert top["kids"].id == "kids.health.medicine-ask-adult"
    statements = {rule.statement for rule in top.values()}
    assert len(statements) == 3
