"""LangChain messages ⇄ the OpenAI wire form the endpoint takes, and a model turn as an ``AIMessage``.

One place for both directions, shared by the graph and :class:`ChatVLLM`: an ``AIMessage`` built
here carries every call of the turn with an id (server-parsed, text-parsed, and unusable ones as
``invalid_tool_calls``), so the tool messages that answer them make a history any chat API takes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call

from safe_context_agent.client._chat import ModelReply, new_call_id
from safe_context_agent.client._parse import strip_tool_markup

__all__ = ["message_from_reply", "reply_metadata", "to_wire"]

_NAME = re.compile(r'"name"\s*:\s*"([^"]+)"')


def _args_dict(arguments: str) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        return {"raw": arguments}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def reply_metadata(reply: ModelReply, model: str | None) -> dict[str, Any]:
    """What vLLM sampled, for ``AIMessage.response_metadata``: the ids and logprobs a trace needs
    to replay the turn token-exactly (``ChatOpenAI`` keeps the logprobs but drops the ids)."""
    return {
        "model_name": model,
        "finish_reason": reply.finish_reason,
        "prompt_token_ids": reply.prompt_token_ids,
        "completion_token_ids": reply.completion_token_ids,
        "logprobs": reply.logprobs,
        "token_usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
        },
        "latency_s": round(reply.latency_s, 6),
        "parsed_by": sorted({call.parsed_by for call in reply.tool_calls}) or None,
    }


def message_from_reply(
    reply: ModelReply, *, model: str | None = None, message_id: str | None = None
) -> AIMessage:
    """The turn as an ``AIMessage``: text without tool markup, every call with an id.

    A ``<tool_call>`` block that could not be parsed becomes an ``invalid_tool_call`` (with the
    name when it can be read), so the corrective tool message answering it has a call to answer.
    """
    calls = [
        tool_call(name=call.name, args=_args_dict(call.arguments), id=call.id)
        for call in reply.tool_calls
    ]
    invalid = []
    for raw, error in reply.text_call_errors:
        name = _NAME.search(raw)
        invalid.append(
            invalid_tool_call(
                name=name.group(1) if name else None, args=raw, id=new_call_id(), error=error
            )
        )
    content = strip_tool_markup(reply.content) if (calls or invalid) else (reply.content or "")
    usage = None
    if reply.prompt_tokens is not None and reply.completion_tokens is not None:
        usage = {
            "input_tokens": reply.prompt_tokens,
            "output_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
    return AIMessage(
        content=content,
        tool_calls=calls,
        invalid_tool_calls=invalid,
        response_metadata=reply_metadata(reply, model),
        usage_metadata=usage,
        id=message_id,
    )


def _wire_call(call_id: str | None, name: str | None, arguments: str) -> dict[str, Any]:
    return {
        "id": call_id or new_call_id(),
        "type": "function",
        # vLLM parses `arguments` as JSON and renders an unparseable string as {} (it keeps the
        # conversation going rather than failing every later turn); the name must be a string.
        "function": {"name": name or "unknown", "arguments": arguments},
    }


def to_wire(message: BaseMessage) -> dict[str, Any] | None:
    """A LangChain message in OpenAI chat form; system messages give None (merged by the caller).

    An assistant message's tool calls, valid and invalid, are all sent, so each tool message
    that follows answers a call of it; their markup is taken out of the text, since the chat
    template renders the calls from ``tool_calls``.
    """
    if isinstance(message, AIMessage):
        wire_calls = [
            _wire_call(c["id"], c["name"], json.dumps(c["args"], ensure_ascii=False))
            for c in message.tool_calls
        ] + [_wire_call(c["id"], c["name"], c["args"] or "") for c in message.invalid_tool_calls]
        text = message.text
        wire: dict[str, Any] = {
            "role": "assistant",
            "content": strip_tool_markup(text) if wire_calls else text,
        }
        if wire_calls:
            wire["tool_calls"] = wire_calls
        return wire
    if isinstance(message, ToolMessage):
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
    if isinstance(message, HumanMessage):
        return {"role": "user", "content": message.text}
    if isinstance(message, SystemMessage):
        return None
    return {"role": "user", "content": message.text}  # ChatMessage and friends: as user text


def history_to_wire(messages: Sequence[BaseMessage], system: str | None) -> list[dict[str, Any]]:
    """``messages`` in OpenAI form with one system message first: ``system`` and the text of the
    history's own system messages, joined."""
    texts = [system] if system else []
    texts += [m.text for m in messages if isinstance(m, SystemMessage)]
    wire = [{"role": "system", "content": "\n\n".join(texts)}] if texts else []
    return wire + [w for w in (to_wire(m) for m in messages) if w is not None]
