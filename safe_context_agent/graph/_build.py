"""The decide-to-consult state machine (ASCL, arXiv 2602.13562, as a LangGraph graph).

```
START → start ─┬──────────────────────────────→ finish → END   (bad input, fail-closed `always`)
               └→ model ─┬→ consult ─┐ (consult_safety_rules, unusable calls, budget notices)
                  ↑      ├→ tools ───┤ (the app's own tools, LangGraph's ToolNode, one Send each)
                  └──────┴───────────┘
                         └→ finish → END
```

``start`` resets the per-run record (and retrieves up front in ``always`` mode); ``model`` calls
the endpoint through :class:`~safe_context_agent.client.ChatVLLM` (so ``stream_mode="messages"``
gets token chunks), offering ``consult_safety_rules`` in ``adaptive`` mode while budget remains and
the app's tools in every mode; routing reads the last ``AIMessage``'s tool calls; ``consult``
answers every call that is not an app tool's (rules, one corrective message, the budget notice);
``finish`` writes the trace and publishes the outcome. Node logic is plain methods over the state
so the sync and async graphs share every line but the I/O.

Every node, the app tools' ``ToolNode`` included, runs inside one crash guard
(:meth:`_Nodes.guarded`): an unexpected exception (a bug, a client, index or tool library failing
outside its own error types) still writes the run's error trace, from what the node had recorded
and the state it was given, and then propagates unchanged with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.config import get_stream_writer
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Checkpointer, Send

from safe_context_agent._sanitize import exception_text, repair_surrogates, repair_tree
from safe_context_agent.client import ChatClient, ModelReply, TokenCallback, strip_tool_markup
from safe_context_agent.client._chat_model import REPLY_KEY, REQUEST_KEY, ChatVLLM
from safe_context_agent.client._messages import message_from_reply, to_wire
from safe_context_agent.config import PLAIN_SYSTEM_PROMPT, AgentConfig
from safe_context_agent.errors import AgentRunError, ConfigError, ModelCallError
from safe_context_agent.graph._app_tools import note_latency, tool_error, tool_run
from safe_context_agent.graph._resources import AgentResources
from safe_context_agent.graph._state import (
    AgentInput,
    AgentState,
    RunRecord,
    RunSummary,
    _GraphState,
)
from safe_context_agent.graph._telemetry import Telemetry
from safe_context_agent.graph._tool import (
    BUDGET_NOTICE,
    CONSULT_TOOL,
    CONSULT_TOOL_NAME,
    CORRECTION_TEMPLATE,
    RULES_UNAVAILABLE,
    UNKNOWN_TOOL_TEMPLATE,
    format_rules,
    read_consult_arguments,
)
from safe_context_agent.traces import (
    Consultation,
    FormatError,
    ModelTurn,
    Outcome,
    RetrievedRuleRef,
    Trace,
    new_trace_id,
)

__all__ = ["STREAM_TOKENS_KEY", "ModelClient", "build_graph"]

logger = logging.getLogger(__name__)

_WORKING_RECORD: ContextVar[RunRecord | None] = ContextVar("sca_working_record", default=None)
"""The run record the running node is filling in (set by ``_begin`` and ``_record``), so the
crash guard keeps what the node did before it failed: the record ``start`` is making, a model
turn already added."""

STREAM_TOKENS_KEY = "sca_stream_tokens"
"""``config["configurable"][STREAM_TOKENS_KEY] = True`` also writes each token as a ``custom``
event ``{"type": "token", "turn": i, "text": ...}`` (``SafeContextAgent.stream`` sets it);
``stream_mode="messages"`` needs nothing: it gets ``AIMessageChunk``s as from any chat model."""


class ModelClient(Protocol):
    """What the model node needs (``ChatClient`` satisfies it; tests script a fake)."""

    base_url: str

    def request(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> dict[str, Any]: ...

    def complete(
        self, kwargs: dict[str, Any], on_token: TokenCallback | None = None
    ) -> ModelReply: ...

    async def acomplete(
        self, kwargs: dict[str, Any], on_token: TokenCallback | None = None
    ) -> ModelReply: ...

    def stream(self, kwargs: dict[str, Any]) -> Any: ...

    def astream(self, kwargs: dict[str, Any]) -> Any: ...


def _timed(record: RunRecord, node: str, started: float) -> None:
    record.node_latencies = {
        **record.node_latencies,
        node: [*record.node_latencies.get(node, []), round(time.perf_counter() - started, 6)],
    }


def _last_user_text(messages: Sequence[AnyMessage]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.content if isinstance(message.content, str) else message.text
    return None


def _last_ai(messages: Sequence[AnyMessage]) -> AIMessage | None:
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            return message
    return None


def _record(state: _GraphState) -> RunRecord:
    record = state.get("sca_run")
    if record is None:  # a node reached without `start` (a bug, or a hand-edited checkpoint)
        raise AgentRunError("the run has no record: the graph must enter through its start node")
    working = record.model_copy()
    _WORKING_RECORD.set(working)
    return working


def _bad_input(message: str) -> Outcome:
    return Outcome(status="error", error_type="BadInput", message=message)


class _CustomTokens(BaseCallbackHandler):
    """Writes each token of the model call to the ``custom`` stream (``STREAM_TOKENS_KEY``)."""

    def __init__(self, write: TokenCallback) -> None:
        self.write = write

    def on_llm_new_token(self, token: str | list[str | dict[str, Any]], **kwargs: Any) -> None:
        if isinstance(token, str) and token:  # content blocks (a list) come from other models
            self.write(token)


class _Nodes:
    """Node functions over the state; sync and async variants differ only in the I/O calls."""

    def __init__(
        self,
        config: AgentConfig,
        client: ModelClient,
        resources: AgentResources,
        tools: Sequence[BaseTool],
    ) -> None:
        self.config = config
        self.client = client
        self.resources = resources
        self.app_tools = {tool.name: tool for tool in tools}
        self.app_schemas = [convert_to_openai_tool(tool) for tool in tools]
        self.chat = ChatVLLM(client=client, model=config.model)
        self.telemetry = Telemetry(pack=config.pack if config.mode != "never" else None)
        # (trace id, step) of the error traces the guard wrote, newest last: one per failed step
        # of a run, however many of its parallel tool calls crashed in it.
        self._crashed: list[tuple[str, Any]] = []
        self._crash_lock = threading.Lock()

    # -- start ------------------------------------------------------------------------------
    def _begin(self, state: _GraphState, config: RunnableConfig | None) -> RunRecord:
        thread_id = ((config or {}).get("configurable") or {}).get("thread_id")
        record = RunRecord(
            trace_id=new_trace_id(),
            started_at=datetime.now(UTC),
            thread_id=str(thread_id) if thread_id is not None else None,
        )
        prompt = _last_user_text(state.get("messages") or [])
        if prompt is not None:
            prompt = repair_surrogates(prompt)  # see _sanitize: repaired, not refused
        if prompt is None:
            record.outcome = _bad_input("the input has no user message")
        elif not prompt.strip():
            record.outcome = _bad_input(
                "the user prompt is empty or only whitespace; pass the request to answer"
            )
        elif len(prompt) > self.config.max_prompt_chars:
            record.outcome = _bad_input(
                f"the user prompt is {len(prompt)} characters, over max_prompt_chars="
                f"{self.config.max_prompt_chars}; shorten it or raise the limit"
            )
        record.done = record.outcome.status == "error"
        record.user_prompt = prompt or ""
        _WORKING_RECORD.set(record)
        return record

    def _apply_always(self, record: RunRecord, results: list[Any] | BaseException) -> None:
        query = record.user_prompt
        if isinstance(results, BaseException):
            failed = Consultation(
                source="always", query=query, error=f"{type(results).__name__}: {results}"
            )
            record.consultations = [failed]
            self._retrieval_failed(record)
            return
        record.consultations = [Consultation(source="always", query=query, rules=_refs(results))]
        record.always_rules = format_rules(results)

    def _retrieval_failed(self, record: RunRecord) -> None:
        record.outcome = record.outcome.model_copy(update={"retrieval_failed": True})
        if self.config.fail_closed:
            # `finish` adds the notice as the last message, after every tool message of the turn.
            record.answer = self.config.fail_closed_notice
            record.done = True
        elif self.config.mode == "always":
            record.always_rules = RULES_UNAVAILABLE

    def start(self, state: _GraphState, config: RunnableConfig) -> dict[str, Any]:
        started = time.perf_counter()
        record = self._begin(state, config)
        self.telemetry.start_run(record.trace_id, self.config.mode, record.thread_id)
        if not record.done and self.config.mode == "always":
            t0 = time.perf_counter()
            results = self._retrieve_or_exception(record.trace_id, record.user_prompt)
            self._apply_always(record, results)
            _stamp_latency(record, t0)
        _timed(record, "start", started)
        return {"sca_run": record}

    async def astart(self, state: _GraphState, config: RunnableConfig) -> dict[str, Any]:
        started = time.perf_counter()
        record = self._begin(state, config)
        self.telemetry.start_run(record.trace_id, self.config.mode, record.thread_id)
        if not record.done and self.config.mode == "always":
            t0 = time.perf_counter()
            results = await asyncio.to_thread(
                self._retrieve_or_exception, record.trace_id, record.user_prompt
            )
            self._apply_always(record, results)
            _stamp_latency(record, t0)
        _timed(record, "start", started)
        return {"sca_run": record}

    def _retrieve_or_exception(
        self, trace_id: str, query: str, category: str | None = None
    ) -> list[Any] | BaseException:
        started = time.time_ns()
        try:
            results: list[Any] | BaseException = list(self.resources.retrieve(query, category))
        except Exception as exc:
            results = exc
        self.telemetry.consultation(trace_id, query, results, started, time.time_ns())
        return results

    # -- model ------------------------------------------------------------------------------
    def _consult_offered(self, record: RunRecord) -> bool:
        return (
            self.config.mode == "adaptive"
            and record.consultations_used() < self.config.max_consultations
        )

    def _offered_tools(self, record: RunRecord) -> list[dict[str, Any]]:
        turns_left_after_this = self.config.max_model_turns - len(record.turns) - 1
        if turns_left_after_this <= 0:
            return []  # the last turn must answer
        consult = [CONSULT_TOOL] if self._consult_offered(record) else []
        return consult + self.app_schemas

    def _note_tool_runs(self, record: RunRecord, messages: Sequence[AnyMessage]) -> None:
        """Record the app tools that ran since the last model turn (the tool node's messages)."""
        last = _last_ai(messages)
        if last is None or not record.turns or not self.app_tools:
            return
        calls = {c["id"]: c for c in last.tool_calls if c["name"] in self.app_tools}
        done = {run.tool_call_id for run in record.tool_runs}
        runs = []
        for message in messages[messages.index(last) + 1 :]:
            if not isinstance(message, ToolMessage) or message.tool_call_id not in calls:
                continue
            if message.tool_call_id in done:
                continue
            runs.append(tool_run(calls[message.tool_call_id], message, len(record.turns) - 1))
        if runs:
            record.tool_runs = [*record.tool_runs, *runs]

    def _wire(self, record: RunRecord, messages: Sequence[AnyMessage]) -> list[dict[str, Any]]:
        """The conversation in OpenAI wire form, as the next model call sends it."""
        system = (
            self.config.system_prompt if self.config.mode == "adaptive" else PLAIN_SYSTEM_PROMPT
        )
        parts = [system, *(m.text for m in messages if isinstance(m, SystemMessage))]
        if record.always_rules:
            parts.append(f"Safety rules for this request:\n{record.always_rules}")
        wire = [{"role": "system", "content": "\n\n".join(parts)}]
        wire += [w for w in (to_wire(m) for m in messages) if w is not None]
        # The SDK encodes UTF-8 strictly: a lone surrogate anywhere would crash the call.
        return repair_tree(wire)

    def _prepare(
        self, state: _GraphState, record: RunRecord
    ) -> tuple[list[AnyMessage], dict[str, Any], bool]:
        messages = state.get("messages") or []
        self._note_tool_runs(record, messages)
        wire = self._wire(record, messages)
        tools = self._offered_tools(record)
        record.wire_messages = wire
        return list(messages), self.client.request(wire, tools or None), bool(tools)

    def _after_reply(
        self, record: RunRecord, reply: ModelReply, offered: bool, message_id: str | None
    ) -> dict[str, Any]:
        index = len(record.turns)
        record.turns = [
            *record.turns,
            ModelTurn(
                index=index,
                prompt_token_ids=reply.prompt_token_ids,
                completion_token_ids=reply.completion_token_ids,
                logprobs=reply.logprobs,
                content=reply.content,
                tool_calls=reply.tool_calls,
                finish_reason=reply.finish_reason,
                tools_offered=offered,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                latency_s=round(reply.latency_s, 6),
                model=self.config.model,
            ),
        ]
        message = message_from_reply(reply, model=self.config.model, message_id=message_id)
        wants_tools = bool(message.tool_calls or message.invalid_tool_calls)
        # A call of nothing offered: no tool at all, or only the consult tool once its budget
        # is spent (the app's tools may still be offered).
        spent = offered and not self._consult_offered(record)
        stray = not offered or (
            spent
            and not message.invalid_tool_calls
            and all(c["name"] == CONSULT_TOOL_NAME for c in message.tool_calls)
        )
        if wants_tools and stray:
            record.format_errors = [
                *record.format_errors,
                FormatError(
                    kind="call_without_tools",
                    turn_index=index,
                    detail="the model called a tool on a turn where no tool was offered"
                    if not offered
                    else "the model consulted again after its consultations were used up",
                    raw=reply.content,
                ),
            ]
            turns_left = self.config.max_model_turns - len(record.turns)
            if record.budget_notice_sent or turns_left <= 0:
                wants_tools = False  # told once already, or no turn left: this is the answer
        if wants_tools:
            self._wire_append(record, message)
            return {"messages": [message]}
        answer = strip_tool_markup(reply.content)
        record.answer = answer
        record.answer_emitted = True
        record.done = True
        final = AIMessage(
            content=answer,
            response_metadata=message.response_metadata,
            usage_metadata=message.usage_metadata,
            id=message_id,
        )
        self._wire_append(record, final)
        return {"messages": [final]}

    @staticmethod
    def _wire_append(record: RunRecord, message: AIMessage) -> None:
        wire = to_wire(message)
        assert wire is not None
        record.wire_messages = [*record.wire_messages, wire]

    def _model_failed(self, record: RunRecord, exc: ModelCallError) -> dict[str, Any]:
        record.outcome = Outcome(status="error", error_type=type(exc).__name__, message=str(exc))
        record.done = True
        return {}

    def _call_kwargs(
        self, config: RunnableConfig, turn: int, request: dict[str, Any]
    ) -> tuple[RunnableConfig, dict[str, Any], list[ModelReply]]:
        """The chat model call's config and keywords: the prepared request, where the reply
        goes, and, for the ``custom`` token stream, a token callback and ``stream=True``."""
        replies: list[ModelReply] = []
        kwargs: dict[str, Any] = {REQUEST_KEY: request, REPLY_KEY: replies}
        if not (config or {}).get("configurable", {}).get(STREAM_TOKENS_KEY):
            return config, kwargs, replies
        writer = get_stream_writer()
        handler = _CustomTokens(lambda text: writer({"type": "token", "turn": turn, "text": text}))
        callbacks = config.get("callbacks")
        if callbacks is None:
            merged: Any = [handler]
        elif isinstance(callbacks, list):
            merged = [*callbacks, handler]
        else:
            merged = callbacks.copy()
            merged.add_handler(handler, inherit=False)
        return {**config, "callbacks": merged}, {**kwargs, "stream": True}, replies

    def model(self, state: _GraphState, config: RunnableConfig) -> dict[str, Any]:
        record = _record(state)
        if record.done:  # consult ended the run (fail-closed) while app tools ran beside it
            return {}
        started = time.perf_counter()
        try:
            messages, request, offered = self._prepare(state, record)
            call_config, kwargs, replies = self._call_kwargs(config, len(record.turns), request)
            with self.telemetry.model_call(record.trace_id, request) as span:
                returned = self.chat.invoke(messages, call_config, **kwargs)
                self.telemetry.model_reply(span, replies[-1])
            update = self._after_reply(record, replies[-1], offered, returned.id)
        except ModelCallError as exc:
            update = self._model_failed(record, exc)
        _timed(record, "model", started)
        return {**update, "sca_run": record}

    async def amodel(self, state: _GraphState, config: RunnableConfig) -> dict[str, Any]:
        record = _record(state)
        if record.done:
            return {}
        started = time.perf_counter()
        try:
            messages, request, offered = self._prepare(state, record)
            call_config, kwargs, replies = self._call_kwargs(config, len(record.turns), request)
            with self.telemetry.model_call(record.trace_id, request) as span:
                returned = await self.chat.ainvoke(messages, call_config, **kwargs)
                self.telemetry.model_reply(span, replies[-1])
            update = self._after_reply(record, replies[-1], offered, returned.id)
        except ModelCallError as exc:
            update = self._model_failed(record, exc)
        _timed(record, "model", started)
        return {**update, "sca_run": record}

    # -- consult ----------------------------------------------------------------------------
    def _plan_consult(
        self, state: _GraphState, record: RunRecord
    ) -> list[tuple[str, str | None, str | None, str | None]]:
        """(call id, tool name, query, reply) per call the consult node answers: a query to
        retrieve for, or the reply (a correction or a notice) to give instead."""
        last = _last_ai(state.get("messages") or [])
        if last is None:
            return []
        turn = len(record.turns) - 1
        offered = bool(record.turns and record.turns[-1].tools_offered)
        consult_offered = offered and self.config.mode == "adaptive"
        used = record.consultations_used()
        errors = list(record.format_errors)
        plan: list[tuple[str, str | None, str | None, str | None]] = []

        def error(kind: Any, detail: str, raw: str | None) -> None:
            errors.append(FormatError(kind=kind, turn_index=turn, detail=detail, raw=raw))

        for bad in last.invalid_tool_calls:
            if offered:
                error("malformed_json", bad["error"] or "unusable tool call", bad["args"])
                reply = CORRECTION_TEMPLATE.format(error=bad["error"] or "unusable tool call")
            else:
                reply = BUDGET_NOTICE
            plan.append((bad["id"] or "", bad["name"], None, reply))
        for call in last.tool_calls:
            name, call_id = call["name"], call["id"] or ""
            if name in self.app_tools and offered:
                continue  # the tool node runs it
            if not offered:
                record.budget_notice_sent = True
                plan.append((call_id, name, None, BUDGET_NOTICE))
            elif name != CONSULT_TOOL_NAME or not consult_offered:
                if name == CONSULT_TOOL_NAME and self.config.mode == "adaptive":
                    record.budget_notice_sent = True
                    plan.append((call_id, name, None, BUDGET_NOTICE))
                    continue
                error("unknown_tool", f"unknown tool {name!r}", _dumps(call["args"]))
                plan.append((call_id, name, None, self._unknown_tool(name)))
            else:
                raw = _dumps(call["args"])
                arguments = read_consult_arguments(raw)
                if arguments.query is None:
                    assert arguments.error_kind is not None
                    error(arguments.error_kind, arguments.error or "", raw)
                    plan.append(
                        (call_id, name, None, CORRECTION_TEMPLATE.format(error=arguments.error))
                    )
                elif used >= self.config.max_consultations:
                    record.budget_notice_sent = True
                    plan.append((call_id, name, None, BUDGET_NOTICE))
                else:
                    used += 1
                    category = self.resources.known_category(arguments.category)
                    plan.append((call_id, name, arguments.query, category))
                    continue
        record.format_errors = errors
        return plan

    def _unknown_tool(self, name: str) -> str:
        offered = ([CONSULT_TOOL_NAME] if self.config.mode == "adaptive" else []) + list(
            self.app_tools
        )
        return UNKNOWN_TOOL_TEMPLATE.format(name=name, tools=", ".join(offered) or "none")

    def _apply_consult(
        self,
        record: RunRecord,
        plan: list[tuple[str, str | None, str | None, str | None]],
        outcomes: list[list[Any] | BaseException | None],
        latencies: list[float],
    ) -> dict[str, Any]:
        turn = len(record.turns) - 1
        messages: list[AnyMessage] = []
        consultations = list(record.consultations)
        failed = False
        for (call_id, name, query, extra), result, latency in zip(
            plan, outcomes, latencies, strict=True
        ):
            tool_name = name or "unknown"
            if query is None:
                messages.append(
                    ToolMessage(
                        content=extra or "", tool_call_id=call_id, name=tool_name, status="error"
                    )
                )
                continue
            consultation = Consultation(
                source="tool_call",
                query=query,
                categories=[extra] if extra else None,
                turn_index=turn,
                tool_call_id=call_id,
                latency_s=latency,
            )
            if isinstance(result, BaseException):
                consultation.error = f"{type(result).__name__}: {result}"
                consultations.append(consultation)
                failed = True
                messages.append(
                    ToolMessage(
                        content=RULES_UNAVAILABLE,
                        tool_call_id=call_id,
                        name=tool_name,
                        status="error",
                    )
                )
                continue
            assert result is not None
            consultation.rules = _refs(result)
            consultations.append(consultation)
            messages.append(
                ToolMessage(
                    content=format_rules(result),
                    tool_call_id=call_id,
                    name=tool_name,
                    artifact={"rules": [r.model_dump() for r in consultation.rules]},
                )
            )
        record.consultations = consultations
        if failed:
            self._retrieval_failed(record)
        return {"messages": messages}

    def consult(self, state: _GraphState, config: RunnableConfig) -> dict[str, Any]:
        started = time.perf_counter()
        record = _record(state)
        plan = self._plan_consult(state, record)
        outcomes: list[list[Any] | BaseException | None] = []
        latencies: list[float] = []
        for _id, _name, query, category in plan:
            t0 = time.perf_counter()
            outcomes.append(
                None
                if query is None
                else self._retrieve_or_exception(record.trace_id, query, category)
            )
            latencies.append(round(time.perf_counter() - t0, 6))
        update = self._apply_consult(record, plan, outcomes, latencies)
        _timed(record, "consult", started)
        return {**update, "sca_run": record}

    async def aconsult(self, state: _GraphState, config: RunnableConfig) -> dict[str, Any]:
        started = time.perf_counter()
        record = _record(state)
        await self.resources.aload_pack()  # the plan checks categories against the pack
        plan = self._plan_consult(state, record)
        outcomes: list[list[Any] | BaseException | None] = []
        latencies: list[float] = []
        for _id, _name, query, category in plan:
            t0 = time.perf_counter()
            outcomes.append(
                None
                if query is None
                else await asyncio.to_thread(
                    self._retrieve_or_exception, record.trace_id, query, category
                )
            )
            latencies.append(round(time.perf_counter() - t0, 6))
        update = self._apply_consult(record, plan, outcomes, latencies)
        _timed(record, "consult", started)
        return {**update, "sca_run": record}

    # -- app tools: timed and traced around LangGraph's ToolNode -----------------------------
    def _tool_span(self, request: ToolCallRequest) -> Any:
        state = request.state if isinstance(request.state, dict) else {}
        record = state.get("sca_run")
        return self.telemetry.tool_call(record.trace_id if record else None, request.tool_call)

    def timed_call(
        self, request: ToolCallRequest, execute: Callable[[ToolCallRequest], Any]
    ) -> Any:
        with self._tool_span(request) as span:
            started = time.perf_counter()
            result = execute(request)
            note_latency(result, started)
            self.telemetry.tool_result(span, result)
        return result

    async def atimed_call(
        self, request: ToolCallRequest, execute: Callable[[ToolCallRequest], Any]
    ) -> Any:
        with self._tool_span(request) as span:
            started = time.perf_counter()
            result = await execute(request)
            note_latency(result, started)
            self.telemetry.tool_result(span, result)
        return result

    # -- routing ----------------------------------------------------------------------------
    def route_after_model(self, state: _GraphState) -> list[str | Send] | str:
        record = state["sca_run"]
        if record.done:
            return "finish"
        last = _last_ai(state.get("messages") or [])
        assert last is not None, "a model turn that is not the answer leaves an AIMessage"
        offered = bool(record.turns and record.turns[-1].tools_offered)
        app_calls = [c for c in last.tool_calls if offered and c["name"] in self.app_tools]
        routes: list[str | Send] = [
            Send(
                "tools",
                {"__type": "tool_call_with_context", "tool_call": call, "state": state},
            )
            for call in app_calls
        ]
        if len(app_calls) < len(last.tool_calls) or last.invalid_tool_calls:
            routes.append("consult")
        return routes or "model"

    # -- finish -----------------------------------------------------------------------------
    def _trace(self, state: _GraphState, record: RunRecord) -> Trace:
        run = state.get("run") or {}
        return Trace(
            trace_id=record.trace_id,
            group_id=run.get("group_id"),
            sample_index=run.get("sample_index"),
            thread_id=record.thread_id,
            started_at=record.started_at,
            finished_at=datetime.now(UTC),
            model=self.config.model,
            base_url=self.client.base_url,  # the Trace validator drops user-info
            sampling=self.config.sampling.model_dump(),
            pack=self.resources.pack_ref_or_none(),
            mode=self.config.mode,
            messages=record.wire_messages or [{"role": "user", "content": record.user_prompt}],
            turns=record.turns,
            consultations=record.consultations,
            format_errors=record.format_errors,
            tool_runs=record.tool_runs,
            node_latencies=dict(record.node_latencies),
            answer=record.answer,
            outcome=record.outcome,
            metadata=dict(run.get("metadata") or {}),
        )

    def _publish(self, record: RunRecord, trace: Trace) -> dict[str, Any]:
        if trace.outcome.status == "error":
            raise AgentRunError(trace.outcome.message or "the run failed", trace_id=trace.trace_id)
        summary: RunSummary = {
            "trace_id": trace.trace_id,
            "status": trace.outcome.status,
            "consulted": trace.consulted,
            "rule_ids": trace.rule_ids,
            "tools_called": [run.name for run in trace.tool_runs],
            "answer": trace.answer,
        }
        update: dict[str, Any] = {
            "sca_run": record,
            "answer": trace.answer,
            "consulted": trace.consulted,
            "rule_ids": trace.rule_ids,
            "trace_id": trace.trace_id,
            "safe_context": summary,
        }
        if record.answer is not None and not record.answer_emitted:
            update["messages"] = [AIMessage(content=record.answer)]  # the fail-closed notice
        return update

    def _finish_record(self, state: _GraphState) -> tuple[RunRecord, Trace]:
        record = _record(state)
        self._note_tool_runs(record, state.get("messages") or [])
        if record.answer is not None and not record.answer_emitted:
            self._wire_append(record, AIMessage(content=record.answer))
        trace = self._trace(state, record)
        self.telemetry.end_run(record.trace_id, trace)
        return record, trace

    def finish(self, state: _GraphState, config: RunnableConfig) -> dict[str, Any]:
        record, trace = self._finish_record(state)
        self.resources.record(trace)
        return self._publish(record, trace)

    async def afinish(self, state: _GraphState, config: RunnableConfig) -> dict[str, Any]:
        await self.resources.aload_pack()  # the trace's pack reference
        record, trace = self._finish_record(state)
        await self.resources.arecord(trace)
        return self._publish(record, trace)

    # -- the crash guard, one for every node -----------------------------------------------
    def _crash_trace(
        self, node_input: Any, working: RunRecord | None, exc: Exception, step: Any
    ) -> Trace | None:
        """The error trace of a run an unexpected exception ends: the failing node's working
        record (else the one in its input state) with the messages it was given, so the turns,
        consultations and tool runs so far are kept. None when there is none to write:
        LangGraph's own control flow (``interrupt``, a ``Command`` to the parent graph), an
        :class:`AgentRunError` whose trace is written, no run record, or a parallel tool call
        that crashed in a step whose error trace is written (``step``: LangGraph's step)."""
        if isinstance(exc, GraphBubbleUp) or (isinstance(exc, AgentRunError) and exc.trace_id):
            return None
        state = node_input
        if isinstance(state, dict) and state.get("__type") == "tool_call_with_context":
            state = state["state"]  # one `Send` per app tool call, the state inside it
        if not isinstance(state, dict):
            return None
        record = working if working is not None else state.get("sca_run")
        if not isinstance(record, RunRecord):
            return None
        with self._crash_lock:
            if (record.trace_id, step) in self._crashed:
                return None
            self._crashed = [*self._crashed[-63:], (record.trace_id, step)]
        try:
            record = record.model_copy()
            messages = state.get("messages") or []
            self._note_tool_runs(record, messages)
            if messages:
                record.wire_messages = self._wire(record, messages)
            record.outcome = Outcome(
                status="error", error_type=type(exc).__name__, message=exception_text(exc)
            )
            trace = self._trace(cast(_GraphState, state), record)
        except Exception:  # the original exception is the one to see; this one is logged
            logger.exception("could not build the error trace of run %s", record.trace_id)
            return None
        self.telemetry.end_run(record.trace_id, trace)
        return trace

    def guarded(
        self,
        name: str,
        node: Callable[[Any, RunnableConfig], Any],
        anode: Callable[[Any, RunnableConfig], Any],
    ) -> RunnableLambda:
        """``node`` (sync) and ``anode`` (async) as one graph node inside the crash guard."""

        def run(node_input: Any, config: RunnableConfig) -> Any:
            token = _WORKING_RECORD.set(None)
            try:
                return node(node_input, config)
            except Exception as exc:
                trace = self._crash_trace(node_input, _WORKING_RECORD.get(), exc, _step(config))
                if trace is not None:
                    self.resources.record(trace)
                raise
            finally:
                _WORKING_RECORD.reset(token)

        async def arun(node_input: Any, config: RunnableConfig) -> Any:
            token = _WORKING_RECORD.set(None)
            try:
                return await anode(node_input, config)
            except Exception as exc:
                # Off the event loop: the trace's pack reference may read the pack's files.
                working, step = _WORKING_RECORD.get(), _step(config)
                trace = await asyncio.to_thread(self._crash_trace, node_input, working, exc, step)
                if trace is not None:
                    await self.resources.arecord(trace)
                raise
            finally:
                _WORKING_RECORD.reset(token)

        return RunnableLambda(run, afunc=arun, name=name)


def _step(config: RunnableConfig) -> Any:
    return (config.get("metadata") or {}).get("langgraph_step")


def _refs(results: Sequence[Any]) -> list[RetrievedRuleRef]:
    return [
        RetrievedRuleRef(id=r.rule.id, category=r.rule.category, score=r.score) for r in results
    ]


def _stamp_latency(record: RunRecord, started: float) -> None:
    if record.consultations:
        last = record.consultations[-1].model_copy(
            update={"latency_s": round(time.perf_counter() - started, 6)}
        )
        record.consultations = [*record.consultations[:-1], last]


def _dumps(args: dict[str, Any]) -> str:
    import json

    return json.dumps(args, ensure_ascii=False)


def _app_tools(tools: Sequence[Any] | None) -> list[BaseTool]:
    from langchain_core.tools import tool as as_tool

    checked: list[BaseTool] = []
    for item in tools or []:
        if isinstance(item, BaseTool):
            checked.append(item)
        elif callable(item):
            checked.append(as_tool(item))
        else:
            raise ConfigError(
                f"build_graph(tools=...): {item!r} is not a LangChain tool; pass BaseTool "
                "instances (@tool functions, StructuredTool) or plain functions"
            )
    names = [tool.name for tool in checked]
    if CONSULT_TOOL_NAME in names:
        raise ConfigError(
            f"build_graph(tools=...): {CONSULT_TOOL_NAME!r} is the agent's own tool; leave it out "
            "of tools (the mode decides when the model sees it)"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"build_graph(tools=...): tool names must be unique, got {names}")
    return checked


def build_graph(
    config: AgentConfig,
    *,
    tools: Sequence[BaseTool | Callable[..., Any]] | None = None,
    client: ModelClient | None = None,
    resources: AgentResources | None = None,
    checkpointer: Checkpointer = None,
    name: str = "safe_context_agent",
) -> CompiledStateGraph:
    """Compile the agent graph; use it directly, as a node, or as a subgraph of your own graph.

    ``tools`` are the app's own LangChain tools: the model sees them in every mode (and
    ``consult_safety_rules`` beside them in ``adaptive`` mode); they run in LangGraph's
    ``ToolNode``, and a tool that raises becomes a ``ToolMessage`` with ``status="error"``.
    ``client`` defaults to a :class:`~safe_context_agent.client.ChatClient` on ``config.base_url``
    (or the server ``sca serve`` started), owned by ``resources``, which hold the rule index and
    the trace sink and close that client with them; a ``client`` passed in stays yours to close.
    The graph runs with ``invoke`` and ``ainvoke`` alike.
    """
    app_tools = _app_tools(tools)
    resources = resources or AgentResources(config)
    if client is None:
        made = ChatClient(config, resources.base_url())
        resources.own(made)  # closed with the resources (SafeContextAgent.close / aclose)
        client = made
    nodes = _Nodes(config, client, resources, app_tools)
    graph = StateGraph(_GraphState, input_schema=AgentInput, output_schema=AgentState)
    graph.add_node("start", nodes.guarded("start", nodes.start, nodes.astart))
    graph.add_node("model", nodes.guarded("model", nodes.model, nodes.amodel))
    graph.add_node("consult", nodes.guarded("consult", nodes.consult, nodes.aconsult))
    graph.add_node("finish", nodes.guarded("finish", nodes.finish, nodes.afinish))
    destinations = ["consult", "model", "finish"]
    if app_tools:
        tool_node = ToolNode(
            app_tools,
            handle_tool_errors=tool_error,
            wrap_tool_call=nodes.timed_call,
            awrap_tool_call=nodes.atimed_call,
        )
        graph.add_node("tools", nodes.guarded("tools", tool_node.invoke, tool_node.ainvoke))
        graph.add_edge("tools", "model")
        destinations.append("tools")
    graph.add_edge(START, "start")
    graph.add_conditional_edges(
        "start", lambda s: "finish" if s["sca_run"].done else "model", ["model", "finish"]
    )
    graph.add_conditional_edges("model", nodes.route_after_model, destinations)
    # Always back to `model`, which ends the run when `consult` did: with app tools running in
    # the same step, two routes to `finish` would write the trace twice.
    graph.add_edge("consult", "model")
    graph.add_edge("finish", END)
    return graph.compile(checkpointer=checkpointer, name=name)
