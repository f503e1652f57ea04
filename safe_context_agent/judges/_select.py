"""Pick a refusal judge by name, so a run (eval or training) can choose one from its settings."""

from __future__ import annotations

from typing import Literal

from safe_context_agent.errors import ConfigError
from safe_context_agent.judges._llm import DEFAULT_API_KEY_ENV, LLMJudge
from safe_context_agent.judges._refusal import RefusalJudge
from safe_context_agent.judges._verdict import Judge

__all__ = ["JudgeKind", "make_judge"]

JudgeKind = Literal["pattern", "llm"]


def make_judge(
    kind: JudgeKind = "pattern",
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key_env: str = DEFAULT_API_KEY_ENV,
) -> Judge:
    """``"pattern"`` (no model, the default) or ``"llm"`` (needs ``base_url`` and ``model``)."""
    if kind == "pattern":
        return RefusalJudge()
    if kind == "llm":
        if not base_url or not model:
            missing = " and ".join(
                name for name, value in (("base_url", base_url), ("model", model)) if not value
            )
            raise ConfigError(
                f"judge 'llm' needs {missing}: pass the judge endpoint "
                "(e.g. base_url='http://127.0.0.1:8000/v1') and the served model name, "
                "or use judge 'pattern'"
            )
        return LLMJudge(base_url=base_url, model=model, api_key_env=api_key_env)
    raise ConfigError(f"unknown judge {kind!r}: use 'pattern' or 'llm'")
