"""Ship a recipe's adapter as the package's default model.

``sca train ship --run runs/recipe --policy ifpo --why "..."`` copies the chosen policy's LoRA
adapter out of a finished recipe run into ``safe_context_agent/serve/adapters/<name>/`` and
writes its ``MODEL_CARD.md``: the run's card (data, exact command, seed, commit, dev metrics of
every policy) followed by which policy was shipped, why, and the sha256 of each shipped file, so
the committed bytes can be traced back to the run that made them.

Only a policy whose evaluation stage finished can be shipped: a card without the figures of
what it ships would be a claim without evidence.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from safe_context_agent._io import sha256_file, write_atomic
from safe_context_agent.errors import ConfigError
from safe_context_agent.serve import SHIPPED_ADAPTER_NAME

__all__ = ["MAX_SHIPPED_BYTES", "SHIPPED_FILES", "ShippedAdapter", "package_adapter_dir", "ship"]

SHIPPED_FILES = ("adapter_config.json", "adapter_model.safetensors")
"""What vLLM needs to load a LoRA adapter (the tokenizer and template are the base model's)."""

MAX_SHIPPED_BYTES = 20 * 2**20
"""The wheel carries the adapter; more than this would make every install pay for it."""


@dataclass(frozen=True)
class ShippedAdapter:
    """Where the adapter went and what it is."""

    folder: Path
    policy: str
    bytes: int
    sha256: dict[str, str]


def package_adapter_dir(name: str = SHIPPED_ADAPTER_NAME) -> Path:
    """The folder in this source tree that the package serves the adapter from."""
    import safe_context_agent.serve as serve

    return Path(serve.__file__).resolve().parent / "adapters" / name


def ship(run: Path, policy: str, why: str, *, dest: Path | None = None) -> ShippedAdapter:
    """Copy ``policy``'s adapter from the recipe run ``run`` to ``dest`` (the package's folder
    by default) with a model card; the previous contents of ``dest`` are replaced."""
    run = run.expanduser()
    if not why.strip():
        raise ConfigError("--why is empty. Fix: say in a sentence why this policy is shipped")
    card_json = run / "card.json"
    if not card_json.is_file():
        raise ConfigError(
            f"{card_json}: no model card. Fix: pass --run with a recipe run folder "
            "(sca train recipe writes card.json on every call)"
        )
    card_md = run / "MODEL_CARD.md"
    if not card_md.is_file():
        raise ConfigError(
            f"{card_md}: missing beside card.json. Fix: rerun `sca train recipe --out {run}`, "
            "which rewrites both"
        )
    card = json.loads(card_json.read_text(encoding="utf-8"))
    evaluated = sorted(card.get("dev_metrics") or {})
    if policy not in evaluated or policy == "base":
        raise ConfigError(
            f"{card_json}: policy {policy!r} has no dev evaluation in this run. Fix: ship one of "
            f"{', '.join(p for p in evaluated if p != 'base') or '(none yet: finish the recipe)'}"
        )
    source = run / policy
    missing = [name for name in SHIPPED_FILES if not (source / name).is_file()]
    if missing:
        raise ConfigError(
            f"{source}: {', '.join(missing)} missing. Fix: rerun `sca train recipe --out {run}` "
            "to finish the stage that trains it"
        )
    _check_loadable(source)
    size = sum((source / name).stat().st_size for name in SHIPPED_FILES)
    if size > MAX_SHIPPED_BYTES:
        raise ConfigError(
            f"{source}: the adapter is {size / 2**20:.1f} MiB, over the "
            f"{MAX_SHIPPED_BYTES // 2**20} MiB the package may carry. Fix: train with a "
            "lower --lora-r or fewer target modules"
        )
    folder = dest or package_adapter_dir()
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    digests = {}
    for name in SHIPPED_FILES:
        shutil.copyfile(source / name, staging / name)
        digests[name] = sha256_file(staging / name)
    card_text = card_md.read_text(encoding="utf-8")
    write_atomic(staging / "MODEL_CARD.md", card_text + _shipped_section(policy, why, digests))
    # Swap the whole folder so a reader never sees half an adapter.
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return ShippedAdapter(folder=folder, policy=policy, bytes=size, sha256=digests)


def _check_loadable(source: Path) -> None:
    """Both files parse (a truncated copy would otherwise be found only when vLLM loads it)."""
    from safetensors import safe_open

    config = source / "adapter_config.json"
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{config}: not JSON ({exc}). Fix: retrain the stage") from None
    weights = source / "adapter_model.safetensors"
    try:
        with safe_open(str(weights), framework="numpy") as tensors:
            names = list(tensors.keys())
    except Exception as exc:  # safetensors raises its own error types per failure
        raise ConfigError(
            f"{weights}: not a safetensors file ({exc}). Fix: retrain the stage"
        ) from None
    if not names:
        raise ConfigError(f"{weights}: holds no tensors. Fix: retrain the stage")


def _shipped_section(policy: str, why: str, digests: dict[str, str]) -> str:
    lines = [
        "## Shipped",
        "",
        f"Policy shipped: `{policy}` (served as `{SHIPPED_ADAPTER_NAME}`). Why: {why.strip()}",
        "",
        *(f"- `{name}` sha256 `{digest}`" for name, digest in digests.items()),
        "",
    ]
    return "\n".join(lines)
