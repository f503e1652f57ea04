"""Credentials never reach an artefact, and every CLI flag goes through AgentConfig (issue 13).

A tiny stand-in for the OpenAI-compatible endpoint (stdlib HTTP server, canned replies) lets the
real client, CLI and sinks run without a model.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from safe_context_agent.cli import app

PASSWORD = "SECRETPW-4711"
API_KEY = "SECRETKEY-0815"

COMPLETION = {
    "id": "cmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "smollm2",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


class _Endpoint(BaseHTTPRequestHandler):
    seen_auth: ClassVar[list[str]] = []
    status: ClassVar[int] = 200

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen_auth.append(self.headers.get("Authorization") or "")
        if type(self).status == 200:
            body = json.dumps(COMPLETION).encode()
        else:  # a proxy that echoes the request's credentials in its error page
            body = json.dumps(
                {"error": {"message": f"denied for Authorization: {self.headers['Authorization']}"}}
            ).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    _Endpoint.seen_auth = []
    _Endpoint.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://admin:{PASSWORD}@127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _assert_clean(*texts: str, folder: Path | None = None) -> None:
    everything = list(texts)
    if folder is not None:
        everything += [
            p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()
        ]
    for text in everything:
        assert PASSWORD not in text and API_KEY not in text
        assert "YWRtaW46" not in text  # base64 of "admin:", the Basic header's token


@pytest.mark.parametrize("status", [200, 401])
def test_a_planted_secret_reaches_no_artefact_of_a_run(
    endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    _Endpoint.status = status
    monkeypatch.setenv("SCA_API_KEY", API_KEY)
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "artefacts"
    out.mkdir()
    runner = CliRunner()
    results = [
        runner.invoke(
            app,
            [
                "run",
                "What is the capital of France?",
                "--base-url",
                endpoint,
                "--mode",
                "never",
                "--trace",
                str(out / f"t{suffix}"),
                "--json",
                "-v",
            ],
        )
        for suffix in (".jsonl", ".sqlite")
    ]
    for result in results:
        assert result.exit_code == (0 if status == 200 else 2), result.output
    # The URL's credentials were used, as Basic auth (what httpx does with user-info)...
    assert _Endpoint.seen_auth and all(a.startswith("Basic ") for a in _Endpoint.seen_auth)
    # ...and appear nowhere: stdout, stderr, the log records, the trace files.
    logs = "\n".join(r.getMessage() for r in caplog.records)
    _assert_clean(*(r.output for r in results), logs, folder=out)
    traces = (out / "t.jsonl").read_text()
    assert "http://***@127.0.0.1" in traces or "http://127.0.0.1" in traces
    if status != 200:
        assert "rejected the request (HTTP 401)" in results[0].output


def test_a_dead_endpoint_with_credentials_is_named_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCA_API_KEY", API_KEY)
    result = CliRunner().invoke(
        app,
        [
            "run",
            "hi",
            "--base-url",
            f"http://admin:{PASSWORD}@127.0.0.1:9/v1",
            "--mode",
            "never",
            "--trace",
            str(tmp_path / "t.jsonl"),
        ],
    )
    assert result.exit_code == 2
    assert "cannot reach the model endpoint http://127.0.0.1:9/v1" in result.output
    _assert_clean(result.output, folder=tmp_path)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--k", "0", "--mode", "always"], "--k 0: input should be greater than or equal to 1"),
        (["--k", "21"], "--k 21: input should be less than or equal to 20"),
        (["--max-tokens", "0"], "--max-tokens 0: input should be greater than or equal to 1"),
        (["--temperature", "-1"], "--temperature -1.0: input should be greater than or equal to 0"),
        (
            ["--mode", "sometimes"],
            "--mode 'sometimes': input should be 'adaptive', 'never' or 'always'",
        ),
    ],
)
def test_run_flags_are_validated_by_agent_config(flags: list[str], expected: str) -> None:
    # An unreachable endpoint: validation must fail before any model call.
    result = CliRunner().invoke(app, ["run", "hi", "--base-url", "http://127.0.0.1:9/v1", *flags])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid agent settings: ")
    assert expected in lines[0]


def test_config_file_values_are_checked_the_same_way(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("k: 0\nsampling:\n  max_tokens: 0\n")
    result = CliRunner().invoke(
        app, ["run", "hi", "--base-url", "http://127.0.0.1:9/v1", "--config", str(config)]
    )
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "agent.yaml: field 'sampling.max_tokens' 0: input should be greater" in line
    assert "field 'k' 0: input should be greater than or equal to 1" in line


def test_flags_left_out_keep_the_config_files_values(tmp_path: Path) -> None:
    from safe_context_agent.cli._run import _config

    config = tmp_path / "agent.yaml"
    config.write_text("k: 7\nmode: always\nsampling:\n  max_tokens: 9\n")
    kept = _config("http://h/v1", "m", None, None, None, None, None, None, config)
    assert (kept.k, kept.mode, kept.sampling.max_tokens) == (7, "always", 9)
    given = _config("http://h/v1", "m", None, "never", 2, None, 0.5, None, config)
    assert (given.k, given.mode, given.sampling.temperature) == (2, "never", 0.5)


def test_python_updates_are_validated_like_flags() -> None:
    from safe_context_agent import AgentConfig
    from safe_context_agent.errors import ConfigError

    with pytest.raises(ConfigError, match=r"field 'sampling\.temperature' -1"):
        AgentConfig().updated({"sampling": {"temperature": -1}})
    assert AgentConfig().updated({"k": 5, "sampling": {"seed": 3}}).sampling.seed == 3


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--n", "0"], "n (--n) 0: input should be greater than or equal to 1"),
        (["--concurrency", "0"], "concurrency (--concurrency) 0: input should be greater"),
    ],
)
def test_collect_flags_are_validated(tmp_path: Path, flags: list[str], expected: str) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n")
    result = CliRunner().invoke(
        app,
        [
            "collect",
            str(prompts),
            "--out",
            str(tmp_path / "t.jsonl"),
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--pack",
            str(tmp_path / "nopack"),
            *flags,
        ],
    )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and expected in result.output


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_a_non_utf8_prompts_file_is_one_line(tmp_path: Path, suffix: str) -> None:
    prompts = tmp_path / f"prompts{suffix}"
    header = {".txt": b"", ".jsonl": b"", ".csv": b"prompt\n"}[suffix]
    line = b'{"prompt": "caf\xe9"}\n' if suffix == ".jsonl" else b"caf\xe9\n"
    prompts.write_bytes(header + b"fine\n" * (suffix != ".jsonl") + line)
    result = CliRunner().invoke(
        app,
        [
            "collect",
            str(prompts),
            "--out",
            str(tmp_path / "t.jsonl"),
            "--base-url",
            "http://127.0.0.1:9/v1",
        ],
    )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert (
        "not UTF-8 text (byte 0xe9" in result.output and "save the file as UTF-8" in result.output
    )
