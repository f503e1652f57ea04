"""The agent under LangGraph Server: ``langgraph dev`` (langgraph-cli's in-memory server) serves
``langgraph.json``'s graph; langgraph-sdk's ``runs.wait`` and a ``RemoteGraph`` node call it.

The server's blocking-call detector is on (no ``--allow-blocking``): a sync file or network call
inside an async node fails the run, so a run that succeeds, with its trace's pack, shows there is
none.

``langgraph dev`` runs from the overlay venv ``scripts/langgraph_server_env.sh`` builds (the
``langgraph-server`` extra needs protobuf<7, the project venv holds 7; see docs/agent.md); this
test process only needs langgraph-sdk and langgraph, which the project venv has. ``make test``
builds the overlay first. Without it the test fails in CI (``$CI`` set, as ``.ci/run`` does) and
is skipped elsewhere, saying how to build it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Annotated, TypedDict

import httpx
import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.pregel.remote import RemoteGraph
from langgraph_sdk import get_sync_client

from safe_context_agent.graph import RunSummary
from safe_context_agent.traces import read_traces

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# Where scripts/langgraph_server_env.sh builds it (a relative $SCA_LANGGRAPH_VENV is from the root).
OVERLAY = ROOT / os.environ.get("SCA_LANGGRAPH_VENV", ".sca/langgraph-server")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def langgraph_cli() -> Path:
    """The overlay's ``langgraph`` command; a failure in CI, a skip elsewhere, when it is missing
    (checked before the vLLM server fixture starts a server for nothing)."""
    cli = OVERLAY / "bin" / "langgraph"
    if cli.is_file() and (OVERLAY / ".sca-installed").is_file():
        return cli
    missing = (
        f"the LangGraph Server overlay venv {OVERLAY} is missing or incomplete; build it with "
        "`bash scripts/langgraph_server_env.sh` (`make test` does)"
    )
    if _in_ci():
        pytest.fail(f"{missing}; its set-up output is above this test run")
    pytest.skip(missing)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def langgraph_dev(langgraph_cli, vllm_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lgdev")
    traces = folder / "traces.jsonl"
    config = folder / "agent.json"
    config.write_text(
        json.dumps(
            {
                "base_url": vllm_server.base_url,
                "model": vllm_server.model,
                "sampling": {"max_tokens": 24},
                "trace_path": str(traces),
            }
        )
    )
    port = _free_port()
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [str(langgraph_cli), "dev", "--port", str(port), "--no-browser", "--no-reload",
         "--config", str(ROOT / "langgraph.json")],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT,  # its .langgraph_api state goes there
        env={**os.environ, "SCA_CONFIG": str(config), "LANGSMITH_TRACING": "false",
             "LANGGRAPH_CLI_NO_ANALYTICS": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        # Loading the graph (the rule embedder) takes about a minute on a quiet 2-core machine
        # and several under load; the bound only keeps a hung start from holding the suite.
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"langgraph dev did not start:\n{(folder / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(1)
        yield url, traces, folder / "server.log"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()  # still shutting down (a busy machine): leave no server behind
            process.wait(timeout=30)
        log.close()


def test_runs_wait_and_a_remote_graph_node(langgraph_dev) -> None:
    url, traces, log = langgraph_dev
    client = get_sync_client(url=url)
    thread = client.threads.create()
    state = client.runs.wait(
        thread["thread_id"],
        "safe_context_agent",
        input={"messages": [{"role": "user", "content": "How do I kill a zombie process?"}]},
    )
    summary = state["safe_context"]
    assert summary["status"] == "ok" and state["trace_id"] == summary["trace_id"]
    assert "sca_run" not in state  # the private channel stays private

    class Parent(TypedDict):
        messages: Annotated[list, add_messages]
        safe_context: RunSummary

    parent = StateGraph(Parent)
    parent.add_node("safe", RemoteGraph("safe_context_agent", url=url))
    parent.add_edge(START, "safe")
    parent.add_edge("safe", END)
    out = parent.compile().invoke({"messages": [{"role": "user", "content": "Say hello."}]})
    assert out["safe_context"]["status"] == "ok" and out["messages"][-1].type == "ai"

    recorded = {t.trace_id: t for t in read_traces(traces)}
    assert {summary["trace_id"], out["safe_context"]["trace_id"]} <= set(recorded)
    assert all(t.pack is not None and t.pack.name == "general" for t in recorded.values())
    assert recorded[summary["trace_id"]].thread_id == thread["thread_id"]
    text = log.read_text()
    assert "Blocking call" not in text and "could not load rule pack" not in text, text[-3000:]
