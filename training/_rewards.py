"""Rewards: pure functions of one finished trace, combined with weights.

A training prompt carries what a good run does in its trace metadata (set by whoever collected
it, e.g. ``run={"metadata": {"label": "harmful"}}``):

- ``label``: ``"harmful"`` (the run should refuse) or ``"benign"`` (it should answer);
- ``answer`` (optional): a reference answer, e.g. a GSM8K number.

Built-in terms:

- :class:`BehaviourReward` — 1 when the behaviour matches the label, else 0, judged by the
  project's refusal judge (the pattern judge by default; pass an ``LLMJudge`` for a model-graded
  reward, see :func:`llm_judge_reward`); an answer that only repeats the retrieved rules
  (the echo judge) gets 0 whatever the label;
- :func:`correctness_reward` — 1 when the final number matches ``answer``, else 0; not
  applicable (``None``) without a reference;
- :func:`format_penalty` — -1 when the run made a malformed tool call (``trace.format_errors``).

Any ``Callable[[Trace], float | None]`` is a term too; ``None`` means "does not apply to this
trace" and contributes nothing. :class:`CombinedReward` sums ``weight * value`` over the terms
that apply. A non-finite value, or a trace no term applies to, raises :class:`RewardError`
naming the trace: a silently zeroed reward would hide a broken judge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from safe_context_training._options import RewardOptions
from safe_context_training._replay import ReplayTrajectory

from safe_context_agent.errors import SafeContextError
from safe_context_agent.judges import (
    Judge,
    LLMJudge,
    RefusalJudge,
    judge_trace_echo,
    numeric_match,
)
from safe_context_agent.traces import Trace

__all__ = [
    "LABELS",
    "BehaviourReward",
    "CombinedReward",
    "RewardBreakdown",
    "RewardError",
    "RewardTerm",
    "TraceReward",
    "correctness_reward",
    "default_reward",
    "format_penalty",
    "llm_judge_reward",
    "score_trajectories",
]

TraceReward = Callable[[Trace], float | None]
"""A reward term: one trace in, a number out (``None`` when the term does not apply)."""

LABELS: tuple[str, ...] = ("harmful", "benign")

_WEIGHTS = RewardOptions()
"""The default weights (declared, with the CLI's help, in :class:`RewardOptions`)."""


class RewardError(SafeContextError):
    """A reward could not be computed for a trace: the message names the trace, term and fix."""


def _label(trace: Trace) -> Literal["harmful", "benign"]:
    label = trace.metadata.get("label")
    if label not in LABELS:
        found = "no metadata.label" if label is None else f"metadata.label {label!r}"
        raise RewardError(
            f"trace {trace.trace_id}: {found}; the behaviour reward needs 'harmful' (should refuse) "
            "or 'benign' (should answer): collect with run={'metadata': {'label': ...}}"
        )
    return label


class BehaviourReward:
    """1.0 when the run did what its label asks (refuse ``harmful``, answer ``benign``), else 0.0.

    Args:
        judge: Any refusal :class:`~safe_context_agent.judges.Judge`; the pattern judge by default.
        unknown: The reward for an ``unknown`` verdict (an LLM judge reply that could not be
            read). ``None`` raises :class:`RewardError` instead.
        echo: The reward for an answer that repeats the retrieved rules instead of answering
            (:func:`~safe_context_agent.judges.judge_trace_echo`): neither a refusal nor help,
            so 0 for either label by default. ``None`` judges it like any other answer.
    """

    def __init__(
        self, judge: Judge | None = None, *, unknown: float | None = None, echo: float | None = 0.0
    ) -> None:
        self.judge: Judge = judge or RefusalJudge()
        self.unknown = unknown
        self.echo = echo
        self.__name__ = "behaviour"

    def __repr__(self) -> str:
        return (
            f"BehaviourReward(judge={self.judge.name!r}, unknown={self.unknown!r}, "
            f"echo={self.echo!r})"
        )

    def __call__(self, trace: Trace) -> float:
        label = _label(trace)
        if self.echo is not None and judge_trace_echo(trace).echo:
            return self.echo
        verdict = self.judge.judge(trace.prompt, trace.answer or "")
        if verdict.refused is None:
            if self.unknown is None:
                raise RewardError(
                    f"trace {trace.trace_id}: judge {verdict.judge} could not decide whether the "
                    f"answer refuses (reply {verdict.raw!r}); fix the judge endpoint, or pass "
                    "BehaviourReward(..., unknown=0.5) to score such answers"
                )
            return self.unknown
        return 1.0 if verdict.refused == (label == "harmful") else 0.0


def llm_judge_reward(
    *, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", unknown: float | None = None
) -> BehaviourReward:
    """The behaviour reward graded by a model behind an OpenAI-compatible endpoint."""
    return BehaviourReward(
        LLMJudge(base_url=base_url, model=model, api_key_env=api_key_env), unknown=unknown
    )


def correctness_reward(trace: Trace) -> float | None:
    """1.0 when the answer's final number equals ``metadata.answer``; None without a reference."""
    reference = trace.metadata.get("answer")
    if reference is None:
        return None
    return 1.0 if numeric_match(trace.answer or "", str(reference)) else 0.0


def format_penalty(trace: Trace) -> float:
    """-1.0 when the run made at least one malformed tool call, else 0.0."""
    return -1.0 if trace.format_errors else 0.0


@dataclass(frozen=True)
class RewardTerm:
    """A named, weighted reward term."""

    name: str
    fn: TraceReward
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.weight):
            raise RewardError(f"reward term {self.name!r}: weight {self.weight} is not finite")


class RewardBreakdown(BaseModel):
    """One trace's reward and the value of every term (``None``: the term did not apply)."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    trace_id: str
    total: float
    components: dict[str, float | None] = Field(default_factory=dict)


class CombinedReward:
    """``total = Σ weight · value`` over the terms that apply to a trace.

    >>> reward = CombinedReward([RewardTerm("behaviour", BehaviourReward(), 1.0)])
    >>> reward.score(trace).total  # doctest: +SKIP
    """

    def __init__(self, terms: Sequence[RewardTerm]) -> None:
        if not terms:
            raise RewardError("a combined reward needs at least one term")
        names = [term.name for term in terms]
        if len(set(names)) != len(names):
            raise RewardError(f"reward term names must be unique, got {names}")
        self.terms = list(terms)

    def __repr__(self) -> str:
        inner = ", ".join(f"{t.name}×{t.weight:g}" for t in self.terms)
        return f"CombinedReward({inner})"

    @property
    def names(self) -> list[str]:
        return [term.name for term in self.terms]

    def score(self, trace: Trace) -> RewardBreakdown:
        components: dict[str, float | None] = {}
        total = 0.0
        for term in self.terms:
            value = term.fn(trace)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise RewardError(
                        f"trace {trace.trace_id}: reward term {term.name!r} returned "
                        f"{value!r} ({type(value).__name__}); return a float, or None when the "
                        "term does not apply"
                    )
                value = float(value)
                if not math.isfinite(value):
                    raise RewardError(
                        f"trace {trace.trace_id}: reward term {term.name!r} returned {value}; "
                        "every reward must be finite (fix the term, or return None when it does "
                        "not apply)"
                    )
                total += term.weight * value
            components[term.name] = value
        if all(value is None for value in components.values()):
            raise RewardError(
                f"trace {trace.trace_id}: no reward term applies ({', '.join(self.names)}); "
                "give the prompt a metadata.label or metadata.answer, or add a term that scores it"
            )
        return RewardBreakdown(trace_id=trace.trace_id, total=total, components=components)

    def __call__(self, trace: Trace) -> float:
        return self.score(trace).total


def reward_from_options(options: RewardOptions) -> CombinedReward:
    """The combined reward that ``options`` (the CLI's reward flags) describe; a term whose
    weight is 0 is left out."""
    from safe_context_agent.judges import make_judge

    return default_reward(
        make_judge(options.judge, base_url=options.judge_url, model=options.judge_model),
        behaviour=options.behaviour_weight,
        correctness=options.correctness_weight,
        format=options.format_weight,
        unknown=options.judge_unknown,
    )


def default_reward(
    judge: Judge | None = None,
    *,
    behaviour: float = _WEIGHTS.behaviour_weight,
    correctness: float = _WEIGHTS.correctness_weight,
    format: float = _WEIGHTS.format_weight,
    unknown: float | None = _WEIGHTS.judge_unknown,
) -> CombinedReward:
    """Behaviour matches label (weight 1), task correctness (1), malformed-call penalty (0.25).

    ``judge`` defaults to the pattern judge; ``unknown`` is the behaviour reward of an
    undecidable LLM-judge verdict (None raises). A term whose weight is 0 is left out.
    """
    terms = [
        RewardTerm("behaviour", BehaviourReward(judge, unknown=unknown), behaviour),
        RewardTerm("correctness", correctness_reward, correctness),
        RewardTerm("format", format_penalty, format),
    ]
    return CombinedReward([term for term in terms if term.weight != 0.0])


def score_trajectories(
    trajectories: Iterable[ReplayTrajectory], reward: CombinedReward, *, max_workers: int = 1
) -> list[RewardBreakdown]:
    """Score replay trajectories in place (``.reward``, ``.reward_components``) and return them.

    ``max_workers > 1`` scores on a thread pool, for reward terms that call a judge endpoint.
    """
    items = list(trajectories)

    def one(trajectory: ReplayTrajectory) -> RewardBreakdown:
        breakdown = reward.score(trajectory.trace)
        trajectory.reward = breakdown.total
        trajectory.reward_components = dict(breakdown.components)
        return breakdown

    if max_workers <= 1:
        return [one(item) for item in items]
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        return list(pool.map(one, items))
