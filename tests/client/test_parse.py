"""Text tool calls whose closing tag ``max_tokens`` cut are complete calls, not malformed JSON."""

from __future__ import annotations

import pytest

from safe_context_agent.client import find_text_tool_calls


@pytest.mark.parametrize("cut", ["</tool", "</", "<", "</tool_call", " </tool_c"])
def test_a_cut_closing_tag_is_a_complete_call(cut: str) -> None:
    (call,) = find_text_tool_calls('<tool_call>{"name": "x", "arguments": {"q": 1}}' + cut)
    assert call.error is None and call.name == "x" and call.arguments == '{"q": 1}'


def test_cut_json_is_still_malformed() -> None:
    (broken,) = find_text_tool_calls('<tool_call>{"name": "x", "arguments": {"q": "a</tool')
    assert broken.error is not None and broken.error.startswith("malformed JSON")
