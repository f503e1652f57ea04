"""Find a model endpoint for a command: the one given, else the running server, else start one."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from safe_context_agent.serve._server import ServerConfig, VLLMServer, find_running_server

__all__ = ["Endpoint", "model_endpoint"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    started_here: bool


@contextlib.contextmanager
def model_endpoint(
    base_url: str | None = None,
    model: str | None = None,
    *,
    server_config: ServerConfig | None = None,
) -> Iterator[Endpoint]:
    """``base_url`` if given; else the server ``sca serve`` recorded; else the embedded model,
    served for the duration of the ``with`` block (about 30 s to start on a 2-core CPU)."""
    if base_url:
        yield Endpoint(base_url.rstrip("/"), model or "smollm2", started_here=False)
        return
    running = find_running_server()
    if running is not None:
        yield Endpoint(running.base_url, model or running.served_model_name, started_here=False)
        return
    logger.warning(
        "no server running: starting the embedded model for this command (sca serve keeps one up)"
    )
    with VLLMServer(server_config) as server:
        yield Endpoint(server.base_url, model or server.model, started_here=True)
