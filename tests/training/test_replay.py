"""Replay: token-exact samples, loss masks, the per-turn fallback, the report, bad traces."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from safe_context_training import ReplaySet, load_replay, replay_trajectory

from safe_context_agent.errors import TraceError
from safe_context_agent.traces import JsonlTraceSink, Outcome, PackRef, read_traces


def test_direct_run_is_one_sample_with_every_completion_token_trained(build: Any) -> None:
    trace = build.direct([1, 2, 3], [7, 8, 2], group="g", index=0)
    replayed = replay_trajectory(trace)
    assert replayed.concatenated
    (sample,) = replayed.samples
    assert sample.prompt_ids == [1, 2, 3]
    assert sample.completion_ids == [7, 8, 2]
    assert sample.env_mask == [1, 1, 1]
    assert sample.logprobs == [-0.25, -0.25, -0.25]
    assert sample.kind == "trajectory" and sample.turn_indices == (0,)


def test_consult_run_concatenates_and_masks_exactly_the_tool_tokens(parts: Any, build: Any) -> None:
    replayed = replay_trajectory(build.consult(parts, group="g", index=0))
    assert replayed.concatenated and replayed.consulted
    (sample,) = replayed.samples
    assert sample.prompt_ids == parts.prompt
    assert sample.completion_ids == parts.first + parts.suffix + parts.second
    # The loss mask covers exactly the model's own tokens; the tool result (and the chat
    # scaffolding around it) carries none.
    trained = [t for t, m in zip(sample.completion_ids, sample.env_mask, strict=True) if m]
    masked = [t for t, m in zip(sample.completion_ids, sample.env_mask, strict=True) if not m]
    assert trained == parts.first + parts.second
    assert masked == parts.suffix
    assert sample.model_tokens == len(parts.first) + len(parts.second)
    # Behaviour logprobs sit on the model tokens; masked positions hold 0.0.
    assert sample.logprobs == [-0.5] * 6 + [0.0] * 4 + [-0.75] * 5
    assert sample.turn_indices == (0, 1)


def test_prompts_that_do_not_extend_fall_back_to_one_sample_per_turn(
    parts: Any, build: Any
) -> None:
    trace = build.consult(parts, group="g", index=0, extends=False)
    replayed = replay_trajectory(trace)
    assert not replayed.concatenated
    first, second = replayed.samples
    assert (first.kind, second.kind) == ("turn", "turn")
    assert first.prompt_ids == parts.prompt and first.completion_ids == parts.first
    # Each turn is trained exactly as served: the model sees the whole served prompt, then the
    # turn's own tokens, and only those carry a loss. What was served beyond the first turn's
    # prompt rides masked at the head of the completion, so the prompt stays short.
    served = trace.turns[1].prompt_token_ids
    assert second.prompt_ids + second.completion_ids == served + parts.second
    assert second.prompt_ids == parts.prompt
    carried = len(served) - len(parts.prompt)
    assert second.env_mask == [0] * carried + [1] * len(parts.second)
    assert second.logprobs == [0.0] * carried + [-0.75] * len(parts.second)
    assert first.env_mask == [1] * len(parts.first)


def test_a_turn_whose_prompt_shares_nothing_with_the_first_keeps_its_whole_prompt(
    parts: Any, build: Any
) -> None:
    trace = build.consult(parts, group="g", index=0)
    turns = list(trace.turns)
    unrelated = [999, 998, 997]
    turns[1] = turns[1].model_copy(update={"prompt_token_ids": unrelated})
    _, second = replay_trajectory(trace.model_copy(update={"turns": turns})).samples
    assert second.prompt_ids == unrelated and second.completion_ids == parts.second
    assert second.env_mask == [1] * len(parts.second)


def test_a_second_turn_on_a_different_system_prompt_also_falls_back(parts: Any, build: Any) -> None:
    trace = build.consult(parts, group="g", index=0)
    turns = list(trace.turns)
    changed = [999, *turns[1].prompt_token_ids[1:]]  # e.g. tools no longer offered
    turns[1] = turns[1].model_copy(update={"prompt_token_ids": changed})
    assert not replay_trajectory(trace.model_copy(update={"turns": turns})).concatenated


def test_replay_set_groups_traces_and_reports_both_cases(build: Any) -> None:
    a, b = build.small_parts(0), build.small_parts(1000)
    traces = [
        build.consult(a, group="g1", index=1),
        build.direct(a.prompt, [5, 2], group="g1", index=0),
        build.consult(b, group="g2", index=0, extends=False),
        build.direct(b.prompt, [6, 2], group="g2", index=1),
        build.direct(b.prompt, [6, 2], group="g2", index=2, outcome=Outcome(status="error")),
        build.direct(b.prompt, [6, 2], group="g2", index=3, turns=[]),
    ]
    replay = ReplaySet.from_traces(traces)
    assert [g.group_id for g in replay.groups] == ["g1", "g2"]
    # Members are ordered by sample_index, whatever the file order.
    assert [t.trace.sample_index for t in replay.group("g1").trajectories] == [0, 1]
    report = replay.report
    assert report.traces_read == 6
    assert (report.error_traces, report.empty_traces) == (1, 1)
    assert (report.groups, report.trajectories) == (2, 4)
    assert (report.concatenated, report.per_turn, report.samples) == (3, 1, 5)
    carried = len(traces[2].turns[1].prompt_token_ids or []) - len(b.prompt)
    assert report.masked_tokens == len(a.suffix) + carried
    assert report.model_tokens == sum(
        s.model_tokens for t in replay.trajectories() for s in t.samples
    )
    assert replay.max_group_size == 2


def test_missing_token_ids_name_the_trace(parts: Any, build: Any) -> None:
    trace = build.consult(parts, group="g", index=0)
    turns = list(trace.turns)
    turns[1] = turns[1].model_copy(update={"prompt_token_ids": None})
    broken = trace.model_copy(update={"turns": turns})
    with pytest.raises(TraceError, match=rf"trace {trace.trace_id}, turn 1: prompt_token_ids"):
        replay_trajectory(broken)


def test_missing_or_misaligned_logprobs_name_the_trace(parts: Any, build: Any) -> None:
    trace = build.consult(parts, group="g", index=0)
    turns = list(trace.turns)
    turns[0] = turns[0].model_copy(update={"logprobs": None})
    with pytest.raises(TraceError, match=rf"trace {trace.trace_id}, turn 0: logprobs is missing"):
        replay_trajectory(trace.model_copy(update={"turns": turns}))
    # SFT does not need them.
    assert replay_trajectory(trace.model_copy(update={"turns": turns}), need_logprobs=False)
    turns[0] = turns[0].model_copy(update={"logprobs": [-1.0]})
    with pytest.raises(TraceError, match="logprobs has 1 entries for 6 completion tokens"):
        replay_trajectory(trace.model_copy(update={"turns": turns}))


def test_unknown_schema_version_names_the_trace(build: Any) -> None:
    trace = build.direct([1], [2], group="g", index=0, schema_version=0)
    with pytest.raises(TraceError, match=rf"trace {trace.trace_id}: schema_version 0 is unknown"):
        replay_trajectory(trace)


def test_a_newer_schema_in_a_file_names_the_record(
    write_traces: Callable[..., Path], build: Any
) -> None:
    trace = build.direct([1], [2], group="g", index=0)
    path = write_traces([trace])
    record = json.loads(path.read_text())
    record["schema_version"] = 99
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(TraceError, match=rf"trace {trace.trace_id} has schema_version 99"):
        load_replay(path)


def test_a_cut_short_file_is_read_up_to_the_last_whole_record(
    write_traces: Callable[..., Path], build: Any
) -> None:
    traces = [build.direct([1, 2], [3, 2], group="g", index=i) for i in range(3)]
    path = write_traces(traces)
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # a writer died inside the third record
    replay = load_replay(path)
    assert replay.report.trajectories == 2
    (skipped,) = replay.report.skipped_records
    assert skipped.trace_id == traces[2].trace_id
    assert replay.report.sources == [str(path)]


def test_mixed_packs_and_models_warn(write_traces: Callable[..., Path], build: Any) -> None:
    other_pack = PackRef(name="kids", version="1.0.0", content_hash="hash-b")
    traces = [
        build.direct([1], [2], group="g", index=0),
        build.direct([1], [2], group="g", index=1, pack=other_pack, model="policy_v1"),
    ]
    with pytest.warns(UserWarning) as caught:
        replay = load_replay(write_traces(traces))
    messages = [str(w.message) for w in caught]
    assert any("mix 2 rule pack hashes" in m for m in messages)
    assert any("mix 2 models" in m for m in messages)
    assert len(replay.report.warnings) == 2


def test_one_pack_and_model_do_not_warn(write_traces: Callable[..., Path], build: Any) -> None:
    traces = [build.direct([1], [2], group="g", index=i) for i in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_replay(write_traces(traces)).report.warnings == []


def test_no_paths_is_an_error() -> None:
    with pytest.raises(TraceError, match="no trace files given"):
        load_replay([])


TRACE_DATA = Path(__file__).resolve().parent.parent / "traces" / "data"


def _samples(replay: ReplaySet) -> list[list[dict[str, Any]]]:
    return [
        [json.loads(json.dumps(dataclasses.asdict(sample))) for sample in trajectory.samples]
        for trajectory in replay.trajectories()
    ]


def test_replay_of_version_1_and_version_2_files_is_what_version_1_replay_made(
    tmp_path: Path,
) -> None:
    # v1_replay.json holds the samples the schema-1 code made of v1_traces.jsonl (its writer).
    old_file = TRACE_DATA / "v1_traces.jsonl"
    expected = json.loads((TRACE_DATA / "v1_replay.json").read_text())
    old = load_replay(old_file)
    assert _samples(old) == expected
    assert (old.report.concatenated, old.report.per_turn) == (3, 1)
    new_file = tmp_path / "v2.jsonl"
    with JsonlTraceSink(new_file) as sink:
        for trace in read_traces(old_file):
            sink.write(trace)
    assert all(json.loads(line)["schema_version"] == 2 for line in new_file.open())
    new = load_replay(new_file)
    assert _samples(new) == expected
    assert new.report.model_dump(exclude={"sources"}) == old.report.model_dump(exclude={"sources"})
