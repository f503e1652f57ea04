"""Trace factories for the sink, reader and export tests: realistic traces, no mocks."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from safe_context_agent.traces import (
    Consultation,
    FormatError,
    ModelTurn,
    PackRef,
    RetrievedRuleRef,
    ToolCallRecord,
    Trace,
)


def build_trace(seed: int = 0, **overrides: Any) -> Trace:
    """A run that consulted the rules once and then answered: two model turns with token ids,
    the second prompt extending the first prompt and completion as a served conversation does."""
    rng = random.Random(seed)

    def ids(n: int) -> list[int]:
        return [rng.randrange(49_152) for _ in range(n)]

    prompt, call = ids(40), ids(12)
    turns = [
        ModelTurn(
            index=0,
            prompt_token_ids=prompt,
            completion_token_ids=call,
            logprobs=[-rng.random() for _ in range(12)],
            tool_calls=[
                ToolCallRecord(
                    id="call_0", name="consult_safety_rules", arguments='{"query": "lock picking"}'
                )
            ],
            finish_reason="tool_calls",
            tools_offered=True,
            model="smollm2",
        ),
        ModelTurn(
            index=1,
            # As served: the first prompt and completion, then the tool result and scaffolding.
            prompt_token_ids=prompt + call + ids(38),
            completion_token_ids=ids(20),
            logprobs=[-rng.random() for _ in range(20)],
            content="Lock picking is a legal hobby; here is how pin tumblers work.",
            finish_reason="stop",
            tools_offered=True,
            model="smollm2",
        ),
    ]
    fields: dict[str, Any] = {
        "group_id": f"group-{seed // 4}",
        "sample_index": seed % 4,
        "model": "smollm2",
        "mode": "adaptive",
        "sampling": {"temperature": 0.8, "max_tokens": 256},
        "pack": PackRef(name="general", version="1.0.0", content_hash="abc123"),
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"How does lock picking work? ({seed})"},
        ],
        "turns": turns,
        "consultations": [
            Consultation(
                source="tool_call",
                query="lock picking",
                rules=[
                    RetrievedRuleRef(id="GEN-PHYS-03", category="physical_security", score=0.71),
                    RetrievedRuleRef(id="GEN-CRIME-01", category="crime", score=0.52),
                ],
                turn_index=0,
                tool_call_id="call_0",
            )
        ],
        "format_errors": [FormatError(kind="missing_query", turn_index=0, detail="no query")],
        "answer": turns[1].content,
        "metadata": {"label": "safe", "source": "xstest"},
    }
    fields.update(overrides)
    return Trace(**fields)


@pytest.fixture
def make_trace() -> Callable[..., Trace]:
    return build_trace
