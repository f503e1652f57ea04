"""The audit as a person reads it: Markdown with a "what to change" list, JSON, and two PNGs.

- ``over_refusal_by_rule.png``: rules ranked by over-refusal attribution, with their safety
  credit beside it, so a rule that causes refusals of benign prompts and one that earns its
  refusals of harmful ones are told apart at a glance;
- ``retrievals_by_suite.png``: a rule x suite heat map of the runs that retrieved each rule,
  as a share of the suite's runs, so a rule that fires on a benign suite stands out.

matplotlib loads on first use (``Agg`` backend, the ``eval`` extra; see ``_plotting``).
"""

from __future__ import annotations

from pathlib import Path

from safe_context_agent._io import write_atomic
from safe_context_agent._plotting import pyplot, save_figure
from safe_context_agent.rules._audit import AuditReport, RuleAudit

__all__ = [
    "AUDIT_FILES",
    "audit_markdown",
    "plot_over_refusal",
    "plot_suite_heatmap",
    "what_to_change",
    "write_audit",
]

AUDIT_FILES = {
    "json": "audit.json",
    "markdown": "audit.md",
    "over_refusal": "over_refusal_by_rule.png",
    "heatmap": "retrievals_by_suite.png",
}
_MAX_BARS = 20
_MAX_HEATMAP_RULES = 40
_MAX_TABLE_ROWS = 40


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def what_to_change(report: AuditReport) -> list[str]:
    """The short list: over-broad rules, near-duplicate pairs, queries with no rule, dead rules."""
    items = []
    for finding in report.findings_of("over_broad"):
        items.append(f"**Narrow `{finding.rule_ids[0]}`** (over-broad): {finding.detail}.")
    for duplicate in report.duplicates:
        pair = " and ".join(f"`{rule_id}`" for rule_id in duplicate.rule_ids)
        items.append(f"**Merge or separate {pair}** (near-duplicates): {duplicate.detail}.")
    for finding in report.findings_of("no_match"):
        items.append(f"**Add rules for unmatched requests** (no_match): {finding.detail}.")
    dead = [finding.rule_ids[0] for finding in report.findings_of("dead")]
    if dead:
        shown = ", ".join(f"`{rule_id}`" for rule_id in dead[:12])
        more = f" and {len(dead) - 12} more" if len(dead) > 12 else ""
        items.append(
            f"**Check {len(dead)} dead rule(s)** (never retrieved in "
            f"{report.totals.consultations} consultations): {shown}{more}. With few traces this "
            "says more about what was asked than about the rules; over production traffic, "
            "reword them in the users' words or remove them."
        )
    if not items:
        items.append("Nothing to change on these traces.")
    return items


def audit_markdown(report: AuditReport) -> str:
    t = report.totals
    lines = [
        f"# Rule audit: pack `{report.pack}` {report.pack_version}",
        "",
        f"- traces: {report.traces_path or '(in memory)'}; models: "
        f"{', '.join(report.models) or '–'}; refusal judge: {report.judge}",
        f"- runs audited: {t.runs} of {t.traces_read} traces read ({t.runs_failed} failed runs, "
        f"{t.runs_other_pack} of another pack left out; {t.runs_other_pack_version} of another "
        f"version of this pack kept; {t.traces_skipped_by_reader} records skipped by the reader)",
        f"- labels: {t.runs_harmful} harmful, {t.runs_benign} benign, {t.runs_unlabelled} "
        "without a label",
        f"- consulted: {t.runs_consulted} runs, {t.consultations} consultations; after a "
        f"consultation {t.consulted_benign_refused} benign prompts were refused "
        f"(over-refusals) and {t.consulted_harmful_refused} harmful ones "
        f"({t.consulted_unknown_verdicts} verdicts unknown)",
        f"- floor: {report.floor:.3f} ({report.floor_source}); "
        f"{t.consultations_no_match} consultations below it",
    ]
    if t.unknown_rule_ids:
        unknown = ", ".join(f"`{k}` ({v})" for k, v in list(t.unknown_rule_ids.items())[:10])
        lines.append(f"- retrieved ids not in this pack: {unknown}")
    lines += ["", "## What to change", ""]
    lines += [f"{n}. {item}" for n, item in enumerate(what_to_change(report), start=1)]
    retrieved = [row for row in report.rules if row.retrievals]
    lines += [
        "",
        f"## Rules retrieved ({len(retrieved)} of {len(report.rules)})",
        "",
        "Over-refusal attribution: each benign run refused after a consultation is one unit, "
        "split among the rules it retrieved by reciprocal rank; safety credit, the same for "
        "refused harmful runs.",
        "",
        "| rule | runs | rank 1 / 2 / 3+ | mean score | benign share | refused | "
        "benign refused | over-refusal attr. | safety credit |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in retrieved[:_MAX_TABLE_ROWS]:
        lines.append(_table_row(row))
    if len(retrieved) > _MAX_TABLE_ROWS:
        lines.append(f"| … {len(retrieved) - _MAX_TABLE_ROWS} more in audit.json | | | | | | | | |")
    if report.weakest:
        lines += [
            "",
            "## Weakest consultations",
            "",
            "| best score | best rule | label | suite | query |",
            "|---:|---|---|---|---|",
        ]
        for weak in report.weakest:
            query = weak.query.replace("|", "\\|").replace("\n", " ")[:120]
            lines.append(
                f"| {_num(weak.best_score)} | {weak.best_rule_id or '–'} | {weak.label or '–'} "
                f"| {weak.suite or '–'} | {query} |"
            )
    lines += [
        "",
        f"![Rules by over-refusal attribution]({AUDIT_FILES['over_refusal']})",
        f"![Retrievals per rule and suite]({AUDIT_FILES['heatmap']})",
        "",
    ]
    return "\n".join(lines)


def _table_row(row: RuleAudit) -> str:
    ranks = row.by_rank + [0] * max(0, 3 - len(row.by_rank))
    rank_text = f"{ranks[0]} / {ranks[1]} / {sum(ranks[2:])}"
    return (
        f"| `{row.rule_id}` | {row.runs} | {rank_text} | {_num(row.mean_score)} | "
        f"{_pct(row.benign_share)} | {_pct(row.refusal_share)} | "
        f"{row.benign_refused}/{row.runs_benign} | {row.over_refusal_attribution:.2f} | "
        f"{row.safety_credit:.2f} |"
    )


def plot_over_refusal(report: AuditReport, path: str | Path) -> Path:
    """Horizontal bars: the rules with most over-refusal attribution, safety credit beside it."""
    plt = pyplot()
    ranked = [r for r in report.rules if r.over_refusal_attribution or r.safety_credit]
    ranked = ranked[:_MAX_BARS]
    figure, axes = plt.subplots(figsize=(7.5, 1.2 + 0.32 * max(len(ranked), 4)), dpi=120)
    if ranked:
        ys = list(range(len(ranked)))[::-1]
        height = 0.4
        axes.barh(
            [y + height / 2 for y in ys],
            [r.over_refusal_attribution for r in ranked],
            height,
            color="#d62728",
            label="over-refusal attribution (benign refused)",
        )
        axes.barh(
            [y - height / 2 for y in ys],
            [r.safety_credit for r in ranked],
            height,
            color="#2ca02c",
            label="safety credit (harmful refused)",
        )
        axes.set_yticks(ys, [r.rule_id for r in ranked], fontsize=8)
        # Below the axes: inside, it would cover the longest bars, which matter most.
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, fontsize=8)
    else:
        axes.set_yticks([])
        axes.text(
            0.5, 0.5, "no refusal followed a consultation in these traces", ha="center",
            va="center", transform=axes.transAxes, color="#555555",
        )  # fmt: skip
    axes.set_xlabel("runs (each refused run split among its rules by reciprocal rank)")
    axes.set_title(
        f"Pack {report.pack}: rules by over-refusal attribution\n"
        f"{report.totals.consulted_benign_refused} benign and "
        f"{report.totals.consulted_harmful_refused} harmful prompt(s) refused after consulting",
        fontsize=10,
    )
    axes.grid(True, axis="x", alpha=0.3)
    return save_figure(plt, figure, path)


def plot_suite_heatmap(report: AuditReport, path: str | Path) -> Path:
    """Rules (rows) x suites (columns): share of the suite's runs that retrieved the rule."""
    plt = pyplot()
    suites = report.suites or ["(none)"]
    runs_per_suite = report.consulting_runs_by_suite
    rows = sorted((r for r in report.rules if r.runs), key=lambda r: -r.runs)
    rows = rows[:_MAX_HEATMAP_RULES]
    figure, axes = plt.subplots(
        figsize=(2.2 + 1.1 * len(suites), 1.4 + 0.26 * max(len(rows), 4)), dpi=120
    )
    if rows:
        grid = [
            [r.by_suite.get(s, 0) / max(runs_per_suite.get(s, 0), 1) for s in suites] for r in rows
        ]
        image = axes.imshow(grid, aspect="auto", cmap="Reds", vmin=0.0)
        for y, row in enumerate(rows):
            for x, suite in enumerate(suites):
                count = row.by_suite.get(suite, 0)
                if count:
                    axes.text(x, y, str(count), ha="center", va="center", fontsize=7)
        axes.set_yticks(range(len(rows)), [r.rule_id for r in rows], fontsize=7)
        figure.colorbar(image, ax=axes, label="share of the suite's consulting runs")
    else:
        axes.text(0.5, 0.5, "no rule was retrieved", ha="center", transform=axes.transAxes)
        axes.set_yticks([])
    labels = [f"{s}\n({runs_per_suite.get(s, 0)} runs)" for s in suites]
    axes.set_xticks(range(len(suites)), labels, fontsize=7, rotation=30, ha="right")
    axes.set_title(f"Pack {report.pack}: runs retrieving each rule, per suite", fontsize=10)
    return save_figure(plt, figure, path)


def write_audit(report: AuditReport, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """audit.json, audit.md and (with ``plots``) the two PNGs into ``out_dir``."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, text in (
        ("json", report.model_dump_json(indent=2) + "\n"),
        ("markdown", audit_markdown(report)),
    ):
        target = folder / AUDIT_FILES[key]
        write_atomic(target, text)
        written.append(target)
    if plots:
        written.append(plot_over_refusal(report, folder / AUDIT_FILES["over_refusal"]))
        written.append(plot_suite_heatmap(report, folder / AUDIT_FILES["heatmap"]))
    return written
