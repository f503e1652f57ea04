"""The decide-to-consult state machine (ASCL, arXiv 2602.13562, as a LangGraph graph).

```
START → start ─┬─────────────→ finish → END        (bad input, or fail-closed in `always` mode)
               └→ model ⇄ consult
                    └──────────→ finish → END
```

``start`` resets the per-run record (and retrieves up front in ``always`` mode); ``model`` calls the
endpoint, offering the ``consult_safety_rules`` tool in ``adaptive`` mode while budget remains;
``consult`` answers each tool call (rules, or one corrective message for a malformed call);
``finish`` writes the trace and publishes the answer. Node logic is plain functions over the state
so the sync and async graphs share every line but the I/O.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from safe_context_agent._sanitize import repair_surrogates, repair_tree
from safe_context_agent.client import ChatClient, ModelReply, TokenCallback, strip_tool_markup
from safe_context_agent.config import PLAIN_SYSTEM_PROMPT, AgentConfig
from safe_context_agent.errors import AgentRunError, ModelCallError
from safe_context_agent.graph._resources import AgentResources
from safe_context_agent.graph._state import AgentState, RunRecord
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

STREAM_TOKENS_KEY = "sca_stream_tokens"
"""Set ``config["configurable"][STREAM_TOKENS_KEY] = True`` to stream tokens in ``custom`` mode."""

WIRE_KEY = "sca_wire"
"""``AIMessage.additional_kwargs`` key holding the assistant message exactly as the model produced it."""


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


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _record(state: AgentState) -> RunRecord:
    return dict(state.get("sca") or {})  # type: ignore[return-value]


def _timed(record: RunRecord, node: str, started: float) -> None:
    latencies = dict(record.get("node_latencies") or {})
    latencies[node] = [*latencies.get(node, []), round(time.perf_counter() - started, 6)]
    record["node_latencies"] = latencies


def _last_user_text(messages: list[AnyMessage]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.content if isinstance(message.content, str) else message.text
    return None


def _to_wire(message: AnyMessage) -> dict[str, Any] | None:
    """LangChain message → OpenAI wire form; our own AI turns are replayed byte for byte."""
    if isinstance(message, AIMessage):
        if WIRE_KEY in message.additional_kwargs:
            return dict(message.additional_kwargs[WIRE_KEY])
        wire: dict[str, Any] = {"role": "assistant", "content": message.text}
        if message.tool_calls:
            wire["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        "arguments": json.dumps(call["args"], ensure_ascii=False),
                    },
                }
                for call in message.tool_calls
            ]
        return wire
    if isinstance(message, ToolMessage):
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
    if isinstance(message, HumanMessage):
        return {"role": "user", "content": message.text}
    return None  # system messages are merged into ours


def _system_prompt(config: AgentConfig, record: RunRecord, messages: list[AnyMessage]) -> str:
    base = config.system_prompt if config.mode == "adaptive" else PLAIN_SYSTEM_PROMPT
    extra = [m.text for m in messages if isinstance(m, SystemMessage)]
    if record.get("always_rules"):
        extra.append(f"Safety rules for this request:\n{record['always_rules']}")
    return "\n\n".join([base, *extra])


class _Nodes:
    """Node functions over the state; sync and async variants differ only in the I/O calls."""

    def __init__(self, config: AgentConfig, client: ModelClient, resources: AgentResources) -> None:
        self.config = config
        self.client = client
        self.resources = resources

    # -- start ------------------------------------------------------------------------------
    def _begin(self, state: AgentState) -> RunRecord:
        record: RunRecord = {
            "trace_id": new_trace_id(),
            "started_at": _now(),
            "turns": [],
            "consultations": [],
            "format_errors": [],
            "node_latencies": {},
            "pending_calls": [],
            "budget_notice_sent": False,
            "always_rules": None,
            "wire_messages": [],
            "outcome": Outcome().model_dump(),
            "answer": None,
            "done": False,
        }
        prompt = _last_user_text(state.get("messages") or [])
        if prompt is not None:
            prompt = repair_surrogates(prompt)  # see _sanitize: repaired, not refused
        if prompt is None:
            record["outcome"] = Outcome(
                status="error", error_type="BadInput", message="the input has no user message"
            ).model_dump()
            record["done"] = True
        elif not prompt.strip():
            record["outcome"] = Outcome(
                status="error",
                error_type="BadInput",
                message="the user prompt is empty or only whitespace; pass the request to answer",
            ).model_dump()
            record["done"] = True
        elif len(prompt) > self.config.max_prompt_chars:
            record["outcome"] = Outcome(
                status="error",
                error_type="BadInput",
                message=(
                    f"the user prompt is {len(prompt)} characters, over max_prompt_chars="
                    f"{self.config.max_prompt_chars}; shorten it or raise the limit"
                ),
            ).model_dump()
            record["done"] = True
        record["user_prompt"] = prompt or ""
        return record

    def _apply_always(self, record: RunRecord, retrieve: Callable[[], list[Any]]) -> dict[str, Any]:
        started = time.perf_counter()
        query = record["user_prompt"]
        try:
            results = retrieve()
        except Exception as exc:  # any retrieval failure: the fail mode decides
            consultation = Consultation(
                source="always", query=query, error=f"{type(exc).__name__}: {exc}"
            )
            record["consultations"] = [consultation.model_dump()]
            return self._retrieval_failed(record)
        record["consultations"] = [
            Consultation(
                source="always",
                query=query,
                rules=[
                    RetrievedRuleRef(id=r.rule.id, category=r.rule.category, score=r.score)
                    for r in results
                ],
                latency_s=round(time.perf_counter() - started, 6),
            ).model_dump()
        ]
        record["always_rules"] = format_rules(results)
        return {}

    def _retrieval_failed(self, record: RunRecord) -> dict[str, Any]:
        outcome = dict(record["outcome"])
        outcome["retrieval_failed"] = True
        record["outcome"] = outcome
        if self.config.fail_closed:
            record["answer"] = self.config.fail_closed_notice
            record["done"] = True
            notice = {"role": "assistant", "content": self.config.fail_closed_notice}
            return {
                "messages": [
                    AIMessage(
                        content=self.config.fail_closed_notice, additional_kwargs={WIRE_KEY: notice}
                    )
                ]
            }
        if self.config.mode == "always":
            record["always_rules"] = RULES_UNAVAILABLE
        return {}

    def start(self, state: AgentState) -> dict[str, Any]:
        started = time.perf_counter()
        record = self._begin(state)
        update: dict[str, Any] = {}
        if not record["done"] and self.config.mode == "always":
            update = self._apply_always(
                record, lambda: list(self.resources.retrieve(record["user_prompt"]))
            )
        _timed(record, "start", started)
        return {**update, "sca": record}

    async def astart(self, state: AgentState) -> dict[str, Any]:
        started = time.perf_counter()
        record = self._begin(state)
        update: dict[str, Any] = {}
        if not record["done"] and self.config.mode == "always":
            results = await asyncio.to_thread(self._retrieve_or_exception, record["user_prompt"])
            update = self._apply_always(record, lambda: _reraise(results))
        _timed(record, "start", started)
        return {**update, "sca": record}

    def _retrieve_or_exception(
        self, query: str, category: str | None = None
    ) -> list[Any] | BaseException:
        try:
            return list(self.resources.retrieve(query, category))
        except Exception as exc:
            return exc

    # -- model ------------------------------------------------------------------------------
    def _tools_offered(self, record: RunRecord) -> bool:
        used = sum(1 for c in record["consultations"] if c["source"] == "tool_call")
        turns_left_after_this = self.config.max_model_turns - len(record["turns"]) - 1
        return (
            self.config.mode == "adaptive"
            and used < self.config.max_consultations
            and turns_left_after_this > 0
        )

    def _prepare(self, state: AgentState, record: RunRecord) -> tuple[dict[str, Any], bool]:
        messages = state.get("messages") or []
        wire = [{"role": "system", "content": _system_prompt(self.config, record, messages)}]
        wire += [w for w in (_to_wire(m) for m in messages) if w is not None]
        # The SDK encodes UTF-8 strictly: a lone surrogate anywhere would crash the call.
        wire = repair_tree(wire)
        offered = self._tools_offered(record)
        record["wire_messages"] = wire
        return self.client.request(wire, [CONSULT_TOOL] if offered else None), offered

    def _after_reply(self, record: RunRecord, reply: ModelReply, offered: bool) -> dict[str, Any]:
        index = len(record["turns"])
        record["turns"] = [
            *record["turns"],
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
            ).model_dump(),
        ]
        record["wire_messages"] = [*record["wire_messages"], reply.raw_message]
        wants_tools = bool(reply.tool_calls or reply.text_call_errors)
        ai_kwargs = {WIRE_KEY: reply.raw_message}
        if wants_tools and offered:
            record["pending_calls"] = [call.model_dump() for call in reply.tool_calls] + [
                {"id": f"text_call_error_{i}", "name": None, "arguments": raw, "error": error}
                for i, (raw, error) in enumerate(reply.text_call_errors)
            ]
            tool_calls = [
                {"id": call.id, "name": call.name, "args": _args_dict(call.arguments)}
                for call in reply.tool_calls
            ]
            return {
                "messages": [
                    AIMessage(
                        content=reply.content or "",
                        tool_calls=tool_calls,
                        additional_kwargs=ai_kwargs,
                    )
                ]
            }
        if wants_tools:
            record["format_errors"] = [
                *record["format_errors"],
                FormatError(
                    kind="call_without_tools",
                    turn_index=index,
                    detail="the model called a tool on a turn where no tool was offered",
                    raw=reply.content,
                ).model_dump(),
            ]
            turns_left = self.config.max_model_turns - len(record["turns"])
            if not record["budget_notice_sent"] and turns_left > 0:
                # Told once that the budget is spent, then the next turn must answer.
                record["budget_notice_sent"] = True
                call_ids = [c.id for c in reply.tool_calls] or ["budget_notice"]
                return {
                    "messages": [
                        AIMessage(content=reply.content or "", additional_kwargs=ai_kwargs),
                        *[ToolMessage(content=BUDGET_NOTICE, tool_call_id=cid) for cid in call_ids],
                    ]
                }
        answer = strip_tool_markup(reply.content)
        record["answer"] = answer
        record["done"] = True
        return {"messages": [AIMessage(content=answer, additional_kwargs=ai_kwargs)]}

    def _model_failed(self, record: RunRecord, exc: ModelCallError) -> dict[str, Any]:
        record["outcome"] = Outcome(
            status="error", error_type=type(exc).__name__, message=str(exc)
        ).model_dump()
        record["done"] = True
        return {}

    def _token_callback(self, config: RunnableConfig | None, turn: int) -> TokenCallback | None:
        if not (config or {}).get("configurable", {}).get(STREAM_TOKENS_KEY):
            return None
        writer = get_stream_writer()
        return lambda text: writer({"type": "token", "turn": turn, "text": text})

    def _crashed(self, state: AgentState, record: RunRecord, exc: Exception) -> Trace:
        """The error trace of a run that an unexpected exception (a bug, or a client library
        failing outside its own error types) ends: the exception itself propagates with its
        traceback, but the run that started still leaves its trace."""
        record["outcome"] = Outcome(
            status="error", error_type=type(exc).__name__, message=str(exc)
        ).model_dump()
        return self._trace(state, record)

    def model(self, state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        started = time.perf_counter()
        record = _record(state)
        try:
            kwargs, offered = self._prepare(state, record)
            reply = self.client.complete(kwargs, self._token_callback(config, len(record["turns"])))
            update = self._after_reply(record, reply, offered)
        except ModelCallError as exc:
            update = self._model_failed(record, exc)
        except Exception as exc:
            self.resources.record(self._crashed(state, record, exc))
            raise
        _timed(record, "model", started)
        return {**update, "sca": record}

    async def amodel(self, state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        started = time.perf_counter()
        record = _record(state)
        try:
            kwargs, offered = self._prepare(state, record)
            reply = await self.client.acomplete(
                kwargs, self._token_callback(config, len(record["turns"]))
            )
            update = self._after_reply(record, reply, offered)
        except ModelCallError as exc:
            update = self._model_failed(record, exc)
        except Exception as exc:
            await self.resources.arecord(self._crashed(state, record, exc))
            raise
        _timed(record, "model", started)
        return {**update, "sca": record}

    # -- consult ----------------------------------------------------------------------------
    def _plan_consult(
        self, record: RunRecord
    ) -> list[tuple[dict[str, Any], str | None, str | None]]:
        """(call, query, category) per pending call; query None means 'answer with a correction'."""
        plan: list[tuple[dict[str, Any], str | None, str | None]] = []
        turn = len(record["turns"]) - 1
        used = sum(1 for c in record["consultations"] if c["source"] == "tool_call")
        errors = list(record["format_errors"])
        for call in record["pending_calls"]:
            if call.get("error"):
                errors.append(
                    FormatError(
                        kind="malformed_json",
                        turn_index=turn,
                        detail=call["error"],
                        raw=call["arguments"],
                    ).model_dump()
                )
                call["reply"] = CORRECTION_TEMPLATE.format(error=call["error"])
            elif call["name"] != CONSULT_TOOL_NAME:
                errors.append(
                    FormatError(
                        kind="unknown_tool",
                        turn_index=turn,
                        detail=f"unknown tool {call['name']!r}",
                        raw=call["arguments"],
                    ).model_dump()
                )
                call["reply"] = UNKNOWN_TOOL_TEMPLATE.format(name=call["name"])
            else:
                arguments = read_consult_arguments(call["arguments"])
                if arguments.query is None:
                    assert arguments.error_kind is not None
                    errors.append(
                        FormatError(
                            kind=arguments.error_kind,
                            turn_index=turn,
                            detail=arguments.error or "",
                            raw=call["arguments"],
                        ).model_dump()
                    )
                    call["reply"] = CORRECTION_TEMPLATE.format(error=arguments.error)
                elif used >= self.config.max_consultations:
                    record["budget_notice_sent"] = True
                    call["reply"] = BUDGET_NOTICE
                else:
                    used += 1
                    plan.append(
                        (call, arguments.query, self.resources.known_category(arguments.category))
                    )
                    continue
            plan.append((call, None, None))
        record["format_errors"] = errors
        return plan

    def _apply_consult(
        self,
        record: RunRecord,
        plan: list[tuple[dict[str, Any], str | None, str | None]],
        outcomes: list[list[Any] | BaseException | None],
        latencies: list[float],
    ) -> dict[str, Any]:
        turn = len(record["turns"]) - 1
        messages: list[AnyMessage] = []
        consultations = list(record["consultations"])
        for (call, query, category), result, latency in zip(plan, outcomes, latencies, strict=True):
            if query is None:
                messages.append(ToolMessage(content=call["reply"], tool_call_id=call["id"]))
                continue
            if isinstance(result, BaseException):
                consultations.append(
                    Consultation(
                        source="tool_call",
                        query=query,
                        categories=[category] if category else None,
                        turn_index=turn,
                        tool_call_id=call["id"],
                        latency_s=latency,
                        error=f"{type(result).__name__}: {result}",
                    ).model_dump()
                )
                record["consultations"] = consultations
                record["pending_calls"] = []
                update = self._retrieval_failed(record)
                if record["done"]:
                    return update
                messages.append(ToolMessage(content=RULES_UNAVAILABLE, tool_call_id=call["id"]))
                continue
            assert result is not None
            consultations.append(
                Consultation(
                    source="tool_call",
                    query=query,
                    categories=[category] if category else None,
                    rules=[
                        RetrievedRuleRef(id=r.rule.id, category=r.rule.category, score=r.score)
                        for r in result
                    ],
                    turn_index=turn,
                    tool_call_id=call["id"],
                    latency_s=latency,
                ).model_dump()
            )
            messages.append(ToolMessage(content=format_rules(result), tool_call_id=call["id"]))
        record["consultations"] = consultations
        record["pending_calls"] = []
        return {"messages": messages}

    def consult(self, state: AgentState) -> dict[str, Any]:
        started = time.perf_counter()
        record = _record(state)
        plan = self._plan_consult(record)
        outcomes: list[list[Any] | BaseException | None] = []
        latencies: list[float] = []
        for _call, query, category in plan:
            t0 = time.perf_counter()
            outcomes.append(None if query is None else self._retrieve_or_exception(query, category))
            latencies.append(round(time.perf_counter() - t0, 6))
        update = self._apply_consult(record, plan, outcomes, latencies)
        _timed(record, "consult", started)
        return {**update, "sca": record}

    async def aconsult(self, state: AgentState) -> dict[str, Any]:
        started = time.perf_counter()
        record = _record(state)
        plan = self._plan_consult(record)
        outcomes: list[list[Any] | BaseException | None] = []
        latencies: list[float] = []
        for _call, query, category in plan:
            t0 = time.perf_counter()
            outcomes.append(
                None
                if query is None
                else await asyncio.to_thread(self._retrieve_or_exception, query, category)
            )
            latencies.append(round(time.perf_counter() - t0, 6))
        update = self._apply_consult(record, plan, outcomes, latencies)
        _timed(record, "consult", started)
        return {**update, "sca": record}

    # -- finish -----------------------------------------------------------------------------
    def _trace(self, state: AgentState, record: RunRecord) -> Trace:
        run = state.get("run") or {}
        latencies = dict(record.get("node_latencies") or {})
        return Trace(
            trace_id=record["trace_id"],
            group_id=run.get("group_id"),
            sample_index=run.get("sample_index"),
            started_at=datetime.fromisoformat(record["started_at"]),
            finished_at=datetime.now(UTC),
            model=self.config.model,
            base_url=self.client.base_url,  # the Trace validator drops user-info
            sampling=self.config.sampling.model_dump(),
            pack=self.resources.pack_ref_or_none(),
            mode=self.config.mode,
            messages=record.get("wire_messages")
            or [{"role": "user", "content": record.get("user_prompt", "")}],
            turns=[ModelTurn.model_validate(t) for t in record["turns"]],
            consultations=[Consultation.model_validate(c) for c in record["consultations"]],
            format_errors=[FormatError.model_validate(f) for f in record["format_errors"]],
            node_latencies=latencies,
            answer=record.get("answer"),
            outcome=Outcome.model_validate(record["outcome"]),
            metadata=dict(run.get("metadata") or {}),
        )

    def _publish(self, record: RunRecord, trace: Trace) -> dict[str, Any]:
        if trace.outcome.status == "error":
            raise AgentRunError(trace.outcome.message or "the run failed", trace_id=trace.trace_id)
        return {
            "sca": record,
            "answer": trace.answer,
            "consulted": trace.consulted,
            "rule_ids": trace.rule_ids,
            "trace_id": trace.trace_id,
        }

    def finish(self, state: AgentState) -> dict[str, Any]:
        record = _record(state)
        trace = self._trace(state, record)
        self.resources.record(trace)
        return self._publish(record, trace)

    async def afinish(self, state: AgentState) -> dict[str, Any]:
        record = _record(state)
        trace = self._trace(state, record)
        await self.resources.arecord(trace)
        return self._publish(record, trace)


def _reraise(result: list[Any] | BaseException) -> list[Any]:
    if isinstance(result, BaseException):
        raise result
    return result


def _args_dict(arguments: str) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        return {"raw": arguments}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _route_after_start(state: AgentState) -> Literal["model", "finish"]:
    return "finish" if state["sca"]["done"] else "model"


def _route_after_model(state: AgentState) -> Literal["consult", "model", "finish"]:
    record = state["sca"]
    if record["done"]:
        return "finish"
    return "consult" if record["pending_calls"] else "model"


def _route_after_consult(state: AgentState) -> Literal["model", "finish"]:
    return "finish" if state["sca"]["done"] else "model"


def build_graph(
    config: AgentConfig,
    *,
    client: ModelClient | None = None,
    resources: AgentResources | None = None,
    checkpointer: Any = None,
    name: str = "safe_context_agent",
) -> CompiledStateGraph:
    """Compile the agent graph; use it directly, as a node, or as a subgraph of your own graph.

    ``client`` defaults to a :class:`~safe_context_agent.client.ChatClient` on ``config.base_url``
    (or the server ``sca serve`` started); ``resources`` holds the rule index and the trace sink.
    The graph runs with ``invoke`` and ``ainvoke`` alike.
    """
    resources = resources or AgentResources(config)
    if client is None:
        client = ChatClient(config, resources.base_url())
    nodes = _Nodes(config, client, resources)
    graph = StateGraph(AgentState)
    graph.add_node("start", RunnableLambda(nodes.start, afunc=nodes.astart, name="start"))
    graph.add_node("model", RunnableLambda(nodes.model, afunc=nodes.amodel, name="model"))
    graph.add_node("consult", RunnableLambda(nodes.consult, afunc=nodes.aconsult, name="consult"))
    graph.add_node("finish", RunnableLambda(nodes.finish, afunc=nodes.afinish, name="finish"))
    graph.add_edge(START, "start")
    graph.add_conditional_edges("start", _route_after_start, ["model", "finish"])
    graph.add_conditional_edges("model", _route_after_model, ["consult", "model", "finish"])
    graph.add_conditional_edges("consult", _route_after_consult, ["model", "finish"])
    graph.add_edge("finish", END)
    return graph.compile(checkpointer=checkpointer, name=name)
