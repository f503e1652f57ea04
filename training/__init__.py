"""Training for safe-context-agent: replay logged traces into IFPO updates.

Public names are resolved lazily (PEP 562) from the table below, so ``import
safe_context_training`` stays cheap and pulls in torch / trl only when a name that needs them is
first used. To export a new name, add it to ``_EXPORTS``, ``__all__`` and the
``TYPE_CHECKING`` block.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safe_context_training._advantages import (
        DEFAULT_WEIGHT_CLIP,
        GRPO_STD_EPS,
        AdvantageStats,
        ApplyTo,
        FrequencyScope,
        RewardScale,
        group_statistics,
        grpo_advantages,
        ifpo_advantages,
        inverse_frequency_weights,
    )

__all__ = [
    "DEFAULT_WEIGHT_CLIP",
    "GRPO_STD_EPS",
    "AdvantageStats",
    "ApplyTo",
    "FrequencyScope",
    "RewardScale",
    "group_statistics",
    "grpo_advantages",
    "ifpo_advantages",
    "inverse_frequency_weights",
]

# Public name -> private module (relative to this package) that defines it.
_EXPORTS: dict[str, str] = {
    "DEFAULT_WEIGHT_CLIP": "._advantages",
    "GRPO_STD_EPS": "._advantages",
    "AdvantageStats": "._advantages",
    "ApplyTo": "._advantages",
    "FrequencyScope": "._advantages",
    "RewardScale": "._advantages",
    "grpo_advantages": "._advantages",
    "group_statistics": "._advantages",
    "ifpo_advantages": "._advantages",
    "inverse_frequency_weights": "._advantages",
}


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
