"""Files that appear whole or not at all, and the sha256 checksums that prove a file is whole.

Every file the package writes for later reading (index files and their manifest, model-cache
manifests, eval and audit reports, trace exports, the server's state file, recipe stage
records) goes through :func:`atomic_path` or :func:`write_atomic`: the bytes go to a temporary
file in the target's folder, are flushed to disk, and are renamed over the target. A crash
leaves the old file or the new one, never half of either, and a reader never sees a partial
write. The temporary file lives in the same folder because a rename is atomic only within one
file system.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

__all__ = ["atomic_path", "sha256_bytes", "sha256_file", "update_from_file", "write_atomic"]

_BLOCK = 1 << 20
"""Hashing reads files in 1 MiB blocks: a model's weights never sit in memory whole."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``target``; write the new contents there.

    When the block ends normally the file is fsynced, given ``mode`` and renamed over
    ``target``; when it raises, the temporary file is removed and ``target`` is untouched.
    Writers that need a path of their own (FAISS, Parquet) write to the yielded path directly.
    """
    destination = Path(target)
    handle, name = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial"
    )
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        # mkstemp creates 0600; these files are not secret, and others (a server, a notebook,
        # a second user of a shared cache) read them.
        os.chmod(partial, mode)
        with partial.open("rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)


def write_atomic(target: str | os.PathLike[str], data: str | bytes, *, mode: int = 0o644) -> None:
    """Replace ``target`` with ``data`` (text is written as UTF-8) in one atomic step."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(target, mode=mode) as partial:
        partial.write_bytes(payload)


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


def update_from_file(digest: _Digest, path: str | os.PathLike[str]) -> None:
    """Feed the bytes of ``path`` to ``digest`` (a ``hashlib`` object), block by block."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    update_from_file(digest, path)
    return digest.hexdigest()


def sha256_bytes(data: str | bytes) -> str:
    """The hex sha256 of ``data`` (text is hashed as UTF-8), as :func:`sha256_file` gives for a
    file holding those bytes."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()
