"""Trace faults of issue 13: impossible schema versions, the resume case of group_traces,
credentials in trace fields."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from safe_context_agent.errors import TraceError
from safe_context_agent.traces import (
    TRACE_SCHEMA_VERSION,
    JsonlTraceSink,
    Outcome,
    Trace,
    group_traces,
    read_traces,
)

TraceFactory = Callable[..., Trace]


@pytest.mark.parametrize("version", [0, -1])
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_schema_version_below_1_is_an_error(
    tmp_path: Path, make_trace: TraceFactory, version: int, on_error: str
) -> None:
    trace = make_trace(0)
    path = tmp_path / "t.jsonl"
    data = json.loads(trace.model_dump_json())
    data["schema_version"] = version
    path.write_text(json.dumps(data) + "\n")
    with pytest.raises(TraceError) as caught:
        list(read_traces(path, on_error=on_error))  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"{path}:1: trace {trace.trace_id} has schema_version {version}; versions start at 1, so"
        " the record is damaged or was not written by safe-context-agent; repair its"
        f" schema_version (1 to {TRACE_SCHEMA_VERSION}) or remove the record"
    )


def _failed(trace: Trace) -> Trace:
    return trace.model_copy(
        update={"outcome": Outcome(status="error", error_type="ModelCallError", message="down")}
    )


def test_group_traces_keeps_the_good_retry_of_a_failed_sample(
    tmp_path: Path, make_trace: TraceFactory
) -> None:
    first = _failed(make_trace(1))  # group-0, sample 1, failed...
    retry = make_trace(1).model_copy(  # ...and run again by a resumed collection
        update={"trace_id": "retry", "started_at": first.started_at + timedelta(minutes=5)}
    )
    others = [make_trace(0), make_trace(2)]
    path = tmp_path / "t.jsonl"
    with JsonlTraceSink(path, fsync=False) as sink:
        for trace in [others[0], first, others[1], retry]:
            sink.write(trace)
    groups = group_traces(read_traces(path))
    assert [t.trace_id for t in groups["group-0"]] == [
        others[0].trace_id,
        "retry",
        others[1].trace_id,
    ]


def test_group_traces_keeps_the_latest_of_several_failures(make_trace: TraceFactory) -> None:
    early = _failed(make_trace(1))
    late = _failed(make_trace(1)).model_copy(
        update={"trace_id": "late", "started_at": early.started_at + timedelta(seconds=1)}
    )
    assert [t.trace_id for t in group_traces([late, early])["group-0"]] == ["late"]


def test_two_good_traces_with_one_sample_index_still_raise(make_trace: TraceFactory) -> None:
    twin = make_trace(1).model_copy(update={"trace_id": "twin"})
    with pytest.raises(TraceError, match="several traces with sample_index 1"):
        group_traces([make_trace(1), twin])


def test_credentials_never_stay_in_trace_fields(make_trace: TraceFactory) -> None:
    trace = make_trace(
        0,
        base_url="http://admin:SECRETPW@host:8000/v1",
        outcome=Outcome(
            status="error",
            message="POST http://admin:SECRETPW@host/v1 said: Authorization: Bearer sk-SECRET123",
        ),
    )
    text = trace.model_dump_json()
    assert "SECRET" not in text
    assert trace.base_url == "http://***@host:8000/v1"
