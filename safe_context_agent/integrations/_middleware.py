"""``SafeContextMiddleware``: adaptive safe-context learning inside ``langchain.agents.create_agent``.

The app keeps its model, its tools and its own middleware; this one contributes the consult tool
(``tools``), adds the consult guidance (or, in ``always`` mode, the rules) to the system message,
fails closed like the graph, and writes one :class:`~safe_context_agent.traces.Trace` per agent
run: every model turn (token ids and logprobs when the model is :class:`ChatVLLM`), every
consultation and every app tool call.

Where the records come from: model turns are written by the model node itself (``wrap_model_call``
returns them as a state update, one model call at a time); tool results are read back from their
``ToolMessage``s in ``before_model``/``after_agent`` (tools run in parallel, so they never write
the record themselves: their artifact, status and latency travel on the message).

OpenTelemetry spans come from the graph's :class:`~safe_context_agent.graph._telemetry.Telemetry`,
so both faces emit the same ones: ``invoke_agent safe_context_agent`` per run, and under it
``chat {model}`` per model call, ``retrieval {pack}`` per consultation (the ``always`` mode's and
each ``consult_safety_rules`` call) and ``execute_tool {name}`` per app tool call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, NotRequired, cast

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain.agents.middleware.types import (
    ExtendedModelResponse,
    PrivateStateAttr,
    hook_config,
)
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.tools import ToolException
from langgraph.config import get_config
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command

from safe_context_agent._sanitize import exception_text, repair_surrogates
from safe_context_agent.client._messages import to_wire
from safe_context_agent.config import AgentConfig, validate_settings
from safe_context_agent.graph import (
    CONSULT_TOOL_NAME,
    AgentResources,
    Retriever,
    RunRecord,
    RunSummary,
)
from safe_context_agent.graph._app_tools import LATENCY_KEY, note_latency, tool_run
from safe_context_agent.graph._telemetry import Telemetry
from safe_context_agent.graph._tool import CONSULT_GUIDANCE, RULES_UNAVAILABLE, format_rules
from safe_context_agent.integrations._tool import make_consult_tool
from safe_context_agent.traces import (
    Consultation,
    ModelTurn,
    Outcome,
    RetrievedRuleRef,
    ToolCallRecord,
    ToolRun,
    Trace,
    TraceSink,
    new_trace_id,
)

__all__ = ["SafeContextMiddleware", "SafeContextState"]


class _MiddlewareRecord(RunRecord):
    start_index: int = 0
    """Where this run's messages begin in ``messages`` (its user message)."""
    model_name: str | None = None
    base_url: str | None = None
    chat_model: str | None = None


class SafeContextState(AgentState[Any]):
    """The agent state keys the middleware adds: its private run record and the run's outcome."""

    sca_run: NotRequired[Annotated[_MiddlewareRecord, PrivateStateAttr]]
    safe_context: NotRequired[RunSummary]


def _run_record(request: ModelRequest) -> _MiddlewareRecord | None:
    """This run's record; None for a model call outside an agent run. The state follows
    :class:`SafeContextState` (the middleware's ``state_schema``); ``ModelRequest`` types it as
    LangChain's base ``AgentState``, which has no ``sca_run``."""
    return cast("_MiddlewareRecord | None", request.state.get("sca_run"))


def _logprobs(metadata: dict[str, Any]) -> list[float] | None:
    """vLLM ids and logprobs from ChatVLLM; ChatOpenAI keeps logprobs as OpenAI entries."""
    values = metadata.get("logprobs")
    if isinstance(values, list):
        return [float(v) for v in values]
    if isinstance(values, dict) and isinstance(values.get("content"), list):
        return [float(entry["logprob"]) for entry in values["content"]]
    return None


def _span_request(request: ModelRequest) -> tuple[dict[str, Any], str | None]:
    """What a ``chat`` span records of a ``create_agent`` model call, and the provider: the
    settings of the app's chat model (ChatVLLM's or ChatOpenAI's field names)."""
    model = request.model
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    if name is None:  # ChatVLLM(model=None): the server's model, once it was asked
        name = getattr(getattr(model, "client", None), "config", None)
        name = getattr(name, "model", None)
    system = request.system_message
    messages = [{"role": "system", "content": system.text}] if system is not None else []
    llm_type = getattr(model, "_llm_type", None)
    return {
        "model": name,
        "temperature": getattr(model, "temperature", None),
        "top_p": getattr(model, "top_p", None),
        "max_tokens": getattr(model, "max_tokens", None),
        "tools": request.tools,
        "messages": [*messages, *request.messages],
    }, llm_type.removesuffix("-chat") if isinstance(llm_type, str) else None


def _arguments(args: Any) -> str:
    import json

    return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


def _ai_message(response: ModelResponse) -> AIMessage | None:
    return next((m for m in response.result if isinstance(m, AIMessage)), None)


class SafeContextMiddleware(AgentMiddleware[SafeContextState, Any, Any]):
    """ASCL for ``create_agent``: the model decides when to consult the rules.

    Arguments are :class:`~safe_context_agent.config.AgentConfig`'s (``pack``, ``mode``, ``k``,
    ``max_consultations``, ``fail_closed``, ``fail_closed_notice``, ``trace_path``, ...), or a
    whole ``config``; ``sink`` and ``retriever`` replace the configured ones (tests, shared
    indexes).

    >>> agent = create_agent(ChatVLLM(base_url=URL), tools=[lookup_order],  # doctest: +SKIP
    ...                      middleware=[SafeContextMiddleware(pack="general", trace_path=PATH)])
    """

    state_schema = SafeContextState

    def __init__(
        self,
        config: AgentConfig | None = None,
        *,
        sink: TraceSink | None = None,
        retriever: Retriever | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        if config is None:
            config = validate_settings(AgentConfig, settings, source="SafeContextMiddleware")
        elif settings:
            config = config.updated(settings)
        self.config = config
        self.resources = AgentResources(config, sink=sink, retriever=retriever)
        self.consult_tool = make_consult_tool(resources=self.resources)
        self.telemetry = Telemetry(pack=config.pack if config.mode != "never" else None)
        # The model sees the consult tool only in `adaptive` mode; `always` puts rules in context.
        self.tools = [self.consult_tool] if config.mode == "adaptive" else []

    # -- per-run record ---------------------------------------------------------------------
    def _begin(self, state: SafeContextState) -> _MiddlewareRecord:
        messages = state.get("messages") or []
        start = max(
            (i for i, m in enumerate(messages) if isinstance(m, HumanMessage)),
            default=len(messages),
        )
        prompt = messages[start].text if start < len(messages) else ""
        thread_id = (get_config().get("configurable") or {}).get("thread_id")
        record = _MiddlewareRecord(
            trace_id=new_trace_id(),
            started_at=datetime.now(UTC),
            thread_id=str(thread_id) if thread_id is not None else None,
            user_prompt=repair_surrogates(prompt),
            start_index=start,
        )
        self.telemetry.start_run(record.trace_id, self.config.mode, record.thread_id)
        return record

    def _always(self, record: _MiddlewareRecord, results: list[Any] | BaseException) -> None:
        query = record.user_prompt
        if isinstance(results, BaseException):
            error = f"{type(results).__name__}: {results}"
            record.consultations = [Consultation(source="always", query=query, error=error)]
            record.outcome = record.outcome.model_copy(update={"retrieval_failed": True})
            record.always_rules = RULES_UNAVAILABLE  # fail-open: the model is told, as in the graph
            return
        refs = [
            RetrievedRuleRef(id=r.rule.id, category=r.rule.category, score=r.score) for r in results
        ]
        record.consultations = [Consultation(source="always", query=query, rules=refs)]
        record.always_rules = format_rules(results)

    def _retrieve(self, trace_id: str, query: str) -> list[Any] | BaseException:
        started = time.time_ns()
        try:
            results: list[Any] | BaseException = list(self.resources.retrieve(query))
        except Exception as exc:  # the fail mode decides
            results = exc
        self.telemetry.consultation(trace_id, query, results, started, time.time_ns())
        return results

    def _started(self, record: _MiddlewareRecord) -> dict[str, Any]:
        update: dict[str, Any] = {"sca_run": record}
        if record.outcome.retrieval_failed and self.config.fail_closed:
            return {**update, **self._closed(record)}
        return update

    def _closed(self, record: _MiddlewareRecord) -> dict[str, Any]:
        record.answer = self.config.fail_closed_notice
        record.done = True
        return {
            "messages": [AIMessage(content=self.config.fail_closed_notice)],
            "jump_to": "end",
            "sca_run": record,
        }

    @hook_config(can_jump_to=["end"])
    def before_agent(self, state: SafeContextState, runtime: Runtime[Any]) -> dict[str, Any]:
        record = self._begin(state)
        if self.config.mode == "always":
            self._always(record, self._retrieve(record.trace_id, record.user_prompt))
        return self._started(record)

    @hook_config(can_jump_to=["end"])
    async def abefore_agent(self, state: SafeContextState, runtime: Runtime[Any]) -> dict[str, Any]:
        record = self._begin(state)
        if self.config.mode == "always":
            results = await asyncio.to_thread(self._retrieve, record.trace_id, record.user_prompt)
            self._always(record, results)
        return self._started(record)

    # -- tool results, read back from their messages ----------------------------------------
    def _note_tools(self, record: _MiddlewareRecord, messages: Sequence[AnyMessage]) -> None:
        seen = {c.tool_call_id for c in record.consultations} | {
            r.tool_call_id for r in record.tool_runs
        }
        calls: dict[str, tuple[int, ToolCall]] = {}
        turn = -1
        consultations, runs = list(record.consultations), list(record.tool_runs)
        for message in messages[record.start_index :]:
            if isinstance(message, AIMessage):
                turn += 1
                calls.update({c["id"]: (turn, c) for c in message.tool_calls if c["id"]})
                continue
            if not isinstance(message, ToolMessage) or message.tool_call_id in seen:
                continue
            if message.tool_call_id not in calls:
                continue
            index, call = calls[message.tool_call_id]
            if call["name"] == CONSULT_TOOL_NAME:
                latency = float(message.response_metadata.get(LATENCY_KEY, 0.0))
                consultations.append(self._consultation(message, call, index, latency))
            else:
                runs.append(tool_run(call, message, index))
        record.consultations, record.tool_runs = consultations, runs

    def _consultation(
        self, message: ToolMessage, call: ToolCall, turn: int, latency: float
    ) -> Consultation:
        artifact = message.artifact if isinstance(message.artifact, dict) else {}
        query = str(artifact.get("query") or call["args"].get("query") or "")
        category = artifact.get("category")
        return Consultation(
            source="tool_call",
            query=query,
            categories=[category] if category else None,
            rules=[RetrievedRuleRef(**rule) for rule in artifact.get("rules", [])],
            turn_index=turn,
            tool_call_id=message.tool_call_id,
            latency_s=latency,
            error=message.text if message.status == "error" else None,
        )

    def _before_model(self, state: SafeContextState) -> dict[str, Any] | None:
        record = state.get("sca_run")
        if record is None:
            return None
        record = record.model_copy()
        self._note_tools(record, state.get("messages") or [])
        if any(c.error for c in record.consultations if c.source == "tool_call"):
            record.outcome = record.outcome.model_copy(update={"retrieval_failed": True})
            if self.config.fail_closed:
                return self._closed(record)
        return {"sca_run": record}

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: SafeContextState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        return self._before_model(state)

    @hook_config(can_jump_to=["end"])
    async def abefore_model(
        self, state: SafeContextState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        return self._before_model(state)

    # -- the model call ---------------------------------------------------------------------
    def _request(self, request: ModelRequest, record: _MiddlewareRecord) -> ModelRequest:
        system = request.system_message
        parts: list[str] = [system.text] if system is not None else []
        tools = list(request.tools)
        if self.config.mode == "adaptive":
            parts.append(CONSULT_GUIDANCE)
            used = sum(1 for c in record.consultations if c.source == "tool_call")
            if used >= self.config.max_consultations:
                tools = [t for t in tools if getattr(t, "name", None) != CONSULT_TOOL_NAME]
        elif record.always_rules:
            parts.append(f"Safety rules for this request:\n{record.always_rules}")
        if not parts:  # nothing to add (`never`, no app system prompt): the request as it was
            return request.override(tools=tools)
        return request.override(
            system_message=SystemMessage(content="\n\n".join(parts)), tools=tools
        )

    def _turn(
        self,
        request: ModelRequest,
        record: _MiddlewareRecord,
        response: ModelResponse,
        latency: float,
    ) -> _MiddlewareRecord:
        message = _ai_message(response)
        record = record.model_copy()
        model = request.model
        if record.chat_model is None:
            record.chat_model = type(model).__name__
            inner = getattr(model, "client", None)
            record.base_url = getattr(inner, "base_url", None) or getattr(
                model, "openai_api_base", None
            )
        if message is None:
            return record
        metadata = message.response_metadata
        usage = message.usage_metadata
        record.model_name = metadata.get("model_name") or record.model_name
        record.turns = [
            *record.turns,
            ModelTurn(
                index=len(record.turns),
                prompt_token_ids=metadata.get("prompt_token_ids"),
                completion_token_ids=metadata.get("completion_token_ids"),
                logprobs=_logprobs(metadata),
                content=message.text,
                tool_calls=[
                    ToolCallRecord(
                        id=c["id"] or "",
                        name=c["name"],
                        arguments=_arguments(c["args"]),
                        parsed_by="fallback"
                        if "fallback" in (metadata.get("parsed_by") or [])
                        else "server",
                    )
                    for c in message.tool_calls
                ],
                finish_reason=metadata.get("finish_reason"),
                tools_offered=bool(request.tools),
                prompt_tokens=usage["input_tokens"] if usage else None,
                completion_tokens=usage["output_tokens"] if usage else None,
                latency_s=round(latency, 6),
                model=record.model_name,
            ),
        ]
        wire = (
            [{"role": "system", "content": request.system_message.text}]
            if (request.system_message is not None)
            else []
        )
        wire += [w for w in (to_wire(m) for m in [*request.messages, message]) if w is not None]
        record.wire_messages = wire
        return record

    def _failed(self, state: Any, record: _MiddlewareRecord, exc: Exception) -> Trace:
        record = record.model_copy()
        record.outcome = Outcome(
            status="error", error_type=type(exc).__name__, message=exception_text(exc)
        )
        trace = self._trace(state, record)
        self.telemetry.end_run(record.trace_id, trace)
        return trace

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse | ExtendedModelResponse:
        record = _run_record(request)
        if record is None:  # a model call outside an agent run (no before_agent): pass through
            return handler(request)
        request = self._request(request, record)
        started = time.perf_counter()
        summary, provider = _span_request(request)
        try:
            with self.telemetry.model_call(record.trace_id, summary, provider=provider) as span:
                response = handler(request)
                self.telemetry.model_reply(span, _ai_message(response))
        except Exception as exc:
            self.resources.record(self._failed(request.state, record, exc))
            raise
        updated = self._turn(request, record, response, time.perf_counter() - started)
        return ExtendedModelResponse(response, Command(update={"sca_run": updated}))

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse | ExtendedModelResponse:
        record = _run_record(request)
        if record is None:
            return await handler(request)
        request = self._request(request, record)
        started = time.perf_counter()
        summary, provider = _span_request(request)
        try:
            with self.telemetry.model_call(record.trace_id, summary, provider=provider) as span:
                response = await handler(request)
                self.telemetry.model_reply(span, _ai_message(response))
        except Exception as exc:
            await self.resources.arecord(self._failed(request.state, record, exc))
            raise
        updated = self._turn(request, record, response, time.perf_counter() - started)
        return ExtendedModelResponse(response, Command(update={"sca_run": updated}))

    # -- tool calls: timed, the result left on the message ----------------------------------
    def _tool_crashed(self, request: ToolCallRequest, exc: Exception) -> Trace | None:
        """The error trace of a run that an app tool ends by raising (``create_agent``'s tool
        node re-raises what its ``handle_tool_errors`` does not cover): the app sees its
        exception unchanged, and the run still leaves its trace."""
        state = request.state if isinstance(request.state, dict) else {}
        record = state.get("sca_run")
        if record is None:
            return None
        record = record.model_copy()
        self._note_tools(record, state.get("messages") or [])
        call = request.tool_call
        record.tool_runs = [
            *record.tool_runs,
            ToolRun(
                name=call["name"],
                tool_call_id=call["id"] or "",
                arguments=dict(call["args"]),
                status="error",
                error=f"{type(exc).__name__}: {exception_text(exc)}",
                turn_index=len(record.turns) - 1,
            ),
        ]
        return self._failed(state, record, exc)

    @staticmethod
    def _trace_id(request: ToolCallRequest) -> str | None:
        state = request.state if isinstance(request.state, dict) else {}
        record = state.get("sca_run")
        return record.trace_id if record is not None else None

    def _tool_span(self, request: ToolCallRequest) -> contextlib.AbstractContextManager[Any]:
        """An app tool's ``execute_tool`` span; a consultation gets its ``retrieval`` span
        once it is done (:meth:`_tool_done`), as in the graph."""
        if request.tool_call["name"] == CONSULT_TOOL_NAME:
            return contextlib.nullcontext()
        return self.telemetry.tool_call(self._trace_id(request), request.tool_call)

    def _tool_done(
        self, request: ToolCallRequest, span: Any, result: Any, started: float, started_ns: int
    ) -> None:
        note_latency(result, started)
        if request.tool_call["name"] != CONSULT_TOOL_NAME:
            if span is not None:
                self.telemetry.tool_result(span, result)
            return
        trace_id = self._trace_id(request)
        if trace_id is None or not isinstance(result, ToolMessage):
            return
        consultation = self._consultation(result, request.tool_call, 0, 0.0)
        outcome: list[Any] | BaseException = (
            ToolException(consultation.error) if consultation.error else consultation.rules
        )
        self.telemetry.consultation(
            trace_id, consultation.query, outcome, started_ns, time.time_ns()
        )

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Any]
    ) -> Any:
        with self._tool_span(request) as span:
            started_ns, started = time.time_ns(), time.perf_counter()
            try:
                result = handler(request)
            except Exception as exc:
                trace = self._tool_crashed(request, exc)
                if trace is not None:
                    self.resources.record(trace)
                raise
            self._tool_done(request, span, result, started, started_ns)
        return result

    async def awrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[Any]]
    ) -> Any:
        with self._tool_span(request) as span:
            started_ns, started = time.time_ns(), time.perf_counter()
            try:
                result = await handler(request)
            except Exception as exc:
                trace = await asyncio.to_thread(self._tool_crashed, request, exc)
                if trace is not None:
                    await self.resources.arecord(trace)
                raise
            self._tool_done(request, span, result, started, started_ns)
        return result

    # -- the end of the run: one trace -------------------------------------------------------
    def _trace(self, state: Any, record: _MiddlewareRecord) -> Trace:
        return Trace(
            trace_id=record.trace_id,
            thread_id=record.thread_id,
            started_at=record.started_at,
            finished_at=datetime.now(UTC),
            model=record.model_name or "unknown",
            base_url=record.base_url,
            pack=self.resources.pack_ref_or_none(),
            mode=self.config.mode,
            messages=record.wire_messages or [{"role": "user", "content": record.user_prompt}],
            turns=record.turns,
            consultations=record.consultations,
            tool_runs=record.tool_runs,
            answer=record.answer,
            outcome=record.outcome,
            metadata={"integration": "create_agent", "chat_model": record.chat_model},
        )

    def _finish(self, state: SafeContextState) -> tuple[Trace | None, dict[str, Any] | None]:
        record = state.get("sca_run")
        if record is None:
            return None, None
        record = record.model_copy()
        messages = state.get("messages") or []
        self._note_tools(record, messages)
        last = messages[-1] if messages else None
        if record.answer is None and isinstance(last, AIMessage):
            record.answer = last.text
        if record.wire_messages and isinstance(last, AIMessage) and record.done:
            record.wire_messages = [
                *record.wire_messages,
                {"role": "assistant", "content": last.text},
            ]
        trace = self._trace(state, record)
        self.telemetry.end_run(record.trace_id, trace)
        summary: RunSummary = {
            "trace_id": trace.trace_id,
            "status": trace.outcome.status,
            "consulted": trace.consulted,
            "rule_ids": trace.rule_ids,
            "tools_called": [run.name for run in trace.tool_runs],
            "answer": trace.answer,
        }
        return trace, {"safe_context": summary}

    def after_agent(self, state: SafeContextState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        trace, update = self._finish(state)
        if trace is not None:
            self.resources.record(trace)
        return update

    async def aafter_agent(
        self, state: SafeContextState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        # The pack reference reads the pack's files on first use: off the event loop.
        trace, update = await asyncio.to_thread(self._finish, state)
        if trace is not None:
            await self.resources.arecord(trace)
        return update

    def close(self) -> None:
        """Flush and close the trace sink."""
        self.resources.close()
