"""What the graph's nodes share across runs: the endpoint, the rule index, the trace sink.

The index is opened lazily (loading the embedder takes seconds, and ``never`` mode needs none) and
once per agent, under a lock, so concurrent runs share it. ``close`` (or ``aclose``) closes the
trace sink and the model client that :func:`~safe_context_agent.graph.build_graph` made for these
resources; a client passed to ``build_graph`` stays its caller's to close.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from safe_context_agent.config import AgentConfig
from safe_context_agent.errors import ConfigError
from safe_context_agent.graph._tool import RetrievedRuleLike, Retriever
from safe_context_agent.traces import PackRef, SafeSink, Trace, TraceSink, open_sink

if TYPE_CHECKING:
    from safe_context_agent.rules import RulePack

__all__ = ["AgentResources"]

logger = logging.getLogger(__name__)


class ClosableClient(Protocol):
    """A model client the resources can own (``ChatClient`` is one)."""

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


class AgentResources:
    """Lazily opened, thread-safe shared resources of one agent (or one graph)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        sink: TraceSink | None = None,
        retriever: Retriever | None = None,
    ) -> None:
        self.config = config
        if sink is None and config.trace_path is not None:
            sink = open_sink(config.trace_path)
        # SafeSink logs and counts a failing write instead of raising into the user's run.
        self.sink: SafeSink | None = SafeSink(sink) if sink is not None else None
        self._retriever = retriever
        self._pack: RulePack | None = None
        self._pack_ref: PackRef | None = None
        self._lock = threading.Lock()
        self._owned_clients: list[ClosableClient] = []

    def own(self, client: ClosableClient) -> None:
        """Close ``client`` with these resources (``build_graph`` hands over the one it makes)."""
        self._owned_clients.append(client)

    @property
    def owned_clients(self) -> tuple[ClosableClient, ...]:
        """The clients :meth:`close` closes."""
        return tuple(self._owned_clients)

    def base_url(self) -> str:
        """``config.base_url``, else ``$SCA_BASE_URL``, else the server ``sca serve`` recorded."""
        from safe_context_agent.serve import find_endpoint

        endpoint = find_endpoint(self.config.base_url)
        if endpoint is None:
            raise ConfigError(
                "no model endpoint: set base_url (or $SCA_BASE_URL), or start the embedded server with: sca serve"
            )
        return endpoint.base_url

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            with self._lock:
                if self._retriever is None:
                    from safe_context_agent.rules import IndexConfig, open_index

                    # No embedding model named: the pack's own (IndexConfig's default).
                    index_config = IndexConfig(embedding_model=self.config.embedding_model or None)
                    self._retriever = open_index(self.config.pack, index_config)
        return self._retriever

    def retrieve(self, query: str, category: str | None = None) -> Sequence[RetrievedRuleLike]:
        return self.retriever.consult(query, k=self.config.k, categories=category)

    def known_category(self, category: str | None) -> str | None:
        """The category if the pack has rules in it; an unknown one widens the search instead of failing."""
        if not category:
            return None
        pack = self._loaded_pack()
        if pack is None:
            return None
        return category if category in {rule.category for rule in pack.rules} else None

    def _loaded_pack(self) -> RulePack | None:
        if self._pack is None:
            retriever_pack = getattr(self._retriever, "pack", None)
            if retriever_pack is not None:
                self._pack = retriever_pack
            else:
                try:
                    from safe_context_agent.rules import load_rule_pack

                    self._pack = load_rule_pack(self.config.pack)
                except Exception as exc:  # the trace can do without the pack reference
                    logger.warning(
                        "could not load rule pack %r for the trace: %s", self.config.pack, exc
                    )
                    return None
        return self._pack

    async def aload_pack(self) -> None:
        """Load the pack (files, hashes) in a worker thread, so async nodes never block on it:
        LangGraph Server's blocking-call detector fails a run that reads files on the loop."""
        if self._pack is None:
            await asyncio.to_thread(self.pack_ref_or_none)

    def pack_ref_or_none(self) -> PackRef | None:
        if self._pack_ref is not None:
            return self._pack_ref
        pack = self._loaded_pack()
        if pack is None or not hasattr(pack, "manifest"):
            return None
        manifest = getattr(self._retriever, "manifest", None)
        self._pack_ref = PackRef(
            name=pack.name,
            version=str(pack.manifest.version),
            content_hash=pack.content_hash,
            embedding_model=getattr(manifest, "embedding_model", None)
            or self.config.embedding_model
            or pack.manifest.embedding_model,
        )
        return self._pack_ref

    def record(self, trace: Trace) -> None:
        """Write the trace; never raises (see :class:`~safe_context_agent.traces.SafeSink`)."""
        if self.sink is not None:
            self.sink.write(trace)

    async def arecord(self, trace: Trace) -> None:
        if self.sink is not None:
            await self.sink.awrite(trace)

    def close(self) -> None:
        """Close the sink and the clients these resources own. Safe to call twice."""
        if self.sink is not None:
            self.sink.close()
        for client in self._owned_clients:
            client.close()

    async def aclose(self) -> None:
        """:meth:`close` from async code: the owned clients' connections on this event loop are
        closed on it, and the sink's final flush runs in a worker thread."""
        for client in self._owned_clients:
            await client.aclose()
        if self.sink is not None:
            await asyncio.to_thread(self.sink.close)
