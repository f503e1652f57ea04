"""Which texts of a rule are embedded, and how a rule's score comes from its rows: the strategy."""

from __future__ import annotations

from typing import Literal

import numpy as np

from safe_context_agent.rules._schema import Rule

__all__ = ["VectorStrategy", "rule_scores", "rule_texts"]

VectorStrategy = Literal["hybrid", "multi", "concat"]
"""How a rule is embedded and scored against a query (similarities are cosines):

* ``concat``: one vector for the whole rule (title, statement, examples joined);
* ``multi``: one vector for title + statement and one per example; the rule scores its best;
* ``hybrid`` (default): the mean of the two above. ``concat`` keeps the rule's overall topic,
  ``multi`` catches a request that closely matches one example; on the built-in packs the mean
  retrieved at least as well as the better of the two (docs/rule-packs.md has the figures).
"""


def rule_texts(rule: Rule, strategy: VectorStrategy) -> list[str]:
    """The texts to embed for ``rule``, one index row each (for ``hybrid``: the whole rule first,
    then title + statement, then each example)."""
    head = f"{rule.title}. {rule.statement}"
    parts = [head, *rule.allowed, *rule.disallowed]
    if strategy == "multi":
        return parts
    whole = " ".join(parts)
    if strategy == "concat":
        return [whole]
    return [whole, *parts]


def rule_scores(
    similarities: np.ndarray, starts: np.ndarray, strategy: VectorStrategy
) -> np.ndarray:
    """Scores of consecutive rules from their rows' similarities: rule ``i``'s rows, in
    :func:`rule_texts` order, begin at ``similarities[starts[i]]`` and end where the next begin."""
    if strategy == "concat":
        return similarities[starts]
    if strategy == "multi":
        return np.maximum.reduceat(similarities, starts)
    parts = similarities.copy()
    parts[starts] = -np.inf  # the whole-rule rows, kept out of the best-part maximum
    return (similarities[starts] + np.maximum.reduceat(parts, starts)) / 2
