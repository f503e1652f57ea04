"""The LangGraph state machine in which the model decides whether to consult the safety rules."""

from safe_context_agent.graph._build import STREAM_TOKENS_KEY, ModelClient, build_graph
from safe_context_agent.graph._resources import AgentResources
from safe_context_agent.graph._state import AgentInput, AgentState, RunInput, RunRecord, RunSummary
from safe_context_agent.graph._tool import (
    CONSULT_TOOL,
    CONSULT_TOOL_NAME,
    ConsultArguments,
    Retriever,
    format_rules,
    read_consult_arguments,
)

__all__ = [
    "CONSULT_TOOL",
    "CONSULT_TOOL_NAME",
    "STREAM_TOKENS_KEY",
    "AgentInput",
    "AgentResources",
    "AgentState",
    "ConsultArguments",
    "ModelClient",
    "Retriever",
    "RunInput",
    "RunRecord",
    "RunSummary",
    "build_graph",
    "format_rules",
    "read_consult_arguments",
]
