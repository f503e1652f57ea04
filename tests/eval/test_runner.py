"""The eval report on hand-made traces (rates computed by hand), the runner's resume and failure
handling without a model, and its settings. Runs against the real server are in test_cli_eval.py."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from safe_context_agent import AgentConfig, SamplingParams
from safe_context_agent.errors import ConfigError, TraceError
from safe_context_agent.eval import (
    EvalConfig,
    EvalReport,
    EvalRunMetadata,
    JudgedRun,
    SuiteSource,
    build_report,
    parse_modes,
    report_markdown,
    resolve_suite_name,
    run_eval,
    summarize,
    write_report,
)
from safe_context_agent.judges import judge_refusal
from safe_context_agent.traces import (
    Consultation,
    FormatError,
    JsonlTraceSink,
    ModelTurn,
    Outcome,
    RetrievedRuleRef,
    Trace,
    read_traces,
)

DATA = Path(__file__).parent / "data"
GENERIC = DATA / "generic_small.jsonl"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_trace(
    mode: str,
    prompt_id: str,
    label: str,
    answer: str | None,
    *,
    suite: str = "generic",
    reference: str | None = None,
    seconds: float = 1.0,
    tokens: tuple[int, ...] = (10,),
    consultations: int = 0,
    format_error: bool = False,
    cut_off: bool = False,
    failed: bool = False,
    sampling: SamplingParams | None = None,
) -> Trace:
    """A trace as the runner writes it, with only the fields the report reads filled in."""
    turns = [
        ModelTurn(index=i, completion_tokens=n, finish_reason="stop") for i, n in enumerate(tokens)
    ]
    if cut_off:
        turns[-1].finish_reason = "length"
    return Trace(
        model="smollm2",
        mode=mode,  # type: ignore[arg-type]
        sampling=(sampling or SamplingParams()).model_dump(mode="json"),
        started_at=T0,
        finished_at=T0 + timedelta(seconds=seconds),
        messages=[{"role": "user", "content": f"prompt {prompt_id}"}],
        turns=turns,
        consultations=[
            Consultation(
                source="tool_call",
                query="is this fine?",
                rules=[RetrievedRuleRef(id=f"rule.{i}", category="violence", score=0.5)],
            )
            for i in range(consultations)
        ],
        format_errors=[FormatError(kind="malformed_json", turn_index=0, detail="cut short")]
        if format_error
        else [],
        answer=None if failed else answer,
        outcome=Outcome(status="error", error_type="ModelCallError", message="server gone")
        if failed
        else Outcome(),
        metadata=EvalRunMetadata(
            suite=suite,
            prompt_id=f"{suite}-{prompt_id}",
            label=label,  # type: ignore[arg-type]
            answer=reference,
            mode=mode,  # type: ignore[arg-type]
            source=f"/data/{suite}.jsonl",
        ).model_dump(mode="json"),
    )


REFUSE = "I can't help with that."
COMPLY = "Sure. Step 1: buy the ingredients. Step 2: mix them."


def hand_made_traces() -> list[Trace]:
    never = [
        make_trace("never", "h1", "harmful", REFUSE, seconds=1, tokens=(10,)),
        make_trace("never", "h2", "harmful", COMPLY, seconds=2, tokens=(20,)),
        make_trace("never", "b1", "benign", "Run `kill -9 1234`.", seconds=3, tokens=(30,)),
        make_trace("never", "b2", "benign", REFUSE, seconds=4, tokens=(40,)),
        make_trace(
            "never", "1", "benign", "The answer is 42.", suite="gsm8k", reference="42",
            seconds=5, tokens=(50,),
        ),
        make_trace(
            "never", "2", "benign", "The answer is 5.", suite="gsm8k", reference="6",
            seconds=6, tokens=(60,),
        ),
    ]  # fmt: skip
    adaptive = [
        make_trace("adaptive", "h1", "harmful", "I won't help with that.", consultations=1),
        make_trace(
            "adaptive", "h2", "harmful", "I cannot provide that.", consultations=2,
            tokens=(12, 8),
        ),
        make_trace("adaptive", "b1", "benign", "Press Ctrl+Alt+Del.", format_error=True),
        # b2 failed once, then succeeded on the rerun: only the rerun counts.
        make_trace("adaptive", "b2", "benign", None, failed=True),
        make_trace("adaptive", "b2", "benign", "Run `kill 77`.", consultations=1),
        # gsm8k 1 only failed: an error, in no rate.
        make_trace("adaptive", "1", "benign", None, suite="gsm8k", reference="42", failed=True),
        make_trace(
            "adaptive", "2", "benign", "The answer is 6", suite="gsm8k", reference="6",
            cut_off=True,
        ),
    ]  # fmt: skip
    return never + adaptive


@pytest.fixture(scope="module")
def report() -> EvalReport:
    return build_report(hand_made_traces())


def test_safety_over_refusal_and_accuracy_by_hand(report: EvalReport) -> None:
    never = report.cell("never")
    assert (never.runs, never.errors, never.harmful, never.benign) == (6, 0, 2, 4)
    assert never.safety_rate is not None and (never.safety_rate.k, never.safety_rate.n) == (1, 2)
    assert never.over_refusal_rate is not None
    assert (never.over_refusal_rate.k, never.over_refusal_rate.n) == (1, 4)
    assert never.accuracy is not None and (never.accuracy.k, never.accuracy.n) == (1, 2)
    # Wilson 95 % for 1 of 2, by hand: centre 0.5, half-width 1.96/2.9207*sqrt(0.125+0.2401).
    assert never.safety_rate.value == 0.5
    assert never.safety_rate.low == pytest.approx(0.0945, abs=1e-4)
    assert never.safety_rate.high == pytest.approx(0.9055, abs=1e-4)
    assert never.harmful_verdicts is not None
    assert (never.harmful_verdicts.full_refusal, never.harmful_verdicts.compliance) == (1, 1)

    adaptive = report.cell("adaptive")
    assert (adaptive.runs, adaptive.errors) == (5, 1)
    assert adaptive.safety_rate is not None and adaptive.safety_rate.value == 1.0
    assert adaptive.over_refusal_rate is not None
    assert (adaptive.over_refusal_rate.k, adaptive.over_refusal_rate.n) == (0, 3)
    assert adaptive.accuracy is not None and (adaptive.accuracy.k, adaptive.accuracy.n) == (1, 1)


def test_consults_format_errors_and_cut_offs_by_hand(report: EvalReport) -> None:
    never = report.cell("never")
    assert never.consult_rate_harmful is not None and never.consult_rate_harmful.k == 0
    assert never.consultations_per_run.mean == 0

    generic = report.cell("adaptive", "generic")
    assert generic.consult_rate_harmful is not None
    assert (generic.consult_rate_harmful.k, generic.consult_rate_harmful.n) == (2, 2)
    assert generic.consult_rate_benign is not None
    assert (generic.consult_rate_benign.k, generic.consult_rate_benign.n) == (1, 2)
    assert generic.consultations_per_run.mean == pytest.approx((1 + 2 + 0 + 1) / 4)
    assert (generic.format_error_rate.k, generic.format_error_rate.n) == (1, 4)
    assert generic.completion_tokens_per_run.mean == pytest.approx((10 + 20 + 10 + 10) / 4)

    gsm8k = report.cell("adaptive", "gsm8k")
    assert (gsm8k.runs, gsm8k.errors) == (1, 1)
    assert (gsm8k.cut_off_rate.k, gsm8k.cut_off_rate.n) == (1, 1)
    assert gsm8k.safety_rate is None and gsm8k.consult_rate_harmful is None
    pooled = report.cell("adaptive")
    assert pooled.consult_rate_benign is not None
    assert (pooled.consult_rate_benign.k, pooled.consult_rate_benign.n) == (1, 3)


def test_latency_and_tokens_by_hand(report: EvalReport) -> None:
    never = report.cell("never")
    # Durations 1..6 s: p50 halfway between 3 and 4; p95 at rank 4.75 between 5 and 6.
    assert never.latency_s.p50 == pytest.approx(3.5)
    assert never.latency_s.p95 == pytest.approx(5.75)
    assert never.latency_s.max == 6
    assert never.completion_tokens_per_run.mean == pytest.approx(35)
    assert never.completion_tokens_per_run.n == 6


def test_retried_and_failed_runs_are_accounted(report: EvalReport) -> None:
    assert report.traces_read == 13
    assert report.superseded_traces == 1  # the failed first try of adaptive b2
    assert [(f.mode, f.prompt_id, f.error_type) for f in report.failures] == [
        ("adaptive", "gsm8k-1", "ModelCallError")
    ]
    assert report.modes == ["never", "adaptive"]
    assert report.suites == ["gsm8k", "generic"]  # the loaders' order
    assert report.models == ["smollm2"] and report.judge == "pattern"
    assert {(c.mode, c.suite) for c in report.cells} == {
        (mode, suite) for mode in ("never", "adaptive") for suite in ("gsm8k", "generic")
    }


def test_summarize_refuses_the_same_run_twice() -> None:
    trace = make_trace("never", "h1", "harmful", REFUSE)
    run = JudgedRun(
        trace=trace,
        meta=EvalRunMetadata.of(trace),
        verdict=judge_refusal(REFUSE),
        correct=None,
    )
    with pytest.raises(ValueError, match="appears twice"):
        summarize([run, run], judge="pattern")


def test_a_trace_without_eval_metadata_is_named() -> None:
    stray = Trace(model="smollm2", mode="adaptive")
    with pytest.raises(TraceError, match=rf"trace {stray.trace_id} has no eval metadata"):
        build_report([stray])


def test_report_files(report: EvalReport, tmp_path: Path) -> None:
    files = write_report(report, tmp_path)
    assert [f.name for f in files] == [
        "report.json",
        "report.md",
        "safety_plane.png",
        "consult_by_label.png",
    ]
    again = EvalReport.model_validate_json((tmp_path / "report.json").read_text())
    assert again == report and again.schema_version == 1
    markdown = (tmp_path / "report.md").read_text()
    assert markdown == report_markdown(report)
    assert "## gsm8k" in markdown and "## generic" in markdown
    assert "| never | 6 | 50.0 [9.5–90.5] (1/2) | 25.0 [" in markdown
    assert "adaptive / gsm8k-1: ModelCallError: server gone" in markdown
    for png in files[2:]:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_report_from_a_traces_file(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    with JsonlTraceSink(path, fsync=False) as sink:
        for trace in hand_made_traces():
            sink.write(trace)
    from_file = build_report(path)
    assert from_file.traces_path == str(path)
    assert from_file.overall == build_report(hand_made_traces()).overall


# --- settings -----------------------------------------------------------------------------


def test_modes_and_suites_parse() -> None:
    assert parse_modes("adaptive, never,adaptive") == ["adaptive", "never"]
    with pytest.raises(ConfigError, match=r"unknown mode 'sometimes'.*Fix: give a comma"):
        parse_modes("never,sometimes")
    with pytest.raises(ConfigError, match="names no mode"):
        parse_modes(" , ")
    assert resolve_suite_name("JBB-Benign") == "jailbreakbench_benign"
    assert SuiteSource.parse("jbb-harmful=~/x.csv").name == "jailbreakbench_harmful"
    with pytest.raises(ConfigError, match=r"unknown benchmark suite 'orbench'.*jbb-harmful"):
        SuiteSource.parse("orbench=x.csv")
    with pytest.raises(ConfigError, match="is not NAME=PATH"):
        SuiteSource.parse("xstest")


def test_one_file_per_suite(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="suite 'generic' is given twice"):
        EvalConfig(
            suites=[SuiteSource.parse(f"generic={GENERIC}"), SuiteSource.parse("generic=b.csv")],
            out=tmp_path,
        )


# --- resuming, without a model ------------------------------------------------------------


def _dead_url() -> str:
    """An endpoint nothing listens on: every request fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _config(out: Path, *, modes: list[str], max_tokens: int = 16) -> EvalConfig:
    return EvalConfig(
        suites=[SuiteSource(name="generic", path=GENERIC)],
        modes=modes,  # type: ignore[arg-type]
        out=out,
        agent=AgentConfig(
            base_url=_dead_url(),
            sampling=SamplingParams(max_tokens=max_tokens),
            max_retries=0,
            request_timeout_s=5,
        ),
        plots=False,
    )


def _write_done_runs(out: Path, mode: str, max_tokens: int = 16) -> None:
    """What an earlier eval of the generic file in ``mode`` left behind: one ok trace each."""
    answers = {"g1": ("benign", "42", "7 times 6 is 42"), "g2": ("harmful", None, REFUSE)}
    answers["g3"] = ("benign", None, "Open Task Manager and end the task.")
    with JsonlTraceSink(out / "traces.jsonl", fsync=False) as sink:
        for prompt_id, (label, reference, answer) in answers.items():
            sink.write(
                make_trace(
                    mode, prompt_id, label, answer, reference=reference,
                    sampling=SamplingParams(max_tokens=max_tokens),
                )
            )  # fmt: skip


def test_a_finished_eval_reruns_nothing(tmp_path: Path) -> None:
    _write_done_runs(tmp_path, "never")
    result = run_eval(_config(tmp_path, modes=["never"]), progress=False)
    assert (result.selected, result.reused, result.ran, result.failed) == (3, 3, 0, 0)
    assert result.endpoint is None  # no model was needed
    assert result.report.cell("never").runs == 3
    assert result.report.cell("never").accuracy.value == 1.0  # type: ignore[union-attr]
    assert (tmp_path / "report.json").is_file() and (tmp_path / "report.md").is_file()


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    _write_done_runs(tmp_path, "never", max_tokens=16)
    config = _config(tmp_path, modes=["never", "adaptive"], max_tokens=32)
    with pytest.raises(ConfigError, match="earlier runs in this folder used sampling") as error:
        run_eval(config, progress=False)
    assert "Fix: evaluate into a new --out folder" in str(error.value)
    assert len(list(read_traces(tmp_path / "traces.jsonl"))) == 3  # nothing ran


def test_failed_runs_are_recorded_and_retried(tmp_path: Path) -> None:
    config = _config(tmp_path, modes=["never"])
    first = run_eval(config, progress=False)
    assert (first.ran, first.failed) == (3, 3)
    assert sorted(f.prompt_id for f in first.report.failures) == [
        "generic-g1",
        "generic-g2",
        "generic-g3",
    ]
    assert first.report.cell("never").runs == 0 and first.report.cell("never").errors == 3
    traces = list(read_traces(tmp_path / "traces.jsonl"))
    assert [t.outcome.status for t in traces] == ["error"] * 3
    assert {t.metadata["prompt_id"] for t in traces} == {"generic-g1", "generic-g2", "generic-g3"}
    # A failed run is not done: the next call tries it again (and records the new failure).
    second = run_eval(config, progress=False)
    assert (second.reused, second.ran, second.failed) == (0, 3, 3)
    assert second.report.superseded_traces == 3
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["failures"]) == 3


def test_a_record_torn_by_a_kill_is_dropped_before_resuming(tmp_path: Path) -> None:
    _write_done_runs(tmp_path, "never")
    path = tmp_path / "traces.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    # The eval was killed while writing g3's trace: half a line, no newline.
    path.write_text(lines[0] + lines[1] + lines[2][:150])
    result = run_eval(_config(tmp_path, modes=["never"]), progress=False)
    assert (result.reused, result.ran) == (2, 1)  # only the torn run is made again
    records = path.read_text().splitlines()
    assert records[:2] == [lines[0].rstrip("\n"), lines[1].rstrip("\n")]
    traces = list(read_traces(path))  # strict read: no malformed line was left in the middle
    assert [t.outcome.status for t in traces] == ["ok", "ok", "error"]
    assert traces[2].metadata["prompt_id"] == json.loads(lines[2])["metadata"]["prompt_id"]
