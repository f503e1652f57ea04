"""Reading a rule pack folder into a validated :class:`RulePack`, with errors that say where and how
to fix."""

from __future__ import annotations

import importlib.resources
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from safe_context_agent.errors import RulePackError
from safe_context_agent.rules._schema import (
    MANIFEST_FIELD_FIXES,
    MAX_PACK_BYTES,
    MAX_RULES_PER_PACK,
    PACK_NAME_PATTERN,
    RULE_FIELD_FIXES,
    PackManifest,
    Rule,
    RulePack,
    describe_validation_error,
    pack_problem,
)

__all__ = ["builtin_pack_names", "builtin_packs_root", "load_rule_pack"]

MANIFEST_FILE = "pack.yaml"
RULES_DIR = "rules"


def builtin_packs_root() -> Path:
    """The folder holding the packs shipped with the library (``safe_context_agent.rule_packs``)."""
    root = importlib.resources.files("safe_context_agent.rule_packs")
    if not isinstance(root, Path):  # e.g. a zipped install; packs are read as plain files
        raise RulePackError(
            f"built-in rule packs at {root} are not on the file system; install "
            "safe-context-agent unzipped (pip install, not a zipapp)"
        )
    return root


def builtin_pack_names() -> list[str]:
    """Names accepted by :func:`load_rule_pack` in place of a folder path, sorted."""
    root = builtin_packs_root()
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST_FILE).is_file())


def load_rule_pack(pack: str | os.PathLike[str]) -> RulePack:
    """Load and validate a rule pack.

    ``pack`` is a built-in pack name (a string such as ``"general"``, no slash) or a folder path
    (a :class:`~pathlib.Path`, or a string such as ``"./my_pack"``). Raises :class:`RulePackError`
    naming the file, the rule id, the field and the fix for the first problem found.

    Every file must lie inside the pack folder: ``pack.yaml``, ``rules/`` or a rule file that is
    a symbolic link to somewhere outside it is refused (a pack is reviewed as one folder; a link
    out of it would pull in text nobody reviewed with it). The folder itself may be a link.
    The size limits of docs/rule-packs.md apply; the total size is checked before parsing.
    """
    folder = _resolve(pack)
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise RulePackError(
            f"{folder}: no {MANIFEST_FILE}; a rule pack folder holds {MANIFEST_FILE} and "
            f"{RULES_DIR}/*.yaml (see docs/rule-packs.md)"
        )
    rules_dir = folder / RULES_DIR
    rule_files = _rule_files(rules_dir)
    _check_files(folder, [manifest_path, *([rules_dir] if rules_dir.exists() else []), *rule_files])
    manifest = _load_manifest(manifest_path, folder)
    rules, files = _load_rules(rules_dir, rule_files)
    problem = pack_problem(
        manifest, rules, rule_file=lambda i: str(files[i]), manifest_file=str(manifest_path)
    )
    if problem is not None:
        raise RulePackError(problem)
    return RulePack(manifest=manifest, rules=tuple(rules), path=folder.resolve())


def _resolve(pack: str | os.PathLike[str]) -> Path:
    if isinstance(pack, str) and re.fullmatch(PACK_NAME_PATTERN, pack):
        names = builtin_pack_names()
        if pack not in names:
            raise RulePackError(
                f"no built-in rule pack named '{pack}'; use one of {', '.join(names) or '(none)'}, "
                f"or pass a folder path such as ./{pack}"
            )
        return builtin_packs_root() / pack
    folder = Path(pack).expanduser()
    if not folder.is_dir():
        raise RulePackError(
            f"{folder}: no such rule pack folder; pass a built-in pack name "
            f"({', '.join(builtin_pack_names())}) or a folder holding {MANIFEST_FILE}"
        )
    return folder


def _load_manifest(path: Path, folder: Path) -> PackManifest:
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise RulePackError(
            f"{path}: expected a mapping of fields (schema_version, name, version, ...); "
            "see docs/rule-packs.md for the format"
        )
    try:
        manifest = PackManifest.model_validate(data)
    except ValidationError as error:
        detail = describe_validation_error(
            error, MANIFEST_FIELD_FIXES, list(PackManifest.model_fields)
        )
        raise RulePackError(f"{path}: {detail}") from None
    # Compare with the folder as resolved, so that `.` and `..` still name the real folder.
    folder_name = folder.resolve().name
    if manifest.name != folder_name:
        raise RulePackError(
            f"{path}: field 'name': '{manifest.name}' differs from the folder name "
            f"'{folder_name}'; set name: {folder_name} or rename the folder"
        )
    return manifest


def _rule_files(rules_dir: Path) -> list[Path]:
    """The rule files, in file-name order."""
    stray = sorted(rules_dir.glob("*.yml")) if rules_dir.is_dir() else []
    if stray:
        raise RulePackError(
            f"{stray[0]}: rule files must end in .yaml; rename it to {stray[0].stem}.yaml"
        )
    return sorted(rules_dir.glob("*.yaml")) if rules_dir.is_dir() else []


def _check_files(folder: Path, paths: list[Path]) -> None:
    """Every path resolves inside ``folder``, and the files together fit MAX_PACK_BYTES."""
    root = folder.resolve()
    total = 0
    for path in paths:
        target = path.resolve()
        if not target.is_relative_to(root):
            raise RulePackError(
                f"{path}: a link to {target}, outside the pack folder {root}; copy the file "
                "into the pack instead of linking to it"
            )
        if path.is_file():
            total += path.stat().st_size
    if total > MAX_PACK_BYTES:
        raise RulePackError(
            f"{folder}: the pack files hold {total:,} bytes, more than the limit of "
            f"{MAX_PACK_BYTES:,}; shorten the rules or split the pack (see docs/rule-packs.md)"
        )


def _load_rules(rules_dir: Path, paths: list[Path]) -> tuple[list[Rule], list[Path]]:
    """All rules of ``paths`` in order, and the file each one came from."""
    rules: list[Rule] = []
    files: list[Path] = []
    for path in paths:
        for rule in _rules_in_file(path):
            rules.append(rule)
            files.append(path)
        if len(rules) > MAX_RULES_PER_PACK:
            raise RulePackError(
                f"{path}: rule '{rules[MAX_RULES_PER_PACK].id}' is rule {MAX_RULES_PER_PACK + 1:,}"
                f" of the pack, more than the limit of {MAX_RULES_PER_PACK:,}; split the pack"
                " (see docs/rule-packs.md)"
            )
    if not rules:
        raise RulePackError(
            f"{rules_dir}: no rules; add a .yaml file there with a non-empty 'rules:' list"
        )
    return rules, files


def _rules_in_file(path: Path) -> list[Rule]:
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise RulePackError(
            f"{path}: expected a mapping with a 'rules' list at the top; start the file with 'rules:'"
        )
    for key in data:
        if key != "rules":
            raise RulePackError(
                f"{path}: field '{key}': unknown top-level field; a rule file holds only 'rules:'"
            )
    if "rules" not in data:
        raise RulePackError(
            f"{path}: field 'rules': missing; start the file with 'rules:' and a list of rules"
        )
    entries = data["rules"]
    if not isinstance(entries, list):
        raise RulePackError(
            f"{path}: field 'rules': expected a list; put each rule under 'rules:' as '- id: ...'"
        )
    rules: list[Rule] = []
    for number, entry in enumerate(entries, start=1):
        label = _rule_label(entry, number)
        if not isinstance(entry, dict):
            raise RulePackError(
                f"{path}: {label}: expected a mapping of fields; write each rule as '- id: ...' "
                "followed by its other fields"
            )
        try:
            rules.append(Rule.model_validate(entry))
        except ValidationError as error:
            detail = describe_validation_error(error, RULE_FIELD_FIXES, list(Rule.model_fields))
            raise RulePackError(f"{path}: {label}: {detail}") from None
    return rules


def _rule_label(entry: Any, number: int) -> str:
    rule_id = entry.get("id") if isinstance(entry, dict) else None
    if isinstance(rule_id, str) and rule_id.strip():
        return f"rule '{rule_id.strip()}'"
    return f"rule #{number}"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last one."""


def _construct_mapping_without_duplicates(
    loader: _StrictLoader, node: yaml.MappingNode
) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool):
            continue  # unhashable keys are reported by construct_mapping below
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_without_duplicates
)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RulePackError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise RulePackError(
            f"{path}: {line}invalid YAML ({problem}); fix the syntax there (check the "
            "indentation, and quote text that contains ': ' or starts with a special character)"
        ) from None
