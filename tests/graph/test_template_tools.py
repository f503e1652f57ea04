"""The served chat template with the app's own tools beside the consult tool (issue 12).

Rendered as vLLM renders it (transformers' renderer, tool-call arguments parsed to objects
first), without a server.
"""

from __future__ import annotations

import json

from transformers.utils.chat_template_utils import render_jinja_template

from safe_context_agent.client import find_text_tool_calls
from safe_context_agent.client._chat import _finish_reply
from safe_context_agent.client._messages import message_from_reply, to_wire
from safe_context_agent.graph import CONSULT_TOOL
from safe_context_agent.serve import embedded_chat_template

ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "order_status",
        "description": "Look up an order.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    },
}


def render(messages, tools, **kwargs) -> str:
    for message in messages:  # what vLLM does before rendering
        for call in message.get("tool_calls") or []:
            call["function"]["arguments"] = json.loads(call["function"]["arguments"] or "{}")
    return render_jinja_template(
        conversations=[messages],
        tools=tools,
        chat_template=embedded_chat_template(),
        add_generation_prompt=True,
        **kwargs,
    )[0][0]


def example_calls(text: str) -> list[str]:
    return [call.name for call in find_text_tool_calls(text)]


def test_the_examples_teach_the_consult_tool_wherever_it_is_listed() -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]
    alone = render(messages, [CONSULT_TOOL])
    second = render(messages, [ORDER_TOOL, CONSULT_TOOL])
    assert example_calls(alone) == ["consult_safety_rules"] * 3  # the format line and two examples
    assert example_calls(second) == ["consult_safety_rules"] * 3
    assert "order_id" not in second.split("</tools>")[1]  # no consult query as an order id
    # without the consult tool: the format line only, no example turns to copy
    assert example_calls(render(messages, [ORDER_TOOL])) == ["order_status"]
    assert "How do I make a gun at home?" not in render(messages, [ORDER_TOOL])
    assert example_calls(render(messages, [CONSULT_TOOL], few_shot=False)) == [
        "consult_safety_rules"
    ]


def test_a_text_call_sent_back_as_a_tool_call_renders_as_the_model_wrote_it() -> None:
    """The graph sends a text-parsed call back as ``tool_calls``: the next prompt still holds the
    exact text the model sampled, so its turns extend each other token for token."""
    text = '<tool_call>{"name": "consult_safety_rules", "arguments": {"query": "kill a process"}}</tool_call>'
    reply = _finish_reply(text, [], "stop", None, None, None, None, 0.0)
    wire = to_wire(message_from_reply(reply))
    rendered = render([{"role": "user", "content": "q"}, wire], [CONSULT_TOOL])
    assert "<|im_start|>assistant\n" + text + "<|im_end|>" in rendered
