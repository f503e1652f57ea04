"""The model endpoint: OpenAI-compatible calls, tool-call parsing with a text fallback, token ids."""

from safe_context_agent.client._chat import (
    ChatClient,
    ModelReply,
    TokenCallback,
    reply_from_response,
)
from safe_context_agent.client._chat_model import ChatVLLM
from safe_context_agent.client._parse import TextToolCall, find_text_tool_calls, strip_tool_markup

__all__ = [
    "ChatClient",
    "ChatVLLM",
    "ModelReply",
    "TextToolCall",
    "TokenCallback",
    "find_text_tool_calls",
    "reply_from_response",
    "strip_tool_markup",
]
