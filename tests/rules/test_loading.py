"""Loading and validating rule packs: the good path, the content hash, and one exact error message
per kind of mistake (the messages are the user interface of a pack author)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from safe_context_agent.errors import RulePackError
from safe_context_agent.rules import DEFAULT_CATEGORIES, builtin_pack_names, load_rule_pack

DEFAULTS = ", ".join(DEFAULT_CATEGORIES)
RULE_FIELDS = "id, category, title, statement, rationale, allowed, disallowed, severity, tags"


def _error(pack: Path | str) -> str:
    with pytest.raises(RulePackError) as caught:
        load_rule_pack(pack)
    return str(caught.value)


# --- the good path -------------------------------------------------------------------------------


def test_fixture_pack_loads_with_rules_from_every_file_in_name_order(mini_pack_dir: Path) -> None:
    pack = load_rule_pack(mini_pack_dir)
    assert pack.name == "mini"
    assert pack.path == mini_pack_dir.resolve()
    # harms.yaml sorts before utility.yaml
    assert [r.id for r in pack.rules][:2] == ["cyber.defensive-education", "cyber.no-intrusion"]
    assert pack.rules[-1].id == "household.chemical-mixing"
    assert pack.rule("selfharm.support").severity == "critical"
    assert pack.category_counts()["benign_sensitive"] == 2
    assert pack.manifest.extra_categories[0].id == "household_safety"


def test_folded_yaml_text_is_stripped(mini_pack_dir: Path) -> None:
    rule = load_rule_pack(mini_pack_dir).rule("benign.history")
    assert rule.statement.startswith("Explain wars") and rule.statement.endswith("consequences.")


def test_a_string_with_a_slash_is_a_folder_path(mini_pack_dir: Path) -> None:
    relative = Path("tests/rules/packs/mini")
    if not relative.is_dir():
        pytest.skip("run from the repository root")
    assert load_rule_pack(str(relative)).content_hash == load_rule_pack(mini_pack_dir).content_hash


def test_builtin_packs_are_found_by_name() -> None:
    names = builtin_pack_names()
    assert "general" in names
    pack = load_rule_pack("general")
    assert pack.name == "general"
    assert pack.path is not None and pack.path.name == "general"
    assert set(pack.manifest.categories) == set(DEFAULT_CATEGORIES)


def test_unknown_builtin_name_lists_the_real_ones() -> None:
    names = ", ".join(builtin_pack_names())
    assert _error("nosuchpack") == (
        f"no built-in rule pack named 'nosuchpack'; use one of {names}, "
        "or pass a folder path such as ./nosuchpack"
    )


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert _error(missing) == (
        f"{missing}: no such rule pack folder; pass a built-in pack name "
        f"({', '.join(builtin_pack_names())}) or a folder holding pack.yaml"
    )


# --- content hash --------------------------------------------------------------------------------


def test_content_hash_ignores_layout_comments_and_file_split(write_pack, valid_rules) -> None:
    original = load_rule_pack(write_pack()).content_hash
    first, second = valid_rules()
    # Same content: other key order, comments, padding, folded text, flow lists, two files.
    relaid = f"""# a comment
rules:
  - severity: {second["severity"]}
    id:   {second["id"]}   # trailing comment
    category: {second["category"]}
    title: "  {second["title"]}  "
    statement: >-
      {second["statement"]}
    rationale: {second["rationale"]}
    allowed: {second["allowed"]}
    disallowed:
      - {second["disallowed"][0]}
"""
    split = write_pack(rules={"a.yaml": relaid, "b.yaml": [first]})
    assert load_rule_pack(split).content_hash == original


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("statement", "Explain how attacks work, and how to defend."),
        ("allowed", ["How does phishing work?", "What is a botnet?"]),
        ("severity", "high"),
        ("tags", []),
    ],
)
def test_content_hash_changes_with_any_content(write_pack, valid_rules, field, value) -> None:
    base = load_rule_pack(write_pack()).content_hash
    rules = valid_rules()
    rules[0][field] = value
    assert load_rule_pack(write_pack(rules=rules)).content_hash != base


def test_content_hash_changes_with_the_manifest(write_pack, valid_manifest) -> None:
    base = load_rule_pack(write_pack()).content_hash
    manifest = valid_manifest()
    manifest["version"] = "1.0.1"
    assert load_rule_pack(write_pack(manifest=manifest)).content_hash != base


# --- one exact message per mistake ---------------------------------------------------------------


def test_duplicate_id_across_files(write_pack, valid_rules) -> None:
    first, second = valid_rules()
    second["id"] = first["id"]
    pack = write_pack(rules={"a.yaml": [first], "b.yaml": [second]})
    assert _error(pack) == (
        f"{pack}/rules/b.yaml: rule 'cyber.defence': field 'id': duplicate id, also used in "
        f"{pack}/rules/a.yaml; give each rule a unique id"
    )


def test_duplicate_id_in_one_file(write_pack, valid_rules) -> None:
    first, second = valid_rules()
    second["id"] = first["id"]
    pack = write_pack(rules=[first, second])
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'cyber.defence': field 'id': duplicate id, also used "
        "earlier in this file; give each rule a unique id"
    )


@pytest.mark.parametrize("blank", ["", "   \n  "])
def test_empty_statement(write_pack, valid_rules, blank) -> None:
    rules = valid_rules()
    rules[1]["statement"] = blank
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'benign.homonyms': field 'statement': empty; "
        "write 1-3 sentences saying what the assistant does"
    )


def test_empty_title(write_pack, valid_rules) -> None:
    rules = valid_rules()
    rules[0]["title"] = " "
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'cyber.defence': field 'title': empty; "
        "write a short title of at most 80 characters"
    )


def test_title_too_long(write_pack, valid_rules) -> None:
    rules = valid_rules()
    rules[0]["title"] = "x" * 81
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'cyber.defence': field 'title': 81 characters, more "
        "than 80; write a short title of at most 80 characters"
    )


def test_unknown_category(write_pack, valid_rules) -> None:
    rules = valid_rules()
    rules[0]["category"] = "hacking"
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'cyber.defence': field 'category': unknown category "
        f"'hacking'; use one of the default ids ({DEFAULTS}) or declare it under "
        "extra_categories in pack.yaml"
    )


def test_category_used_but_not_listed(write_pack, valid_rules) -> None:
    rules = valid_rules()
    rules[0]["category"] = "weapons"
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'cyber.defence': field 'category': category 'weapons' "
        "is not listed in pack.yaml; add it under categories in pack.yaml"
    )


def test_category_listed_but_unused(write_pack, valid_manifest) -> None:
    manifest = valid_manifest()
    manifest["categories"].append("privacy")
    pack = write_pack(manifest=manifest)
    assert _error(pack) == (
        f"{pack}/pack.yaml: field 'categories': category 'privacy' is listed but no rule uses it; "
        "remove it from categories or add a rule with that category"
    )


def test_unknown_rule_field(write_pack, valid_rules) -> None:
    rules = valid_rules()
    rules[0]["notes"] = "remember to revisit"
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'cyber.defence': field 'notes': unknown field; remove it "
        f"(the fields are: {RULE_FIELDS})"
    )


def test_misspelt_rule_field_suggests_the_right_name(write_pack, valid_rules) -> None:
    rules = valid_rules()
    rules[0]["severty"] = rules[0].pop("severity")
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'cyber.defence': field 'severty': unknown field; "
        "rename it to 'severity' if that was meant, or remove it"
    )


def test_missing_rule_field(write_pack, valid_rules) -> None:
    rules = valid_rules()
    del rules[1]["rationale"]
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'benign.homonyms': field 'rationale': missing; "
        "write one or two sentences saying why"
    )


def test_rule_without_id_is_named_by_position(write_pack, valid_rules) -> None:
    rules = valid_rules()
    del rules[1]["id"]
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule #2: field 'id': missing; use lowercase letters, digits, "
        "'.', '_' and '-', starting with a letter or digit (e.g. 'cyber.defensive-education')"
    )


def test_bad_rule_id(write_pack, valid_rules) -> None:
    rules = valid_rules()
    rules[0]["id"] = "Cyber Defence"
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'Cyber Defence': field 'id': 'Cyber Defence' is not "
        "valid; use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit "
        "(e.g. 'cyber.defensive-education')"
    )


def test_bad_yaml_reports_the_line(write_pack) -> None:
    broken = (
        "rules:\n"
        "  - id: cyber.defence\n"
        "    category: cybercrime\n"
        "    title: Explain: attacks\n"  # line 4: an unquoted ': ' inside a value
    )
    pack = write_pack(rules={"rules.yaml": broken})
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: line 4: invalid YAML (mapping values are not allowed here); "
        "fix the syntax there (check the indentation, and quote text that contains ': ' or "
        "starts with a special character)"
    )


def test_duplicate_yaml_key_is_an_error_not_a_silent_overwrite(write_pack) -> None:
    text = "rules:\n  - id: a\n    statement: one\n    statement: two\n"
    pack = write_pack(rules={"rules.yaml": text})
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: line 4: invalid YAML (duplicate key 'statement'); fix the "
        "syntax there (check the indentation, and quote text that contains ': ' or starts with "
        "a special character)"
    )


def test_empty_pack(write_pack) -> None:
    pack = write_pack(rules={"rules.yaml": "rules: []\n"})
    assert _error(pack) == (
        f"{pack}/rules: no rules; add a .yaml file there with a non-empty 'rules:' list"
    )


def test_pack_without_rules_folder_is_empty(write_pack) -> None:
    pack = write_pack()
    for file in (pack / "rules").iterdir():
        file.unlink()
    (pack / "rules").rmdir()
    assert _error(pack) == (
        f"{pack}/rules: no rules; add a .yaml file there with a non-empty 'rules:' list"
    )


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("allowed", "give at least one example user request that must be answered"),
        ("disallowed", "give at least one example user request that must be refused or redirected"),
    ],
)
def test_empty_example_list(write_pack, valid_rules, field, message) -> None:
    rules = valid_rules()
    rules[0][field] = []
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'cyber.defence': field '{field}': empty list; {message}"
    )


def test_blank_example_names_its_position(write_pack, valid_rules) -> None:
    rules = valid_rules()
    rules[0]["allowed"] = ["How does phishing work?", "  "]
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'cyber.defence': field 'allowed' item 2: empty; "
        "give at least one example user request that must be answered"
    )


def test_examples_given_as_text_instead_of_a_list(write_pack, valid_rules) -> None:
    rules = valid_rules()
    rules[0]["allowed"] = "How does phishing work?"
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'cyber.defence': field 'allowed': expected a list; "
        "give at least one example user request that must be answered"
    )


def test_bad_severity(write_pack, valid_rules) -> None:
    rules = valid_rules()
    rules[0]["severity"] = "urgent"
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'cyber.defence': field 'severity': 'urgent' is not "
        "allowed; use one of low, medium, high, critical"
    )


def test_bad_tag(write_pack, valid_rules) -> None:
    rules = valid_rules()
    rules[0]["tags"] = ["security", "Red Team"]
    pack = write_pack(rules=rules)
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule 'cyber.defence': field 'tags' item 2: 'Red Team' is not "
        "valid; use short lowercase tags such as 'security' (letters, digits, '_' and '-')"
    )


def test_rule_file_without_rules_key(write_pack) -> None:
    pack = write_pack(rules={"rules.yaml": "- id: a\n"})
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: expected a mapping with a 'rules' list at the top; start the "
        "file with 'rules:'"
    )


def test_rule_file_with_another_top_level_key(write_pack) -> None:
    pack = write_pack(rules={"rules.yaml": "rule:\n  - id: a\n"})
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: field 'rule': unknown top-level field; a rule file holds only "
        "'rules:'"
    )


def test_rule_that_is_not_a_mapping(write_pack) -> None:
    pack = write_pack(rules={"rules.yaml": "rules:\n  - just a sentence\n"})
    assert _error(pack) == (
        f"{pack}/rules/rules.yaml: rule #1: expected a mapping of fields; write each rule as "
        "'- id: ...' followed by its other fields"
    )


def test_yml_extension_is_not_silently_ignored(write_pack) -> None:
    pack = write_pack()
    (pack / "rules" / "extra.yml").write_text("rules: []\n")
    assert _error(pack) == (
        f"{pack}/rules/extra.yml: rule files must end in .yaml; rename it to extra.yaml"
    )


# --- manifest mistakes ---------------------------------------------------------------------------


def test_missing_manifest(write_pack) -> None:
    pack = write_pack()
    (pack / "pack.yaml").unlink()
    assert _error(pack) == (
        f"{pack}: no pack.yaml; a rule pack folder holds pack.yaml and rules/*.yaml "
        "(see docs/rule-packs.md)"
    )


def test_name_differs_from_folder(write_pack, valid_manifest) -> None:
    manifest = valid_manifest()
    manifest["name"] = "other"
    pack = write_pack(manifest=manifest)
    assert _error(pack) == (
        f"{pack}/pack.yaml: field 'name': 'other' differs from the folder name 'demo'; "
        "set name: demo or rename the folder"
    )


def test_unsupported_schema_version(write_pack, valid_manifest) -> None:
    manifest = valid_manifest()
    manifest["schema_version"] = 2
    pack = write_pack(manifest=manifest)
    assert _error(pack) == (
        f"{pack}/pack.yaml: field 'schema_version': 2 is not allowed; set schema_version: 1 "
        "(the only version this release reads)"
    )


def test_unquoted_version_number(write_pack, valid_manifest) -> None:
    text = "\n".join(
        line if not line.startswith("version") else "version: 1.0"
        for line in yaml.safe_dump(valid_manifest(), sort_keys=False).splitlines()
    )
    pack = write_pack(manifest=text)
    assert _error(pack) == (
        f"{pack}/pack.yaml: field 'version': expected text, got a number (1.0); write it as "
        'quoted text, e.g. version: "1.0.0"'
    )


def test_unknown_manifest_field(write_pack, valid_manifest) -> None:
    manifest = valid_manifest()
    manifest["catgories"] = manifest["categories"]
    pack = write_pack(manifest=manifest)
    assert _error(pack) == (
        f"{pack}/pack.yaml: field 'catgories': unknown field; rename it to 'categories' if that "
        "was meant, or remove it"
    )


def test_manifest_lists_an_unknown_category(write_pack, valid_manifest) -> None:
    manifest = valid_manifest()
    manifest["categories"].append("hacking")
    pack = write_pack(manifest=manifest)
    assert _error(pack) == (
        f"{pack}/pack.yaml: field 'categories': unknown category 'hacking'; list each category id "
        f"the rules use once: a default id ({DEFAULTS}) or one declared under extra_categories"
    )


def test_manifest_lists_a_category_twice(write_pack, valid_manifest) -> None:
    manifest = valid_manifest()
    manifest["categories"].append("cybercrime")
    pack = write_pack(manifest=manifest)
    assert _error(pack) == (
        f"{pack}/pack.yaml: field 'categories': 'cybercrime' is listed twice; list each category "
        f"id the rules use once: a default id ({DEFAULTS}) or one declared under extra_categories"
    )


def test_extra_category_must_be_new(write_pack, valid_manifest) -> None:
    manifest = valid_manifest()
    manifest["extra_categories"] = [{"id": "weapons", "description": "Guns."}]
    pack = write_pack(manifest=manifest)
    assert _error(pack) == (
        f"{pack}/pack.yaml: field 'extra_categories.id' item 1: 'weapons' is a default category "
        "and needs no declaration; use a new id of lowercase letters, digits and '_' that is not "
        "a default category"
    )


def test_extra_category_must_be_listed(write_pack, valid_manifest) -> None:
    manifest = valid_manifest()
    manifest["extra_categories"] = [{"id": "clinical_workflow", "description": "Ward routines."}]
    pack = write_pack(manifest=manifest)
    assert _error(pack) == (
        f"{pack}/pack.yaml: field 'categories': 'clinical_workflow' is declared under "
        "extra_categories but not listed; list each category id the rules use once: a default id "
        f"({DEFAULTS}) or one declared under extra_categories"
    )


def test_extra_category_used_by_a_rule(write_pack, valid_manifest, valid_rules) -> None:
    manifest = valid_manifest()
    manifest["extra_categories"] = [{"id": "clinical_workflow", "description": "Ward routines."}]
    manifest["categories"].append("clinical_workflow")
    rules = valid_rules()
    rules[0]["category"] = "clinical_workflow"
    rules.append({**valid_rules()[0], "id": "cyber.other"})
    pack = load_rule_pack(write_pack(manifest=manifest, rules=rules))
    assert pack.category_counts() == {
        "cybercrime": 1,
        "benign_sensitive": 1,
        "clinical_workflow": 1,
    }


def test_manifest_that_is_not_a_mapping(write_pack) -> None:
    pack = write_pack(manifest="- general\n")
    assert _error(pack) == (
        f"{pack}/pack.yaml: expected a mapping of fields (schema_version, name, version, ...); "
        "see docs/rule-packs.md for the format"
    )


def test_non_utf8_file(write_pack) -> None:
    pack = write_pack()
    (pack / "rules" / "rules.yaml").write_bytes(b"rules:\n  - id: caf\xe9\n")
    assert _error(pack) == f"{pack}/rules/rules.yaml: not UTF-8 text; save the file as UTF-8"


def test_pack_built_in_python_is_checked_too(valid_manifest, valid_rules) -> None:
    from pydantic import ValidationError

    from safe_context_agent.rules import PackManifest, Rule, RulePack

    manifest = PackManifest.model_validate(valid_manifest())
    rules = [Rule.model_validate(r) for r in valid_rules()]
    with pytest.raises(
        ValidationError, match=re.escape("rule 'cyber.defence': field 'id': duplicate id")
    ):
        RulePack(manifest=manifest, rules=(rules[0], rules[1], rules[0]))
