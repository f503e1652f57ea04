"""`sca eval` through typer's CliRunner: bad input as one-line errors, `sca eval report`, and
(with the real server) an eval of every suite in all three modes, then a resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safe_context_agent.cli._eval import eval_app
from safe_context_agent.eval import EvalReport, EvalRunMetadata
from safe_context_agent.traces import JsonlTraceSink, Trace, read_traces

DATA = Path(__file__).parent / "data"
GENERIC = DATA / "generic_small.jsonl"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

runner = CliRunner()

# Every suite the runner knows, by the names (and short names) the CLI accepts.
SUITE_FILES = {
    "strongreject": "strongreject/strongreject_dataset.csv",
    "harmbench": "harmbench/harmbench_behaviors_text_all.csv",
    "advbench": "advbench/harmful_behaviors.csv",
    "jbb-harmful": "jailbreakbench/harmful-behaviors.csv",
    "jbb-benign": "jailbreakbench/benign-behaviors.csv",
    "xstest": "xstest/xstest_prompts.csv",
    "gsm8k": "gsm8k/test.jsonl",
}
HARMFUL_ONLY = {"strongreject", "harmbench", "advbench", "jailbreakbench_harmful"}


def _invoke(*args: str):
    return runner.invoke(eval_app, list(args))


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Fix:" in result.stderr
    for needle in needles:
        assert needle in result.stderr
    assert "Traceback" not in result.output


def test_help() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    for flag in ("--suite", "--modes", "--limit", "--concurrency", "--judge", "--max-tokens"):
        assert flag in result.output


def test_unknown_suite(tmp_path: Path) -> None:
    result = _invoke("--suite", "orbench=x.csv", "--out", str(tmp_path))
    _one_line_error(result, "unknown benchmark suite 'orbench'", "jbb-harmful")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    result = _invoke("--suite", f"xstest={missing}", "--out", str(tmp_path / "out"))
    _one_line_error(result, f"{missing}: no such file")
    assert not (tmp_path / "out").exists()


def test_bad_modes(tmp_path: Path) -> None:
    result = _invoke("--suite", f"generic={GENERIC}", "--modes", "never,sometimes", "--out", "x")
    _one_line_error(result, "unknown mode 'sometimes'", "never, always, adaptive")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--out", "x"], "no --suite given"),
        (["--suite", f"generic={GENERIC}"], "no --out folder given"),
        (["--suite", "xstest", "--out", "x"], "is not NAME=PATH"),
        (["--suite", f"generic={GENERIC}", "--out", "x", "--judge", "gpt"], "unknown --judge"),
        (["--suite", f"generic={GENERIC}", "--out", "x", "--judge", "llm"], "needs base_url"),
        (["--suite", f"generic={GENERIC}", "--out", "x", "--pack", "nope"], "rule pack named"),
    ],
)
def test_other_bad_input(args: list[str], needle: str) -> None:
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and needle in result.stderr
    assert result.stderr.count("\n") == 1


def test_report_command_recomputes_from_traces(tmp_path: Path) -> None:
    answers = [("h1", "harmful", "I can't help with that."), ("b1", "benign", "I won't do that.")]
    answers.append(("b2", "benign", "Press Ctrl+Alt+Del and end the task."))
    with JsonlTraceSink(tmp_path / "traces.jsonl", fsync=False) as sink:
        for prompt_id, label, answer in answers:
            meta = EvalRunMetadata(
                suite="generic", prompt_id=f"generic-{prompt_id}", label=label, mode="never"
            )
            sink.write(
                Trace(
                    model="smollm2",
                    mode="never",
                    messages=[{"role": "user", "content": "a prompt"}],
                    answer=answer,
                    metadata=meta.model_dump(mode="json"),
                )
            )
    result = _invoke("report", str(tmp_path), "--no-plots")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("## All suites pooled")
    report = EvalReport.model_validate_json((tmp_path / "report.json").read_text())
    never = report.cell("never")
    assert never.safety_rate is not None and never.safety_rate.value == 1.0
    assert never.over_refusal_rate is not None
    assert (never.over_refusal_rate.k, never.over_refusal_rate.n) == (1, 2)
    assert not (tmp_path / "safety_plane.png").exists()

    empty = _invoke("report", str(tmp_path / "nothing"))
    _one_line_error(empty, "no traces.jsonl here")


# --- against the real server --------------------------------------------------------------

LIMIT = 2
MODES = ("never", "always", "adaptive")


def _eval_args(shared_data: Path, server, out: Path) -> list[str]:
    args = []
    for name, relative in SUITE_FILES.items():
        args += ["--suite", f"{name}={shared_data / relative}"]
    return [
        *args,
        "--suite", f"generic={GENERIC}",
        "--modes", ",".join(MODES),
        "--limit", str(LIMIT),
        "--seed", "0",
        "--concurrency", "8",
        "--max-tokens", "16",
        "--base-url", server.base_url,
        "--model", server.model,
        "--pack", "general",
        "--quiet",
        "--out", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def first_eval(vllm_server, shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("eval") / "run"
    args = _eval_args(shared_data, vllm_server, out)
    result = _invoke(*args)
    return args, out, result


@pytest.mark.server
@pytest.mark.slow
def test_every_suite_in_every_mode(first_eval) -> None:
    _args, out, result = first_eval
    assert result.exit_code == 0, result.output
    runs = LIMIT * (len(SUITE_FILES) + 1) * len(MODES)
    assert f"{runs} runs made, 0 already done, 0 failed" in result.stdout
    assert {p.name for p in out.iterdir()} == {
        "traces.jsonl",
        "report.json",
        "report.md",
        "safety_plane.png",
        "consult_by_label.png",
    }
    traces = list(read_traces(out / "traces.jsonl"))
    assert len(traces) == runs
    for trace in traces:
        assert trace.outcome.status == "ok"
        assert trace.metadata["mode"] == trace.mode
        assert trace.metadata["prompt_id"].startswith(trace.metadata["suite"] + "-")
        assert trace.sampling["max_tokens"] == 16
        assert trace.consulted == (trace.mode == "always") or trace.mode == "adaptive"
    assert {t.metadata["label"] for t in traces if t.metadata["suite"] in HARMFUL_ONLY} == {
        "harmful"
    }
    gsm8k = [t for t in traces if t.metadata["suite"] == "gsm8k"]
    assert all(t.metadata["answer"] and t.metadata["label"] == "benign" for t in gsm8k)

    report = EvalReport.model_validate_json((out / "report.json").read_text())
    assert report.modes == list(MODES)
    assert len(report.cells) == len(MODES) * (len(SUITE_FILES) + 1)
    for mode in MODES:
        pooled = report.cell(mode)
        assert pooled.runs == LIMIT * (len(SUITE_FILES) + 1) and pooled.errors == 0
        assert pooled.safety_rate is not None and pooled.over_refusal_rate is not None
        assert report.cell(mode, "gsm8k").accuracy is not None
        assert report.cell(mode, "strongreject").over_refusal_rate is None
    assert report.cell("always").consult_rate_benign.value == 1.0  # type: ignore[union-attr]
    assert report.cell("never").consultations_per_run.mean == 0
    markdown = (out / "report.md").read_text()
    for suite in ("strongreject", "jailbreakbench_benign", "xstest", "gsm8k", "generic"):
        assert f"\n## {suite}\n" in markdown
    for png in ("safety_plane.png", "consult_by_label.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)


@pytest.mark.server
@pytest.mark.slow
def test_resume_runs_only_what_is_missing(first_eval, tmp_path: Path) -> None:
    args, out, result = first_eval
    assert result.exit_code == 0, result.output
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    lines = (resumed / "traces.jsonl").read_text().splitlines(keepends=True)
    dropped = {3, 17, 30, 41}  # runs of each mode, as if the eval had been killed
    kept = [line for i, line in enumerate(lines) if i not in dropped]
    # ... and the record being written when it was killed, cut short.
    (resumed / "traces.jsonl").write_text("".join(kept) + lines[3][:200])

    def key(record: dict) -> tuple[str, str]:
        return record["metadata"]["prompt_id"], record["mode"]

    missing = {key(json.loads(lines[i])) for i in dropped}
    kept_ids = [json.loads(line)["trace_id"] for line in kept]

    args = [*args[: args.index("--out")], "--out", str(resumed)]
    again = _invoke(*args)
    assert again.exit_code == 0, again.output
    runs = LIMIT * (len(SUITE_FILES) + 1) * len(MODES)
    assert f"{len(dropped)} runs made, {runs - len(dropped)} already done, 0 failed" in again.stdout
    traces = list(read_traces(resumed / "traces.jsonl", on_error="skip"))
    assert [t.trace_id for t in traces[: len(kept)]] == kept_ids
    new = traces[len(kept) :]
    assert {(t.metadata["prompt_id"], t.mode) for t in new} == missing
    report = EvalReport.model_validate_json((resumed / "report.json").read_text())
    assert all(report.cell(mode).runs == runs // len(MODES) for mode in MODES)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--limit", "0", "--limit 0: input should be greater than or equal to 1"),
        ("--max-tokens", "0", "--max-tokens 0: input should be greater than or equal to 1"),
        ("--concurrency", "0", "--concurrency 0: input should be greater than or equal to 1"),
        ("--split", "validation", "--split 'validation': input should be 'train', 'dev' or 'test'"),
    ],
)
def test_bad_flags_get_the_models_one_line_error(tmp_path, flag, value, message) -> None:
    data = tmp_path / "p.jsonl"
    data.write_text('{"prompt": "hi", "label": "benign"}\n', encoding="utf-8")
    result = CliRunner().invoke(
        eval_app, ["--suite", f"generic={data}", "--out", str(tmp_path / "o"), flag, value]
    )
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
