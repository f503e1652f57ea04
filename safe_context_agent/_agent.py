"""``SafeContextAgent``: the compiled graph behind a small, typed API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.messages import AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.types import Checkpointer, StreamMode

from safe_context_agent.config import AgentConfig
from safe_context_agent.graph import (
    STREAM_TOKENS_KEY,
    AgentResources,
    ModelClient,
    Retriever,
    RunInput,
    build_graph,
)
from safe_context_agent.traces import TraceSink

__all__ = ["AgentResult", "SafeContextAgent"]

Prompt = str | Sequence[AnyMessage]


def _stream_modes(tokens: bool) -> list[StreamMode]:
    return ["updates", "custom"] if tokens else ["updates"]


@dataclass(frozen=True)
class AgentResult:
    """What one run produced. The full record is the trace, written to the configured sink."""

    answer: str
    consulted: bool
    rule_ids: list[str]
    trace_id: str
    messages: list[AnyMessage]


class SafeContextAgent:
    """An agent that answers directly when a request is plainly fine and consults the rules when
    unsure (ASCL, arXiv 2602.13562). ``tools`` are the app's own LangChain tools, offered
    beside ``consult_safety_rules`` (see :func:`~safe_context_agent.graph.build_graph`).

    >>> agent = SafeContextAgent(AgentConfig(base_url="http://127.0.0.1:8000/v1"))  # doctest: +SKIP
    >>> agent.invoke("How do I kill a zombie process?").answer  # doctest: +SKIP
    """

    def __init__(
        self,
        config: AgentConfig | None = None,
        *,
        tools: Sequence[BaseTool | Callable[..., Any]] | None = None,
        sink: TraceSink | None = None,
        client: ModelClient | None = None,
        retriever: Retriever | None = None,
        checkpointer: Checkpointer = None,
    ) -> None:
        self.config = config or AgentConfig()
        self.resources = AgentResources(self.config, sink=sink, retriever=retriever)
        self.graph = build_graph(
            self.config,
            tools=tools,
            client=client,
            resources=self.resources,
            checkpointer=checkpointer,
        )

    # -- inputs and outputs -------------------------------------------------------------------
    @staticmethod
    def _input(prompt: Prompt, run: RunInput | None) -> dict[str, Any]:
        messages = [HumanMessage(content=prompt)] if isinstance(prompt, str) else list(prompt)
        return {"messages": messages, "run": dict(run or {})}

    @staticmethod
    def _config(
        thread_id: str | None, stream_tokens: bool = False, max_concurrency: int | None = None
    ) -> RunnableConfig:
        configurable: dict[str, Any] = {}
        if thread_id is not None:
            configurable["thread_id"] = thread_id
        if stream_tokens:
            configurable[STREAM_TOKENS_KEY] = True
        config: RunnableConfig = {"configurable": configurable}
        if max_concurrency is not None:
            config["max_concurrency"] = max_concurrency
        return config

    @staticmethod
    def _result(state: dict[str, Any]) -> AgentResult:
        return AgentResult(
            answer=state.get("answer") or "",
            consulted=bool(state.get("consulted")),
            rule_ids=list(state.get("rule_ids") or []),
            trace_id=state.get("trace_id") or "",
            messages=list(state.get("messages") or []),
        )

    def close(self) -> None:
        """Flush and close the trace sink, and close the model client the agent made."""
        self.resources.close()

    async def aclose(self) -> None:
        """:meth:`close` from async code (the client's connections on this loop close too)."""
        await self.resources.aclose()

    def __enter__(self) -> SafeContextAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> SafeContextAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def prepare(self) -> None:
        """Open the rule index now instead of on the first consultation (it loads the embedder)."""
        if self.config.mode != "never":
            _ = self.resources.retriever

    # -- single runs ----------------------------------------------------------------------------
    def invoke(
        self, prompt: Prompt, *, thread_id: str | None = None, run: RunInput | None = None
    ) -> AgentResult:
        """Run once. ``thread_id`` continues a conversation when a checkpointer was given."""
        return self._result(self.graph.invoke(self._input(prompt, run), self._config(thread_id)))

    async def ainvoke(
        self, prompt: Prompt, *, thread_id: str | None = None, run: RunInput | None = None
    ) -> AgentResult:
        return self._result(
            await self.graph.ainvoke(self._input(prompt, run), self._config(thread_id))
        )

    def stream(
        self,
        prompt: Prompt,
        *,
        thread_id: str | None = None,
        run: RunInput | None = None,
        tokens: bool = True,
    ) -> Iterator[tuple[str, Any]]:
        """Yield ``("updates", {node: update})`` after each node and, with ``tokens``,
        ``("custom", {"type": "token", "turn": i, "text": ...})`` as the model writes."""
        # With a list of modes LangGraph yields (mode, chunk) pairs; its types say chunks.
        yield from cast(
            "Iterator[tuple[str, Any]]",
            self.graph.stream(
                self._input(prompt, run),
                self._config(thread_id, stream_tokens=tokens),
                stream_mode=_stream_modes(tokens),
            ),
        )

    async def astream(
        self,
        prompt: Prompt,
        *,
        thread_id: str | None = None,
        run: RunInput | None = None,
        tokens: bool = True,
    ) -> AsyncIterator[tuple[str, Any]]:
        pairs = cast(
            "AsyncIterator[tuple[str, Any]]",
            self.graph.astream(
                self._input(prompt, run),
                self._config(thread_id, stream_tokens=tokens),
                stream_mode=_stream_modes(tokens),
            ),
        )
        async for item in pairs:
            yield item

    # -- many runs ------------------------------------------------------------------------------
    def batch(
        self,
        prompts: Sequence[Prompt],
        *,
        runs: Sequence[RunInput] | None = None,
        max_concurrency: int = 8,
        return_exceptions: bool = False,
    ) -> list[AgentResult | BaseException]:
        """Run many prompts on a thread pool, at most ``max_concurrency`` at once, results in order."""
        inputs = self._batch_inputs(prompts, runs)

        def one(item: dict[str, Any]) -> AgentResult | BaseException:
            try:
                return self._result(self.graph.invoke(item, self._config(None)))
            except Exception as exc:
                if not return_exceptions:
                    raise
                return exc

        with ThreadPoolExecutor(max_workers=max(1, max_concurrency)) as pool:
            return list(pool.map(one, inputs))

    async def abatch(
        self,
        prompts: Sequence[Prompt],
        *,
        runs: Sequence[RunInput] | None = None,
        max_concurrency: int = 8,
        return_exceptions: bool = False,
    ) -> list[AgentResult | BaseException]:
        """Run many prompts concurrently on the event loop, at most ``max_concurrency`` at once."""
        inputs = self._batch_inputs(prompts, runs)
        gate = asyncio.Semaphore(max(1, max_concurrency))

        async def one(item: dict[str, Any]) -> AgentResult:
            async with gate:
                return self._result(await self.graph.ainvoke(item, self._config(None)))

        return list(
            await asyncio.gather(
                *(one(item) for item in inputs), return_exceptions=return_exceptions
            )
        )

    def _batch_inputs(
        self, prompts: Sequence[Prompt], runs: Sequence[RunInput] | None
    ) -> list[dict[str, Any]]:
        if runs is not None and len(runs) != len(prompts):
            raise ValueError(f"runs has {len(runs)} entries for {len(prompts)} prompts")
        return [
            self._input(p, runs[i] if runs is not None else None) for i, p in enumerate(prompts)
        ]


def new_group_id() -> str:
    return uuid.uuid4().hex[:16]
