"""Rule pack models (schema_version 1) and the wording of their validation problems.

Models validate one thing each (a rule, a manifest); checks that need the whole pack (duplicate
ids, category bookkeeping) live in :func:`pack_problem` so the loader can report them with the
file each rule came from.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from safe_context_agent.rules._taxonomy import DEFAULT_CATEGORIES

__all__ = [
    "MAX_EXAMPLES",
    "MAX_EXAMPLE_CHARS",
    "MAX_PACK_BYTES",
    "MAX_RATIONALE_CHARS",
    "MAX_RULES_PER_PACK",
    "MAX_STATEMENT_CHARS",
    "MAX_TAGS",
    "MAX_TITLE_CHARS",
    "PACK_NAME_PATTERN",
    "ExtraCategory",
    "PackManifest",
    "Rule",
    "RulePack",
    "Severity",
    "describe_validation_error",
    "pack_problem",
]

SCHEMA_VERSION = 1
PACK_NAME_PATTERN = r"^[a-z][a-z0-9_-]*$"
RULE_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
CATEGORY_ID_PATTERN = r"^[a-z][a-z0-9_]*$"
TAG_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
MAX_TITLE_CHARS = 80
# Size limits (docs/rule-packs.md, "Limits and failure modes"). A rule is read by a small model
# inside its context window, and every text is embedded: a 5 MB statement validated, then took
# minutes and 1.6 GB to search and overflowed the model's context. The built-in packs use at most
# a third of each limit.
MAX_STATEMENT_CHARS = 1_000
MAX_RATIONALE_CHARS = 1_000
MAX_EXAMPLE_CHARS = 500
MAX_EXAMPLES = 20
"""Per list: ``allowed`` and ``disallowed`` each hold at most this many examples."""
MAX_TAGS = 20
MAX_RULES_PER_PACK = 10_000
MAX_PACK_BYTES = 16 * 1024 * 1024
"""``pack.yaml`` plus every rule file, checked before any file is parsed."""
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

Severity = Literal["low", "medium", "high", "critical"]


def _non_blank(value: str) -> str:
    if not value:
        raise ValueError("empty")
    return value


def _at_most(limit: int) -> AfterValidator:
    """A length check whose message names the limit (describe_validation_error shows it)."""

    def check(value: str) -> str:
        if len(value) > limit:
            raise ValueError(f"{len(value):,} characters, more than {limit:,}")
        return value

    return AfterValidator(check)


def _at_most_items(limit: int) -> AfterValidator:
    def check(value: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(value) > limit:
            raise ValueError(f"{len(value):,} items, more than {limit:,}")
        return value

    return AfterValidator(check)


_Text = Annotated[str, AfterValidator(_non_blank)]
_Example = Annotated[_Text, _at_most(MAX_EXAMPLE_CHARS)]
_Examples = Annotated[tuple[_Example, ...], Field(min_length=1), _at_most_items(MAX_EXAMPLES)]
_Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN, max_length=32)]

# Strings are stripped so that YAML layout (folded blocks, trailing spaces) never changes a rule.
_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Rule(BaseModel):
    """One piece of guidance: what the assistant does for requests of one kind, with examples."""

    model_config = _MODEL_CONFIG

    id: Annotated[str, StringConstraints(pattern=RULE_ID_PATTERN, max_length=100)]
    category: Annotated[str, StringConstraints(pattern=CATEGORY_ID_PATTERN)]
    title: Annotated[_Text, _at_most(MAX_TITLE_CHARS)]
    statement: Annotated[_Text, _at_most(MAX_STATEMENT_CHARS)]
    rationale: Annotated[_Text, _at_most(MAX_RATIONALE_CHARS)]
    allowed: _Examples
    disallowed: _Examples
    severity: Severity
    tags: Annotated[tuple[_Tag, ...], _at_most_items(MAX_TAGS)] = ()


class ExtraCategory(BaseModel):
    """A category a pack adds beyond :data:`DEFAULT_CATEGORIES`."""

    model_config = _MODEL_CONFIG

    id: Annotated[str, StringConstraints(pattern=CATEGORY_ID_PATTERN)]
    description: _Text

    @field_validator("id")
    @classmethod
    def _not_a_default(cls, value: str) -> str:
        if value in DEFAULT_CATEGORIES:
            raise ValueError(f"'{value}' is a default category and needs no declaration")
        return value


class PackManifest(BaseModel):
    """``pack.yaml``: what the pack is for and which categories its rules use."""

    model_config = _MODEL_CONFIG

    schema_version: Literal[1]
    name: Annotated[str, StringConstraints(pattern=PACK_NAME_PATTERN)]
    version: _Text
    description: _Text
    embedding_model: _Text = DEFAULT_EMBEDDING_MODEL
    # Declared before `categories` so that the categories check can see the extra ids.
    extra_categories: tuple[ExtraCategory, ...] = ()
    categories: Annotated[tuple[_Text, ...], Field(min_length=1)]

    @field_validator("categories")
    @classmethod
    def _categories_are_known(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        extra = [category.id for category in info.data.get("extra_categories", ())]
        seen: set[str] = set()
        for category in value:
            if category in seen:
                raise ValueError(f"'{category}' is listed twice")
            if category not in DEFAULT_CATEGORIES and category not in extra:
                raise ValueError(f"unknown category '{category}'")
            seen.add(category)
        for category in extra:
            if category not in seen:
                raise ValueError(f"'{category}' is declared under extra_categories but not listed")
        return value


def pack_problem(
    manifest: PackManifest,
    rules: Sequence[Rule],
    *,
    rule_file: Callable[[int], str],
    manifest_file: str,
) -> str | None:
    """The first whole-pack problem (duplicate id, category bookkeeping), or None.

    ``rule_file(i)`` names the file rule ``i`` came from; messages start with it.
    """
    extra_ids = {category.id for category in manifest.extra_categories}
    listed = set(manifest.categories)
    first_use: dict[str, int] = {}
    for position, rule in enumerate(rules):
        where = f"{rule_file(position)}: rule '{rule.id}'"
        if rule.id in first_use:
            earlier = rule_file(first_use[rule.id])
            also = "earlier in this file" if earlier == rule_file(position) else f"in {earlier}"
            return (
                f"{where}: field 'id': duplicate id, also used {also}; give each rule a unique id"
            )
        first_use[rule.id] = position
        if rule.category not in DEFAULT_CATEGORIES and rule.category not in extra_ids:
            return (
                f"{where}: field 'category': unknown category '{rule.category}'; use one of the "
                f"default ids ({', '.join(DEFAULT_CATEGORIES)}) or declare it under "
                "extra_categories in pack.yaml"
            )
        if rule.category not in listed:
            return (
                f"{where}: field 'category': category '{rule.category}' is not listed in "
                "pack.yaml; add it under categories in pack.yaml"
            )
    used = {rule.category for rule in rules}
    for category in manifest.categories:
        if category not in used:
            return (
                f"{manifest_file}: field 'categories': category '{category}' is listed but no rule "
                "uses it; remove it from categories or add a rule with that category"
            )
    return None


class RulePack(BaseModel):
    """A validated pack: its manifest and its rules, in file order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    manifest: PackManifest
    rules: Annotated[tuple[Rule, ...], Field(min_length=1), _at_most_items(MAX_RULES_PER_PACK)]
    path: Path | None = Field(default=None, description="The folder it was loaded from, if any.")

    @model_validator(mode="after")
    def _consistent(self) -> RulePack:
        where = f"pack '{self.manifest.name}'"
        problem = pack_problem(
            self.manifest, self.rules, rule_file=lambda _: where, manifest_file=where
        )
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def name(self) -> str:
        return self.manifest.name

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON of manifest + rules sorted by id.

        YAML layout, comments and file boundaries do not change it; any content change does.
        """
        canonical = {
            "manifest": self.manifest.model_dump(mode="json"),
            "rules": [
                rule.model_dump(mode="json") for rule in sorted(self.rules, key=lambda r: r.id)
            ],
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @cached_property
    def _by_id(self) -> dict[str, Rule]:
        return {rule.id: rule for rule in self.rules}

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id (KeyError if the pack has none)."""
        return self._by_id[rule_id]

    def category_counts(self) -> dict[str, int]:
        """Rules per category, in the manifest's order."""
        counts = dict.fromkeys(self.manifest.categories, 0)
        for rule in self.rules:
            counts[rule.category] += 1
        return counts


# Per-field advice appended to pydantic's own problems (missing, wrong type, bad pattern...).
RULE_FIELD_FIXES: Mapping[str, str] = {
    "id": "use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit "
    "(e.g. 'cyber.defensive-education')",
    "category": "use a category id such as 'cybercrime' (lowercase letters, digits and '_')",
    "title": f"write a short title of at most {MAX_TITLE_CHARS} characters",
    "statement": "write 1-3 sentences saying what the assistant does",
    "rationale": "write one or two sentences saying why",
    "allowed": "give at least one example user request that must be answered",
    "disallowed": "give at least one example user request that must be refused or redirected",
    "severity": "use one of low, medium, high, critical",
    "tags": "use short lowercase tags such as 'security' (letters, digits, '_' and '-')",
}
MANIFEST_FIELD_FIXES: Mapping[str, str] = {
    "schema_version": f"set schema_version: {SCHEMA_VERSION} (the only version this release reads)",
    "name": "use the folder name: lowercase letters, digits, '_' and '-', starting with a letter",
    "version": 'write it as quoted text, e.g. version: "1.0.0"',
    "description": "write one paragraph saying which deployment the pack is for",
    "embedding_model": "name a sentence-transformers model, e.g. " + DEFAULT_EMBEDDING_MODEL,
    "categories": "list each category id the rules use once: a default id "
    f"({', '.join(DEFAULT_CATEGORIES)}) or one declared under extra_categories",
    "extra_categories": "give a list of entries with an id and a description",
    "extra_categories.id": "use a new id of lowercase letters, digits and '_' that is not a "
    "default category",
    "extra_categories.description": "write one sentence saying what the category covers",
}

_PROBLEMS_BY_TYPE = {
    "missing": "missing",
    "too_short": "empty list",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "model_type": "expected a mapping of fields",
    "dict_type": "expected a mapping of fields",
}


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return f"a yes/no value ({value})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if value is None:
        return "nothing"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def describe_validation_error(
    error: ValidationError, fixes: Mapping[str, str], known_fields: Sequence[str]
) -> str:
    """One line for the first problem in ``error``: ``field 'x': <problem>; <fix>``."""
    errors = error.errors(include_url=False)
    # A misspelt field shows up as both "unknown" and "missing"; the unknown one explains both.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    names = [str(part) for part in first["loc"] if isinstance(part, str)]
    items = [part + 1 for part in first["loc"] if isinstance(part, int)]
    key = ".".join(names)
    where = f"field '{key}'" + "".join(f" item {item}" for item in items)
    kind = first["type"]
    value = first.get("input")
    fix = fixes.get(key, "see docs/rule-packs.md for the format")
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(key, known_fields, n=1)
        if close:
            return (
                f"{where}: unknown field; rename it to '{close[0]}' if that was meant, or remove it"
            )
        return f"{where}: unknown field; remove it (the fields are: {', '.join(known_fields)})"
    if kind in _PROBLEMS_BY_TYPE:
        problem = _PROBLEMS_BY_TYPE[kind]
    elif kind == "string_type":
        problem = f"expected text, got {_kind_of(value)}"
    elif kind == "literal_error":
        problem = f"{value!r} is not allowed"
    elif kind == "string_pattern_mismatch":
        problem = f"{value!r} is not valid"
    elif kind == "string_too_long":
        problem = f"{len(value)} characters, too long"
    elif kind == "value_error":
        problem = str(first["ctx"]["error"])
    else:
        problem = first["msg"]
    return f"{where}: {problem}; {fix}"
