"""The wheel carries both packages, the chat template and the built-in rule packs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_contains_runtime_training_and_rule_packs(tmp_path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO_ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("safe_context_agent-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "safe_context_agent/__init__.py" in names
    assert "safe_context_training/__init__.py" in names
    assert not any(name.startswith("training/") for name in names), "no bare top-level 'training'"
    assert "safe_context_agent/serve/templates/smollm2_tools.jinja" in names
    for pack in ("general", "healthcare", "kids"):
        assert f"safe_context_agent/rule_packs/{pack}/pack.yaml" in names
        assert any(
            n.startswith(f"safe_context_agent/rule_packs/{pack}/rules/") and n.endswith(".yaml")
            for n in names
        )
    assert any(name.endswith("entry_points.txt") for name in names)


def test_runtime_import_is_light() -> None:
    code = (
        "import sys, safe_context_agent, safe_context_agent.serve, safe_context_agent.cli;"
        "heavy = [m for m in ('torch', 'trl', 'faiss', 'sentence_transformers', 'vllm') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_every_folder_of_shipped_files_is_a_declared_package() -> None:
    # setuptools warns (a screen per folder, on every install) about an importable folder that is
    # not in `packages`, and may stop shipping its files; a new rule pack must be declared.
    import tomllib

    setup = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(setup["packages"])
    roots = {name: REPO_ROOT / folder for name, folder in setup["package-dir"].items()}
    missing = []
    for name, folder in roots.items():
        for sub in sorted(p for p in folder.rglob("*") if p.is_dir()):
            parts = sub.relative_to(folder).parts
            if "__pycache__" in parts or not all(part.isidentifier() for part in parts):
                continue
            dotted = ".".join((name, *parts))
            if dotted not in declared and dotted not in roots and any(sub.iterdir()):
                missing.append(dotted)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
