"""The on-disk index: FAISS file, row map and manifest, written atomically and checked on read.

A folder holds ``index.faiss`` (``faiss.write_index``), ``rows.json`` (which rule each vector
belongs to) and ``manifest.json`` (what the index was built from, with the sha256 of both other
files). The manifest is removed first and written last, so an interrupted write leaves a folder
that reads as missing or corrupt, never as a valid index. Nothing is ever unpickled.

Reading takes no lock and writes nothing, so a prebuilt index in a folder the user cannot write
(baked into a container image, say) serves searches. That is safe against a concurrent writer:
each file is read once into memory, and what is checked against the manifest's checksum is the
very bytes that are then deserialised; a reader that races a rebuild sees a checksum mismatch,
never a mix of old and new files. Only building takes the lock (and creates the folder).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safe_context_agent._io import atomic_path, sha256_bytes, sha256_file, write_atomic
from safe_context_agent.errors import RetrievalError
from safe_context_agent.rules._texts import VectorStrategy

if TYPE_CHECKING:
    import faiss

try:
    import fcntl
except ImportError:  # not on Windows: concurrent builders there may both build, harmlessly
    fcntl = None  # type: ignore[assignment]  # the module or None; `locked` checks before use

__all__ = [
    "IndexManifest",
    "IndexSpec",
    "IndexUnusable",
    "locked",
    "read_index_files",
    "write_index_files",
]

INDEX_FILE = "index.faiss"
ROWS_FILE = "rows.json"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"

IndexKind = Literal["flat", "hnsw"]


class IndexSpec(BaseModel):
    """What an index must have been built from to be usable for a given pack and configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pack_name: str
    pack_hash: str
    embedding_model: str
    model_fingerprint: str
    strategy: VectorStrategy
    index_kind: IndexKind
    hnsw_m: int | None = None
    hnsw_ef_construction: int | None = None


class IndexManifest(IndexSpec):
    """``manifest.json``: the spec plus what was built and the checksums of the other files."""

    schema_version: Literal[1] = 1
    dimension: int
    n_vectors: int
    n_rules: int
    faiss_version: str
    index_sha256: str
    rows_sha256: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class _RowMap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    rule_ids: list[str]


class IndexUnusable(Exception):
    """The folder holds no index usable for the spec; ``state`` says why in one word."""

    def __init__(self, state: Literal["missing", "stale", "corrupt"], reason: str):
        super().__init__(f"{state}: {reason}")
        self.state = state
        self.reason = reason


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (one builder at a time, across processes)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_index_files(
    directory: Path, spec: IndexSpec
) -> tuple[faiss.Index, list[str], IndexManifest]:
    """Load the index in ``directory`` if it matches ``spec`` and its checksums; else raise
    :class:`IndexUnusable`. Reads only: no lock, no folder created."""
    import faiss
    import numpy as np

    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise IndexUnusable("missing", f"no {MANIFEST_FILE} in {directory}")
    try:
        manifest = IndexManifest.model_validate_json(manifest_path.read_bytes())
    except (ValidationError, OSError) as error:
        raise IndexUnusable(
            "corrupt", f"{manifest_path} is unreadable ({_first_line(error)})"
        ) from None
    for field in IndexSpec.model_fields:
        built, wanted = getattr(manifest, field), getattr(spec, field)
        if built != wanted:
            raise IndexUnusable("stale", f"{field} changed from {built!r} to {wanted!r}")
    index_path, rows_path = directory / INDEX_FILE, directory / ROWS_FILE
    contents: list[bytes] = []
    for path, expected in ((index_path, manifest.index_sha256), (rows_path, manifest.rows_sha256)):
        if path.is_dir():
            raise IndexUnusable("corrupt", f"{path} is a folder, not a file")
        if not path.is_file():
            raise IndexUnusable("corrupt", f"{path} is missing")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise IndexUnusable("corrupt", f"{path} is unreadable ({_first_line(error)})") from None
        if sha256_bytes(data) != expected:
            raise IndexUnusable("corrupt", f"{path} does not match its checksum in the manifest")
        contents.append(data)
    index_bytes, rows_bytes = contents
    try:
        rows = _RowMap.model_validate_json(rows_bytes).rule_ids
        index = faiss.deserialize_index(np.frombuffer(index_bytes, dtype=np.uint8))
    except (ValidationError, RuntimeError, OSError) as error:
        raise IndexUnusable(
            "corrupt", f"{directory} is unreadable ({_first_line(error)})"
        ) from None
    if index.ntotal != len(rows) or index.ntotal != manifest.n_vectors:
        raise IndexUnusable(
            "corrupt", f"{index.ntotal} vectors but {len(rows)} rows ({manifest.n_vectors} built)"
        )
    if index.d != manifest.dimension:
        raise IndexUnusable("corrupt", f"dimension {index.d}, manifest says {manifest.dimension}")
    return index, rows, manifest


def write_index_files(
    directory: Path, index: faiss.Index, rule_ids: list[str], spec: IndexSpec
) -> IndexManifest:
    """Write the three files atomically (temp file + rename each, manifest last).

    Anything in the way that a rename cannot replace (a folder named ``index.faiss``) is reported
    before the old manifest is touched, so a failed build leaves the folder as it was."""
    import faiss

    directory.mkdir(parents=True, exist_ok=True)
    for name in (INDEX_FILE, ROWS_FILE, MANIFEST_FILE):
        if (directory / name).is_dir():
            raise RetrievalError(
                f"{directory / name} is a folder where the index file {name} belongs; remove "
                f"it (rm -r '{directory / name}') and build again (sca rules build)"
            )
    (directory / MANIFEST_FILE).unlink(missing_ok=True)
    with atomic_path(directory / INDEX_FILE) as partial:
        faiss.write_index(index, str(partial))
        index_sha = sha256_file(partial)
    rows_json = _RowMap(rule_ids=rule_ids).model_dump_json().encode()
    write_atomic(directory / ROWS_FILE, rows_json)
    manifest = IndexManifest(
        **spec.model_dump(),
        dimension=index.d,
        n_vectors=index.ntotal,
        n_rules=len(set(rule_ids)),
        faiss_version=faiss.__version__,
        index_sha256=index_sha,
        rows_sha256=sha256_bytes(rows_json),
    )
    write_atomic(directory / MANIFEST_FILE, manifest.model_dump_json(indent=2))
    return manifest


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
