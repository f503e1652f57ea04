"""OpenTelemetry spans of a run, through the API only: the app installs and configures the SDK.

One span per run (``invoke_agent safe_context_agent``), and under it one per model call
(``chat {model}``, with the GenAI semantic conventions' ``gen_ai.*`` request and usage
attributes), one per consultation (``retrieval {pack}``, with rule ids and scores) and one per app
tool call (``execute_tool {name}``, current while the tool runs, so the tool's own spans nest in
it). Message content (prompts, answers, queries, tool arguments and results) is recorded only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``, the conventions' opt-in.

Without ``opentelemetry-api`` (the ``otel`` extra) every call here is a no-op; with the API but no
SDK configured, the API's own no-op tracer makes it nearly free.

Both faces use this one class: the graph (requests in OpenAI wire form, replies as the client's
``ModelReply``) and ``SafeContextMiddleware`` (LangChain tools and messages, replies as
``AIMessage``); the few readers below accept either shape.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from safe_context_agent._version import __version__

if TYPE_CHECKING:
    from langchain_core.messages import ToolCall

from safe_context_agent._sanitize import exception_text

__all__ = ["CAPTURE_CONTENT_ENV", "Telemetry"]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the optional `otel` extra is not installed
    otel_trace = None  # type: ignore[assignment]  # the module or None; every use checks `enabled` first


def _capture_content() -> bool:
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes")


def _tool_name(tool: Any) -> str | None:
    """The name of an offered tool: an OpenAI function schema or a LangChain tool."""
    if isinstance(tool, dict):
        return (tool.get("function") or {}).get("name") or tool.get("name")
    return getattr(tool, "name", None)


def _messages_json(messages: Any) -> str:
    from langchain_core.messages import BaseMessage

    from safe_context_agent.client._messages import to_wire

    wire = [to_wire(m) if isinstance(m, BaseMessage) else m for m in messages or []]
    return json.dumps([m for m in wire if m is not None], ensure_ascii=False, default=str)


def _reply_attributes(reply: Any) -> dict[str, Any]:
    """What a span records of a reply: the client's ``ModelReply`` or a LangChain ``AIMessage``."""
    from langchain_core.messages import AIMessage

    if isinstance(reply, AIMessage):
        usage: Mapping[str, Any] = reply.usage_metadata or {}
        return {
            "finish_reason": reply.response_metadata.get("finish_reason"),
            "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens"),
            "tool_calls": [call["name"] for call in reply.tool_calls],
            "content": reply.text,
        }
    return {
        "finish_reason": reply.finish_reason,
        "input_tokens": reply.prompt_tokens,
        "output_tokens": reply.completion_tokens,
        "tool_calls": [call.name for call in reply.tool_calls],
        "content": reply.content,
    }


def _rule_id_and_score(result: Any) -> tuple[str, float]:
    """A retrieval hit (``.rule``, ``.score``) or a trace's ``RetrievedRuleRef`` (``.id``)."""
    rule = getattr(result, "rule", result)
    return rule.id, float(result.score)


class _NoSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        pass


class Telemetry:
    """The spans of the runs of one graph; each run's span is kept by trace id until it ends."""

    def __init__(self, *, system: str = "vllm", pack: str | None = None) -> None:
        self.system = system
        self.pack = pack
        self._runs: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return otel_trace is not None

    def _tracer(self) -> Any:
        return otel_trace.get_tracer("safe_context_agent", __version__)

    def start_run(self, trace_id: str, mode: str, thread_id: str | None) -> None:
        if not self.enabled:
            return
        # A child of whatever span is current where the app invoked the graph.
        span = self._tracer().start_span(
            "invoke_agent safe_context_agent",
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "safe_context_agent",
                "sca.trace_id": trace_id,
                "sca.mode": mode,
                **({"gen_ai.conversation.id": thread_id} if thread_id else {}),
                **({"sca.pack": self.pack} if self.pack else {}),
            },
        )
        with self._lock:
            self._runs[trace_id] = span

    def end_run(self, trace_id: str, trace: Any) -> None:
        with self._lock:
            span = self._runs.pop(trace_id, None)
        if span is None:
            return
        span.set_attributes(
            {
                "sca.consulted": bool(trace.consulted),
                "sca.rule_ids": list(trace.rule_ids),
                "sca.model_turns": len(trace.turns),
                "sca.outcome": trace.outcome.status,
            }
        )
        if trace.outcome.status == "error":
            span.set_status(Status(StatusCode.ERROR, trace.outcome.message or ""))
            span.set_attribute("error.type", trace.outcome.error_type or "error")
        span.end()

    def _parent(self, trace_id: str) -> Any:
        with self._lock:
            span = self._runs.get(trace_id)
        return otel_trace.set_span_in_context(span) if span is not None else None

    @contextlib.contextmanager
    def model_call(
        self, trace_id: str, request: dict[str, Any], *, provider: str | None = None
    ) -> Iterator[Any]:
        """A ``chat {model}`` span around one model call; set the reply with :meth:`model_reply`.

        ``request``: the chat request's keywords (``model``, ``temperature``, ``top_p``,
        ``max_tokens``, ``tools``, ``messages``); ``provider`` overrides the graph's ``system``."""
        if not self.enabled:
            yield _NoSpan()
            return
        model = request.get("model")
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider or self.system,
            "gen_ai.request.model": model,
            "gen_ai.request.temperature": request.get("temperature"),
            "gen_ai.request.top_p": request.get("top_p"),
            "gen_ai.request.max_tokens": request.get("max_tokens"),
            "sca.tools_offered": [_tool_name(t) or "" for t in request.get("tools") or []],
        }
        if _capture_content():
            attributes["gen_ai.input.messages"] = _messages_json(request.get("messages"))
        span = self._tracer().start_span(
            f"chat {model}",
            context=self._parent(trace_id),
            kind=SpanKind.CLIENT,
            attributes={k: v for k, v in attributes.items() if v is not None},
        )
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, exception_text(exc)))
            span.set_attribute("error.type", type(exc).__name__)
            raise
        finally:
            span.end()

    @staticmethod
    def model_reply(span: Any, reply: Any) -> None:
        """The reply's attributes on a :meth:`model_call` span (a ``ModelReply`` or an ``AIMessage``)."""
        if isinstance(span, _NoSpan) or reply is None:
            return
        values = _reply_attributes(reply)
        attributes: dict[str, Any] = {
            "gen_ai.response.finish_reasons": [values["finish_reason"] or "unknown"],
            "gen_ai.usage.input_tokens": values["input_tokens"],
            "gen_ai.usage.output_tokens": values["output_tokens"],
            "sca.tool_calls": values["tool_calls"],
        }
        if _capture_content():
            attributes["gen_ai.output.messages"] = json.dumps(
                [{"role": "assistant", "content": values["content"]}], ensure_ascii=False
            )
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def consultation(
        self,
        trace_id: str,
        query: str,
        results: Sequence[Any] | BaseException,
        started_ns: int,
        ended_ns: int,
    ) -> None:
        """A ``retrieval {pack}`` span, recorded once the retrieval is done (it ran in a worker
        thread for the async graph: its times are passed in). ``results``: the search hits or
        the rule references a trace keeps, or the exception the retrieval raised."""
        if not self.enabled:
            return
        attributes: dict[str, Any] = {"gen_ai.operation.name": "retrieval"}
        if self.pack:
            attributes["gen_ai.data_source.id"] = self.pack
        if _capture_content():
            attributes["sca.query"] = query
        span = self._tracer().start_span(
            f"retrieval {self.pack or 'rules'}",
            context=self._parent(trace_id),
            kind=SpanKind.INTERNAL,
            start_time=started_ns,
            attributes=attributes,
        )
        if isinstance(results, BaseException):
            span.set_status(Status(StatusCode.ERROR, exception_text(results)))
            span.set_attribute("error.type", type(results).__name__)
        else:
            pairs = [_rule_id_and_score(r) for r in results]
            span.set_attributes(
                {
                    "sca.rule_ids": [rule_id for rule_id, _ in pairs],
                    "sca.rule_scores": [score for _, score in pairs],
                }
            )
        span.end(end_time=ended_ns)

    @contextlib.contextmanager
    def tool_call(self, trace_id: str | None, call: ToolCall) -> Iterator[Any]:
        """An ``execute_tool {name}`` span, current while the tool runs."""
        if not self.enabled:
            yield _NoSpan()
            return
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.get("name"),
            "gen_ai.tool.call.id": call.get("id"),
            "gen_ai.tool.type": "function",
        }
        if _capture_content():
            attributes["gen_ai.tool.call.arguments"] = json.dumps(
                call.get("args"), ensure_ascii=False
            )
        parent = self._parent(trace_id) if trace_id else None
        token = otel_context.attach(parent) if parent is not None else None
        try:
            with self._tracer().start_as_current_span(
                f"execute_tool {call.get('name')}",
                kind=SpanKind.INTERNAL,
                attributes={k: v for k, v in attributes.items() if v is not None},
            ) as span:
                yield span
        finally:
            if token is not None:
                otel_context.detach(token)

    @staticmethod
    def tool_result(span: Any, message: Any) -> None:
        if isinstance(span, _NoSpan):  # no opentelemetry-api: nothing to mark
            return
        status = getattr(message, "status", None)
        if status == "error":
            span.set_status(Status(StatusCode.ERROR, str(getattr(message, "content", ""))[:200]))
            span.set_attribute("error.type", "tool_error")
        if _capture_content() and message is not None:
            span.set_attribute("gen_ai.tool.call.result", str(getattr(message, "content", "")))
