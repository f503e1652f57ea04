"""The fast trace encoder writes exactly what pydantic writes, and falls back where it cannot."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from safe_context_agent.errors import TraceError
from safe_context_agent.traces import ModelTurn, Trace
from safe_context_agent.traces._encode import trace_json

TraceFactory = Callable[..., Trace]
UTC_PLUS_2 = timezone(timedelta(hours=2))


def _pydantic_bytes(trace: Trace) -> bytes:
    return trace.model_dump_json().encode()


@pytest.mark.parametrize("seed", range(5))
def test_bytes_equal_pydantic_for_realistic_traces(seed: int, make_trace: TraceFactory) -> None:
    trace = make_trace(seed, finished_at=datetime.now(UTC_PLUS_2))
    assert trace_json(trace) == _pydantic_bytes(trace)
    assert trace_json(trace, newline=True) == _pydantic_bytes(trace) + b"\n"


def test_extra_fields_computed_fields_and_unicode_match_pydantic(make_trace: TraceFactory) -> None:
    trace = make_trace(
        1,
        answer='Réponse — ✓ \u2028 "quoted" \\ end',
        newer_writer_field={"nested": [1, 2.5, None]},
    )
    trace.turns[0].__pydantic_extra__["server_extra"] = "kept"  # type: ignore[index]
    encoded = trace_json(trace)
    assert encoded == _pydantic_bytes(trace)
    assert b'"consulted":true' in encoded and b'"newer_writer_field"' in encoded


def test_non_finite_logprobs_are_written_as_pydantic_writes_them() -> None:
    turn = ModelTurn(index=0, completion_token_ids=[1, 2, 3], logprobs=[-math.inf, math.nan, -0.5])
    trace = Trace(model="m", mode="never", turns=[turn])
    assert trace_json(trace) == _pydantic_bytes(trace)


@pytest.mark.parametrize(
    "metadata",
    [
        {"path": Path("/tmp/x"), "tags": {"a"}},  # types orjson does not write itself
        {"counts": {1: "a non-string key, nested"}},
        {"big": 2**70},
    ],
)
def test_values_orjson_refuses_fall_back_to_pydantic(metadata: dict[object, object]) -> None:
    trace = Trace(model="m", mode="never", metadata=metadata)
    assert trace_json(trace) == _pydantic_bytes(trace)


def test_unserialisable_values_are_a_trace_error_naming_the_trace() -> None:
    trace = Trace(model="m", mode="never", metadata={"when": object()})
    with pytest.raises(TraceError, match=f"trace {trace.trace_id} cannot be written as JSON"):
        trace_json(trace)
