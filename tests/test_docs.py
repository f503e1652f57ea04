"""The ```python blocks of the README and docs/ run, in order, one namespace per file.

Blocks that need a model endpoint find the test server through ``$SCA_BASE_URL``; a block
fenced as ```python no-run is shown, not run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


@pytest.mark.server
@pytest.mark.parametrize(
    "doc", [d for d in DOCS if d.exists() and _blocks(d)], ids=lambda d: d.name
)
def test_code_blocks_run(doc: Path, vllm_server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SCA_BASE_URL", vllm_server.base_url)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"doc_{doc.stem}"}
    for number, block in enumerate(_blocks(doc), start=1):
        try:
            exec(compile(block, f"{doc.name} block {number}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(
                f"{doc.name}, python block {number} failed: {exc!r}\n{block}"
            ) from exc
