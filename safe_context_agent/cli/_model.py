"""`sca model`."""

from __future__ import annotations

import typer

model_app = typer.Typer(help="model", no_args_is_help=True)
