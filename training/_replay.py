"""Replay: logged traces → grouped, token-exact training samples with loss masks.

Every sample is rebuilt from the token ids the server returned, never from text: re-rendering a
conversation through the chat template reproduces the served ids only when the model happened to
emit canonical tokens (about 91 % of sampled turns of the embedded model; see
``docs/training.md``).

A trajectory with model turns ``t1 … tn`` becomes

- **one sequence** when every turn's ``prompt_token_ids`` starts with the previous turn's
  ``prompt_token_ids + completion_token_ids``: ``prompt = p1`` and
  ``completion = c1 + s1 + c2 + … + cn``, where ``s_k`` are the new prompt tokens between turns
  (the tool result and the chat scaffolding around it, ``env_mask`` 0);
- otherwise **one sample per turn**, each exactly as served: the first turn's prompt ``p1`` as
  the prompt, and the rest of ``p_k`` (earlier turns and tool results, ``env_mask`` 0) ahead of
  ``c_k`` in the completion.

Only model-generated tokens carry ``env_mask`` 1 (and so a loss); system, user and tool tokens
are either in the prompt or masked. The recorded logprobs are the behaviour policy's.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from safe_context_agent.errors import TraceError
from safe_context_agent.traces import (
    TRACE_SCHEMA_VERSION,
    SkippedRecord,
    Trace,
    group_traces,
    read_traces,
)

__all__ = [
    "ReplayGroup",
    "ReplayReport",
    "ReplaySample",
    "ReplaySet",
    "ReplayTrajectory",
    "load_replay",
    "replay_trajectory",
]

SampleKind = Literal["trajectory", "turn"]


@dataclass(frozen=True)
class ReplaySample:
    """One training sequence: the prompt as served and a completion with its masks.

    ``completion_ids``, ``logprobs`` and ``env_mask`` are parallel. ``env_mask`` is 1 on tokens
    the model sampled and 0 on tokens that came from elsewhere (tool results, chat scaffolding
    between turns); ``logprobs`` holds the behaviour policy's logprob on model tokens and 0.0 on
    the others, which never reach the loss.
    """

    trace_id: str
    group_id: str
    kind: SampleKind
    turn_indices: tuple[int, ...]
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    env_mask: list[int]

    @property
    def model_tokens(self) -> int:
        return sum(self.env_mask)


@dataclass
class ReplayTrajectory:
    """One trace with its samples; ``reward`` is filled in by scoring (see ``_rewards``)."""

    trace: Trace
    samples: list[ReplaySample]
    concatenated: bool
    reward: float | None = None
    reward_components: dict[str, float | None] = field(default_factory=dict)

    @property
    def trace_id(self) -> str:
        return self.trace.trace_id

    @property
    def group_id(self) -> str:
        return self.trace.group_id or self.trace.trace_id

    @property
    def consulted(self) -> bool:
        return self.trace.consulted

    @property
    def label(self) -> str | None:
        label = self.trace.metadata.get("label")
        return label if isinstance(label, str) else None


@dataclass
class ReplayGroup:
    """The trajectories sampled from one prompt, in ``sample_index`` order."""

    group_id: str
    trajectories: list[ReplayTrajectory]

    def __len__(self) -> int:
        return len(self.trajectories)


class ReplayReport(BaseModel):
    """What replay made of a set of traces; printed by ``sca train`` and kept beside the adapter."""

    schema_version: Literal[1] = 1
    sources: list[str] = Field(default_factory=list, description="Trace files read.")
    traces_read: int = Field(default=0, description="Whole records read from the sources.")
    error_traces: int = Field(
        default=0, description="Runs that ended in an error (outcome.status='error'): left out."
    )
    empty_traces: int = Field(
        default=0,
        description="Runs without a model turn (e.g. fail-closed before turn 1): left out.",
    )
    groups: int = 0
    trajectories: int = 0
    concatenated: int = Field(
        default=0, description="Trajectories replayed as one sequence (single-turn ones included)."
    )
    per_turn: int = Field(
        default=0,
        description="Multi-turn trajectories whose turn prompts did not extend each other: one "
        "sample per turn.",
    )
    samples: int = 0
    model_tokens: int = Field(default=0, description="Completion tokens that carry a loss.")
    masked_tokens: int = Field(
        default=0,
        description="Completion tokens masked out (tool results, scaffolding, and the earlier"
        " turns that per-turn samples carry ahead of their own tokens).",
    )
    skipped_records: list[SkippedRecord] = Field(
        default_factory=list, description="Records the reader left out (a cut-short last line)."
    )
    warnings: list[str] = Field(default_factory=list)


def _require_ids(trace: Trace, need_logprobs: bool) -> None:
    for turn in trace.turns:
        where = f"trace {trace.trace_id}, turn {turn.index}"
        if turn.prompt_token_ids is None or turn.completion_token_ids is None:
            missing = (
                "prompt_token_ids" if turn.prompt_token_ids is None else "completion_token_ids"
            )
            raise TraceError(
                f"{where}: {missing} is missing, so the turn cannot be replayed token-exactly; "
                "collect with AgentConfig(return_token_ids=True) against a vLLM server"
            )
        if not turn.completion_token_ids:
            raise TraceError(f"{where}: completion_token_ids is empty; drop the trace")
        if turn.logprobs is None:
            if need_logprobs:
                raise TraceError(
                    f"{where}: logprobs is missing (the behaviour policy's logprobs are needed); "
                    "collect with AgentConfig(logprobs=True)"
                )
        elif len(turn.logprobs) != len(turn.completion_token_ids):
            raise TraceError(
                f"{where}: logprobs has {len(turn.logprobs)} entries for "
                f"{len(turn.completion_token_ids)} completion tokens; the record is corrupt"
            )


def replay_trajectory(trace: Trace, *, need_logprobs: bool = True) -> ReplayTrajectory:
    """Build the samples of one trace (one sequence if its turns extend each other, else per turn).

    Raises:
        TraceError: Naming the trace and turn, when token ids (or, with ``need_logprobs``,
            logprobs) are missing or inconsistent, or the schema version is unknown.
    """
    if trace.schema_version != TRACE_SCHEMA_VERSION:
        raise TraceError(
            f"trace {trace.trace_id}: schema_version {trace.schema_version} is unknown to replay "
            f"(it reads version {TRACE_SCHEMA_VERSION}); re-collect or convert the trace"
        )
    if not trace.turns:
        raise TraceError(f"trace {trace.trace_id}: no model turns to replay")
    _require_ids(trace, need_logprobs)
    turns = trace.turns
    group_id = trace.group_id or trace.trace_id

    def logprobs_of(k: int) -> list[float]:
        values = turns[k].logprobs
        return (
            list(values) if values is not None else [0.0] * len(turns[k].completion_token_ids or [])
        )

    prompt = list(turns[0].prompt_token_ids or [])
    completion = list(turns[0].completion_token_ids or [])
    logprobs = logprobs_of(0)
    env_mask = [1] * len(completion)
    for k in range(1, len(turns)):
        served = turns[k].prompt_token_ids or []
        seen = len(prompt) + len(completion)
        if (
            len(served) < seen
            or served[: len(prompt)] != prompt
            or served[len(prompt) : seen] != completion
        ):
            break
        suffix = served[seen:]
        new = list(turns[k].completion_token_ids or [])
        completion += suffix + new
        logprobs += [0.0] * len(suffix) + logprobs_of(k)
        env_mask += [0] * len(suffix) + [1] * len(new)
    else:
        sample = ReplaySample(
            trace_id=trace.trace_id,
            group_id=group_id,
            kind="trajectory",
            turn_indices=tuple(t.index for t in turns),
            prompt_ids=prompt,
            completion_ids=completion,
            logprobs=logprobs,
            env_mask=env_mask,
        )
        return ReplayTrajectory(trace=trace, samples=[sample], concatenated=True)

    samples = []
    for k, turn in enumerate(turns):
        served = list(turn.prompt_token_ids or [])
        new = list(turn.completion_token_ids or [])
        # Later turns keep only the first turn's prompt as their prompt and carry the rest of what
        # was served (earlier turns, tool results) masked at the head of the completion: the model
        # sees the same tokens, and the batch is not padded to a long prompt *and* a long
        # completion (TRL pads the two sides separately).
        split = _common_prefix(served, prompt) or len(served)
        carried = served[split:]
        samples.append(
            ReplaySample(
                trace_id=trace.trace_id,
                group_id=group_id,
                kind="turn",
                turn_indices=(turn.index,),
                prompt_ids=served[:split],
                completion_ids=carried + new,
                logprobs=[0.0] * len(carried) + logprobs_of(k),
                env_mask=[0] * len(carried) + [1] * len(new),
            )
        )
    return ReplayTrajectory(trace=trace, samples=samples, concatenated=False)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _mixed(values: Iterable[str | None], what: str, fix: str) -> str | None:
    counts = Counter(v for v in values if v is not None)
    if len(counts) <= 1:
        return None
    listed = ", ".join(f"{value!r} ({n})" for value, n in counts.most_common(5))
    more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
    return f"the traces mix {len(counts)} {what}: {listed}{more}; {fix}"


class ReplaySet:
    """Traces grouped by ``group_id`` and rebuilt into samples, with a report of what was done.

    >>> replay = load_replay("runs/traces.jsonl")  # doctest: +SKIP
    >>> replay.report.concatenated, replay.report.per_turn  # doctest: +SKIP
    """

    def __init__(self, groups: list[ReplayGroup], report: ReplayReport) -> None:
        self.groups = groups
        self.report = report
        self._by_id = {group.group_id: group for group in groups}

    @classmethod
    def from_traces(
        cls,
        traces: Iterable[Trace],
        *,
        need_logprobs: bool = True,
        report: ReplayReport | None = None,
    ) -> ReplaySet:
        """Group and rebuild ``traces``; runs that errored or made no model call are left out."""
        report = report or ReplayReport()
        kept: list[Trace] = []
        for trace in traces:
            report.traces_read += 1
            if trace.outcome.status == "error":
                report.error_traces += 1
            elif not trace.turns:
                report.empty_traces += 1
            else:
                kept.append(trace)
        for warning in (
            _mixed(
                (t.pack.content_hash if t.pack else None for t in kept),
                "rule pack hashes",
                "rewards and consult decisions from different packs are not comparable",
            ),
            _mixed(
                (t.model for t in kept),
                "models",
                "replay treats them all as the behaviour policy of their own samples",
            ),
        ):
            if warning is not None:
                report.warnings.append(warning)
                warnings.warn(warning, stacklevel=2)
        groups = [
            ReplayGroup(
                group_id, [replay_trajectory(t, need_logprobs=need_logprobs) for t in members]
            )
            for group_id, members in group_traces(kept).items()
        ]
        for group in groups:
            for trajectory in group.trajectories:
                report.trajectories += 1
                if trajectory.concatenated:
                    report.concatenated += 1
                else:
                    report.per_turn += 1
                for sample in trajectory.samples:
                    report.samples += 1
                    report.model_tokens += sample.model_tokens
                    report.masked_tokens += len(sample.env_mask) - sample.model_tokens
        report.groups = len(groups)
        return cls(groups, report)

    def group(self, group_id: str) -> ReplayGroup:
        try:
            return self._by_id[group_id]
        except KeyError:
            raise KeyError(f"no group {group_id!r} in this replay set") from None

    def trajectories(self) -> list[ReplayTrajectory]:
        return [t for group in self.groups for t in group.trajectories]

    @property
    def max_group_size(self) -> int:
        return max((len(group) for group in self.groups), default=0)

    def __len__(self) -> int:
        return len(self.groups)


def load_replay(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    need_logprobs: bool = True,
    on_error: Literal["raise", "skip"] = "raise",
) -> ReplaySet:
    """Read trace files (``.jsonl``, ``.sqlite``, exported ``.parquet``) into a :class:`ReplaySet`.

    A cut-short last line (a writer that died mid-record) is left out and listed in
    ``report.skipped_records``; any other bad record raises a ``TraceError`` naming the file,
    line and trace id (or, with ``on_error="skip"``, is listed and left out).
    """
    sources = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not sources:
        raise TraceError("no trace files given; pass at least one .jsonl or .sqlite path")
    readers = [read_traces(Path(source), on_error=on_error) for source in sources]
    report = ReplayReport(sources=[str(Path(source)) for source in sources])

    def stream() -> Iterable[Trace]:
        for reader in readers:
            yield from reader

    replay = ReplaySet.from_traces(stream(), need_logprobs=need_logprobs, report=report)
    for reader in readers:
        report.skipped_records.extend(reader.report.skipped)
    return replay
