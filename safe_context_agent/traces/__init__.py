"""Traces: the record of every agent run (schema), where they are written (sinks), how they are read."""

from safe_context_agent.traces._export import ExportReport, export_traces
from safe_context_agent.traces._reader import (
    SkippedRecord,
    TraceReadReport,
    TraceReadResult,
    group_traces,
    read_traces,
)
from safe_context_agent.traces._rows import export_features
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
    ToolRun,
    Trace,
    new_trace_id,
)
from safe_context_agent.traces._sinks import (
    JsonlTraceSink,
    MultiSink,
    SafeSink,
    SqliteTraceSink,
    TraceSink,
    open_sink,
)

__all__ = [
    "TRACE_SCHEMA_VERSION",
    "ConsultMode",
    "Consultation",
    "ExportReport",
    "FormatError",
    "FormatErrorKind",
    "JsonlTraceSink",
    "ModelTurn",
    "MultiSink",
    "Outcome",
    "PackRef",
    "RetrievedRuleRef",
    "SafeSink",
    "SkippedRecord",
    "SqliteTraceSink",
    "ToolCallRecord",
    "ToolRun",
    "Trace",
    "TraceReadReport",
    "TraceReadResult",
    "TraceSink",
    "export_features",
    "export_traces",
    "group_traces",
    "new_trace_id",
    "open_sink",
    "read_traces",
]
