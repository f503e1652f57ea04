"""Typer options built from dataclass fields, as TRL's ``TrlParser`` builds argparse flags.

A :class:`Flags` names the fields of one options dataclass that a command exposes, and the flag
each is typed as. The help, the default and the choices (an enum made from the field's
``Literal``) come from the field itself (see :func:`~safe_context_agent.config.option`), so each
is declared once. :func:`with_flags` appends the options to a typer command's signature; the
command receives their values as keyword arguments, and :meth:`Flags.values` checks them (type,
choices, bounds: a one-line error naming the flag) through the same
:func:`~safe_context_agent.config.validate_options` that the dataclass itself uses.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

import typer

from safe_context_agent.config import validate_options

__all__ = ["REQUIRED", "FlagText", "Flags", "with_flags"]

_Command = TypeVar("_Command", bound=Callable[..., Any])

REQUIRED: Any = object()
"""A per-command default meaning: this command has no default, the flag must be given."""


@dataclass(frozen=True)
class FlagText:
    """A field typed on the command line as text: ``parse`` turns it into the field's value."""

    parse: Callable[[str], Any]
    default: str
    metavar: str = "TEXT"
    note: str = ""
    """Appended to the field's help: how the value is written on the command line."""


@functools.cache
def _enum_of(choices: tuple[str, ...], name: str) -> type[StrEnum]:
    """The enum typer shows and checks for a ``Literal`` field (same values, same order)."""
    return StrEnum(name, {choice: choice for choice in choices})  # type: ignore[return-value]


def _choices(annotation: Any) -> tuple[str, ...]:
    """The values of a ``Literal`` (or ``Literal | None``) annotation; empty for other types."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(members) == 1 and typing.get_origin(members[0]) is Literal:
        return typing.get_args(members[0])
    return ()


@dataclass(frozen=True)
class Flags:
    """The flags of one options dataclass a command exposes.

    Args:
        options: The dataclass whose fields declare the options.
        names: Field name -> the flag it is typed as (``{"learning_rate": "--lr"}``).
        defaults: This command's default where it differs from the field's; :data:`REQUIRED`
            makes the flag mandatory.
        texts: Fields typed as text and parsed (e.g. ``weight_clip`` as ``MIN,MAX``).
        panel: The ``--help`` section the flags are listed under.
    """

    options: type
    names: Mapping[str, str]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    texts: Mapping[str, FlagText] = field(default_factory=dict)
    panel: str | None = None

    def _field_defaults(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for f in dataclasses.fields(self.options):
            if f.default is not dataclasses.MISSING:
                found[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                found[f.name] = f.default_factory()
            else:
                found[f.name] = REQUIRED
        return found

    def parameters(self) -> list[inspect.Parameter]:
        """One keyword-only typer option per field, named after the field."""
        hints = typing.get_type_hints(self.options)
        by_name = {f.name: f for f in dataclasses.fields(self.options)}
        defaults = {**self._field_defaults(), **self.defaults}
        made = []
        for name, flag in self.names.items():
            # typer renders help as rich markup, where "[...]" would vanish as a style tag.
            help_text = str(by_name[name].metadata.get("help", "")).replace("[", r"\[")
            default = defaults[name]
            annotation: Any = hints[name]
            if name in self.texts:
                text = self.texts[name]
                annotation = str
                help_text = f"{help_text} {text.note}".strip()
                option = typer.Option(
                    flag, help=help_text, metavar=text.metavar, rich_help_panel=self.panel
                )
                default = text.default if default is not REQUIRED else REQUIRED
            else:
                choices = _choices(annotation)
                if choices:
                    enum = _enum_of(choices, name.title().replace("_", ""))
                    annotation = enum if typing.get_origin(annotation) is Literal else enum | None
                    default = enum(default) if default not in (None, REQUIRED) else default
                option = typer.Option(flag, help=help_text, rich_help_panel=self.panel)
            made.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=inspect.Parameter.empty if default is REQUIRED else default,
                    annotation=Annotated[annotation, option],
                )
            )
        return made

    def values(self, given: Mapping[str, Any], *, source: str) -> dict[str, Any]:
        """The fields' values from a command's keyword arguments, parsed and checked against the
        dataclass's types and bounds (a :class:`~safe_context_agent.errors.ConfigError` naming
        the flag)."""
        values: dict[str, Any] = {}
        for name in self.names:
            value = given[name]
            if name in self.texts:
                value = self.texts[name].parse(value)
            elif isinstance(value, StrEnum):
                value = value.value
            values[name] = value
        validate_options(self.options, values, source=source, labels=self.names)
        return values


def with_flags(*flag_sets: Flags) -> Callable[[_Command], _Command]:
    """Append the options of ``flag_sets`` to a typer command, which takes them as ``**flags``."""

    def decorate(command: _Command) -> _Command:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        generated = [p for flags in flag_sets for p in flags.parameters()]
        names = [p.name for p in own + generated]
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise TypeError(f"{command.__name__}: options declared twice: {', '.join(clashes)}")
        command.__signature__ = signature.replace(parameters=own + generated)  # type: ignore[attr-defined]
        return command

    return decorate
