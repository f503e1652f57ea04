"""`sca rules lint`: what a pack's own text says about how it will retrieve, before any traffic.

Four checks, each a :class:`LintFinding` kind:

- ``example_miss``: a rule's own allowed and disallowed examples should retrieve it. Each
  example is held out of the pack while it is scored (its own index row dropped, the rule's
  joined text embedded without it): with its own text in the index an example matches itself
  at cosine 1.0 and the check would pass whatever the rule says. Held out, it asks the
  question that matters: does a request *like* this example find the rule?
- ``duplicate``: two rules whose whole-rule embeddings are closer than a threshold; the
  retriever cannot tell them apart, so they split the top k between them.
- ``no_allowed_rule``: a category with no rule that protects helpfulness (severity ``low`` or
  tag ``utility``, the convention of rule_packs/README.md); such a category only teaches refusal.
- ``example_overlap``: a rule whose allowed and disallowed examples are closer to each other
  than to the rule's own title and statement. Retrieval then runs on the examples' topic, and
  the statement, which is where the line between them is drawn, is not what makes the rule come
  back.

The same held-out scores give the pack's **floor** (:attr:`LintReport.floor`): the score that
95 % of the pack's own examples reach for their own rule. A consultation whose best rule scores
below it most likely asked about something the pack has no rule for; the audit counts those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from safe_context_agent.rules._findings import Finding
from safe_context_agent.rules._loader import load_rule_pack
from safe_context_agent.rules._schema import Rule, RulePack
from safe_context_agent.rules._texts import VectorStrategy, rule_texts

if TYPE_CHECKING:
    import os

    from safe_context_agent.rules._embedder import Embedder

__all__ = [
    "LINT_SCHEMA_VERSION",
    "ExampleRetrieval",
    "LintConfig",
    "LintFinding",
    "LintKind",
    "LintReport",
    "RuleLint",
    "held_out_scores",
    "lint_pack",
    "similar_pairs",
]

LINT_SCHEMA_VERSION: Final = 1
LintKind = Literal["duplicate", "example_miss", "no_allowed_rule", "example_overlap"]
ExampleKind = Literal["allowed", "disallowed"]


class LintConfig(BaseModel):
    """The thresholds of the four checks, and how the pack is embedded (as the agent does)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(default=3, ge=1, description="An example hits when its rule is in the top k.")
    strategy: VectorStrategy = Field(
        default="hybrid", description="Rule scoring, as in IndexConfig (score the agent's way)."
    )
    embedding_model: str | None = Field(
        default=None, description="sentence-transformers model; None uses the pack's own."
    )
    device: str | None = None
    min_hit_rate: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="example_miss when fewer than this share of a rule's examples hit.",
    )
    duplicate_threshold: float = Field(
        default=0.85,
        ge=-1.0,
        le=1.0,
        description="duplicate when two whole-rule embeddings have at least this cosine.",
    )
    overlap_margin: float = Field(
        default=0.15,
        ge=0.0,
        description="example_overlap when the allowed-disallowed similarity exceeds the "
        "examples-statement similarity by more than this.",
    )
    floor_quantile: float = Field(
        default=0.05,
        gt=0.0,
        lt=1.0,
        description="The floor is this quantile of the examples' held-out own-rule scores.",
    )
    batch_size: int = Field(default=64, ge=1)


class LintFinding(Finding):
    kind: LintKind


class ExampleRetrieval(BaseModel):
    """How one example, held out of the pack, retrieves its own rule."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    kind: ExampleKind
    text: str
    score: float = Field(description="Its own rule's score for it, the example held out.")
    rank: int = Field(description="Its own rule's rank among all rules (1 = retrieved first).")
    top_rule_id: str = Field(description="The rule ranked first for it.")
    top_score: float


class RuleLint(BaseModel):
    """The per-rule figures behind the findings."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    category: str
    examples: int
    hits: int = Field(description="Examples whose own rule is in the top k.")
    hit_rate: float
    nearest_rule_id: str | None = Field(description="The rule with the closest whole-rule vector.")
    nearest_similarity: float | None
    allowed_disallowed_similarity: float = Field(
        description="Mean cosine between its allowed and its disallowed examples."
    )
    example_statement_similarity: float = Field(
        description="Mean cosine between its examples and its title + statement."
    )
    permissive: bool = Field(description="Severity low or tagged utility: protects helpfulness.")


class LintReport(BaseModel):
    """Everything `sca rules lint` found; ``findings`` is what a pack's CI gates on."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = LINT_SCHEMA_VERSION
    pack: str
    pack_version: str
    pack_hash: str
    embedding_model: str
    config: LintConfig
    hit_rate: float = Field(description="Share of all examples whose own rule is in the top k.")
    floor: float = Field(
        description="Held-out own-rule score reached by all but floor_quantile of the examples."
    )
    rules: list[RuleLint]
    misses: list[ExampleRetrieval] = Field(description="The examples that missed the top k.")
    findings: list[LintFinding]


# --- pure computations on unit vectors -------------------------------------------------------


def held_out_scores(
    example_vectors: np.ndarray,
    example_owner: np.ndarray,
    head_vectors: np.ndarray,
    whole_vectors: np.ndarray,
    whole_without: np.ndarray | None,
    strategy: VectorStrategy,
) -> np.ndarray:
    """``(examples, rules)``: every rule's score for every example, each example held out of
    its own rule, scored the way ``strategy`` scores (see :data:`VectorStrategy`).

    ``example_owner[i]`` is the rule of example ``i``; a rule's parts are its head and its
    examples; ``whole_without[i]`` is the embedding of example ``i``'s rule joined *without* it
    (needed for ``concat`` and ``hybrid``). Example vectors double as the index's example rows,
    since the index embeds the same texts.
    """
    n_rules = len(head_vectors)
    example_owner = np.asarray(example_owner)
    concat: np.ndarray | None = None
    multi: np.ndarray | None = None
    if strategy in ("concat", "hybrid"):
        if whole_without is None:
            raise ValueError(f"strategy {strategy!r} needs whole_without (see the docstring)")
        concat = example_vectors @ whole_vectors.T
        rows = np.arange(len(example_vectors))
        concat[rows, example_owner] = np.einsum("ij,ij->i", example_vectors, whole_without)
    if strategy in ("multi", "hybrid"):
        to_heads = example_vectors @ head_vectors.T
        to_examples = example_vectors @ example_vectors.T
        np.fill_diagonal(to_examples, -np.inf)  # the held-out example itself
        best_example = np.full((len(example_vectors), n_rules), -np.inf, dtype=to_examples.dtype)
        for rule in range(n_rules):
            members = example_owner == rule
            if members.any():
                best_example[:, rule] = to_examples[:, members].max(axis=1)
        multi = np.maximum(to_heads, best_example)
    if strategy == "concat" and concat is not None:
        return concat
    if strategy == "multi" and multi is not None:
        return multi
    assert concat is not None and multi is not None  # hybrid computed both above
    return (concat + multi) / 2


def similar_pairs(vectors: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, cosine)`` with ``i < j`` and cosine >= ``threshold``, most similar first."""
    similarity = vectors @ vectors.T
    upper_i, upper_j = np.triu_indices(len(vectors), k=1)
    values = similarity[upper_i, upper_j]
    chosen = np.flatnonzero(values >= threshold)
    pairs = [(int(upper_i[c]), int(upper_j[c]), float(values[c])) for c in chosen]
    return sorted(pairs, key=lambda pair: -pair[2])


def own_ranks(scores: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """1-based rank of each row's own rule (ties count in the rule's favour)."""
    own = scores[np.arange(len(scores)), owner]
    return 1 + (scores > own[:, None]).sum(axis=1)


def is_permissive(rule: Rule) -> bool:
    """A rule that says what is fine to help with: severity ``low`` or tagged ``utility``."""
    return rule.severity == "low" or "utility" in rule.tags


def _mean_cosine(left: np.ndarray, right: np.ndarray) -> float:
    return float((left @ right.T).mean())


# --- embedding the pack ----------------------------------------------------------------------


@dataclass(frozen=True)
class _PackVectors:
    heads: np.ndarray  # (rules, d): "<title>. <statement>"
    wholes: np.ndarray  # (rules, d): the rule joined, as the concat row
    examples: np.ndarray  # (examples, d): allowed then disallowed, rule by rule
    owner: np.ndarray  # (examples,): rule position of each example
    kinds: tuple[ExampleKind, ...]
    texts: tuple[str, ...]
    whole_without: np.ndarray | None  # (examples, d): the owner joined without that example


def _embed(pack: RulePack, embedder: Embedder, config: LintConfig) -> _PackVectors:
    heads, wholes, texts, owner, without = [], [], [], [], []
    kinds: list[ExampleKind] = []
    for position, rule in enumerate(pack.rules):
        whole, head, *examples = rule_texts(rule, "hybrid")  # the texts the index embeds
        heads.append(head)
        wholes.append(whole)
        for index, text in enumerate(examples):
            texts.append(text)
            kinds.append("allowed" if index < len(rule.allowed) else "disallowed")
            owner.append(position)
            without.append(" ".join([head, *examples[:index], *examples[index + 1 :]]))
    needs_without = config.strategy in ("concat", "hybrid")
    batch = [*heads, *wholes, *texts, *(without if needs_without else [])]
    vectors = embedder.encode(batch, batch_size=config.batch_size)
    n_rules, n_examples = len(heads), len(texts)
    start = 2 * n_rules + n_examples
    return _PackVectors(
        heads=vectors[:n_rules],
        wholes=vectors[n_rules : 2 * n_rules],
        examples=vectors[2 * n_rules : start],
        owner=np.asarray(owner),
        kinds=tuple(kinds),
        texts=tuple(texts),
        whole_without=vectors[start:] if needs_without else None,
    )


# --- the checks ------------------------------------------------------------------------------


def lint_pack(
    pack: RulePack | str | os.PathLike[str],
    config: LintConfig | None = None,
    *,
    embedder: Embedder | None = None,
) -> LintReport:
    """Run the four checks on a pack (name, folder or :class:`RulePack`).

    ```python
    report = lint_pack("general")
    for finding in report.findings:
        print(finding.kind, finding.rule_ids, finding.detail)
    ```
    """
    from safe_context_agent.rules._embedder import get_embedder

    config = config or LintConfig()
    loaded = pack if isinstance(pack, RulePack) else load_rule_pack(pack)
    embedder = embedder or get_embedder(
        config.embedding_model or loaded.manifest.embedding_model, device=config.device
    )
    vectors = _embed(loaded, embedder, config)
    scores = held_out_scores(
        vectors.examples,
        vectors.owner,
        vectors.heads,
        vectors.wholes,
        vectors.whole_without,
        config.strategy,
    )
    ranks = own_ranks(scores, vectors.owner)
    rules = loaded.rules
    retrievals = [
        ExampleRetrieval(
            rule_id=rules[int(vectors.owner[i])].id,
            kind=vectors.kinds[i],
            text=vectors.texts[i],
            score=float(scores[i, vectors.owner[i]]),
            rank=int(ranks[i]),
            top_rule_id=rules[int(scores[i].argmax())].id,
            top_score=float(scores[i].max()),
        )
        for i in range(len(vectors.texts))
    ]
    rows = _rule_rows(loaded, vectors, retrievals, config)
    findings = [
        *_duplicates(rules, vectors.wholes, config),
        *_example_misses(rows, retrievals, config),
        *_categories_without_allowing_rule(loaded),
        *_example_overlaps(rows, config),
    ]
    own_scores = [retrieval.score for retrieval in retrievals]
    return LintReport(
        pack=loaded.name,
        pack_version=loaded.manifest.version,
        pack_hash=loaded.content_hash,
        embedding_model=embedder.name,
        config=config,
        hit_rate=float(np.mean(ranks <= config.k)),
        floor=float(np.quantile(own_scores, config.floor_quantile)),
        rules=rows,
        misses=[r for r in retrievals if r.rank > config.k],
        findings=findings,
    )


def _rule_rows(
    pack: RulePack,
    vectors: _PackVectors,
    retrievals: Sequence[ExampleRetrieval],
    config: LintConfig,
) -> list[RuleLint]:
    similarity = vectors.wholes @ vectors.wholes.T
    np.fill_diagonal(similarity, -np.inf)
    rows = []
    for position, rule in enumerate(pack.rules):
        mine = np.flatnonzero(vectors.owner == position)
        allowed = [i for i in mine if vectors.kinds[i] == "allowed"]
        disallowed = [i for i in mine if vectors.kinds[i] == "disallowed"]
        hits = sum(retrievals[i].rank <= config.k for i in mine)
        nearest = int(similarity[position].argmax()) if len(pack.rules) > 1 else None
        rows.append(
            RuleLint(
                rule_id=rule.id,
                category=rule.category,
                examples=len(mine),
                hits=hits,
                hit_rate=hits / len(mine),
                nearest_rule_id=pack.rules[nearest].id if nearest is not None else None,
                nearest_similarity=(
                    float(similarity[position, nearest]) if nearest is not None else None
                ),
                allowed_disallowed_similarity=_mean_cosine(
                    vectors.examples[allowed], vectors.examples[disallowed]
                ),
                example_statement_similarity=_mean_cosine(
                    vectors.examples[mine], vectors.heads[position : position + 1]
                ),
                permissive=is_permissive(rule),
            )
        )
    return rows


def _duplicates(rules: Sequence[Rule], wholes: np.ndarray, config: LintConfig) -> list[LintFinding]:
    return [
        LintFinding(
            kind="duplicate",
            rule_ids=[rules[i].id, rules[j].id],
            detail=f"whole-rule embeddings at cosine {cosine:.3f} (threshold "
            f"{config.duplicate_threshold:.2f}): the retriever cannot tell them apart and they "
            "split the top k; merge them, or rewrite one so that each covers its own requests",
        )
        for i, j, cosine in similar_pairs(wholes, config.duplicate_threshold)
    ]


def _example_misses(
    rows: Sequence[RuleLint], retrievals: Sequence[ExampleRetrieval], config: LintConfig
) -> list[LintFinding]:
    findings = []
    for row in rows:
        if row.hit_rate >= config.min_hit_rate:
            continue
        missed = [r for r in retrievals if r.rule_id == row.rule_id and r.rank > config.k]
        instead = list(dict.fromkeys(r.top_rule_id for r in missed))
        worst = max(missed, key=lambda r: r.rank)
        findings.append(
            LintFinding(
                kind="example_miss",
                rule_ids=[row.rule_id, *instead],
                detail=f"{len(missed)} of {row.examples} examples do not retrieve the rule in "
                f"the top {config.k} (hit rate {row.hit_rate:.2f}, minimum "
                f"{config.min_hit_rate:.2f}); e.g. the {worst.kind} example {worst.text!r} "
                f"retrieves {worst.top_rule_id} first ({worst.top_score:.3f}) and this rule at "
                f"rank {worst.rank} ({worst.score:.3f}); say in the statement what these "
                "requests have in common, or move the examples to the rule they retrieve",
            )
        )
    return findings


def _categories_without_allowing_rule(pack: RulePack) -> list[LintFinding]:
    findings = []
    for category in pack.manifest.categories:
        members = [rule for rule in pack.rules if rule.category == category]
        if members and not any(is_permissive(rule) for rule in members):
            findings.append(
                LintFinding(
                    kind="no_allowed_rule",
                    rule_ids=[rule.id for rule in members],
                    detail=f"category {category!r} has {len(members)} rule(s) and none that "
                    "says what is fine to help with (severity low or tag utility); add one, "
                    "or the pack only teaches refusal for this category",
                )
            )
    return findings


def _example_overlaps(rows: Sequence[RuleLint], config: LintConfig) -> list[LintFinding]:
    return [
        LintFinding(
            kind="example_overlap",
            rule_ids=[row.rule_id],
            detail=f"its allowed and disallowed examples are closer to each other (mean cosine "
            f"{row.allowed_disallowed_similarity:.3f}) than to its title and statement "
            f"({row.example_statement_similarity:.3f}, margin {config.overlap_margin:.2f}): "
            "the statement is not what retrieves the rule; name the topic of the examples in "
            "the statement, and where the line between them runs",
        )
        for row in rows
        if row.allowed_disallowed_similarity
        > row.example_statement_similarity + config.overlap_margin
    ]
