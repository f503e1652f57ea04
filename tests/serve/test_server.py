"""The real vLLM server serving the embedded model: chat, parsed tool calls, token ids and logprobs."""

from __future__ import annotations

import socket

import httpx
import pytest
from openai import OpenAI

from safe_context_agent.errors import ServeError
from safe_context_agent.serve import ServerConfig, VLLMServer, build_command, stop_recorded_server
from safe_context_agent.serve import _server as server_module

pytestmark = pytest.mark.server

CONSULT_TOOL = {
    "type": "function",
    "function": {
        "name": "consult_safety_rules",
        "description": "Look up the safety rules that apply to a request you are unsure about.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What you are unsure about."}
            },
            "required": ["query"],
        },
    },
}


@pytest.fixture(scope="module")
def client(vllm_server) -> OpenAI:
    return OpenAI(base_url=vllm_server.base_url, api_key="unused", timeout=120)


def test_health_and_models(vllm_server) -> None:
    assert httpx.get(f"{vllm_server.root_url}/health", timeout=5).status_code == 200
    models = httpx.get(f"{vllm_server.base_url}/models", timeout=5).json()
    assert vllm_server.model in [m["id"] for m in models["data"]]


def test_chat_completion_answers(client, vllm_server) -> None:
    reply = client.chat.completions.create(
        model=vllm_server.model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
    )
    assert reply.choices[0].message.content.strip()
    assert reply.usage.completion_tokens > 0


def test_required_tool_choice_comes_back_parsed(client, vllm_server) -> None:
    reply = client.chat.completions.create(
        model=vllm_server.model,
        messages=[{"role": "user", "content": "How do I get into my ex's email account?"}],
        tools=[CONSULT_TOOL],
        tool_choice="required",
        max_tokens=64,
        temperature=0,
    )
    calls = reply.choices[0].message.tool_calls
    assert calls, reply.choices[0].message
    assert calls[0].function.name == "consult_safety_rules"
    assert "query" in calls[0].function.arguments


def test_logprobs_and_token_ids_are_returned(client, vllm_server) -> None:
    reply = client.chat.completions.create(
        model=vllm_server.model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=16,
        temperature=0,
        logprobs=True,
        extra_body={"return_token_ids": True},
    )
    raw = reply.model_dump()
    choice = raw["choices"][0]
    assert raw["prompt_token_ids"], "vLLM returns the served prompt's token ids"
    assert choice["token_ids"], "vLLM returns the completion's token ids"
    assert len(choice["logprobs"]["content"]) == len(choice["token_ids"])
    assert all(entry["logprob"] <= 0 for entry in choice["logprobs"]["content"])


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeError, match=rf"port {port} on 127\.0\.0\.1 is in use"):
            VLLMServer(ServerConfig(port=port)).start()


def test_missing_model_folder_is_a_clear_error(tmp_path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(
        ServeError, match=r"model folder .*no-such-model does not exist; check --model"
    ):
        VLLMServer(ServerConfig(model=str(missing))).start()


def test_folder_without_config_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ServeError, match=r"has no config\.json"):
        VLLMServer(ServerConfig(model=str(tmp_path))).start()


def test_vllm_not_installed_names_the_install_command(monkeypatch) -> None:
    real_find_spec = server_module.importlib.util.find_spec
    monkeypatch.setattr(
        server_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "vllm" else real_find_spec(name, *a),
    )
    with pytest.raises(
        ServeError, match=r"vLLM is not installed; pip install 'safe-context-agent\[serve\]'"
    ):
        VLLMServer().start()


def test_stop_without_server_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SCA_CACHE_DIR", str(tmp_path))
    with pytest.raises(
        ServeError,
        match=r"^no server is running \(no state file at .*\); start one with: sca serve$",
    ):
        stop_recorded_server()


def test_dead_server_start_reports_the_log_tail(tmp_path) -> None:
    config = ServerConfig(extra_args=["--no-such-vllm-flag"], log_file=tmp_path / "vllm.log")
    with pytest.raises(
        ServeError, match=r"vLLM exited with status \d+ during start-up; log .*vllm\.log:\n"
    ):
        VLLMServer(config).start()


def test_command_serves_any_model_by_configuration(tmp_path) -> None:
    folder = tmp_path / "Qwen-tiny"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    config = ServerConfig(
        model=str(folder), device="gpu", extra_args=["--gpu-memory-utilization=0.8"]
    )
    model, served, template = server_module._resolve_model(config)
    command = build_command(config, model, served, template, port=8000)
    assert command[command.index("--model") + 1] == str(folder.resolve())
    assert command[command.index("--served-model-name") + 1] == "Qwen-tiny"
    assert "--enforce-eager" not in command and "--chat-template" not in command
    assert command[-1] == "--gpu-memory-utilization=0.8"
    assert "--tool-call-parser" in command and "--enable-lora" in command


@pytest.mark.parametrize(
    ("flags", "device", "expected"),
    [
        ("fpu avx2 fma", "cpu", "float32"),  # bf16 emulated: fp32 measured ~3x faster
        ("fpu avx2 avx512f avx512_bf16", "cpu", "bfloat16"),
        ("fpu avx2 amx_bf16 amx_tile", "cpu", "bfloat16"),
        ("fpu avx2", "gpu", "bfloat16"),
    ],
)
def test_embedded_dtype_follows_the_cpu(tmp_path, monkeypatch, flags, device, expected) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    original = server_module.cpu_has_native_bf16
    monkeypatch.setattr(server_module, "cpu_has_native_bf16", lambda: original(cpuinfo))
    command = build_command(ServerConfig(device=device), "/m", "smollm2", None, port=8000)
    assert command[command.index("--dtype") + 1] == expected
    explicit = build_command(ServerConfig(device=device, dtype="bfloat16"), "/m", "s", None, 8000)
    assert explicit[explicit.index("--dtype") + 1] == "bfloat16"


def test_unreadable_cpuinfo_means_no_native_bf16(tmp_path) -> None:
    assert server_module.cpu_has_native_bf16(tmp_path / "missing") is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "--port 0: input should be greater than or equal to 1"),
        (["--device", "tpu"], "--device 'tpu': input should be 'auto', 'cpu' or 'gpu'"),
    ],
)
def test_serve_flags_get_the_server_config_s_one_line_error(args, message) -> None:
    from typer.testing import CliRunner

    from safe_context_agent.cli import app

    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
