"""The ``sca`` command line. Thin by design: every command calls a library function."""

from __future__ import annotations

import typer

from safe_context_agent.cli._eval import eval_app
from safe_context_agent.cli._model import model_app
from safe_context_agent.cli._rules import rules_app
from safe_context_agent.cli._rules_audit import audit, lint
from safe_context_agent.cli._run import collect, demo, run
from safe_context_agent.cli._serve import serve_app
from safe_context_agent.cli._train import train_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="sca",
    help="safe-context-agent: an agent that decides when to consult safety rules (ASCL).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(model_app, name="model")
app.add_typer(serve_app, name="serve")
rules_app.command("lint")(lint)
rules_app.command("audit")(audit)
app.add_typer(rules_app, name="rules")
app.command("run")(run)
app.command("collect")(collect)
app.command("demo")(demo)
app.add_typer(eval_app, name="eval")
app.add_typer(train_app, name="train")


def main() -> None:
    app()
