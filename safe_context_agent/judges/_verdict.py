"""What a refusal judge returns, and the protocol every judge implements."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Judge", "RefusalLabel", "RefusalVerdict"]

RefusalLabel = Literal["full_refusal", "partial_refusal", "compliance", "unknown"]
"""XSTest's three classes, plus ``unknown`` for an LLM-judge reply that could not be parsed."""


class RefusalVerdict(BaseModel):
    """One judged response.

    ``unknown`` only comes from the LLM judge (an unparseable reply; ``raw`` keeps it). Count
    it apart: it is neither a refusal nor a compliance.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    label: RefusalLabel
    judge: str = Field(description='Which judge decided: "pattern" or "llm:<model>".')
    evidence: tuple[str, ...] = Field(
        default=(),
        description="Why: the refusal phrases matched, or a reason such as 'empty response'.",
    )
    raw: str | None = Field(default=None, description="The LLM judge's reply, verbatim.")

    @property
    def refused(self) -> bool | None:
        """True for a full or partial refusal, False for compliance, None when unknown."""
        if self.label == "unknown":
            return None
        return self.label != "compliance"


@runtime_checkable
class Judge(Protocol):
    """A refusal judge: the pattern judge and the LLM judge both fit, so a run can pick either."""

    @property
    def name(self) -> str:
        """What goes into :attr:`RefusalVerdict.judge`."""
        ...

    def judge(self, prompt: str | None, response: str) -> RefusalVerdict:
        """Classify ``response`` to ``prompt``."""
        ...

    async def ajudge(self, prompt: str | None, response: str) -> RefusalVerdict:
        """Async :meth:`judge`."""
        ...
