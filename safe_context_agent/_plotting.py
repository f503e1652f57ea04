"""matplotlib for the package's PNGs (eval reports, rule-pack audits): loaded on first use, with
the ``Agg`` backend (no display needed), and each figure saved atomically.

matplotlib is the ``eval`` extra; without it, a plot raises a :class:`ConfigError` that says
how to install it or skip the plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safe_context_agent._io import atomic_path
from safe_context_agent.errors import ConfigError

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the ``Agg`` backend."""
    try:
        import matplotlib
    except ImportError as error:
        raise ConfigError(
            "plots need matplotlib, which is not installed. Fix: "
            "pip install 'safe-context-agent[eval]', or write the report without plots."
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt: Any, figure: Any, path: str | Path) -> Path:
    """Lay out, save and close ``figure``; the file's suffix names the format (``.png``)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    with atomic_path(target) as partial:
        # The temporary name ends in .partial, so the format is named explicitly.
        figure.savefig(partial, format=target.suffix.lstrip(".") or "png")
    plt.close(figure)
    return target
