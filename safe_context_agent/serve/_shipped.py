"""The trained adapter shipped with the package, and how it is served.

``sca train recipe`` trains a LoRA adapter for the embedded SmolLM2-135M (demonstrations from
the rule pack, SFT, then IFPO; docs/training.md); the chosen one is committed under
``serve/adapters/<name>/`` with its ``MODEL_CARD.md``. ``sca serve`` loads it beside the base
model (vLLM runtime LoRA, ``--lora-modules``), and :data:`DEFAULT_MODEL` is what the agent
asks for unless told otherwise; ``--model smollm2`` (or ``AgentConfig(model="smollm2")``)
selects the base model.

The adapter was trained on prompts rendered without the template's few-shot turns, so
requests naming it carry ``chat_template_kwargs={"few_shot": False}``
(:func:`template_kwargs_for`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from safe_context_agent.serve._embedded import EMBEDDED_SERVED_NAME

__all__ = [
    "DEFAULT_MODEL",
    "SHIPPED_ADAPTER_NAME",
    "TRAINED_TEMPLATE_KWARGS",
    "shipped_adapter_dir",
    "template_kwargs_for",
]

SHIPPED_ADAPTER_NAME = "smollm2-ascl"
"""The served name of the shipped adapter."""

TRAINED_TEMPLATE_KWARGS: dict[str, Any] = {"few_shot": False}
"""``chat_template_kwargs`` for a model trained on demonstrations: no few-shot example turns."""

_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def shipped_adapter_dir(name: str = SHIPPED_ADAPTER_NAME) -> Path | None:
    """The packaged adapter folder, or None when this install carries none."""
    folder = Path(str(resources.files("safe_context_agent.serve") / "adapters" / name))
    if all((folder / file).is_file() for file in _ADAPTER_FILES):
        return folder
    return None


DEFAULT_MODEL = SHIPPED_ADAPTER_NAME if shipped_adapter_dir() else EMBEDDED_SERVED_NAME
"""What the agent asks the server for by default: the shipped adapter when it is installed."""


def template_kwargs_for(model: str) -> dict[str, Any] | None:
    """The chat-template keywords a served model needs (None: the template's defaults)."""
    if model == SHIPPED_ADAPTER_NAME:
        return dict(TRAINED_TEMPLATE_KWARGS)
    return None
