"""Atomic writes and checksums (safe_context_agent._io): a file is replaced whole or not at all."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from safe_context_agent._io import atomic_path, sha256_bytes, sha256_file, write_atomic


def test_write_atomic_replaces_text_and_bytes_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_atomic(target, "first ✓\n")
    assert target.read_text(encoding="utf-8") == "first ✓\n"
    write_atomic(target, b"\x00second")
    assert target.read_bytes() == b"\x00second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "index.faiss"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer crashed"), atomic_path(target) as partial:
        assert partial.parent == tmp_path and partial != target
        partial.write_bytes(b"half of the ne")
        raise RuntimeError("writer crashed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]


def test_until_the_block_ends_readers_see_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_text("old", encoding="utf-8")
    with atomic_path(target) as partial:
        partial.write_text("new", encoding="utf-8")
        assert target.read_text(encoding="utf-8") == "old"
    assert target.read_text(encoding="utf-8") == "new"


def test_checksums_agree_with_hashlib_across_block_boundaries(tmp_path: Path) -> None:
    data = bytes(range(256)) * 8193  # a little over 2 MiB: more than one 1 MiB block
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == sha256_bytes(data) == expected
    assert sha256_bytes("é") == hashlib.sha256("é".encode()).hexdigest()
