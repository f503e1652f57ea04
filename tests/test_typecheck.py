"""mypy is clean on both packages (settings in pyproject.toml's [tool.mypy]).

The same command as `make lint`; here so that CI (.ci/run -> make test) and every contributor's
`make test` run it too. A cold run takes about 2 CPU-minutes (mypy reads torch, transformers and
LangChain once), a warm one seconds (the cache in .mypy_cache).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_mypy_is_clean_on_the_runtime_and_training_packages() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/typecheck.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, f"mypy found problems:\n{result.stdout}{result.stderr}"
