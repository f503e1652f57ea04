"""Pure metric functions: rates with Wilson intervals, latency percentiles, means with t intervals.

Choices, and why:

- Rates (refusal rate, accuracy, consult rate) use the Wilson score interval. Unlike the
  normal ("Wald") interval it stays inside [0, 1] and keeps close to its nominal coverage
  at the small n and extreme rates that safety evals produce (0/50 harmful answers).
- Means of per-item numbers (tokens, rewards, consultations per prompt) use the Student t
  interval: exact for normal data and, by the central limit theorem, accurate for the
  hundreds of bounded values an eval produces. It is deterministic, which a bootstrap
  is not, so reports are reproducible without carrying a seed.
- Percentiles interpolate linearly between order statistics (the common "type 7"
  definition, numpy's default), so p50 of an even-sized sample is the middle average.

No numpy: these run in the light runtime package.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from safe_context_agent.judges import RefusalVerdict

__all__ = [
    "LatencySummary",
    "MeanEstimate",
    "Rate",
    "VerdictTally",
    "latency_summary",
    "mean_interval",
    "percentile",
    "rate",
    "student_t_quantile",
    "tally_verdicts",
    "wilson_interval",
]


class _Metric(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1] = 1


class Rate(_Metric):
    """``k`` of ``n``; ``value`` is None when ``n`` is 0 (and the interval is then [0, 1])."""

    k: int
    n: int
    value: float | None
    low: float
    high: float
    confidence: float = 0.95


class LatencySummary(_Metric):
    """Seconds; every statistic is None for an empty sample."""

    n: int
    p50: float | None
    p95: float | None
    mean: float | None
    max: float | None


class MeanEstimate(_Metric):
    """Mean with a Student t interval; ``low``/``high``/``std`` need at least two values."""

    n: int
    mean: float | None
    std: float | None
    low: float | None
    high: float | None
    confidence: float = 0.95


class VerdictTally(_Metric):
    """Refusal verdicts counted by label; ``refused`` is over the known (non-``unknown``) ones."""

    full_refusal: int
    partial_refusal: int
    compliance: int
    unknown: int
    refused: Rate


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (``(0, 1)`` when ``n`` is 0)."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Clamp rounding dust: at k == 0 (or n) the bound is exactly 0 (or 1).
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def rate(k: int, n: int, *, confidence: float = 0.95) -> Rate:
    """``k / n`` with its Wilson interval."""
    low, high = wilson_interval(k, n, confidence)
    return Rate(k=k, n=n, value=k / n if n else None, low=low, high=high, confidence=confidence)


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100), interpolating linearly between order statistics."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of an empty sample")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, got {q}")
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def latency_summary(seconds: Iterable[float]) -> LatencySummary:
    """p50, p95, mean and max of per-request latencies."""
    sample = list(seconds)
    if not sample:
        return LatencySummary(n=0, p50=None, p95=None, mean=None, max=None)
    return LatencySummary(
        n=len(sample),
        p50=percentile(sample, 50),
        p95=percentile(sample, 95),
        mean=math.fsum(sample) / len(sample),
        max=max(sample),
    )


def mean_interval(values: Iterable[float], *, confidence: float = 0.95) -> MeanEstimate:
    """Sample mean with a two-sided Student t interval (sample standard deviation, n - 1)."""
    sample = list(values)
    n = len(sample)
    if n == 0:
        return MeanEstimate(n=0, mean=None, std=None, low=None, high=None, confidence=confidence)
    mean = math.fsum(sample) / n
    if n == 1:
        return MeanEstimate(n=1, mean=mean, std=None, low=None, high=None, confidence=confidence)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in sample) / (n - 1))
    half = student_t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return MeanEstimate(
        n=n, mean=mean, std=std, low=mean - half, high=mean + half, confidence=confidence
    )


def tally_verdicts(verdicts: Iterable[RefusalVerdict | str]) -> VerdictTally:
    """Count verdicts (or bare labels); the refusal rate leaves ``unknown`` ones out."""
    counts = {"full_refusal": 0, "partial_refusal": 0, "compliance": 0, "unknown": 0}
    for verdict in verdicts:
        label = verdict if isinstance(verdict, str) else verdict.label
        if label not in counts:
            raise ValueError(f"not a refusal label: {label!r}")
        counts[label] += 1
    refused = counts["full_refusal"] + counts["partial_refusal"]
    return VerdictTally(**counts, refused=rate(refused, refused + counts["compliance"]))


# --- Student t quantile (no scipy in the runtime) ----------------------------------------


def student_t_quantile(p: float, df: int | float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom.

    Inverts the CDF, written through the regularised incomplete beta function, by
    bisection; accurate to about 1e-10.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be between 0 and 1, got {p}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while _student_t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if _student_t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


def _student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for t >= 0: one minus half the two-sided tail, I_x(df/2, 1/2) at x = df/(df+t^2)."""
    tail = _regularized_beta(df / (df + t * t), df / 2, 0.5)
    return 1 - tail / 2


def _regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        a * math.log(x)
        + b * math.log1p(-x)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    )
    # The continued fraction converges quickly on this side; use the symmetry
    # I_x(a, b) = 1 - I_{1-x}(b, a) on the other.
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(x, a, b) / a
    return 1 - math.exp(log_front) * _beta_fraction(1 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of the incomplete beta function, by the modified Lentz method."""
    tiny = 1e-300

    def guard(value: float) -> float:
        return value if abs(value) > tiny else tiny

    c = 1.0
    d = 1 / guard(1 - (a + b) * x / (a + 1))
    result = d
    for m in range(1, 500):
        # Even step: coefficient m(b-m)x / ((a+2m-1)(a+2m)).
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1 / guard(1 + even * d)
        c = guard(1 + even / c)
        result *= d * c
        # Odd step: coefficient -(a+m)(a+b+m)x / ((a+2m)(a+2m+1)).
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 / guard(1 + odd * d)
        c = guard(1 + odd / c)
        step = d * c
        result *= step
        if abs(step - 1) < 1e-15:
            break
    return result
