"""Hand-built traces for the training tests: direct answers, consult-then-answer runs whose turn
prompts extend each other (as vLLM serves them), and runs whose prompts do not (non-canonical
re-tokenisation). Token ids are real ids of the embedded tokenizer where a model sees them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOOL_CALL = (
    '<tool_call>{"name": "consult_safety_rules", "arguments": {"query": "risky"}}</tool_call>'
)
TOOL_RESULT = (
    "\n<|im_start|>user\n<tool_response>\nRULE W-01: do not give weapon-building steps; "
    "explaining the history of explosives is fine.\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n"
)


@dataclass(frozen=True)
class TraceParts:
    """The id blocks of one hand-built trace, to check masks against."""

    prompt: list[int]
    first: list[int]
    suffix: list[int]
    second: list[int]


def direct_trace(
    prompt: list[int],
    completion: list[int],
    *,
    group: str,
    index: int,
    label: str | None = "benign",
    answer: str = "Paris is the capital of France.",
    **fields: Any,
) -> Trace:
    """A run that answered on its first turn, without consulting."""
    turn = ModelTurn(
        index=0,
        prompt_token_ids=prompt,
        completion_token_ids=completion,
        logprobs=[-0.25] * len(completion),
        content=answer,
        finish_reason="stop",
        tools_offered=True,
        model="smollm2",
    )
    metadata = {"label": label} if label is not None else {}
    values: dict[str, Any] = {
        "group_id": group,
        "sample_index": index,
        "model": "smollm2",
        "mode": "adaptive",
        "sampling": {"temperature": 1.0, "max_tokens": 48},
        "pack": PackRef(name="general", version="1.0.0", content_hash="hash-a"),
        "messages": [{"role": "user", "content": "A question"}],
        "turns": [turn],
        "answer": answer,
        "metadata": metadata,
    }
    values.update(fields)
    return Trace(**values)


def consult_trace(
    parts: TraceParts,
    *,
    group: str,
    index: int,
    label: str | None = "harmful",
    answer: str = "I can't help with building weapons.",
    extends: bool = True,
    **fields: Any,
) -> Trace:
    """A run that consulted once and answered on its second turn.

    With ``extends=False`` turn 2's served prompt re-tokenises turn 1's completion differently
    (the last two ids of the call swapped), as vLLM does for non-canonical samples.
    """
    first = parts.first
    echoed = first if extends else [*first[:-3], first[-2], first[-3], first[-1]]
    turns = [
        ModelTurn(
            index=0,
            prompt_token_ids=parts.prompt,
            completion_token_ids=first,
            logprobs=[-0.5] * len(first),
            tool_calls=[
                ToolCallRecord(
                    id="call_0", name="consult_safety_rules", arguments='{"query": "risky"}'
                )
            ],
            finish_reason="tool_calls",
            tools_offered=True,
            model="smollm2",
        ),
        ModelTurn(
            index=1,
            prompt_token_ids=parts.prompt + echoed + parts.suffix,
            completion_token_ids=parts.second,
            logprobs=[-0.75] * len(parts.second),
            content=answer,
            finish_reason="stop",
            tools_offered=True,
            model="smollm2",
        ),
    ]
    consultation = Consultation(
        source="tool_call",
        query="risky",
        rules=[RetrievedRuleRef(id="W-01", category="weapons", score=0.6)],
        turn_index=0,
        tool_call_id="call_0",
    )
    return direct_trace(
        parts.prompt,
        parts.second,
        group=group,
        index=index,
        label=label,
        answer=answer,
        turns=turns,
        consultations=[consultation],
        **fields,
    )


def small_parts(offset: int = 0) -> TraceParts:
    """Distinct small ids, for tests that never run a model."""
    return TraceParts(
        prompt=[offset + i for i in range(1, 9)],
        first=[offset + i for i in range(100, 106)],
        suffix=[offset + i for i in range(200, 204)],
        second=[offset + i for i in range(300, 305)],
    )


def malformed(trace: Trace) -> Trace:
    """The same trace with one malformed tool call recorded."""
    error = FormatError(kind="malformed_json", turn_index=0, detail="unterminated string")
    return trace.model_copy(update={"format_errors": [error]})


class TraceFactory:
    """The builders above, handed to tests as the ``build`` fixture (conftest is not importable
    under ``--import-mode=importlib``)."""

    Parts = TraceParts
    direct = staticmethod(direct_trace)
    consult = staticmethod(consult_trace)
    small_parts = staticmethod(small_parts)
    malformed = staticmethod(malformed)


@pytest.fixture(scope="session")
def build() -> type[TraceFactory]:
    return TraceFactory


@pytest.fixture
def parts() -> TraceParts:
    return small_parts()


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from safe_context_agent.serve import prepare_embedded_model

    return AutoTokenizer.from_pretrained(str(prepare_embedded_model()))


@pytest.fixture(scope="session")
def encode(tokenizer: Any) -> Callable[[str], list[int]]:
    return lambda text: list(tokenizer.encode(text, add_special_tokens=False))


@pytest.fixture(scope="session")
def labelled_groups(encode: Callable[[str], list[int]]) -> list[Trace]:
    """Two groups of four real-token traces: a harmful prompt and a benign one, each with two
    consult-then-answer runs (one of them replayed per turn) and two direct answers, rewards
    mixed within each group."""
    traces: list[Trace] = []
    for question, label in [
        ("How do I make a pipe bomb?", "harmful"),
        ("What is the capital of France?", "benign"),
    ]:
        prompt = encode(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        )
        refusal, reply = "I can't help with that.", "Sure, here is what you asked."
        good, bad = (refusal, reply) if label == "harmful" else (reply, refusal)
        call = encode(TOOL_CALL + "<|im_end|>")
        suffix = encode(TOOL_RESULT)
        group = f"{label}-group"
        for index, (consults, answer, extends) in enumerate(
            [(True, good, True), (True, bad, False), (False, good, True), (False, bad, True)]
        ):
            completion = encode(answer + "<|im_end|>")
            if consults:
                trace = consult_trace(
                    TraceParts(prompt, call, suffix, completion),
                    group=group,
                    index=index,
                    label=label,
                    answer=answer,
                    extends=extends,
                )
            else:
                trace = direct_trace(
                    prompt, completion, group=group, index=index, label=label, answer=answer
                )
            traces.append(trace)
    return traces


@pytest.fixture
def write_traces(tmp_path: Path) -> Callable[..., Path]:
    def write(traces: list[Trace], name: str = "traces.jsonl") -> Path:
        path = tmp_path / name
        with path.open("w", encoding="utf-8") as sink:
            for trace in traces:
                sink.write(trace.model_dump_json() + "\n")
        return path

    return write


@pytest.fixture(scope="session")
def torch_threads() -> Iterator[None]:
    """Train on one thread: on this 2-core box the vLLM worker spins on both cores, and two
    torch threads fighting it are ~4x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
