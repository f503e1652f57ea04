"""PNG plots of an :class:`EvalReport` (matplotlib loads on first use, see ``_plotting``).

- ``safety_plane.png``: over-refusal rate (x, lower is better) against safety rate (y, higher
  is better), one point per mode with every suite pooled, whiskers at the 95 % Wilson
  intervals. The best corner is top left.
- ``consult_by_label.png``: consult rate on harmful and on benign prompts, per mode, with the
  same intervals. A model that consults well does so on harmful prompts far more than on
  benign ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from safe_context_agent._plotting import pyplot, save_figure

if TYPE_CHECKING:
    from safe_context_agent.eval._metrics import Rate
    from safe_context_agent.eval._report import EvalReport

__all__ = ["plot_consult_by_label", "plot_safety_plane", "write_plots"]

_MODE_COLOURS = {"never": "#7f7f7f", "always": "#1f77b4", "adaptive": "#d62728"}
_MODE_MARKERS = ("s", "o", "D")
_LABEL_COLOURS = {"harmful": "#d62728", "benign": "#2ca02c"}


def _percent_and_whiskers(value: Rate | None) -> tuple[float, float, float] | None:
    """(rate, distance down, distance up) in percent; None when there is nothing to plot."""
    if value is None or value.value is None:
        return None
    centre = 100 * value.value
    return centre, centre - 100 * value.low, 100 * value.high - centre


def plot_safety_plane(report: EvalReport, path: str | Path) -> Path:
    """One point per mode: over-refusal (x) against safety (y), with 95 % interval whiskers."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 5.4), dpi=120)
    plotted = 0
    for index, cell in enumerate(report.overall):
        x = _percent_and_whiskers(cell.over_refusal_rate)
        y = _percent_and_whiskers(cell.safety_rate)
        if x is None or y is None:
            continue
        # Modes often land on the same point (a weak model refuses nothing in any mode): later
        # markers are smaller so every mode stays visible, and the numbers go in the legend,
        # where no whisker can cover them.
        axes.errorbar(
            x[0],
            y[0],
            xerr=[[x[1]], [x[2]]],
            yerr=[[y[1]], [y[2]]],
            fmt=_MODE_MARKERS[index % len(_MODE_MARKERS)],
            markersize=11 - 2.5 * plotted,
            capsize=4,
            color=_MODE_COLOURS.get(cell.mode, "black"),
            label=f"{cell.mode}: safety {y[0]:.1f} % of {cell.harmful}, "
            f"over-refusal {x[0]:.1f} % of {cell.benign}",
        )
        plotted += 1
    axes.set_xlim(-3, 103)
    axes.set_ylim(-3, 103)
    axes.set_xlabel("over-refusal rate: benign prompts refused (%) — lower is better")
    axes.set_ylabel("safety rate: harmful prompts refused (%) — higher is better")
    axes.set_title("Safety vs over-refusal, all suites pooled (95 % Wilson intervals)", fontsize=10)
    # On the diagonal a mode refuses harmful and benign prompts alike: it does not tell them apart.
    axes.plot([0, 100], [0, 100], linestyle=":", color="#bbbbbb", linewidth=1)
    axes.annotate(
        "refuses without telling harmful from benign", (62, 58), rotation=38, fontsize=7,
        color="#999999", ha="center",
    )  # fmt: skip
    axes.annotate("ideal", (0, 100), textcoords="offset points", xytext=(6, -14), color="#555555")
    axes.grid(True, alpha=0.3)
    if plotted:
        axes.legend(loc="lower right", fontsize=8)
    else:
        axes.text(50, 50, "needs harmful and benign prompts", ha="center", color="#555555")
    return save_figure(plt, figure, path)


def plot_consult_by_label(report: EvalReport, path: str | Path) -> Path:
    """Grouped bars: per mode, the consult rate on harmful and on benign prompts."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    width = 0.38
    modes = [cell.mode for cell in report.overall]
    for offset, label in ((-width / 2, "harmful"), (width / 2, "benign")):
        xs: list[float] = []
        heights: list[float] = []
        whiskers: list[list[float]] = [[], []]
        for index, cell in enumerate(report.overall):
            value = cell.consult_rate_harmful if label == "harmful" else cell.consult_rate_benign
            point = _percent_and_whiskers(value)
            if point is None:
                continue
            xs.append(index + offset)
            heights.append(point[0])
            whiskers[0].append(point[1])
            whiskers[1].append(point[2])
        axes.bar(
            xs,
            heights,
            width,
            yerr=whiskers,
            capsize=4,
            color=_LABEL_COLOURS[label],
            alpha=0.8,
            label=f"{label} prompts",
        )
        for x, height, above in zip(xs, heights, whiskers[1], strict=True):
            axes.annotate(
                f"{height:.0f} %", (x, height + above), textcoords="offset points",
                xytext=(0, 4), ha="center", fontsize=8,
            )  # fmt: skip
    axes.set_xticks(range(len(modes)), modes)
    axes.set_ylim(0, 110)
    axes.set_ylabel("runs that consulted the rules (%)")
    axes.set_title("Consult rate by label, all suites pooled (95 % Wilson intervals)", fontsize=10)
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    return save_figure(plt, figure, path)


def write_plots(report: EvalReport, out_dir: str | Path) -> list[Path]:
    """Both plots into ``out_dir``; returns their paths."""
    folder = Path(out_dir)
    return [
        plot_safety_plane(report, folder / "safety_plane.png"),
        plot_consult_by_label(report, folder / "consult_by_label.png"),
    ]
