"""Which texts of a rule are embedded: the retrieval strategy."""

from __future__ import annotations

from typing import Literal

from safe_context_agent.rules._schema import Rule

__all__ = ["VectorStrategy", "rule_texts"]

VectorStrategy = Literal["multi", "concat"]
"""``multi``: one vector for title + statement and one per example; a rule scores the best of its
vectors. ``concat``: one vector per rule, from all of those texts joined."""


def rule_texts(rule: Rule, strategy: VectorStrategy) -> list[str]:
    """The texts to embed for ``rule``; each becomes one row of the index."""
    head = f"{rule.title}. {rule.statement}"
    if strategy == "multi":
        return [head, *rule.allowed, *rule.disallowed]
    return [" ".join([head, *rule.allowed, *rule.disallowed])]
