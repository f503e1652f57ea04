"""`sca serve`: start, inspect and stop the vLLM server."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from safe_context_agent.cli._common import cli_errors, setup_logging
from safe_context_agent.config import validate_settings
from safe_context_agent.errors import ServeError
from safe_context_agent.serve import (
    ServerConfig,
    VLLMServer,
    find_running_server,
    read_state,
    state_as_json,
    stop_recorded_server,
)

serve_app = typer.Typer(
    help="Serve a model with vLLM (the embedded default unless --model is given).",
    invoke_without_command=True,
)


@serve_app.callback()
def serve(
    ctx: typer.Context,
    model: str | None = typer.Option(
        None, "--model", help="HF model folder or hub name (default: embedded SmolLM2-135M)."
    ),
    served_model_name: str | None = typer.Option(
        None, "--served-model-name", help="Name clients use."
    ),
    port: int | None = typer.Option(None, "--port", help="Port (default: a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind."),
    chat_template: Path | None = typer.Option(None, "--chat-template", help="Jinja chat template."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | gpu."),
    no_lora: bool = typer.Option(False, "--no-lora", help="Do not enable runtime LoRA loading."),
    vllm_arg: list[str] = typer.Option(
        [],
        "--vllm-arg",
        help="Extra vLLM argument, repeatable: --vllm-arg=--gpu-memory-utilization=0.8",
    ),
    foreground: bool = typer.Option(False, "--foreground", help="Stay attached; Ctrl-C stops."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what is started."),
) -> None:
    """Start vLLM detached, wait for /health and record it so `sca serve status|stop` find it."""
    if ctx.invoked_subcommand is not None:
        return
    setup_logging(verbose)
    with cli_errors():
        # The same model as the Python API validates the flags: one-line errors naming them.
        config = validate_settings(
            ServerConfig,
            {
                "model": model,
                "served_model_name": served_model_name,
                "port": port,
                "host": host,
                "chat_template": chat_template,
                "device": device,
                "enable_lora": not no_lora,
                "extra_args": vllm_arg,
            },
            source="server settings",
            labels={"port": "--port", "device": "--device", "host": "--host"},
        )
        running = find_running_server()
        if running is not None:
            raise ServeError(
                f"a server is already running (pid {running.pid}, {running.base_url}); "
                "stop it first with: sca serve stop"
            )
        server = VLLMServer(config, record_state=True)
        state = server.start()
        typer.echo(
            f"serving {state.served_model_name} at {state.base_url} (pid {state.pid}, log {state.log_file})"
        )
        if foreground:
            stopped = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stopped.set())
            try:
                stopped.wait()
            except KeyboardInterrupt:
                pass
            finally:
                server.stop()


@serve_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print the state as JSON.")) -> None:
    """Say whether the recorded server is running, and where."""
    with cli_errors():
        state = find_running_server()
        if state is None:
            recorded = read_state()
            note = f" (recorded pid {recorded.pid} does not answer)" if recorded else ""
            typer.echo(f"not running{note}")
            raise typer.Exit(code=1)
        typer.echo(
            state_as_json(state)
            if as_json
            else f"running: {state.served_model_name} at {state.base_url} (pid {state.pid})"
        )


@serve_app.command("stop")
def stop() -> None:
    """Stop the server started by `sca serve`."""
    with cli_errors():
        state = stop_recorded_server()
        typer.echo(f"stopped pid {state.pid} ({state.base_url})")
