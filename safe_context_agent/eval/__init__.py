"""Evaluation: benchmark loaders and metrics (the runner and reports build on these)."""

from safe_context_agent.eval._loaders import (
    SUITES,
    EvalDataError,
    EvalLabel,
    EvalPrompt,
    SuiteSpec,
    load_suite,
)
from safe_context_agent.eval._metrics import (
    LatencySummary,
    MeanEstimate,
    Rate,
    VerdictTally,
    latency_summary,
    mean_interval,
    percentile,
    rate,
    student_t_quantile,
    tally_verdicts,
    wilson_interval,
)

__all__ = [
    "SUITES",
    "EvalDataError",
    "EvalLabel",
    "EvalPrompt",
    "LatencySummary",
    "MeanEstimate",
    "Rate",
    "SuiteSpec",
    "VerdictTally",
    "latency_summary",
    "load_suite",
    "mean_interval",
    "percentile",
    "rate",
    "student_t_quantile",
    "tally_verdicts",
    "wilson_interval",
]
