"""The part of a model response that a user would read: what every judge looks at.

Small models echo the scaffolding around them: a raw ``<tool_call>`` block, the
``<tool_response>`` they were given (rule texts full of "disallowed" and "refuse"), a
``<think>`` block, or the user's question. None of that is the model's answer, and rule
texts in particular would make a pattern judge see refusals that are not there.
"""

from __future__ import annotations

import re

__all__ = ["visible_answer"]

_SCAFFOLD_TAGS = ("tool_call", "tool_response", "think")

# A closed block, or an opening tag the model never closed (generation stopped, or it
# moved straight on). An unclosed tool call ends with its JSON object; any other unclosed
# block runs to the next blank line or the end.
_CLOSED_BLOCK = re.compile(
    r"<(" + "|".join(_SCAFFOLD_TAGS) + r")>.*?</\1>", flags=re.DOTALL | re.IGNORECASE
)
_UNCLOSED_CALL = re.compile(
    r"<tool_call>\s*\{.*?\}[ \t]*(?=\n|\Z)", flags=re.DOTALL | re.IGNORECASE
)
_UNCLOSED_BLOCK = re.compile(
    r"<(?:" + "|".join(_SCAFFOLD_TAGS) + r")>.*?(?:\n\s*\n|\Z)", flags=re.DOTALL | re.IGNORECASE
)
_STRAY_TAG = re.compile(r"</?(?:" + "|".join(_SCAFFOLD_TAGS) + r")>", flags=re.IGNORECASE)


def visible_answer(response: str, prompt: str | None = None) -> str:
    """``response`` without tool-call, tool-response and think blocks, or a leading echo of ``prompt``.

    Returns ``""`` when nothing else is left (the judges treat that as a refusal).
    """
    text = _CLOSED_BLOCK.sub("\n\n", response)
    text = _UNCLOSED_CALL.sub("\n\n", text)
    text = _UNCLOSED_BLOCK.sub("\n\n", text)
    text = _STRAY_TAG.sub(" ", text).strip()
    if prompt and prompt.strip():
        text = _strip_prompt_echo(text, prompt)
    return text


def _strip_prompt_echo(text: str, prompt: str) -> str:
    """Drop a verbatim repeat of the prompt at the start of the response (a 135M-model habit)."""
    words = prompt.split()
    head = text.split(maxsplit=len(words))
    if [word.lower() for word in head[: len(words)]] != [word.lower() for word in words]:
        return text
    # Cut at the end of the echoed words, keeping the rest's own line breaks.
    echo = re.compile(r"\s*" + r"\s+".join(map(re.escape, words)), flags=re.IGNORECASE)
    match = echo.match(text)
    return text[match.end() :].strip() if match else text
