"""Benchmark loaders: a user's CSV/JSONL file in, validated :class:`EvalPrompt` records out.

The project bundles no benchmark data; every loader takes a path. Each suite knows the
columns of its public release and which label its rows carry; ``columns`` overrides any of
them (e.g. a re-exported JailbreakBench file with ``Goal`` instead of ``goal``). Column
names also match case-insensitively when there is no exact match.

Fields a mapping can name: ``prompt`` (required), ``label``, ``id``, ``category``,
``answer`` and ``context`` (placed before the prompt, separated by a blank line, the way
HarmBench shows contextual behaviours). File columns no field uses go to ``metadata``.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from safe_context_agent.errors import ConfigError, SafeContextError
from safe_context_agent.eval._splits import Split, select_split
from safe_context_agent.judges import gsm8k_reference

__all__ = [
    "SUITES",
    "EvalDataError",
    "EvalLabel",
    "EvalPrompt",
    "SuiteSpec",
    "everyday_prompts_path",
    "load_suite",
]

EvalLabel = Literal["harmful", "benign"]
FIELDS = ("prompt", "label", "id", "category", "answer", "context")
_JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}


class EvalDataError(SafeContextError):
    """A benchmark file is missing, unreadable or malformed: names the file, row, column and fix."""


class EvalPrompt(BaseModel):
    """One benchmark item. ``label`` says what a safe model should do: refuse ``harmful``
    prompts, answer ``benign`` ones (checked against ``answer`` when there is one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    id: str = Field(description="Unique within the suite: '<suite>-<id column or row number>'.")
    suite: str
    prompt: str
    label: EvalLabel
    answer: str | None = Field(default=None, description="Reference answer (GSM8K: the number).")
    category: str | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)


# The raw fields of one row before validation, and a suite's hook to finish them.
_Fields = dict[str, str | None]
_Finish = Callable[[_Fields, Mapping[str, object]], _Fields]


@dataclass(frozen=True)
class SuiteSpec:
    """How to read one benchmark's files."""

    name: str
    description: str
    columns: Mapping[str, str]
    """Field -> file column in the public release (``prompt`` is required in the file)."""
    label: EvalLabel | None = None
    """The label of every row, or None when a ``label`` column carries it."""
    label_values: Mapping[str, EvalLabel] = field(
        default_factory=lambda: {"harmful": "harmful", "benign": "benign"}
    )
    """Accepted label-column values (compared lower-cased, stripped)."""
    finish: _Finish | None = None
    """Suite-specific last step on a row's fields (e.g. HarmBench's copyright category)."""


def _finish_harmbench(fields: _Fields, row: Mapping[str, object]) -> _Fields:
    # Copyright behaviours are graded by hash match, not by a refusal judge; keep them but
    # make them easy to split out by category, whatever the semantic column says.
    functional = str(row.get("FunctionalCategory", "") or "").strip().lower()
    if functional == "copyright":
        fields["category"] = "copyright"
    return fields


def _finish_gsm8k(fields: _Fields, row: Mapping[str, object]) -> _Fields:
    solution = fields.get("answer")
    if solution is not None:
        fields["answer"] = gsm8k_reference(solution)  # ValueError -> reported with the row
    return fields


def _fixed(
    name: str, description: str, label: EvalLabel, finish: _Finish | None = None, **columns: str
) -> SuiteSpec:
    return SuiteSpec(name, description, MappingProxyType(columns), label=label, finish=finish)


def _jailbreakbench(name: str, description: str, label: EvalLabel) -> SuiteSpec:
    """One half of JBB-Behaviors (both halves share the columns)."""
    return _fixed(name, description, label, id="index", prompt="goal", category="category")


SUITES: Mapping[str, SuiteSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _fixed(
                "strongreject",
                "StrongREJECT forbidden prompts (refuse all)",
                "harmful",
                prompt="forbidden_prompt",
                category="category",
            ),
            _fixed(
                "harmbench",
                "HarmBench behaviours; contextual rows get their context first (refuse all)",
                "harmful",
                _finish_harmbench,
                id="BehaviorID",
                prompt="Behavior",
                context="ContextString",
                category="SemanticCategory",
            ),
            _fixed(
                "advbench", "AdvBench harmful behaviours (refuse all)", "harmful", prompt="goal"
            ),
            _jailbreakbench(
                "jailbreakbench_harmful",
                "JailbreakBench JBB-Behaviors, harmful half (refuse all)",
                "harmful",
            ),
            _jailbreakbench(
                "jailbreakbench_benign",
                "JailbreakBench JBB-Behaviors, benign half (answer all: over-refusal)",
                "benign",
            ),
            SuiteSpec(
                "xstest",
                "XSTest: safe prompts that sound unsafe (answer) and unsafe contrasts (refuse)",
                MappingProxyType(
                    {"id": "id", "prompt": "prompt", "label": "label", "category": "type"}
                ),
                label_values=MappingProxyType({"safe": "benign", "unsafe": "harmful"}),
            ),
            _fixed(
                "gsm8k",
                "GSM8K maths word problems (answer; scored by final-number match)",
                "benign",
                _finish_gsm8k,
                prompt="question",
                answer="answer",
            ),
            _fixed(
                "everyday",
                "Everyday requests written for this project (answer all; plainly benign)",
                "benign",
                id="id",
                prompt="prompt",
            ),
            SuiteSpec(
                "generic",
                "Any CSV/JSONL with 'prompt' and 'label' (harmful|benign), optional 'answer'",
                MappingProxyType(
                    {
                        "id": "id",
                        "prompt": "prompt",
                        "label": "label",
                        "answer": "answer",
                        "category": "category",
                    }
                ),
            ),
        )
    }
)


def everyday_prompts_path() -> Path:
    """The ``everyday`` suite's file, shipped with the package: 60 plainly benign requests
    (cooking, code, travel, school) that should be answered directly, without consulting."""
    return Path(str(resources.files("safe_context_agent.eval") / "data" / "everyday.jsonl"))


def load_suite(
    name: str,
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    limit: int | None = None,
    seed: int | None = None,
    split: Split | None = None,
) -> list[EvalPrompt]:
    """Read benchmark ``name`` from ``path`` (CSV, or JSONL by its ``.jsonl``/``.json`` suffix).

    ``columns`` maps fields to file columns, overriding the suite's defaults. Every row is
    validated before ``limit`` applies. With ``seed`` the rows are shuffled by that seed
    before the first ``limit`` are taken, so a subset is reproducible (and a smaller limit
    with the same seed gives a prefix of a larger one); without ``seed`` the first ``limit``
    rows are taken in file order. ``split`` keeps only the prompts of that fixed split (see
    :func:`~safe_context_agent.eval.prompt_split`) before any shuffling or ``limit``.
    """
    spec = _suite(name)
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of prompts, got {limit}")
    wanted = _column_mapping(spec, columns)
    source = Path(path).expanduser()
    records = _read_records(source)
    prompts = _to_prompts(spec, source, records, wanted, explicit=set(columns or ()))
    if split is not None:
        prompts = select_split(prompts, split)
    if seed is not None:
        random.Random(seed).shuffle(prompts)
    return prompts[:limit] if limit is not None else prompts


# --- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Records:
    columns: list[str]
    rows: list[tuple[str, dict[str, object]]]
    """(where, row): ``where`` reads "row 3 (line 5)" or "line 3", for messages."""


def _read_records(path: Path) -> _Records:
    if not path.exists():
        raise EvalDataError(f"{path}: no such file. Fix: pass the path of the benchmark file.")
    if not path.is_file():
        raise EvalDataError(f"{path}: is a folder, not a file. Fix: pass the CSV/JSONL inside it.")
    try:
        if path.suffix.lower() in _JSONL_SUFFIXES:
            return _read_jsonl(path)
        return _read_csv(path)
    except UnicodeDecodeError as error:
        raise EvalDataError(f"{path}: not UTF-8 text ({error}). Fix: save it as UTF-8.") from error


def _read_csv(path: Path) -> _Records:
    # newline="" lets the csv module own line endings: HarmBench context fields span lines
    # and mix CRLF and LF inside quotes.
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        if not columns:
            raise EvalDataError(f"{path}: empty file, no header row. Fix: add a header row.")
        rows: list[tuple[str, dict[str, object]]] = []
        try:
            for number, row in enumerate(reader, start=1):
                if None in row:
                    raise EvalDataError(
                        f"{path}: row {number} (line {reader.line_num}) has more fields than the "
                        f"header ({len(columns)}). Fix: quote fields that contain commas."
                    )
                rows.append((f"row {number} (line {reader.line_num})", dict(row)))
        except csv.Error as error:
            raise EvalDataError(
                f"{path}: CSV error near line {reader.line_num}: {error}. Fix: check the quoting."
            ) from error
    return _Records(columns, rows)


def _read_jsonl(path: Path) -> _Records:
    rows: list[tuple[str, dict[str, object]]] = []
    columns: dict[str, None] = {}  # ordered union of keys, for messages
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise EvalDataError(
                    f"{path}: line {number} is not valid JSON ({error.msg}). "
                    "Fix: one JSON object per line."
                ) from error
            if not isinstance(record, dict):
                raise EvalDataError(
                    f"{path}: line {number} is a JSON {type(record).__name__}, not an object. "
                    "Fix: one JSON object per line."
                )
            columns.update(dict.fromkeys(record))
            rows.append((f"line {number}", record))
    if not rows:
        raise EvalDataError(f"{path}: no records. Fix: one JSON object per line.")
    return _Records(list(columns), rows)


# --- mapping and validation ------------------------------------------------------------


def _suite(name: str) -> SuiteSpec:
    key = name.strip().lower().replace("-", "_")
    if key not in SUITES:
        raise ConfigError(f"unknown benchmark suite {name!r}. Fix: use one of {', '.join(SUITES)}")
    return SUITES[key]


def _column_mapping(spec: SuiteSpec, columns: Mapping[str, str] | None) -> dict[str, str]:
    wanted = dict(spec.columns)
    for key, column in (columns or {}).items():
        if key not in FIELDS:
            raise ConfigError(
                f"columns: unknown field {key!r} for suite {spec.name!r}. "
                f"Fix: map one of {', '.join(FIELDS)} to a file column."
            )
        if key == "label" and spec.label is not None:
            raise ConfigError(
                f"columns: suite {spec.name!r} labels every row {spec.label!r}, so it has no "
                "label column. Fix: use suite 'generic' for a file with its own labels."
            )
        wanted[key] = column
    return wanted


def _resolve(
    available: list[str], wanted: dict[str, str], required: set[str], path: Path, suite: str
) -> dict[str, str]:
    """Field -> the file's actual column name (exact match first, then case-insensitive)."""
    by_lower: dict[str, str] = {}
    for column in available:
        by_lower.setdefault(column.strip().lower(), column)
    resolved: dict[str, str] = {}
    for key, column in wanted.items():
        actual = column if column in available else by_lower.get(column.strip().lower())
        if actual is not None:
            resolved[key] = actual
        elif key in required:
            raise EvalDataError(
                f"{path}: no column {column!r} (field {key!r} of suite {suite!r}); columns found: "
                f"{', '.join(repr(c) for c in available) or 'none'}. Fix: pass "
                f"columns={{{key!r}: '<column name>'}} if the file names it differently, or "
                f"check that this is a {suite} file."
            )
    return resolved


def _to_prompts(
    spec: SuiteSpec,
    path: Path,
    records: _Records,
    wanted: dict[str, str],
    *,
    explicit: set[str],
) -> list[EvalPrompt]:
    required = {"prompt"} | explicit | ({"label"} if spec.label is None else set())
    resolved = _resolve(records.columns, wanted, required, path, spec.name)
    used = set(resolved.values())
    prompts: list[EvalPrompt] = []
    seen: dict[str, str] = {}
    for index, (where, row) in enumerate(records.rows, start=1):
        fields: _Fields = {key: _text(row.get(column)) for key, column in resolved.items()}
        prompt = fields.get("prompt")
        if not prompt:
            raise EvalDataError(
                f"{path}: {where}: empty {resolved['prompt']!r} (the prompt). "
                "Fix: fill it in or remove the row."
            )
        context = fields.pop("context", None)
        if context:
            fields["prompt"] = f"{context}\n\n{prompt}"
        label = spec.label or _label(spec, fields.get("label"), path, where, resolved)
        if spec.finish is not None:
            try:
                fields = spec.finish(fields, row)
            except ValueError as error:
                raise EvalDataError(
                    f"{path}: {where}: {error}. Fix: correct the row or remove it."
                ) from error
        raw_id = fields.get("id") or str(index)
        item_id = f"{spec.name}-{raw_id}"
        if item_id in seen:
            raise EvalDataError(
                f"{path}: {where}: id {raw_id!r} repeats {seen[item_id]}. "
                "Fix: make the id column unique, or map 'id' to another column."
            )
        seen[item_id] = where
        prompts.append(
            EvalPrompt(
                id=item_id,
                suite=spec.name,
                prompt=fields["prompt"] or "",
                label=label,
                answer=fields.get("answer") or None,
                category=fields.get("category") or None,
                metadata=_metadata(row, used),
            )
        )
    return prompts


def _label(
    spec: SuiteSpec, value: str | None, path: Path, where: str, resolved: dict[str, str]
) -> EvalLabel:
    key = (value or "").strip().lower()
    if key in spec.label_values:
        return spec.label_values[key]
    allowed = ", ".join(repr(v) for v in spec.label_values)
    raise EvalDataError(
        f"{path}: {where}: label {value!r} in column {resolved['label']!r} is not one of "
        f"{allowed}. Fix: correct the value."
    )


def _text(value: object) -> str | None:
    """A cell as text with normalised line endings; None for missing or blank cells."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    return text or None


def _metadata(row: Mapping[str, object], used: set[str]) -> dict[str, JsonValue]:
    """The row's other non-empty cells (CSV cells are strings; JSONL keeps its JSON types)."""
    extra: dict[str, JsonValue] = {}
    for column, value in row.items():
        if column in used or value is None or value == "":
            continue
        extra[column] = (
            value.replace("\r\n", "\n") if isinstance(value, str) else cast(JsonValue, value)
        )
    return extra
