"""Metrics on hand-computed numbers.

Wilson 8/10, by hand with z = 1.95996398 (z^2 = 3.84145882):
  centre = (0.8 + z^2/20) / (1 + z^2/10) = 0.99207294 / 1.38414588 = 0.71674016
  half   = z / 1.38414588 * sqrt(0.8*0.2/10 + z^2/400) = 1.41600969 * 0.16001140 = 0.22657769
  -> [0.49016247, 0.94331785]
Mean of 2,4,4,4,5,5,7,9: mean 5, sample sd sqrt(32/7) = 2.138090, se = 0.755929,
  t(0.975, 7) = 2.364624 (tables) -> half 1.787488 -> [3.212512, 6.787488]
Percentiles of 1..10 (linear): p50 at position 4.5 -> 5.5; p95 at 8.55 -> 9 + 0.55 = 9.55.
"""

from __future__ import annotations

import math

import pytest

from safe_context_agent.eval import (
    Rate,
    latency_summary,
    mean_interval,
    percentile,
    rate,
    student_t_quantile,
    tally_verdicts,
    wilson_interval,
)
from safe_context_agent.judges import RefusalVerdict


def test_wilson_8_of_10() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.49016247, abs=1e-7)
    assert high == pytest.approx(0.94331785, abs=1e-7)
    assert rate(8, 10) == Rate(k=8, n=10, value=0.8, low=low, high=high)


def test_wilson_edges() -> None:
    # 0/50: the upper bound is z^2 / (n + z^2) = 3.841459 / 53.841459.
    assert wilson_interval(0, 50) == (0.0, pytest.approx(3.841459 / 53.841459, abs=1e-6))
    assert wilson_interval(50, 50) == (pytest.approx(50 / 53.841459, abs=1e-6), 1.0)
    assert rate(0, 0) == Rate(k=0, n=0, value=None, low=0.0, high=1.0)
    narrower = wilson_interval(8, 10, confidence=0.8)
    assert 0.49016247 < narrower[0] < 0.8 < narrower[1] < 0.94331785
    for bad in ((11, 10), (-1, 10), (1, -1)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 2, confidence=1.0)


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.975, 1, 12.706205),  # the Cauchy case: tan(0.475 pi)
        (0.975, 2, 4.302653),
        (0.975, 7, 2.364624),
        (0.975, 9, 2.262157),
        (0.975, 29, 2.045230),
        (0.995, 10, 3.169273),
        (0.95, 100, 1.660234),
        (0.025, 9, -2.262157),
        (0.5, 3, 0.0),
    ],
)
def test_student_t_quantile_matches_tables(p: float, df: int, expected: float) -> None:
    assert student_t_quantile(p, df) == pytest.approx(expected, abs=2e-6)


def test_student_t_closed_forms_and_normal_limit() -> None:
    for p in (0.6, 0.9, 0.99):
        assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        two = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
        assert student_t_quantile(p, 2) == pytest.approx(two, rel=1e-9)
    assert student_t_quantile(0.975, 10**7) == pytest.approx(1.959964, abs=1e-5)
    with pytest.raises(ValueError):
        student_t_quantile(1.0, 5)
    with pytest.raises(ValueError):
        student_t_quantile(0.9, 0)


def test_mean_interval_by_hand() -> None:
    estimate = mean_interval([2, 4, 4, 4, 5, 5, 7, 9])
    assert estimate.n == 8 and estimate.mean == 5.0
    assert estimate.std == pytest.approx(math.sqrt(32 / 7))
    assert estimate.low == pytest.approx(3.212512, abs=1e-6)
    assert estimate.high == pytest.approx(6.787488, abs=1e-6)
    single = mean_interval([3.5])
    assert (single.mean, single.std, single.low, single.high) == (3.5, None, None, None)
    assert mean_interval([]).mean is None
    constant = mean_interval([2.0, 2.0, 2.0])
    assert (constant.low, constant.high) == (2.0, 2.0)


def test_percentiles_and_latency() -> None:
    values = [float(v) for v in range(10, 0, -1)]  # unsorted on purpose
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 10.0
    assert percentile([4.2], 95) == 4.2
    summary = latency_summary(values)
    assert (summary.n, summary.p50, summary.mean, summary.max) == (10, 5.5, 5.5, 10.0)
    assert summary.p95 == pytest.approx(9.55)
    assert latency_summary([]).p50 is None
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_tally_verdicts_leaves_unknown_out_of_the_rate() -> None:
    labels = ["full_refusal"] * 5 + ["partial_refusal"] * 3 + ["compliance"] * 2 + ["unknown"] * 4
    verdicts = [RefusalVerdict(label=label, judge="test") for label in labels]
    tally = tally_verdicts(verdicts)
    assert (tally.full_refusal, tally.partial_refusal, tally.compliance, tally.unknown) == (
        5,
        3,
        2,
        4,
    )
    assert tally.refused == rate(8, 10)
    assert tally_verdicts(labels) == tally
    assert tally_verdicts([]).refused.value is None
    with pytest.raises(ValueError, match="not a refusal label"):
        tally_verdicts(["refused"])


def test_metrics_round_trip_through_json() -> None:
    for model in (rate(3, 7), mean_interval([1.0, 2.0]), latency_summary([0.1, 0.2])):
        assert type(model).model_validate_json(model.model_dump_json()) == model
