"""Shared CLI plumbing: one-line errors for the library's own exceptions, redacted logs."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import typer

from safe_context_agent._sanitize import RedactingFilter, redact
from safe_context_agent.config import AgentConfig
from safe_context_agent.errors import SafeContextError

__all__ = ["cli_errors", "known_secrets", "setup_logging"]


def known_secrets() -> tuple[str, ...]:
    """The API key the agent would send ($SCA_API_KEY by default), to strip from any output."""
    key = os.environ.get(AgentConfig.model_fields["api_key_env"].default or "")
    return (key,) if key else ()


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Print a :class:`SafeContextError` as ``error: ...`` on stderr and exit 2; bugs keep tracebacks.

    The line is redacted (URL user-info, tokens, the API key) and folded onto one line, whatever
    text the error quotes.
    """
    try:
        yield
    except SafeContextError as exc:
        line = " ".join(redact(str(exc), known_secrets()).split())
        typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request URL at INFO, user-info included; no handler writes it unredacted.
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(known_secrets()))
