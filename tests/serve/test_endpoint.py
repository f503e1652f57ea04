"""Every entry point resolves its model endpoint the same way: given, environment, running, start."""

from __future__ import annotations

import pytest

from safe_context_agent.serve import (
    BASE_URL_ENV,
    DEFAULT_MODEL,
    _endpoint,
    find_endpoint,
    model_endpoint,
)


class _Running:
    base_url = "http://127.0.0.1:9001/v1"
    served_model_name = "served-name"
    adapters: tuple[str, ...] = ()


@pytest.fixture
def running(monkeypatch) -> None:
    monkeypatch.setattr(_endpoint, "find_running_server", lambda: _Running())


def test_given_url_wins_over_everything(monkeypatch, running) -> None:
    monkeypatch.setenv(BASE_URL_ENV, "http://env:1/v1")
    endpoint = find_endpoint("http://given:2/v1/")
    assert (endpoint.base_url, endpoint.served_model, endpoint.source) == (
        "http://given:2/v1", None, "given"
    )  # fmt: skip
    assert endpoint.model() == DEFAULT_MODEL and endpoint.model("mine") == "mine"


def test_environment_comes_before_the_running_server(monkeypatch, running) -> None:
    monkeypatch.setenv(BASE_URL_ENV, "http://env:1/v1")
    assert find_endpoint().source == "environment"


def test_running_server_supplies_its_served_model(monkeypatch, running) -> None:
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    endpoint = find_endpoint()
    assert endpoint.source == "running" and endpoint.model() == "served-name"
    assert endpoint.model("override") == "override"


def test_the_default_model_is_asked_for_when_the_server_loaded_it(monkeypatch) -> None:
    monkeypatch.delenv(BASE_URL_ENV, raising=False)

    class _WithAdapter(_Running):
        adapters = ("smollm2-ascl",)

    monkeypatch.setattr(_endpoint, "find_running_server", lambda: _WithAdapter())
    endpoint = find_endpoint()
    assert endpoint.adapters == ("smollm2-ascl",)
    assert endpoint.model(default="smollm2-ascl") == "smollm2-ascl"
    assert endpoint.model(default="not-served") == "served-name"


def test_nothing_found_is_none_and_model_endpoint_starts_the_embedded_server(monkeypatch) -> None:
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    monkeypatch.setattr(_endpoint, "find_running_server", lambda: None)
    assert find_endpoint() is None
    started = []

    class _Server:
        base_url, model = "http://127.0.0.1:9002/v1", "smollm2"
        state = type("State", (), {"adapters": []})()

        def __init__(self, config) -> None:
            started.append(config)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            started.append("stopped")

    monkeypatch.setattr(_endpoint, "VLLMServer", _Server)
    with model_endpoint() as endpoint:
        assert endpoint.source == "started" and endpoint.base_url == _Server.base_url
    assert started == [None, "stopped"]
