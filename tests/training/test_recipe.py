"""`sca train recipe --quick`: every stage at toy size against the real server, then a resume."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from safe_context_agent.cli import app
from safe_context_agent.eval import EvalReport
from safe_context_agent.traces import read_traces

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_quick_recipe_runs_every_stage_and_resumes_without_redoing_any(
    vllm_server, shared_data, tmp_path
) -> None:
    out = tmp_path / "recipe"
    command = [
        "train", "recipe", "--quick", "--out", str(out), "--data", str(shared_data),
        "--base-url", vllm_server.base_url, "--threads", "2",
    ]  # fmt: skip
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    stages = sorted(p.stem for p in (out / "stages").glob("*.json"))
    assert stages == ["eval_base", "eval_ifpo", "eval_sft", "ifpo", "sft", "synthesize"]
    demos = list(read_traces(out / "demos.jsonl"))
    assert demos and all(d.metadata["source"] == "synthetic" for d in demos)
    assert {d.metadata["kind"] for d in demos} >= {"harmful"}
    assert (out / "sft" / "adapter_model.safetensors").is_file()
    assert (out / "ifpo" / "adapter_model.safetensors").is_file()
    for policy in ("base", "sft", "ifpo"):
        for report in (out / f"eval_{policy}").glob("*/report.json"):
            cells = EvalReport.model_validate_json(report.read_text()).overall
            assert [c.mode for c in cells] == ["adaptive"]
    card = json.loads((out / "card.json").read_text())
    assert set(card["dev_metrics"]) == {"base", "sft", "ifpo"}
    assert "## Dev metrics" in (out / "MODEL_CARD.md").read_text()

    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0, again.output
    assert again.output.count("done earlier") == 6
