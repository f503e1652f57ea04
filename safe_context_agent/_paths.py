"""Where the project keeps files it derives (converted models, rule indexes, server state)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "state_dir"]

CACHE_ENV = "SCA_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
    """``$SCA_CACHE_DIR``, else ``$XDG_CACHE_HOME/safe-context-agent``, else ``~/.cache/...``.

    The folder (and ``parts`` below it) is created on first use.
    """
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "safe-context-agent"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_dir() -> Path:
    """Runtime state (the running server's pid/port file, its log)."""
    return cache_dir("state")
