"""Trace to JSON, fast enough that writing traces never limits the agent.

Pydantic's ``model_dump_json`` spends most of a trace on the token-id and logprob arrays;
orjson writes the same bytes about twice as fast. The fast path walks the models through their
``__dict__`` (plus extra and computed fields, as pydantic would) and keeps pydantic's formats
(``Z`` for UTC, ``null`` for NaN/inf), so both paths produce byte-identical JSON — a test holds
them to it. Anything orjson cannot write as pydantic would (a ``Path`` or ``set`` in
``metadata``, non-string keys, huge ints) falls back to pydantic, so no trace that pydantic
accepts is refused. Text that no UTF-8 encoder accepts (lone surrogates) is written with U+FFFD
in their place, so such a trace is kept rather than lost (see ``safe_context_agent._sanitize``).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from safe_context_agent._sanitize import repair_tree
from safe_context_agent.errors import TraceError
from safe_context_agent.traces._schema import Trace, stored_turns

__all__ = ["trace_json"]

_OPTIONS = orjson.OPT_UTC_Z


def _model_fields(obj: object) -> dict[str, Any]:
    # orjson calls this for every object it cannot write natively; only our pydantic records are
    # unpacked here, and everything else goes to the pydantic fallback.
    if not isinstance(obj, BaseModel):
        raise TypeError(type(obj).__name__)
    fields = obj.__dict__
    extra = obj.__pydantic_extra__
    computed = type(obj).__pydantic_computed_fields__
    if extra or computed:
        fields = {**fields, **(extra or {}), **{name: getattr(obj, name) for name in computed}}
    return fields


def _stored_fields(obj: object) -> dict[str, Any]:
    fields = _model_fields(obj)
    if isinstance(obj, Trace) and obj.turns:
        # As Trace's serializer does: later turns store only the prompt ids they add.
        fields = {**fields, "turns": stored_turns([_model_fields(turn) for turn in obj.turns])}
    return fields


def trace_json(trace: Trace, *, newline: bool = False) -> bytes:
    """The trace as ``model_dump_json()`` writes it, as UTF-8 bytes (plus ``\\n`` if asked)."""
    option = _OPTIONS | orjson.OPT_APPEND_NEWLINE if newline else _OPTIONS
    try:
        return orjson.dumps(trace, default=_stored_fields, option=option)
    except orjson.JSONEncodeError as exc:
        if "surrogates" in str(exc):
            # Rare (the graph repairs its input already): a lone surrogate from a caller's
            # metadata or a server reply. pydantic's JSON mode keeps strings as they are.
            return orjson.dumps(repair_tree(trace.model_dump(mode="json")), option=option)
    try:
        data = trace.model_dump_json().encode()
    except PydanticSerializationError as exc:
        raise TraceError(
            f"trace {trace.trace_id} cannot be written as JSON ({exc}); keep `metadata`,"
            " `sampling` and message contents to JSON types (str, number, bool, list, dict)"
        ) from exc
    return data + b"\n" if newline else data
