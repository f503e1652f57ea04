"""Find a model endpoint: the one given, else ``$SCA_BASE_URL``, else the running server, else
start the embedded model for the duration of a ``with`` block.

Every entry point that talks to a model (the agent, ``sca run``/``collect``/``demo``/``eval``,
online training) resolves its endpoint here, so they all agree on the order.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from safe_context_agent.serve._server import ServerConfig, VLLMServer, find_running_server
from safe_context_agent.serve._shipped import DEFAULT_MODEL

__all__ = ["BASE_URL_ENV", "Endpoint", "find_endpoint", "model_endpoint"]

logger = logging.getLogger(__name__)

BASE_URL_ENV = "SCA_BASE_URL"
"""Environment variable naming an OpenAI-compatible endpoint (``http://host:port/v1``)."""

EndpointSource = Literal["given", "environment", "running", "started"]


@dataclass(frozen=True)
class Endpoint:
    """Where the model is served, and how it was found."""

    base_url: str
    served_model: str | None
    """The served model name when the project's server was found or started; None for a URL
    given directly or through the environment (the caller knows which model it serves)."""
    source: EndpointSource
    adapters: tuple[str, ...] = ()
    """LoRA adapters the project's server loaded at start-up (empty for a URL given directly)."""

    def model(self, requested: str | None = None, default: str = DEFAULT_MODEL) -> str:
        """The model to request: the caller's choice; else ``default`` (the shipped adapter)
        when this server serves it or the URL was given directly; else the served model."""
        if requested:
            return requested
        if self.served_model is None or default in (self.served_model, *self.adapters):
            return default
        return self.served_model


def find_endpoint(base_url: str | None = None) -> Endpoint | None:
    """``base_url``, else ``$SCA_BASE_URL``, else the server ``sca serve`` recorded; else None."""
    if base_url:
        return Endpoint(base_url.rstrip("/"), None, "given")
    if os.environ.get(BASE_URL_ENV):
        return Endpoint(os.environ[BASE_URL_ENV].rstrip("/"), None, "environment")
    running = find_running_server()
    if running is not None:
        return Endpoint(
            running.base_url, running.served_model_name, "running", tuple(running.adapters)
        )
    return None


@contextlib.contextmanager
def model_endpoint(
    base_url: str | None = None, *, server_config: ServerConfig | None = None
) -> Iterator[Endpoint]:
    """:func:`find_endpoint`, else the embedded model served for the duration of the ``with``
    block and stopped after it (about 30 s to start on a 2-core CPU)."""
    found = find_endpoint(base_url)
    if found is not None:
        yield found
        return
    logger.warning(
        "no server running: starting the embedded model for this command (sca serve keeps one up)"
    )
    with VLLMServer(server_config) as server:
        assert server.state is not None
        yield Endpoint(server.base_url, server.model, "started", tuple(server.state.adapters))
