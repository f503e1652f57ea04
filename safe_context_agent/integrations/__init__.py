"""The LangChain faces of the agent: the consult tool, ``create_agent`` middleware, a vLLM chat model.

They reuse the engine underneath (rules, client, traces) and never re-implement it. The
middleware needs the ``langchain`` extra (``pip install 'safe-context-agent[langchain]'``) and is
imported on first use, so the tool and the chat model work without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from safe_context_agent.client import ChatVLLM
from safe_context_agent.integrations._server import make_server_graph
from safe_context_agent.integrations._tool import ConsultArtifact, ConsultInput, make_consult_tool

if TYPE_CHECKING:
    from safe_context_agent.integrations._middleware import SafeContextMiddleware

__all__ = [
    "ChatVLLM",
    "ConsultArtifact",
    "ConsultInput",
    "SafeContextMiddleware",
    "make_consult_tool",
    "make_server_graph",
]


def __getattr__(name: str) -> Any:
    if name == "SafeContextMiddleware":
        try:
            from safe_context_agent.integrations._middleware import SafeContextMiddleware
        except ImportError as exc:
            raise ImportError(
                f"SafeContextMiddleware needs langchain 1.x ({exc.name} is missing); install it "
                "with: pip install 'safe-context-agent[langchain]'"
            ) from exc
        return SafeContextMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
