"""Serving: the embedded default model and the vLLM process that serves any model."""

from safe_context_agent.serve._embedded import (
    EMBEDDED_MODEL_NAME,
    EMBEDDED_SERVED_NAME,
    ModelManifest,
    describe_manifest,
    embedded_chat_template,
    embedded_chat_template_path,
    embedded_model_dir,
    find_embedded_gguf,
    prepare_embedded_model,
    verify_model_folder,
)
from safe_context_agent.serve._endpoint import (
    BASE_URL_ENV,
    Endpoint,
    find_endpoint,
    model_endpoint,
)
from safe_context_agent.serve._render import END_OF_TURN, ChatRenderer
from safe_context_agent.serve._server import (
    ServerConfig,
    ServerState,
    VLLMServer,
    build_command,
    find_running_server,
    read_state,
    state_as_json,
    stop_recorded_server,
)
from safe_context_agent.serve._shipped import (
    DEFAULT_MODEL,
    SHIPPED_ADAPTER_NAME,
    TRAINED_TEMPLATE_KWARGS,
    shipped_adapter_dir,
    template_kwargs_for,
)

__all__ = [
    "BASE_URL_ENV",
    "DEFAULT_MODEL",
    "EMBEDDED_MODEL_NAME",
    "EMBEDDED_SERVED_NAME",
    "END_OF_TURN",
    "SHIPPED_ADAPTER_NAME",
    "TRAINED_TEMPLATE_KWARGS",
    "ChatRenderer",
    "Endpoint",
    "ModelManifest",
    "ServerConfig",
    "ServerState",
    "VLLMServer",
    "build_command",
    "describe_manifest",
    "embedded_chat_template",
    "embedded_chat_template_path",
    "embedded_model_dir",
    "find_embedded_gguf",
    "find_endpoint",
    "find_running_server",
    "model_endpoint",
    "prepare_embedded_model",
    "read_state",
    "shipped_adapter_dir",
    "state_as_json",
    "stop_recorded_server",
    "template_kwargs_for",
    "verify_model_folder",
]
