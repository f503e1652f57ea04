"""Errors the library raises on bad input. Every message says what is wrong, where, and the fix.

The CLI prints a :class:`SafeContextError` as one line (no traceback) and exits with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "AgentRunError",
    "ConfigError",
    "ModelCallError",
    "ModelPrepareError",
    "RetrievalError",
    "RulePackError",
    "SafeContextError",
    "ServeError",
    "TraceError",
]


class SafeContextError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(SafeContextError):
    """A setting is missing or invalid."""


class RulePackError(SafeContextError):
    """A rule pack folder is malformed: the message names the file, the rule id, the field and the fix."""


class RetrievalError(SafeContextError):
    """The rule index could not be built, loaded or searched."""


class ModelPrepareError(SafeContextError):
    """The embedded model could not be obtained or converted."""


class ServeError(SafeContextError):
    """The vLLM server could not be started, reached or stopped."""


class TraceError(SafeContextError):
    """A trace file or record is malformed: the message names the file, the record and the field."""


class ModelCallError(SafeContextError):
    """The model endpoint could not be reached or rejected the request (dead server, bad model name,
    prompt longer than the served context)."""


class AgentRunError(SafeContextError):
    """An agent run ended in an error; its trace (outcome ``error``) was written before this is raised."""

    def __init__(self, message: str, *, trace_id: str | None = None) -> None:
        super().__init__(message)
        self.trace_id = trace_id
