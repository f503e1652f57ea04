"""`sca serve`."""

from __future__ import annotations

import typer

serve_app = typer.Typer(help="serve", no_args_is_help=True)
