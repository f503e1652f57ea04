"""GRPO and IFPO advantages as pure functions over one batch of rollouts.

A batch is three parallel sequences: the scalar reward of each rollout, whether the rollout
consulted the safety rules at least once (its *action class*: ``consult`` or ``direct``), and
the id of the group it belongs to (all rollouts sampled from one prompt share an id).

GRPO (as TRL 1.16's ``GRPOTrainer`` computes it) centres each reward on its group's mean and
divides by a standard deviation: the group's (``scale="group"``), the whole batch's
(``scale="batch"``) or none (``scale="none"``). The standard deviation carries Bessel's
correction and ``eps`` (1e-4 in TRL) is added to it, not to the variance.

IFPO re-weights each GRPO advantage by the inverse frequency of the rollout's action class,
``w_i = G / (K * n_c)``, so that each class present in a group carries the same total weight.
The exact formula of ASCL's IFPO (arXiv 2602.13562) is not public; this module implements our
own formulation of it, described in ``docs/ifpo.md``.

Everything here is numpy only: no trainer state, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, get_args

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_WEIGHT_CLIP",
    "GRPO_STD_EPS",
    "AdvantageStats",
    "Algo",
    "ApplyTo",
    "FrequencyScope",
    "RewardScale",
    "group_statistics",
    "grpo_advantages",
    "ifpo_advantages",
    "inverse_frequency_weights",
]

Algo: TypeAlias = Literal["ifpo", "grpo"]
"""The advantage estimator: IFPO (inverse-frequency weighted GRPO) or plain GRPO."""
RewardScale: TypeAlias = Literal["group", "batch", "none"]
FrequencyScope: TypeAlias = Literal["group", "batch"]
ApplyTo: TypeAlias = Literal["all", "positive"]

GRPO_STD_EPS: Final[float] = 1e-4
"""Added to the reward standard deviation before dividing; the constant TRL 1.16 hard-codes."""

DEFAULT_WEIGHT_CLIP: Final[tuple[float, float]] = (0.25, 4.0)
"""Bounds on an IFPO weight, so a class sampled once in a large group cannot dominate the step."""

# TRL logs a group as zero-variance when torch.isclose(std, 0) holds, i.e. std <= 1e-8.
_ZERO_STD_ATOL: Final[float] = 1e-8

_SCALES: Final[tuple[str, ...]] = get_args(RewardScale)
_FREQUENCY_SCOPES: Final[tuple[str, ...]] = get_args(FrequencyScope)
_APPLY_TO: Final[tuple[str, ...]] = get_args(ApplyTo)

Rewards: TypeAlias = Sequence[float] | npt.NDArray[np.floating]
Consulted: TypeAlias = Sequence[bool | int] | npt.NDArray[np.bool_ | np.integer]
GroupIds: TypeAlias = Sequence[Hashable] | npt.NDArray[np.generic]


class AdvantageStats(BaseModel):
    """Per-step diagnostics of a batch's advantages, for the training metrics log.

    For finite rewards, ``zero_variance_groups + nonzero_advantage_groups == num_groups``
    except for groups whose rewards differ by less than 1e-8: TRL counts those as zero-variance
    while their advantages are tiny but not zero.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    num_rollouts: int = Field(ge=1, description="Rollouts in the batch.")
    num_groups: int = Field(ge=1, description="Distinct group ids (prompts) in the batch.")
    zero_variance_groups: int = Field(
        ge=0, description="Groups whose reward std is <= 1e-8 (TRL's frac_reward_zero_std test)."
    )
    nonzero_advantage_groups: int = Field(
        ge=0, description="Groups with at least one non-zero advantage: the groups that teach."
    )
    both_classes_groups: int = Field(
        ge=0, description="Groups holding at least one consult and at least one direct rollout."
    )
    mixed_groups: int = Field(
        ge=0,
        description=(
            "Groups with both classes and non-zero reward variance: with frequency_scope='group', "
            "the only groups where IFPO's advantages differ from GRPO's."
        ),
    )
    weight_min: float = Field(description="Smallest IFPO weight after clipping.")
    weight_mean: float = Field(description="Mean IFPO weight after clipping, over rollouts.")
    weight_max: float = Field(description="Largest IFPO weight after clipping.")
    consult_rate: float = Field(
        ge=0.0, le=1.0, description="Fraction of rollouts that consulted at least once."
    )


@dataclass(frozen=True)
class _Groups:
    """Dense group codes: ``codes[i]`` is the group of rollout ``i``, numbered 0..count-1."""

    codes: npt.NDArray[np.intp]
    sizes: npt.NDArray[np.int64]

    @property
    def count(self) -> int:
        return len(self.sizes)

    @classmethod
    def from_ids(cls, group_ids: GroupIds, expected_len: int, against: str) -> _Groups:
        ids = list(group_ids)
        if len(ids) != expected_len:
            raise ValueError(
                f"group_ids has {len(ids)} entries but {against} has {expected_len}; "
                "pass one group id per rollout."
            )
        # Numbered in order of first appearance, so groups need not be contiguous or sorted.
        code_of: dict[Hashable, int] = {}
        codes = np.empty(expected_len, dtype=np.intp)
        for index, group_id in enumerate(ids):
            try:
                codes[index] = code_of.setdefault(group_id, len(code_of))
            except TypeError:
                raise ValueError(
                    f"group_ids[{index}] is {group_id!r} of type {type(group_id).__name__}, which "
                    "is not hashable; use a str, int or tuple as the group id."
                ) from None
        return cls(codes=codes, sizes=np.bincount(codes).astype(np.int64))

    @classmethod
    def whole_batch(cls, size: int) -> _Groups:
        return cls(codes=np.zeros(size, dtype=np.intp), sizes=np.array([size], dtype=np.int64))

    def sums(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        # float64 already (weights are); numpy's stubs type every bincount as integer counts.
        return np.bincount(self.codes, weights=values, minlength=self.count).astype(
            np.float64, copy=False
        )

    def means(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return self.sums(values) / self.sizes

    def stds(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Bessel-corrected std per group; 0 for a group of one rollout."""
        squared = (values - self.means(values)[self.codes]) ** 2
        degrees = np.maximum(self.sizes - 1, 1)
        return np.where(self.sizes > 1, np.sqrt(self.sums(squared) / degrees), 0.0)

    def constant(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Groups whose values are all exactly equal."""
        lowest = np.full(self.count, np.inf)
        highest = np.full(self.count, -np.inf)
        np.minimum.at(lowest, self.codes, values)
        np.maximum.at(highest, self.codes, values)
        return lowest == highest


def _check_option(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        choices = ", ".join(repr(choice) for choice in allowed)
        raise ValueError(f"{name}={value!r} is not a known option; use one of {choices}.")


def _as_rewards(rewards: Rewards) -> npt.NDArray[np.float64]:
    try:
        array = np.asarray(rewards, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"rewards must be a sequence of numbers: {error}.") from None
    if array.ndim != 1:
        raise ValueError(
            f"rewards must be one-dimensional (one scalar per rollout), got shape {array.shape}."
        )
    if array.size == 0:
        raise ValueError("rewards is empty; a batch needs at least one rollout.")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        index = int(bad[0])
        raise ValueError(
            f"rewards[{index}] is {array[index]}; every reward must be a finite number. "
            "Drop rollouts that could not be scored before computing advantages (TRL would zero "
            "their advantage silently; here that would hide a broken reward function)."
        )
    return array


def _as_consulted(consulted: Consulted, expected_len: int | None) -> npt.NDArray[np.bool_]:
    """Validate flags; ``expected_len=None`` when ``consulted`` itself sets the batch size."""
    values = list(consulted)
    if expected_len is None:
        if not values:
            raise ValueError("consulted is empty; a batch needs at least one rollout.")
    elif len(values) != expected_len:
        raise ValueError(
            f"consulted has {len(values)} entries but rewards has {expected_len}; "
            "pass one flag per rollout."
        )
    flags = np.empty(len(values), dtype=bool)
    for index, value in enumerate(values):
        # Strings are rejected on purpose: bool("False") is True.
        if isinstance(value, bool | np.bool_) or (
            isinstance(value, int | np.integer) and value in (0, 1)
        ):
            flags[index] = bool(value)
        else:
            raise ValueError(
                f"consulted[{index}] is {value!r}; use True/False (or 1/0) for whether the "
                "rollout called consult_safety_rules at least once."
            )
    return flags


def _check_weight_clip(weight_clip: tuple[float, float] | None) -> None:
    if weight_clip is None:
        return
    low, high = weight_clip
    # Written so that a NaN bound fails too.
    if not 0.0 < low <= high:
        raise ValueError(
            f"weight_clip={weight_clip!r} is invalid; use (w_min, w_max) with "
            "0 < w_min <= w_max, e.g. (0.25, 4.0), or None for no clipping."
        )


def _check_eps(eps: float) -> None:
    if not (math.isfinite(eps) and eps >= 0.0):
        raise ValueError(f"eps={eps!r} is invalid; use a finite number >= 0 (TRL uses 1e-4).")


def _grpo(
    rewards: npt.NDArray[np.float64], groups: _Groups, scale: str, eps: float
) -> npt.NDArray[np.float64]:
    deviations = rewards - groups.means(rewards)[groups.codes]
    if scale == "group":
        denominator = groups.stds(rewards)[groups.codes] + eps
    elif scale == "batch":
        batch_std = _Groups.whole_batch(len(rewards)).stds(rewards)[0]
        denominator = np.full_like(rewards, batch_std + eps)
    else:
        denominator = np.ones_like(rewards)
    # Zero-variance groups get exact zeros where TRL leaves rounding noise (deviation ~1e-17 / eps);
    # skipping them also keeps eps=0 from dividing 0 by 0.
    teaches = ~groups.constant(rewards)[groups.codes]
    return np.divide(deviations, denominator, out=np.zeros_like(rewards), where=teaches)


def _class_weights(
    consulted: npt.NDArray[np.bool_], scope: _Groups, weight_clip: tuple[float, float] | None
) -> npt.NDArray[np.float64]:
    n_consult = np.bincount(scope.codes, weights=consulted, minlength=scope.count)
    n_direct = scope.sizes - n_consult
    classes_present = (n_consult > 0).astype(np.int64) + (n_direct > 0)
    own_class_count = np.where(consulted, n_consult[scope.codes], n_direct[scope.codes])
    weights = scope.sizes[scope.codes] / (classes_present[scope.codes] * own_class_count)
    if weight_clip is not None:
        weights = np.clip(weights, *weight_clip)
    return weights


def _weight_scope(frequency_scope: str, groups: _Groups) -> _Groups:
    return groups if frequency_scope == "group" else _Groups.whole_batch(len(groups.codes))


def grpo_advantages(
    rewards: Rewards,
    group_ids: GroupIds,
    *,
    scale: RewardScale = "group",
    eps: float = GRPO_STD_EPS,
) -> npt.NDArray[np.float64]:
    """GRPO advantages ``(r_i - mean_g r) / (std + eps)``, matching TRL 1.16's ``GRPOTrainer``.

    Args:
        rewards: One finite scalar reward per rollout.
        group_ids: One hashable id per rollout; rollouts of the same prompt share it. Groups may
            be interleaved and of different sizes here; TRL itself assumes contiguous groups of
            exactly ``num_generations`` rollouts, so reorder before handing advantages to it.
        scale: ``"group"`` divides by each group's std, ``"batch"`` by the std of the whole
            batch (the mean is still the group's), ``"none"`` does not divide. TRL's
            ``scale_rewards=True/False`` mean ``"group"``/``"none"``.
        eps: Added to the std (not the variance) before dividing.

    Returns:
        A float64 array, one advantage per rollout. Stds are Bessel-corrected (ddof=1), as in
        TRL's ``nanstd``; a group whose rewards are all equal (including a group of one) gets
        exact zeros.

    Raises:
        ValueError: On unequal lengths, an empty batch, a non-finite reward (the message names
            its index), an unhashable group id or an unknown ``scale``.
    """
    _check_option("scale", scale, _SCALES)
    _check_eps(eps)
    values = _as_rewards(rewards)
    return _grpo(values, _Groups.from_ids(group_ids, len(values), against="rewards"), scale, eps)


def inverse_frequency_weights(
    consulted: Consulted,
    group_ids: GroupIds,
    *,
    frequency_scope: FrequencyScope = "group",
    weight_clip: tuple[float, float] | None = DEFAULT_WEIGHT_CLIP,
) -> npt.NDArray[np.float64]:
    """IFPO weight of each rollout: ``clip(G / (K * n_c), w_min, w_max)``.

    With ``frequency_scope="group"``, ``G`` is the size of the rollout's group, ``n_c`` the
    number of rollouts of its action class in that group and ``K`` the number of classes present
    there (1 or 2), so each class present carries total weight ``G / K`` and a one-class group
    gets weight 1 throughout. With ``"batch"`` the same counts are taken over the whole batch
    (``N / (K * N_c)``). ``weight_clip=None`` disables clipping.

    This is our formulation; the exact IFPO formula of arXiv 2602.13562 is not public.
    """
    _check_option("frequency_scope", frequency_scope, _FREQUENCY_SCOPES)
    _check_weight_clip(weight_clip)
    flags = _as_consulted(consulted, None)
    groups = _Groups.from_ids(group_ids, len(flags), against="consulted")
    return _class_weights(flags, _weight_scope(frequency_scope, groups), weight_clip)


def ifpo_advantages(
    rewards: Rewards,
    consulted: Consulted,
    group_ids: GroupIds,
    *,
    scale: RewardScale = "group",
    frequency_scope: FrequencyScope = "group",
    apply_to: ApplyTo = "all",
    weight_clip: tuple[float, float] | None = DEFAULT_WEIGHT_CLIP,
    eps: float = GRPO_STD_EPS,
) -> npt.NDArray[np.float64]:
    """IFPO advantages: each GRPO advantage times its rollout's inverse-frequency weight.

    ``A_hat_i = w_i * A_i`` with ``A_i`` from :func:`grpo_advantages` and ``w_i`` from
    :func:`inverse_frequency_weights`. Summed over one class ``c`` of a group (no clipping),
    this gives ``(G / K) * (mean_c r - mean r) / (std + eps)``: the push on a class depends on
    how much better or worse it does, not on how often it was sampled.

    Args:
        rewards: One finite scalar reward per rollout.
        consulted: Per rollout, whether it called ``consult_safety_rules`` at least once
            (bools or 0/1).
        group_ids: One hashable id per rollout; see :func:`grpo_advantages` on ordering.
        scale: Std normalisation of the underlying GRPO advantage; see :func:`grpo_advantages`.
        frequency_scope: Count class frequencies per ``"group"`` or over the whole ``"batch"``.
        apply_to: ``"all"`` weights every advantage; ``"positive"`` weights only ``A_i > 0``
            and leaves penalties as GRPO gives them.
        weight_clip: ``(w_min, w_max)`` bounds on the weight, or None.
        eps: Added to the std before dividing.

    The exact IFPO formula of arXiv 2602.13562 is not public; this is our formulation.

    Raises:
        ValueError: On unequal lengths, an empty batch, a non-finite reward or a non-boolean
            ``consulted`` value (both name the index), or an invalid option.
    """
    _check_option("scale", scale, _SCALES)
    _check_option("frequency_scope", frequency_scope, _FREQUENCY_SCOPES)
    _check_option("apply_to", apply_to, _APPLY_TO)
    _check_weight_clip(weight_clip)
    _check_eps(eps)
    values = _as_rewards(rewards)
    flags = _as_consulted(consulted, len(values))
    groups = _Groups.from_ids(group_ids, len(values), against="rewards")
    advantages = _grpo(values, groups, scale, eps)
    weights = _class_weights(flags, _weight_scope(frequency_scope, groups), weight_clip)
    if apply_to == "positive":
        return np.where(advantages > 0, weights * advantages, advantages)
    return weights * advantages


def group_statistics(
    rewards: Rewards,
    consulted: Consulted,
    group_ids: GroupIds,
    *,
    frequency_scope: FrequencyScope = "group",
    weight_clip: tuple[float, float] | None = DEFAULT_WEIGHT_CLIP,
) -> AdvantageStats:
    """Counts and weight summaries that tell whether IFPO has anything to act on this step.

    Which groups have a non-zero advantage does not depend on ``scale``, ``apply_to`` or
    ``eps`` (weights are positive), so those options are not taken here.
    """
    _check_option("frequency_scope", frequency_scope, _FREQUENCY_SCOPES)
    _check_weight_clip(weight_clip)
    values = _as_rewards(rewards)
    flags = _as_consulted(consulted, len(values))
    groups = _Groups.from_ids(group_ids, len(values), against="rewards")

    zero_variance = groups.stds(values) <= _ZERO_STD_ATOL
    advantages = _grpo(values, groups, "group", GRPO_STD_EPS)
    nonzero_advantage = groups.sums((advantages != 0).astype(np.float64)) > 0
    n_consult = groups.sums(flags.astype(np.float64))
    both_classes = (n_consult > 0) & (n_consult < groups.sizes)
    weights = _class_weights(flags, _weight_scope(frequency_scope, groups), weight_clip)

    return AdvantageStats(
        num_rollouts=len(values),
        num_groups=groups.count,
        zero_variance_groups=int(zero_variance.sum()),
        nonzero_advantage_groups=int(nonzero_advantage.sum()),
        both_classes_groups=int(both_classes.sum()),
        mixed_groups=int((both_classes & ~zero_variance).sum()),
        weight_min=float(weights.min()),
        weight_mean=float(weights.mean()),
        weight_max=float(weights.max()),
        consult_rate=float(flags.mean()),
    )
