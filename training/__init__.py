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
    from safe_context_training._metrics import (
        StepMetrics,
        plot_metrics,
        read_metrics,
    )
    from safe_context_training._online import (
        OnlineResult,
        OnlineSource,
        load_lora_adapter,
        run_online,
        unload_lora_adapter,
    )
    from safe_context_training._options import (
        DEFAULT_ONLINE_SAMPLING,
        IFPOOptions,
        OnlineOptions,
        RewardOptions,
        SFTOptions,
        weight_clip_bounds,
    )
    from safe_context_training._prompts import (
        recipe_prompts,
        suite_sources,
    )
    from safe_context_training._recipe import (
        QUICK_RECIPE,
        RecipeConfig,
        RecipeResult,
        run_recipe,
    )
    from safe_context_training._refusals import (
        REFUSAL_TEMPLATES,
        write_refusal,
    )
    from safe_context_training._replay import (
        ReplayGroup,
        ReplayReport,
        ReplaySample,
        ReplaySet,
        ReplayTrajectory,
        load_replay,
        replay_trajectory,
    )
    from safe_context_training._rewards import (
        BehaviourReward,
        CombinedReward,
        RewardBreakdown,
        RewardError,
        RewardTerm,
        TraceReward,
        correctness_reward,
        default_reward,
        format_penalty,
        llm_judge_reward,
        reward_from_options,
        score_trajectories,
    )
    from safe_context_training._sft import (
        SFTResult,
        sft_dataset,
        train_sft,
    )
    from safe_context_training._ship import ShippedAdapter, ship
    from safe_context_training._synthesize import (
        SynthesisConfig,
        SynthesisReport,
        assign_kind,
        asynthesize,
        concern_query,
        distill_demonstrations,
        synthesize,
    )
    from safe_context_training._trainer import (
        IFPOConfig,
        IFPOTrainer,
        NonFiniteLossError,
        ReplaySource,
        RolloutSource,
        TrainResult,
        load_policy,
        train_offline,
    )

__all__ = [
    "DEFAULT_ONLINE_SAMPLING",
    "DEFAULT_WEIGHT_CLIP",
    "GRPO_STD_EPS",
    "QUICK_RECIPE",
    "REFUSAL_TEMPLATES",
    "AdvantageStats",
    "ApplyTo",
    "BehaviourReward",
    "CombinedReward",
    "FrequencyScope",
    "IFPOConfig",
    "IFPOOptions",
    "IFPOTrainer",
    "NonFiniteLossError",
    "OnlineOptions",
    "OnlineResult",
    "OnlineSource",
    "RecipeConfig",
    "RecipeResult",
    "ReplayGroup",
    "ReplayReport",
    "ReplaySample",
    "ReplaySet",
    "ReplaySource",
    "ReplayTrajectory",
    "RewardBreakdown",
    "RewardError",
    "RewardOptions",
    "RewardScale",
    "RewardTerm",
    "RolloutSource",
    "SFTOptions",
    "SFTResult",
    "ShippedAdapter",
    "StepMetrics",
    "SynthesisConfig",
    "SynthesisReport",
    "TraceReward",
    "TrainResult",
    "assign_kind",
    "asynthesize",
    "concern_query",
    "correctness_reward",
    "default_reward",
    "distill_demonstrations",
    "format_penalty",
    "group_statistics",
    "grpo_advantages",
    "ifpo_advantages",
    "inverse_frequency_weights",
    "llm_judge_reward",
    "load_lora_adapter",
    "load_policy",
    "load_replay",
    "plot_metrics",
    "read_metrics",
    "recipe_prompts",
    "replay_trajectory",
    "reward_from_options",
    "run_online",
    "run_recipe",
    "score_trajectories",
    "sft_dataset",
    "ship",
    "suite_sources",
    "synthesize",
    "train_offline",
    "train_sft",
    "unload_lora_adapter",
    "weight_clip_bounds",
    "write_refusal",
]

# Public name -> private module (relative to this package) that defines it.
_EXPORTS: dict[str, str] = {
    "DEFAULT_ONLINE_SAMPLING": "._options",
    "IFPOOptions": "._options",
    "OnlineOptions": "._options",
    "RewardOptions": "._options",
    "SFTOptions": "._options",
    "weight_clip_bounds": "._options",
    "reward_from_options": "._rewards",
    "AdvantageStats": "._advantages",
    "ApplyTo": "._advantages",
    "DEFAULT_WEIGHT_CLIP": "._advantages",
    "FrequencyScope": "._advantages",
    "GRPO_STD_EPS": "._advantages",
    "RewardScale": "._advantages",
    "group_statistics": "._advantages",
    "grpo_advantages": "._advantages",
    "ifpo_advantages": "._advantages",
    "inverse_frequency_weights": "._advantages",
    "ReplayGroup": "._replay",
    "ReplayReport": "._replay",
    "ReplaySample": "._replay",
    "ReplaySet": "._replay",
    "ReplayTrajectory": "._replay",
    "load_replay": "._replay",
    "replay_trajectory": "._replay",
    "BehaviourReward": "._rewards",
    "CombinedReward": "._rewards",
    "RewardBreakdown": "._rewards",
    "RewardError": "._rewards",
    "RewardTerm": "._rewards",
    "TraceReward": "._rewards",
    "correctness_reward": "._rewards",
    "default_reward": "._rewards",
    "format_penalty": "._rewards",
    "llm_judge_reward": "._rewards",
    "score_trajectories": "._rewards",
    "StepMetrics": "._metrics",
    "plot_metrics": "._metrics",
    "read_metrics": "._metrics",
    "IFPOConfig": "._trainer",
    "IFPOTrainer": "._trainer",
    "NonFiniteLossError": "._trainer",
    "ReplaySource": "._trainer",
    "RolloutSource": "._trainer",
    "TrainResult": "._trainer",
    "load_policy": "._trainer",
    "train_offline": "._trainer",
    "OnlineResult": "._online",
    "OnlineSource": "._online",
    "load_lora_adapter": "._online",
    "run_online": "._online",
    "unload_lora_adapter": "._online",
    "SFTResult": "._sft",
    "sft_dataset": "._sft",
    "train_sft": "._sft",
    "SynthesisConfig": "._synthesize",
    "SynthesisReport": "._synthesize",
    "assign_kind": "._synthesize",
    "concern_query": "._synthesize",
    "distill_demonstrations": "._synthesize",
    "synthesize": "._synthesize",
    "asynthesize": "._synthesize",
    "RecipeConfig": "._recipe",
    "RecipeResult": "._recipe",
    "QUICK_RECIPE": "._recipe",
    "run_recipe": "._recipe",
    "ship": "._ship",
    "ShippedAdapter": "._ship",
    "recipe_prompts": "._prompts",
    "suite_sources": "._prompts",
    "REFUSAL_TEMPLATES": "._refusals",
    "write_refusal": "._refusals",
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
