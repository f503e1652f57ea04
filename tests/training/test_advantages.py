"""GRPO / IFPO advantages: hand-computed groups, the class-sum identity, and TRL parity.

Conventions in the comments: G group size, n_c rollouts of class c, K classes present,
std is Bessel-corrected (divide the squared deviations by G - 1), EPS = 1e-4 is added to std.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError
from safe_context_training import (
    DEFAULT_WEIGHT_CLIP,
    GRPO_STD_EPS,
    AdvantageStats,
    group_statistics,
    grpo_advantages,
    ifpo_advantages,
    inverse_frequency_weights,
)

EPS = GRPO_STD_EPS
C, D = True, False  # consult, direct


def test_defaults_match_trl_and_the_brief() -> None:
    assert EPS == 1e-4
    assert DEFAULT_WEIGHT_CLIP == (0.25, 4.0)


# --- hand-computed groups -------------------------------------------------------------------


def test_mixed_group() -> None:
    # rewards 1,1,1,0 ; classes C,C,C,D ; G = 4
    # mean = 3/4 = 0.75 ; deviations +0.25 (x3), -0.75
    # squared: 0.0625 * 3 + 0.5625 = 0.75 ; var = 0.75 / 3 = 0.25 ; std = 0.5
    # GRPO: +0.25 / (0.5 + EPS), -0.75 / (0.5 + EPS)
    # weights: K = 2 ; consult 4 / (2 * 3) = 2/3 ; direct 4 / (2 * 1) = 2 (inside [0.25, 4])
    # IFPO: (2/3)(0.25) = 1/6 -> (1/6) / (0.5 + EPS) ; 2 * (-0.75) = -1.5 -> -1.5 / (0.5 + EPS)
    rewards, consulted, groups = [1.0, 1.0, 1.0, 0.0], [C, C, C, D], ["p"] * 4
    grpo = grpo_advantages(rewards, groups)
    np.testing.assert_allclose(grpo, np.array([0.25, 0.25, 0.25, -0.75]) / (0.5 + EPS))
    weights = inverse_frequency_weights(consulted, groups)
    np.testing.assert_allclose(weights, [2 / 3, 2 / 3, 2 / 3, 2.0])
    ifpo = ifpo_advantages(rewards, consulted, groups)
    np.testing.assert_allclose(ifpo, np.array([1 / 6, 1 / 6, 1 / 6, -1.5]) / (0.5 + EPS))


@pytest.mark.parametrize("flag", [C, D], ids=["all-consult", "none-consult"])
def test_single_class_group_is_plain_grpo(flag: bool) -> None:
    # rewards 1,0,1,0 ; mean 0.5 ; deviations +-0.5 ; squared sum 4 * 0.25 = 1
    # var = 1 / 3 ; std = sqrt(1/3) ; K = 1, n_c = G = 4 -> w = 4 / (1 * 4) = 1
    rewards, consulted, groups = [1.0, 0.0, 1.0, 0.0], [flag] * 4, [7] * 4
    expected = np.array([0.5, -0.5, 0.5, -0.5]) / (np.sqrt(1 / 3) + EPS)
    np.testing.assert_allclose(inverse_frequency_weights(consulted, groups), [1.0] * 4)
    np.testing.assert_allclose(grpo_advantages(rewards, groups), expected)
    np.testing.assert_allclose(ifpo_advantages(rewards, consulted, groups), expected)


def test_zero_variance_group_gives_exact_zeros() -> None:
    # 0.7 three times: the float mean of three 0.7s is not exactly 0.7, so without the explicit
    # zeroing the deviation would be ~1e-16 and the advantage ~1e-12.
    rewards, consulted, groups = [0.7, 0.7, 0.7], [C, D, D], ["q"] * 3
    for scale in ("group", "batch", "none"):
        assert grpo_advantages(rewards, groups, scale=scale).tolist() == [0.0, 0.0, 0.0]
        assert ifpo_advantages(rewards, consulted, groups, scale=scale).tolist() == [0.0] * 3
    stats = group_statistics(rewards, consulted, groups)
    assert stats.zero_variance_groups == 1
    assert stats.nonzero_advantage_groups == 0
    assert stats.both_classes_groups == 1
    assert stats.mixed_groups == 0


def test_group_of_one_rollout_gets_zero() -> None:
    assert grpo_advantages([3.0, 1.0, 0.0], ["solo", "pair", "pair"])[0] == 0.0


def test_clipping_binds_on_both_sides() -> None:
    # G = 10: 9 consult rewarded 1, 1 direct rewarded 0
    # unclipped: consult 10 / (2 * 9) = 5/9 = 0.5556 ; direct 10 / (2 * 1) = 5
    # default clip (0.25, 4): consult 5/9 stays, direct 5 -> 4
    # clip (0.6, 1.5): consult 5/9 -> 0.6, direct 5 -> 1.5
    # GRPO: mean 0.9 ; deviations +0.1 (x9), -0.9 ; squared 9 * 0.01 + 0.81 = 0.9
    # var 0.9 / 9 = 0.1 ; std = sqrt(0.1)
    rewards = [1.0] * 9 + [0.0]
    consulted = [C] * 9 + [D]
    groups = ["g"] * 10
    np.testing.assert_allclose(
        inverse_frequency_weights(consulted, groups, weight_clip=None), [5 / 9] * 9 + [5.0]
    )
    np.testing.assert_allclose(inverse_frequency_weights(consulted, groups), [5 / 9] * 9 + [4.0])
    np.testing.assert_allclose(
        inverse_frequency_weights(consulted, groups, weight_clip=(0.6, 1.5)), [0.6] * 9 + [1.5]
    )
    std = np.sqrt(0.1)
    np.testing.assert_allclose(
        ifpo_advantages(rewards, consulted, groups),
        [5 / 9 * 0.1 / (std + EPS)] * 9 + [4.0 * -0.9 / (std + EPS)],
    )
    stats = group_statistics(rewards, consulted, groups)
    # Clipping is the only thing that moves the mean weight off 1: (9 * 5/9 + 4) / 10 = 0.9
    assert stats.weight_mean == pytest.approx(0.9)
    assert (stats.weight_min, stats.weight_max) == pytest.approx((5 / 9, 4.0))


def test_batch_frequency_scope() -> None:
    # group a: C,C,C,C ; group b: C,C,D,D
    # group scope: a has K = 1 -> 1 ; b has 4 / (2 * 2) = 1 -> all ones
    # batch scope: N = 8, N_consult = 6, N_direct = 2, K = 2
    #   consult 8 / (2 * 6) = 2/3 ; direct 8 / (2 * 2) = 2
    consulted = [C, C, C, C, C, C, D, D]
    groups = ["a"] * 4 + ["b"] * 4
    np.testing.assert_allclose(inverse_frequency_weights(consulted, groups), [1.0] * 8)
    np.testing.assert_allclose(
        inverse_frequency_weights(consulted, groups, frequency_scope="batch"),
        [2 / 3] * 6 + [2.0] * 2,
    )
    # group b rewards 1,1,0,0 : mean 0.5, deviations +-0.5, var 1/3 ; group a constant -> 0
    rewards = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    scale = np.sqrt(1 / 3) + EPS
    np.testing.assert_allclose(
        ifpo_advantages(rewards, consulted, groups, frequency_scope="batch"),
        [0.0] * 4 + [2 / 3 * 0.5 / scale] * 2 + [2.0 * -0.5 / scale] * 2,
    )


def test_apply_to_positive_leaves_penalties_alone() -> None:
    # the mixed group above: weights 2/3 (consult, positive A) and 2 (direct, negative A)
    # positive: consult (2/3)(0.25) / (0.5 + EPS) ; direct keeps -0.75 / (0.5 + EPS)
    rewards, consulted, groups = [1.0, 1.0, 1.0, 0.0], [C, C, C, D], ["p"] * 4
    np.testing.assert_allclose(
        ifpo_advantages(rewards, consulted, groups, apply_to="positive"),
        np.array([1 / 6, 1 / 6, 1 / 6, -0.75]) / (0.5 + EPS),
    )
    # and the reverse: the rare direct rollout wins -> its credit is doubled, consults keep GRPO
    # rewards 0,0,0,1 : deviations -0.25 (x3), +0.75 ; std 0.5 ; direct 2 * 0.75 = 1.5
    np.testing.assert_allclose(
        ifpo_advantages([0.0, 0.0, 0.0, 1.0], consulted, groups, apply_to="positive"),
        np.array([-0.25, -0.25, -0.25, 1.5]) / (0.5 + EPS),
    )


def test_non_contiguous_group_ids() -> None:
    # two interleaved groups of 4 with unhashable-free but unordered ids
    # x: rewards 1,0,1,1 classes C,D,C,D ; y: rewards 2,2,0,0 classes C,C,C,D
    # x: mean 0.75 ; dev .25,-.75,.25,.25 ; sq .0625*3 + .5625 = .75 ; var .25 ; std .5
    #    weights: K=2, n_C = n_D = 2 -> 4/(2*2) = 1 each -> IFPO = GRPO
    # y: mean 1 ; dev 1,1,-1,-1 ; sq 4 ; var 4/3 ; std sqrt(4/3)
    #    weights: C 4/(2*3) = 2/3, D 4/(2*1) = 2
    order = ["y", "x", "x", "y", "x", "y", "y", "x"]
    rewards = [2.0, 1.0, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0]
    consulted = [C, C, D, C, C, C, D, D]
    sx, sy = 0.5 + EPS, np.sqrt(4 / 3) + EPS
    expected = [2 / 3 / sy, 0.25 / sx, -0.75 / sx, 2 / 3 / sy, 0.25 / sx, -2 / 3 / sy, -2 / sy]
    expected.append(0.25 / sx)
    np.testing.assert_allclose(ifpo_advantages(rewards, consulted, order), expected)

    # Sorting the same rollouts into contiguous groups permutes the result and nothing else.
    permutation = np.argsort(order, kind="stable")
    contiguous = ifpo_advantages(
        np.asarray(rewards)[permutation],
        np.asarray(consulted)[permutation],
        np.asarray(order)[permutation],
    )
    np.testing.assert_allclose(contiguous, np.asarray(expected)[permutation])


def test_scale_none_and_batch() -> None:
    # group a: rewards 1,0 ; group b: rewards 1,1 ; group means 0.5 and 1
    # none : deviations 0.5, -0.5, 0, 0
    # batch: batch mean 0.75 ; dev .25,-.75,.25,.25 ; sq .75 ; var .75/3 = .25 ; std .5
    #        -> 0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS), 0, 0
    # group: group a std = sqrt(0.5) (two values 1, 0: sq .5, var .5 / 1)
    rewards, groups = [1.0, 0.0, 1.0, 1.0], ["a", "a", "b", "b"]
    np.testing.assert_allclose(grpo_advantages(rewards, groups, scale="none"), [0.5, -0.5, 0, 0])
    np.testing.assert_allclose(
        grpo_advantages(rewards, groups, scale="batch"),
        [0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS), 0, 0],
    )
    s = np.sqrt(0.5) + EPS
    np.testing.assert_allclose(grpo_advantages(rewards, groups), [0.5 / s, -0.5 / s, 0, 0])


def test_docs_worked_example() -> None:
    # docs/ifpo.md: G = 8, seven consulting rollouts, one direct.
    # case "consult wins": 1 x7, 0 x1 -> mean 7/8 ; dev 1/8 (x7), -7/8 ; sq 7/64 + 49/64 = 56/64
    # var (56/64) / 7 = 1/8 ; std = sqrt(1/8) = 0.35355 ; w_consult = 8/14 = 4/7, w_direct = 4
    consulted, groups = [C] * 7 + [D], [0] * 8
    s = np.sqrt(1 / 8) + EPS
    consult_wins = ifpo_advantages([1.0] * 7 + [0.0], consulted, groups)
    np.testing.assert_allclose(consult_wins, [4 / 7 * 1 / 8 / s] * 7 + [4 * -7 / 8 / s])
    np.testing.assert_allclose(np.round(consult_wins[[0, 7]], 2), [0.20, -9.90])
    # group total (n_direct - n_consult) * Δ / (2σ) = (1 - 7) * 1 / (2 s): no longer zero
    assert consult_wins.sum() == pytest.approx(-6 / (2 * s))
    direct_wins = ifpo_advantages([0.0] * 7 + [1.0], consulted, groups, apply_to="positive")
    np.testing.assert_allclose(np.round(direct_wins[[0, 7]], 2), [-0.35, 9.90])


# --- the class-sum identity -----------------------------------------------------------------


def test_class_sums_identity_on_random_groups() -> None:
    # GRPO: sum_{i in c} A_i = n_c (mean_c r - mean r) / (std + EPS)
    # IFPO: sum_{i in c} A_hat_i = (G / K) (mean_c r - mean r) / (std + EPS)   (no clipping)
    rng = np.random.default_rng(20260213)
    for _ in range(50):
        sizes = rng.integers(2, 13, size=rng.integers(1, 6))
        groups = np.repeat(np.arange(len(sizes)), sizes)
        rng.shuffle(groups)
        rewards = rng.normal(size=len(groups)).round(1)  # rounding makes some ties
        consulted = rng.random(len(groups)) < rng.uniform(0.1, 0.9)
        grpo = grpo_advantages(rewards, groups)
        ifpo = ifpo_advantages(rewards, consulted, groups, weight_clip=None)
        for g, size in enumerate(sizes):
            members = groups == g
            r = rewards[members]
            spread = r.std(ddof=1) + EPS
            classes = [flag for flag in (C, D) if (consulted[members] == flag).any()]
            for flag in classes:
                own = members & (consulted == flag)
                edge = rewards[own].mean() - r.mean()
                if np.all(r == r[0]):
                    edge = 0.0  # zero-variance groups are zeroed, as in GRPO
                n_c = own.sum()
                assert grpo[own].sum() == pytest.approx(n_c * edge / spread, abs=1e-9)
                assert ifpo[own].sum() == pytest.approx(
                    size / len(classes) * edge / spread, abs=1e-9
                )


def test_weights_average_to_one_without_clipping() -> None:
    # sum over a group of G / (K n_c) is sum_c n_c G / (K n_c) = G, so the mean is exactly 1
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(20), 6)
    consulted = rng.random(len(groups)) < 0.8
    for scope in ("group", "batch"):
        weights = inverse_frequency_weights(
            consulted, groups, frequency_scope=scope, weight_clip=None
        )
        assert weights.mean() == pytest.approx(1.0)


# --- statistics ------------------------------------------------------------------------------


def test_group_statistics_counts() -> None:
    # a: mixed classes, mixed rewards      -> both classes, mixed, teaches
    # b: mixed classes, constant rewards   -> both classes, zero variance
    # c: consult only, mixed rewards       -> teaches, one class
    # d: one rollout                       -> zero variance
    groups = ["a", "a", "b", "b", "c", "c", "c", "d"]
    rewards = [1.0, 0.0, 0.5, 0.5, 1.0, 0.0, 0.0, 0.3]
    consulted = [C, D, C, D, C, C, C, D]
    stats = group_statistics(rewards, consulted, groups)
    assert stats == AdvantageStats(
        num_rollouts=8,
        num_groups=4,
        zero_variance_groups=2,
        nonzero_advantage_groups=2,
        both_classes_groups=2,
        mixed_groups=1,
        weight_min=1.0,  # a, b: 2 / (2 * 1) ; c, d: one class
        weight_mean=1.0,
        weight_max=1.0,
        consult_rate=5 / 8,
    )
    assert AdvantageStats.model_validate_json(stats.model_dump_json()) == stats


def test_group_statistics_counts_near_constant_groups_like_trl() -> None:
    # std ~7e-10 <= 1e-8: TRL logs the group as zero-std, yet its advantages are not exactly zero
    stats = group_statistics([0.5, 0.5 + 1e-9], [C, D], ["g", "g"])
    assert stats.zero_variance_groups == 1
    assert stats.nonzero_advantage_groups == 1
    assert stats.mixed_groups == 0


def test_stats_model_is_strict() -> None:
    with pytest.raises(ValidationError):
        AdvantageStats.model_validate({"schema_version": 2})


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: grpo_advantages([1.0, 2.0], [0]), "group_ids has 1 entries but rewards has 2"),
        (lambda: grpo_advantages([1.0, float("nan"), 0.0], [0] * 3), r"rewards\[1\] is nan"),
        (lambda: grpo_advantages([float("inf")], [0]), r"rewards\[0\] is inf"),
        (lambda: grpo_advantages([], []), "rewards is empty"),
        (lambda: grpo_advantages([[1.0, 2.0]], [0]), "one-dimensional"),
        (lambda: grpo_advantages(["high"], [0]), "sequence of numbers"),
        (lambda: grpo_advantages([1.0], [[0]]), r"group_ids\[0\] is \[0\].*not hashable"),
        (lambda: grpo_advantages([1.0], [0], scale="std"), "scale='std' is not a known option"),
        (lambda: grpo_advantages([1.0], [0], eps=-1.0), "eps=-1.0 is invalid"),
        (lambda: ifpo_advantages([1.0, 0.0], [C], [0, 0]), "consulted has 1 entries"),
        (lambda: ifpo_advantages([1.0, 0.0], [C, 2], [0, 0]), r"consulted\[1\] is 2"),
        (lambda: ifpo_advantages([1.0], ["False"], [0]), r"consulted\[0\] is 'False'"),
        (lambda: ifpo_advantages([1.0], [None], [0]), r"consulted\[0\] is None"),
        (lambda: ifpo_advantages([1.0], [C], [0], apply_to="neg"), "apply_to='neg'"),
        (
            lambda: ifpo_advantages([1.0], [C], [0], frequency_scope="prompt"),
            "frequency_scope='prompt'",
        ),
        (lambda: ifpo_advantages([1.0], [C], [0], weight_clip=(4.0, 0.25)), "0 < w_min <= w_max"),
        (lambda: ifpo_advantages([1.0], [C], [0], weight_clip=(0.0, 1.0)), "0 < w_min <= w_max"),
        (
            lambda: inverse_frequency_weights([C], [0], weight_clip=(float("nan"), 1.0)),
            "weight_clip",
        ),
        (lambda: inverse_frequency_weights([], []), "consulted is empty"),
        (lambda: inverse_frequency_weights([C, D], [0]), "but consulted has 2"),
        (lambda: group_statistics([1.0], [C], [0], frequency_scope="x"), "frequency_scope='x'"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_bool_like_consulted_values_are_accepted() -> None:
    expected = inverse_frequency_weights([C, D, D], [0, 0, 0])
    for flags in ([1, 0, 0], np.array([True, False, False]), np.array([1, 0, 0])):
        np.testing.assert_array_equal(inverse_frequency_weights(flags, [0, 0, 0]), expected)


# --- package surface ------------------------------------------------------------------------


def test_package_import_is_light_and_exports_resolve() -> None:
    code = (
        "import sys, safe_context_training as t\n"
        "assert 'numpy' not in sys.modules, 'numpy imported eagerly'\n"
        "heavy = {'torch', 'trl', 'transformers', 'peft'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        # The trainer exports need trl; resolving every name afterwards checks the export table.
        "for name in t.__all__: getattr(t, name)\n"
        "assert set(t.__all__) <= set(dir(t))\n"
        "try:\n    t.no_such_name\nexcept AttributeError: pass\nelse: raise SystemExit(1)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- parity with TRL ------------------------------------------------------------------------


def _trl_advantages(rewards: np.ndarray, num_generations: int, scale_rewards: str) -> np.ndarray:
    """TRL 1.16 GRPOTrainer._generate_and_score_completions, sum_then_normalize branch."""
    torch = pytest.importorskip("torch")
    nanstd = pytest.importorskip("trl.trainer.utils").nanstd

    r = torch.tensor(rewards, dtype=torch.float64)
    grouped = r.view(-1, num_generations)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations, dim=0)
    if scale_rewards in ("group", "none"):
        std = nanstd(grouped, dim=1).repeat_interleave(num_generations, dim=0)
    else:
        std = nanstd(r).expand_as(r)
    advantages = r - mean
    if scale_rewards != "none":
        advantages = advantages / (std + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_matches_trl(scale: str) -> None:
    rng = np.random.default_rng(3)
    num_generations = 6
    rewards = rng.normal(size=(5, num_generations))
    rewards[1] = 0.25  # a zero-variance group
    rewards[2] = rng.integers(0, 2, size=num_generations)  # binary rewards
    flat = rewards.ravel()
    groups = np.repeat(np.arange(5), num_generations)
    expected = _trl_advantages(flat, num_generations, scale)
    # rtol 1e-7, not 1e-12: TRL's nanstd forms Bessel's count / (count - 1) in float32 even for
    # float64 input (integer tensor division), which moves its std by ~2e-8 relative.
    np.testing.assert_allclose(
        grpo_advantages(flat, groups, scale=scale), expected, rtol=1e-7, atol=1e-12
    )
