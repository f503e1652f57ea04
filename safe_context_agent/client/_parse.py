"""Tool calls written as text: the fallback when the server's parser did not produce ``tool_calls``.

A small model often emits ``<tool_call>{...}</tool_call>`` that vLLM's hermes parser rejects
(truncated at ``max_tokens``, trailing text, single quotes). This parser finds such blocks in the
content so the agent can still act on them, or answer them with a corrective message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = ["TextToolCall", "find_text_tool_calls", "strip_tool_markup"]

_CLOSE = "</tool_call>"
# An unterminated block (the completion hit max_tokens) runs to the end of the text; there its
# closing tag may be cut anywhere (`…"}}</tool`), which `_without_cut_close` removes.
_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_MARKUP = re.compile(r"</?tool_(?:call|response)>")
_CUT_CLOSE = re.compile(r"\s*<(?:/(?:t(?:o(?:o(?:l(?:_(?:c(?:a(?:l(?:l)?)?)?)?)?)?)?)?)?)?$")


@dataclass(frozen=True)
class TextToolCall:
    """One ``<tool_call>`` block: the raw JSON text, and its parsed name/arguments when valid."""

    raw: str
    name: str | None
    arguments: str | None
    """Arguments re-serialised as a JSON string (the OpenAI wire form), None when unparseable."""
    error: str | None


def _parse_block(raw: str) -> TextToolCall:
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as exc:
        return TextToolCall(
            raw, None, None, f"malformed JSON in <tool_call>: {exc.msg} at char {exc.pos}"
        )
    if not isinstance(payload, dict):
        return TextToolCall(
            raw, None, None, "a <tool_call> must hold a JSON object with 'name' and 'arguments'"
        )
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        return TextToolCall(raw, None, None, "the <tool_call> object has no 'name'")
    arguments = payload.get("arguments", payload.get("parameters", {}))
    if isinstance(arguments, str):
        # Some models double-encode the arguments; accept a string that itself is a JSON object.
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            arguments = {"query": arguments}
    return TextToolCall(raw, name, json.dumps(arguments, ensure_ascii=False), None)


def _without_cut_close(raw: str) -> str:
    """``raw`` less a closing tag that ``max_tokens`` cut short: complete JSON followed by
    ``</tool`` is a complete call, not malformed JSON."""
    return _CUT_CLOSE.sub("", raw)


def find_text_tool_calls(text: str | None) -> list[TextToolCall]:
    """Every ``<tool_call>`` block in ``text``, in order (empty when there is none)."""
    if not text or "<tool_call>" not in text:
        return []
    return [_parse_block(_without_cut_close(match.group(1))) for match in _BLOCK.finditer(text)]


def strip_tool_markup(text: str | None) -> str:
    """The text a user should see: tool-call blocks and stray tool tags removed."""
    if not text:
        return ""
    return _MARKUP.sub("", _BLOCK.sub("", text)).strip()
