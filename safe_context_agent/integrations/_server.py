"""The graph factory ``langgraph.json`` names, for LangGraph Server (``langgraph dev``/``up``).

Settings come from the file ``$SCA_CONFIG`` (JSON or YAML, :class:`AgentConfig`'s fields) when it
is set, else the defaults; the endpoint as everywhere (``base_url``, ``$SCA_BASE_URL``, the server
``sca serve`` started). The server brings its own checkpointer, so the graph is compiled without
one. An app with its own tools writes its own factory the same way:
``build_graph(config, tools=[...])``.
"""

from __future__ import annotations

import asyncio
import os
import threading

from langgraph.graph.state import CompiledStateGraph

from safe_context_agent.config import AgentConfig
from safe_context_agent.graph import build_graph

__all__ = ["CONFIG_ENV", "make_server_graph"]

CONFIG_ENV = "SCA_CONFIG"

_lock = threading.Lock()
_graph: CompiledStateGraph | None = None


def _build() -> CompiledStateGraph:
    global _graph
    with _lock:
        if _graph is None:
            path = os.environ.get(CONFIG_ENV)
            config = AgentConfig.from_file(path) if path else AgentConfig()
            _graph = build_graph(config)
        return _graph


async def make_server_graph() -> CompiledStateGraph:
    """The agent graph, built once per server process (its rule index and sink are shared).

    The server calls the factory on its event loop for every run; building reads the config
    file, opens the trace sink and finds the endpoint, so it runs in a worker thread, once."""
    return _graph if _graph is not None else await asyncio.to_thread(_build)
