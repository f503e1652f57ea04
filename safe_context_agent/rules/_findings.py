"""The one shape of a problem that `sca rules lint` and `sca rules audit` report."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Finding", "share"]


class Finding(BaseModel):
    """One problem: its kind, the rules it is about, and what was measured, in words.

    Lint and audit narrow ``kind`` to their own kinds; the JSON of both is
    ``{"kind": ..., "rule_ids": [...], "detail": ...}`` so a pack's CI reads them alike.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    rule_ids: list[str] = Field(description="The rules concerned (empty when none is to blame).")
    detail: str = Field(description="What was measured and what to change, in one sentence.")


def share(part: float, whole: float) -> float | None:
    """``part / whole``, or None when there is nothing to divide (no runs is not 0 %)."""
    return part / whole if whole else None
