"""An eval report on disk: ``report.json``, ``report.md`` and the PNG plots, each written atomically.

Apart from building (``_report``), so that the report and the plots that draw it (``_plots``)
never import each other: this module imports both.
"""

from __future__ import annotations

from pathlib import Path

from safe_context_agent._io import write_atomic
from safe_context_agent.eval._report import EvalReport, report_markdown

__all__ = ["write_report"]


def write_report(report: EvalReport, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.md`` and (with ``plots``) the PNG plots into ``out_dir``."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "report.json", folder / "report.md"]
    write_atomic(written[0], report.model_dump_json(indent=2) + "\n")
    write_atomic(written[1], report_markdown(report))
    if plots:
        # matplotlib (the eval extra) loads only when plots are wanted.
        from safe_context_agent.eval._plots import write_plots

        written += write_plots(report, folder)
    return written
