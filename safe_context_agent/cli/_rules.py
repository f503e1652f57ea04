"""`sca rules`: validate, build, inspect and search rule packs."""

from __future__ import annotations

import typer

rules_app = typer.Typer(help="Validate, index and search rule packs.", no_args_is_help=True)
