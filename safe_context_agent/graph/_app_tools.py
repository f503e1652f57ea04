"""The app's own tools as the graph and the middleware both record them: one place that times a
tool call, leaves the time on its ``ToolMessage`` and turns the message into a ``ToolRun``.

Tools may run in parallel (one ``Send`` each), so they never write the run record themselves:
what a trace needs travels on the message and is read back by the next step.
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.messages import ToolCall, ToolMessage

from safe_context_agent.traces import ToolRun

__all__ = ["LATENCY_KEY", "note_latency", "tool_error", "tool_run"]

LATENCY_KEY = "sca_latency_s"
"""``ToolMessage.response_metadata`` key holding how long the tool ran, in seconds."""
_RESULT_CHARS = 2_000


def note_latency(result: Any, started: float) -> None:
    """Stamp the tool's run time (since ``perf_counter`` ``started``) on its message."""
    if isinstance(result, ToolMessage):
        result.response_metadata[LATENCY_KEY] = round(time.perf_counter() - started, 6)


def tool_error(exc: Exception) -> str:
    """What the model reads when an app tool raises: one line, and what it can do next."""
    return f"Error: {type(exc).__name__}: {exc}. Fix the arguments, or answer without this tool."


def tool_run(call: ToolCall, message: ToolMessage, turn_index: int) -> ToolRun:
    """The trace record of one app tool call from the call and the tool message answering it."""
    text = message.text
    return ToolRun(
        name=call["name"],
        tool_call_id=message.tool_call_id,
        arguments=dict(call["args"]),
        result=text[:_RESULT_CHARS],
        status=message.status,
        error=text[:_RESULT_CHARS] if message.status == "error" else None,
        turn_index=turn_index,
        latency_s=float(message.response_metadata.get(LATENCY_KEY, 0.0)),
    )
