"""`sca train ship`: a recipe policy's adapter copied into the package with its card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safe_context_training import ship
from safe_context_training._ship import MAX_SHIPPED_BYTES, package_adapter_dir
from safetensors.numpy import save_file
from typer.testing import CliRunner

from safe_context_agent.cli import app
from safe_context_agent.errors import ConfigError


def _run(tmp_path: Path, *, policies: tuple[str, ...] = ("base", "sft")) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    metrics = {p: {"adaptive": {"harmful_refused": 0.5}} for p in policies}
    (run / "card.json").write_text(json.dumps({"dev_metrics": metrics}), encoding="utf-8")
    (run / "MODEL_CARD.md").write_text("# Model card\n\nmade by sca train recipe\n", "utf-8")
    adapter = run / "sft"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 16}), encoding="utf-8")
    save_file({"lora_A": np.ones((2, 3), dtype=np.float32)}, adapter / "adapter_model.safetensors")
    return run


def test_ship_copies_the_adapter_and_appends_why_and_digests(tmp_path: Path) -> None:
    run = _run(tmp_path)
    dest = tmp_path / "pkg" / "adapters" / "smollm2-ascl"
    dest.mkdir(parents=True)
    (dest / "stale.bin").write_bytes(b"old")
    shipped = ship(run, "sft", "it met the targets", dest=dest)
    assert shipped.folder == dest
    assert sorted(p.name for p in dest.iterdir()) == [
        "MODEL_CARD.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert (dest / "adapter_model.safetensors").read_bytes() == (
        run / "sft" / "adapter_model.safetensors"
    ).read_bytes()
    card = (dest / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card.startswith("# Model card\n\nmade by sca train recipe")
    assert "Policy shipped: `sft`" in card and "Why: it met the targets" in card
    assert (
        f"`adapter_model.safetensors` sha256 `{shipped.sha256['adapter_model.safetensors']}`"
        in card
    )
    assert not dest.with_name(dest.name + ".partial").exists()


@pytest.mark.parametrize(
    ("policy", "why", "message"),
    [
        (
            "ifpo",
            "because",
            "policy 'ifpo' has no dev evaluation in this run. Fix: ship one of sft",
        ),
        ("base", "because", "policy 'base' has no dev evaluation"),
        ("sft", "  ", "--why is empty"),
    ],
)
def test_ship_refuses_what_it_cannot_stand_behind(
    tmp_path: Path, policy: str, why: str, message: str
) -> None:
    run = _run(tmp_path)
    with pytest.raises(ConfigError, match=message):
        ship(run, policy, why, dest=tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_ship_refuses_a_damaged_or_oversized_adapter(tmp_path: Path) -> None:
    run = _run(tmp_path)
    weights = run / "sft" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])
    with pytest.raises(ConfigError, match="not a safetensors file"):
        ship(run, "sft", "because", dest=tmp_path / "dest")
    save_file({"w": np.zeros(MAX_SHIPPED_BYTES // 4 + 1, dtype=np.float32)}, weights)
    with pytest.raises(ConfigError, match=r"over the 20 MiB the package may carry"):
        ship(run, "sft", "because", dest=tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_sca_train_ship_reports_one_line_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "ship", "--run", str(tmp_path), "--why", "x"])
    assert result.exit_code != 0
    assert "card.json: no model card" in result.output
    assert "Traceback" not in result.output


def test_the_package_folder_is_the_one_the_server_serves_from() -> None:
    from safe_context_agent.serve import _shipped

    assert package_adapter_dir().parent == Path(_shipped.__file__).resolve().parent / "adapters"
