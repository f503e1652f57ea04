"""Traces: the record of every agent run (schema), where they are written (sinks), how they are read."""

from safe_context_agent.traces._schema import (
    TRACE_SCHEMA_VERSION,
    Consultation,
    ConsultMode,
    FormatError,
    FormatErrorKind,
    ModelTurn,
    Outcome,
    PackRef,
    RetrievedRuleRef,
    ToolCallRecord,
    Trace,
    new_trace_id,
)

__all__ = [
    "TRACE_SCHEMA_VERSION",
    "ConsultMode",
    "Consultation",
    "FormatError",
    "FormatErrorKind",
    "ModelTurn",
    "Outcome",
    "PackRef",
    "RetrievedRuleRef",
    "ToolCallRecord",
    "Trace",
    "new_trace_id",
]
