"""Type-check the runtime (``safe_context_agent/``) and the training package (``training/``) with mypy.

``training/`` installs as ``safe_context_training`` (pyproject's ``package-dir``), and the
editable install maps that name with an import hook, which mypy does not run. So mypy checks
both packages by their import names through two symlinks in ``.mypy_cache/import-names``, and
the paths it prints are turned back into the repository's own (``training/_trainer.py:12``).
Settings live in pyproject.toml (``[tool.mypy]``). Exits with mypy's status.

    python scripts/typecheck.py            # what `make lint` and tests/test_typecheck.py run
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"safe_context_agent": "safe_context_agent", "safe_context_training": "training"}
"""Import name -> folder in the repository."""
NAMES_DIR = Path(".mypy_cache") / "import-names"


def main() -> int:
    if importlib.util.find_spec("mypy") is None:
        print(
            "error: mypy is not installed; install the dev extra: pip install -e '.[dev]' "
            "(make setup does)",
            file=sys.stderr,
        )
        return 2
    names = REPO / NAMES_DIR
    names.mkdir(parents=True, exist_ok=True)
    for name, folder in PACKAGES.items():
        link = names / name
        if not (link.is_symlink() and link.resolve() == (REPO / folder).resolve()):
            link.unlink(missing_ok=True)
            link.symlink_to(REPO / folder, target_is_directory=True)
    command = [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml"]
    for name in PACKAGES:
        command += ["-p", name]
    env = {**os.environ, "MYPYPATH": str(NAMES_DIR)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    for name, folder in PACKAGES.items():
        output = output.replace(f"{NAMES_DIR / name}{os.sep}", f"{folder}{os.sep}")
    print(output, end="")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
