"""The agent's settings: one pydantic model, loadable from code, JSON/YAML, or the CLI's flags."""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from safe_context_agent.errors import ConfigError

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "FAIL_CLOSED_NOTICE",
    "PLAIN_SYSTEM_PROMPT",
    "AgentConfig",
    "SamplingParams",
    "describe_settings_error",
    "option",
    "validate_options",
    "validate_settings",
]

_Model = TypeVar("_Model", bound=BaseModel)

DEFAULT_SYSTEM_PROMPT = """\
You are a helpful assistant. For requests about weapons, drugs, hacking, violence, self-harm, \
crime, or anything that could hurt someone, first call consult_safety_rules. Answer everyday \
requests directly. The rules say what is fine to help with as well as what is not: when they \
allow the request, help fully; when they do not, refuse in one or two sentences."""
"""The ``adaptive`` mode's system prompt. Short on purpose: the embedded 135M model follows the
few-shot turns of its chat template far more than instructions (see serve/templates)."""

PLAIN_SYSTEM_PROMPT = """\
You are a helpful assistant. Answer requests directly and helpfully. If a request would cause \
real harm, refuse in one or two sentences."""
"""The system prompt of the ``never`` and ``always`` modes, which offer no tool."""

FAIL_CLOSED_NOTICE = (
    "I can't check my safety guidelines right now, so I can't answer this request. "
    "Please try again later."
)


def describe_settings_error(error: ValidationError, labels: Mapping[str, str] | None = None) -> str:
    """Every problem of ``error`` on one line: ``--k 0: input should be ...; ...``.

    ``labels`` maps a field path (``"k"``, ``"sampling.max_tokens"``) to what the user typed it
    as (``"--k"``), so a CLI error names the flag and a file error names the field.
    """
    parts = []
    for problem in error.errors(include_url=False):
        path = ".".join(str(p) for p in problem["loc"])
        label = (labels or {}).get(path, f"field '{path}'" if path else "the settings")
        shown = f" {problem['input']!r}" if problem["type"] != "missing" else ""
        message = problem["msg"]
        parts.append(f"{label}{shown}: {message[:1].lower()}{message[1:]}")
    return "; ".join(parts)


def validate_settings(
    model: type[_Model],
    data: Any,
    *,
    source: str = "settings",
    labels: Mapping[str, str] | None = None,
) -> _Model:
    """``model.model_validate(data)``, a :class:`ConfigError` naming each bad field on failure.

    The one validation path of settings, whether they come from Python, a file or CLI flags.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid {source}: {describe_settings_error(exc, labels)}") from None


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    default_factory: Any = dataclasses.MISSING,
    **bounds: Any,
) -> Any:
    """A dataclass field declared the way TRL declares its config fields (``metadata={"help":
    ...}``), plus pydantic bounds (``ge``, ``gt``, ``le``, ``lt``, ``allow_inf_nan``) that
    :func:`validate_options` checks. The CLI builds its flags from the same metadata."""
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        metadata={"help": help, "bounds": bounds},
    )


@functools.cache
def _options_model(options: type) -> type[BaseModel]:
    """A pydantic model with the fields of the dataclass ``options``: their types and bounds.

    Every field defaults to None (not validated), so a subset of the fields can be checked.
    """
    hints = typing.get_type_hints(options)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], Field(default=None, **f.metadata.get("bounds", {})))
        for f in dataclasses.fields(options)
    }
    return create_model(
        options.__name__, __config__=ConfigDict(arbitrary_types_allowed=True), **fields
    )


def _choices(annotation: Any) -> tuple[Any, ...]:
    """The values of a ``Literal`` annotation (empty for any other type)."""
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()


def validate_options(
    options: type,
    values: Mapping[str, Any],
    *,
    source: str,
    labels: Mapping[str, str] | None = None,
) -> None:
    """Check ``values`` (a subset of the dataclass ``options``' fields) against their declared
    types and bounds: a :class:`ConfigError` naming each bad field, or flag through ``labels``.

    The dataclass counterpart of :func:`validate_settings`: the Python API (the dataclass's
    ``__post_init__``) and the CLI flags built from the same fields go through it.
    """
    model = _options_model(options)
    unknown = set(values) - set(model.model_fields)
    if unknown:
        raise TypeError(f"{options.__name__} has no field {', '.join(sorted(unknown))}")
    for name, value in values.items():
        allowed = _choices(model.model_fields[name].annotation)
        if allowed and value not in allowed:
            label = (labels or {}).get(name, f"field '{name}'")
            choices = ", ".join(repr(choice) for choice in allowed)
            raise ConfigError(
                f"invalid {source}: {label}={value!r} is not an option; use one of {choices}"
            )
    try:
        model.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(f"invalid {source}: {describe_settings_error(exc, labels)}") from None


def _default_model() -> str:
    from safe_context_agent.serve._shipped import DEFAULT_MODEL

    return DEFAULT_MODEL


class SamplingParams(BaseModel):
    """Per-turn sampling. ``max_tokens`` is a per-model-turn budget, not per run."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=0.0, ge=0.0, description="0 = greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=256, ge=1, description="Token budget of each model turn.")
    seed: int | None = Field(default=None, description="Server-side sampling seed.")
    stop: list[str] | None = Field(default=None)


class AgentConfig(BaseModel):
    """Everything that decides how the agent runs. API keys are read from the environment only."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint ending in /v1; None means the server `sca serve` started.",
    )
    model: str = Field(
        default_factory=_default_model,
        description="Served model (or LoRA adapter) name; default: the shipped trained adapter "
        "(smollm2-ascl) when the package carries it, else the base model (smollm2).",
    )
    api_key_env: str = Field(
        default="SCA_API_KEY",
        description="Environment variable holding the endpoint's API key (vLLM needs none).",
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        default=None,
        description="Sent as vLLM's chat_template_kwargs; None: what the model needs (no "
        "few-shot turns for the shipped adapter). E.g. {'few_shot': False} serves the "
        "embedded template without its example turns (models trained on demonstrations).",
    )
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    pack: str = Field(default="general", description="Built-in pack name or pack folder.")
    embedding_model: str | None = Field(
        default=None, description="sentence-transformers model for retrieval; None uses the pack's."
    )
    k: int = Field(default=3, ge=1, le=20, description="Rules returned per consultation.")
    mode: Literal["adaptive", "never", "always"] = Field(
        default="adaptive",
        description="adaptive: the model decides (ASCL); never: no tool; always: rules in context before turn 1.",
    )
    max_consultations: int = Field(default=2, ge=0, description="Consultations allowed per run.")
    max_model_turns: int = Field(default=4, ge=1, description="Model calls allowed per run.")
    fail_closed: bool = Field(
        default=True,
        description="If retrieval fails, answer with a notice instead of answering unguarded.",
    )
    fail_closed_notice: str = Field(default=FAIL_CLOSED_NOTICE)
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT)
    max_prompt_chars: int = Field(
        default=16_000, ge=1, description="Longer user prompts are rejected before any model call."
    )
    request_timeout_s: float = Field(default=300.0, gt=0, description="Per request (openai SDK).")
    max_retries: int = Field(
        default=2, ge=0, description="openai SDK retries on connection errors."
    )
    return_token_ids: bool = Field(
        default=True,
        description="Ask vLLM for token ids (needed for training); off for other APIs.",
    )
    logprobs: bool = Field(default=True, description="Ask for per-token logprobs.")
    trace_path: Path | None = Field(
        default=None, description="Write every run's trace here (.jsonl or .sqlite)."
    )

    @classmethod
    def from_file(cls, path: str | Path) -> AgentConfig:
        """Load from a ``.json`` or ``.yaml`` file; errors name the file and the field."""
        import json

        import yaml

        source = Path(path)
        try:
            text = source.read_text(encoding="utf-8")
            data: Any = (
                yaml.safe_load(text) if source.suffix in {".yaml", ".yml"} else json.loads(text)
            )
        except (OSError, ValueError, yaml.YAMLError) as exc:
            detail = " ".join(str(exc).split())  # YAML errors span lines; the CLI prints one
            raise ConfigError(f"{source}: cannot read agent config: {detail}") from exc
        return validate_settings(cls, data, source=f"agent config {source}")

    def updated(
        self, changes: Mapping[str, Any], *, labels: Mapping[str, str] | None = None
    ) -> AgentConfig:
        """A copy with ``changes`` applied and validated again (``model_copy`` would skip the
        field constraints). ``changes["sampling"]`` may hold only the sampling fields to change."""
        data = self.model_dump()
        for key, value in changes.items():
            if key == "sampling" and isinstance(value, Mapping):
                data["sampling"] = {**data["sampling"], **value}
            else:
                data[key] = value
        return validate_settings(AgentConfig, data, source="agent settings", labels=labels)

    def template_kwargs(self) -> dict[str, Any] | None:
        """The ``chat_template_kwargs`` requests carry: the configured ones, else the model's."""
        if self.chat_template_kwargs is not None:
            return dict(self.chat_template_kwargs)
        from safe_context_agent.serve._shipped import template_kwargs_for

        return template_kwargs_for(self.model)

    def api_key(self) -> str:
        """The key from ``api_key_env``; vLLM accepts any value when it was started without one."""
        return os.environ.get(self.api_key_env) or "EMPTY"
