"""Every example runs against the real server (they are documentation that must not rot)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.server, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(script: str, server, *args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "SCA_BASE_URL": server.base_url, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--model", server.model, "--max-tokens", "32", *args],
        env=env, capture_output=True, text=True, timeout=900, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_support_bot(vllm_server) -> None:
    out = _run("support_bot.py", vllm_server)
    assert "Order A1001: shipped on 3 May" in out and out.count("> ") == 3


def test_swap_rule_packs(vllm_server) -> None:
    out = _run("swap_rule_packs.py", vllm_server)
    retrieved = {line.split("]")[0][1:]: line for line in out.splitlines() if "retrieved:" in line}
    assert set(retrieved) == {"general", "healthcare", "kids"}
    assert len({line.split("retrieved: ")[1] for line in retrieved.values()}) == 3, "each pack retrieves its own rules"


def test_collect_for_training(vllm_server, tmp_path) -> None:
    out = _run("collect_for_training.py", vllm_server, "--n", "2", "--out", str(tmp_path / "t.jsonl"))
    assert '"runs_ok": 8' in out and out.count(": 2 samples") == 4
