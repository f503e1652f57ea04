"""Shared CLI plumbing: one-line errors for the library's own exceptions."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import typer

from safe_context_agent.errors import SafeContextError

__all__ = ["cli_errors", "setup_logging"]


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Print a :class:`SafeContextError` as ``error: ...`` on stderr and exit 2; bugs keep tracebacks."""
    try:
        yield
    except SafeContextError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
