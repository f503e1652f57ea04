"""The ```python blocks of the README and docs/ run, in order, one namespace per file.

A block that prints is followed by its expected output, fenced as ```text output; the test
compares the two, with ``...`` in the expected text standing for any text (a model's answer, a
score, a path), as doctest's ELLIPSIS does. A block that prints without an output block after it,
or an output block whose python block prints nothing, fails. Blocks that need a model endpoint
find the test server through ``$SCA_BASE_URL``; a block fenced as ```python no-run is shown, not
run.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(
    r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*\n"
    r"(?:\s*^```text output[ \t]*\n(?P<output>.*?)^```)?",
    re.DOTALL | re.MULTILINE,
)


@dataclass(frozen=True)
class DocBlock:
    code: str
    output: str | None
    """The expected printed output, or None when the docs show none."""


def _blocks(path: Path) -> list[DocBlock]:
    text = path.read_text(encoding="utf-8")
    return [DocBlock(m["code"], m["output"]) for m in BLOCK.finditer(text)]


def _tidy(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def output_matches(expected: str, printed: str) -> bool:
    """``printed`` is ``expected`` line for line, where ``...`` stands for any text."""
    pattern = ".*?".join(re.escape(part) for part in _tidy(expected).split("..."))
    return re.fullmatch(pattern, _tidy(printed), re.DOTALL) is not None


@pytest.mark.parametrize(
    ("expected", "printed", "matches"),
    [
        ("True ['a']", "True ['a']\n", True),
        ("True [...] ...", "True ['a', 'b'] Use kill PID.", True),
        ("0.9...\nrule", "0.912  \nrule", True),
        ("True ['a']", "False ['a']", False),
        ("one\ntwo", "one", False),
    ],
)
def test_expected_output_matching(expected: str, printed: str, matches: bool) -> None:
    assert output_matches(expected, printed) is matches


@pytest.mark.server
@pytest.mark.parametrize(
    "doc", [d for d in DOCS if d.exists() and _blocks(d)], ids=lambda d: d.name
)
def test_code_blocks_run(doc: Path, vllm_server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SCA_BASE_URL", vllm_server.base_url)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"doc_{doc.stem}"}
    for number, block in enumerate(_blocks(doc), start=1):
        where = f"{doc.name}, python block {number}"
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                exec(compile(block.code, f"{doc.name} block {number}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{where} failed: {exc!r}\n{block.code}") from exc
        shown = printed.getvalue()
        if block.output is None:
            assert not shown.strip(), (
                f"{where} prints, but the docs show no output; add a ```text output block after"
                f" it with what it prints (use ... for text that varies):\n{shown}"
            )
        else:
            assert shown.strip(), f"{where} prints nothing, but the docs show an output block"
            assert output_matches(block.output, shown), (
                f"{where} printed\n{shown}\nbut the docs show\n{block.output}"
            )
