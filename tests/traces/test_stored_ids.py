"""Schema 2 stores each later turn's prompt as the ids it adds; schema-1 files still read.

``data/v1_traces.jsonl`` was written by the schema-1 writer (see ``data/make_v1_traces.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from safe_context_agent.errors import TraceError
from safe_context_agent.traces import (
    TRACE_SCHEMA_VERSION,
    JsonlTraceSink,
    ModelTurn,
    SqliteTraceSink,
    Trace,
    export_traces,
    read_traces,
)
from safe_context_agent.traces._encode import trace_json

TraceFactory = Callable[..., Trace]
V1_TRACES = Path(__file__).parent / "data" / "v1_traces.jsonl"


def _stored(trace: Trace) -> dict:
    return json.loads(trace_json(trace))


def _re_rendered(make_trace: TraceFactory) -> Trace:
    """A template that re-renders the earlier assistant turn: one id of it differs."""
    trace = make_trace(3)
    first, second = trace.turns
    served = list(second.prompt_token_ids or [])
    served[len(first.prompt_token_ids or [])] += 1
    second.prompt_token_ids = served
    return trace


def test_a_later_turn_stores_only_the_ids_it_adds(make_trace: TraceFactory) -> None:
    trace = make_trace(0)
    first, second = trace.turns
    seen = len(first.prompt_token_ids or []) + len(first.completion_token_ids or [])
    stored = _stored(trace)
    assert stored["schema_version"] == TRACE_SCHEMA_VERSION == 2
    assert stored["turns"][0]["prompt_token_ids"] == first.prompt_token_ids
    assert "prompt_token_ids" not in stored["turns"][1]
    assert stored["turns"][1]["prompt_token_ids_added"] == (second.prompt_token_ids or [])[seen:]
    assert Trace.model_validate(stored) == trace
    assert trace.model_dump_json().encode() == trace_json(trace)


def test_a_turn_that_does_not_extend_is_stored_whole_and_flagged(make_trace: TraceFactory) -> None:
    trace = _re_rendered(make_trace)
    stored = _stored(trace)["turns"][1]
    assert stored["prompt_token_ids"] == trace.turns[1].prompt_token_ids
    assert stored["prompt_extends_previous"] is False and "prompt_token_ids_added" not in stored
    back = Trace.model_validate_json(trace_json(trace))
    assert back == trace and "prompt_extends_previous" not in back.turns[1].model_extra


def test_turns_without_ids_are_stored_as_they_are() -> None:
    turns = [ModelTurn(index=0, content="a"), ModelTurn(index=1, content="b")]
    trace = Trace(model="m", mode="adaptive", turns=turns)
    stored = _stored(trace)["turns"]
    assert [t["prompt_token_ids"] for t in stored] == [None, None]
    assert all(set(t) == set(ModelTurn.model_fields) for t in stored)


@pytest.mark.parametrize("suffix", [".jsonl", ".sqlite"])
def test_sinks_store_the_smaller_form_and_read_it_back(
    tmp_path: Path, make_trace: TraceFactory, suffix: str
) -> None:
    traces = [make_trace(seed) for seed in range(4)] + [_re_rendered(make_trace)]
    path = tmp_path / f"t{suffix}"
    sink = JsonlTraceSink(path) if suffix == ".jsonl" else SqliteTraceSink(path)
    with sink:
        for trace in traces:
            sink.write(trace)
    assert list(read_traces(path)) == traces
    exported = tmp_path / "t.parquet"
    export_traces(path, exported)
    assert list(read_traces(exported)) == traces


def test_a_version_1_file_reads_as_version_2_with_the_same_ids(tmp_path: Path) -> None:
    raw = [json.loads(line) for line in V1_TRACES.read_text().splitlines()]
    traces = list(read_traces(V1_TRACES))
    assert {r["schema_version"] for r in raw} == {1} and len(traces) == len(raw) == 4
    for record, trace in zip(raw, traces, strict=True):
        assert trace.schema_version == 2
        assert [t.prompt_token_ids for t in trace.turns] == [
            t["prompt_token_ids"] for t in record["turns"]
        ]
    rewritten = tmp_path / "v2.jsonl"
    with JsonlTraceSink(rewritten) as sink:
        for trace in traces:
            sink.write(trace)
    assert list(read_traces(rewritten)) == traces
    stored = [json.loads(line)["turns"] for line in rewritten.read_text().splitlines()]
    flags = [[t.get("prompt_extends_previous") for t in turns] for turns in stored]
    # The fixture's third run re-rendered its first turn; the others extend (or have one turn).
    assert flags == [[None, None], [None, None, None], [None, False], [None]]
    # Each extending turn leaves out exactly the previous turn's prompt and completion.
    repeated = sum(
        len(before.prompt_token_ids or []) + len(before.completion_token_ids or [])
        for trace, flagged in zip(traces, flags, strict=True)
        for before, flag in zip(trace.turns, flagged[1:], strict=False)
        if flag is None
    )
    kept = sum(
        len(t.get("prompt_token_ids") or t.get("prompt_token_ids_added") or [])
        for turns in stored
        for t in turns
    )
    whole = sum(len(t["prompt_token_ids"]) for r in raw for t in r["turns"])
    assert repeated > 0 and kept == whole - repeated
    assert rewritten.stat().st_size < V1_TRACES.stat().st_size


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda turns: turns[0].update(prompt_token_ids_added=turns[0].pop("prompt_token_ids")),
            "turns.0.prompt_token_ids_added: the first turn has no earlier turn to add to",
        ),
        (
            lambda turns: turns[1].update(prompt_token_ids=[1, 2]),
            "turns.1.prompt_token_ids_added: the turn also has prompt_token_ids",
        ),
        (
            lambda turns: turns[0].update(completion_token_ids=None),
            "turns.1.prompt_token_ids_added: needs lists of token ids",
        ),
    ],
)
def test_a_damaged_stored_prompt_is_an_error_naming_the_turn(
    tmp_path: Path, make_trace: TraceFactory, edit: Callable[[list[dict]], None], message: str
) -> None:
    record = _stored(make_trace(0))
    edit(record["turns"])
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(TraceError, match=f"{path}:1: trace {record['trace_id']}: .*{message}"):
        list(read_traces(path))
