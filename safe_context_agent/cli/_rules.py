"""`sca rules`: validate, build, inspect and search rule packs."""

from __future__ import annotations

import json
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from safe_context_agent.cli._common import cli_errors

rules_app = typer.Typer(help="Validate, index and search rule packs.", no_args_is_help=True)


class _Strategy(StrEnum):
    hybrid = "hybrid"
    multi = "multi"
    concat = "concat"


_Pack = Annotated[
    str,
    typer.Argument(
        help="A built-in pack name (e.g. general) or a pack folder path (e.g. ./my_pack).",
        show_default=False,
    ),
]
_StrategyOption = Annotated[
    _Strategy,
    typer.Option(
        help="hybrid: mean of concat and multi; multi: a vector per rule text, the best one "
        "counts; concat: one vector per rule."
    ),
]
_ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="Embedding model name or folder (default: the pack's own)."),
]
_IndexDirOption = Annotated[
    Path | None,
    typer.Option(help="Folder for the index files (default: the cache).", show_default=False),
]
_JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _config(strategy: _Strategy, model: str | None, index_dir: Path | None) -> Any:
    from safe_context_agent.rules import IndexConfig

    return IndexConfig(strategy=strategy.value, embedding_model=model, index_dir=index_dir)


@rules_app.command()
def validate(pack: _Pack) -> None:
    """Check a pack against the format; print a summary, or the first problem and exit 2."""
    from safe_context_agent.rules import load_rule_pack

    with cli_errors():
        loaded = load_rule_pack(pack)
    typer.echo(
        f"ok: pack '{loaded.name}' {loaded.manifest.version}: {len(loaded.rules)} rules in "
        f"{len(loaded.manifest.categories)} categories, content hash {loaded.content_hash[:16]}"
    )


@rules_app.command()
def build(
    pack: _Pack,
    rebuild: Annotated[bool, typer.Option(help="Build even if a fresh index exists.")] = False,
    strategy: _StrategyOption = _Strategy.hybrid,
    model: _ModelOption = None,
    index_dir: _IndexDirOption = None,
) -> None:
    """Build the pack's index, or confirm that the one on disk is fresh."""
    from safe_context_agent.rules import open_index

    with cli_errors():
        index = open_index(pack, _config(strategy, model, index_dir), rebuild=rebuild)
    m = index.manifest
    action = "loaded" if index.loaded_from_disk else f"built ({index.built_because})"
    typer.echo(
        f"{action}: pack '{m.pack_name}', {m.n_rules} rules, {m.n_vectors} vectors, "
        f"{m.index_kind} index, strategy {m.strategy}, at {index.directory}"
    )


@rules_app.command()
def stats(
    pack: _Pack,
    strategy: _StrategyOption = _Strategy.hybrid,
    model: _ModelOption = None,
    index_dir: _IndexDirOption = None,
    as_json: _JsonOption = False,
) -> None:
    """Rules per category and severity, the content hash, and the state of the index on disk."""
    from safe_context_agent.rules import inspect_index, load_rule_pack

    with cli_errors():
        loaded = load_rule_pack(pack)
        inspection = inspect_index(loaded, _config(strategy, model, index_dir))
    severities = Counter(rule.severity for rule in loaded.rules)
    report: dict[str, Any] = {
        "pack": loaded.name,
        "version": loaded.manifest.version,
        "path": str(loaded.path),
        "content_hash": loaded.content_hash,
        "rules": len(loaded.rules),
        "categories": loaded.category_counts(),
        "severities": {s: severities[s] for s in ("low", "medium", "high", "critical")},
        "index": {
            "state": inspection.state,
            "reason": inspection.reason,
            "directory": str(inspection.directory),
            "kind": inspection.manifest.index_kind if inspection.manifest else None,
            "vectors": inspection.manifest.n_vectors if inspection.manifest else None,
        },
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"pack {loaded.name} {loaded.manifest.version} ({loaded.path})")
    typer.echo(f"content hash {loaded.content_hash}")
    typer.echo(f"{len(loaded.rules)} rules")
    width = max(len(c) for c in report["categories"])
    for category, count in report["categories"].items():
        typer.echo(f"  {category:<{width}}  {count}")
    typer.echo("severity " + ", ".join(f"{s} {n}" for s, n in report["severities"].items()))
    index_line = f"index {inspection.state} at {inspection.directory}"
    if inspection.manifest is not None:
        index_line += (
            f" ({inspection.manifest.index_kind}, {inspection.manifest.n_vectors} vectors)"
        )
    elif inspection.reason:
        index_line += f": {inspection.reason}; run `sca rules build {pack}`"
    typer.echo(index_line)


@rules_app.command()
def search(
    pack: _Pack,
    query: Annotated[str, typer.Argument(help="Text to find rules for.", show_default=False)],
    k: Annotated[int, typer.Option("--k", "-k", help="How many rules to return.")] = 3,
    category: Annotated[
        list[str] | None,
        typer.Option("--category", "-c", help="Only rules of this category (repeatable)."),
    ] = None,
    min_score: Annotated[
        float | None, typer.Option(help="Drop rules whose cosine similarity is lower.")
    ] = None,
    strategy: _StrategyOption = _Strategy.hybrid,
    model: _ModelOption = None,
    index_dir: _IndexDirOption = None,
    as_json: _JsonOption = False,
) -> None:
    """Consult a pack the way the agent does and print the rules it would see."""
    from safe_context_agent.rules import open_index

    with cli_errors():
        index = open_index(pack, _config(strategy, model, index_dir))
        hits = index.consult(query, k=k, categories=category or None, min_score=min_score)
    if as_json:
        items = [
            {
                "rank": hit.rank,
                "id": hit.rule.id,
                "category": hit.rule.category,
                "title": hit.rule.title,
                "score": round(hit.score, 4),
                "severity": hit.rule.severity,
                "statement": hit.rule.statement,
            }
            for hit in hits
        ]
        typer.echo(json.dumps(items, indent=2))
        return
    if not hits:
        typer.echo("no rule matched")
    for hit in hits:
        typer.echo(f"{hit.rank}. {hit.score:.3f}  {hit.rule.id} [{hit.rule.category}]")
        typer.echo(f"   {hit.rule.title}")
