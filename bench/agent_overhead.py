"""What the agent adds on top of a plain `openai` call to the same server, prompt and settings.

1. Per-turn latency: the agent (`never` mode: one model turn, graph + trace) against a direct
   `chat.completions.create` with the same messages and parameters, interleaved, median of N.
2. Throughput: 64 concurrent agent runs (`abatch`) against 64 concurrent direct calls, a few
   rounds with the order swapped each round; the median ratio within a round is reported.
Greedy decoding makes both sides generate the same tokens. Run:

    .venv/bin/python bench/agent_overhead.py [--base-url URL] [--rounds 20] [--concurrency 64]
        [--throughput-rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from openai import AsyncOpenAI, OpenAI

from safe_context_agent import AgentConfig, SafeContextAgent, SamplingParams
from safe_context_agent.config import PLAIN_SYSTEM_PROMPT
from safe_context_agent.serve import model_endpoint

PROMPT = "Give me three tips for a good night's sleep."


def direct_kwargs(model: str, max_tokens: int) -> dict:
    # Exactly what the agent sends in `never` mode (see ChatClient.request).
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": PLAIN_SYSTEM_PROMPT},
            {"role": "user", "content": PROMPT},
        ],
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": max_tokens,
        "logprobs": True,
        "extra_body": {"return_token_ids": True},
    }


def per_turn(
    agent: SafeContextAgent, client: OpenAI, kwargs: dict, rounds: int
) -> tuple[float, float]:
    agent_s, direct_s = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        client.chat.completions.create(**kwargs)
        direct_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        agent.invoke(PROMPT)
        agent_s.append(time.perf_counter() - started)
    return statistics.median(agent_s), statistics.median(direct_s)


async def throughput(
    agent: SafeContextAgent, base_url: str, kwargs: dict, n: int, rounds: int
) -> tuple[float, float, float]:
    """Medians over ``rounds`` of (agent runs/s, direct calls/s, their ratio within a round).

    The two sides swap order every round, so that neither always meets the warmer server.
    """
    async with AsyncOpenAI(base_url=base_url, api_key="EMPTY") as client:

        async def rate(batch: Callable[[], Awaitable[object]]) -> float:
            started = time.perf_counter()
            await batch()
            return n / (time.perf_counter() - started)

        def direct_batch() -> Awaitable[object]:
            return asyncio.gather(*(client.chat.completions.create(**kwargs) for _ in range(n)))

        def agent_batch() -> Awaitable[object]:
            return agent.abatch([PROMPT] * n, max_concurrency=n)

        agent_rates, direct_rates, ratios = [], [], []
        for round_ in range(rounds):
            if round_ % 2 == 0:
                direct, via_agent = await rate(direct_batch), await rate(agent_batch)
            else:
                via_agent, direct = await rate(agent_batch), await rate(direct_batch)
            agent_rates.append(via_agent)
            direct_rates.append(direct)
            ratios.append(via_agent / direct)
    return (
        statistics.median(agent_rates),
        statistics.median(direct_rates),
        statistics.median(ratios),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--throughput-rounds", type=int, default=3, help="concurrent batches per side, alternating"
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    with (
        model_endpoint(args.base_url) as endpoint,
        tempfile.TemporaryDirectory() as tmp,
    ):
        model = endpoint.model(args.model)
        kwargs = direct_kwargs(model, args.max_tokens)
        client = OpenAI(base_url=endpoint.base_url, api_key="EMPTY")
        client.chat.completions.create(**kwargs)  # warm-up (prefix cache)
        for label, trace_path in (
            ("no trace sink", None),
            ("JSONL sink, fsync", Path(tmp) / "t.jsonl"),
        ):
            config = AgentConfig(
                base_url=endpoint.base_url,
                model=model,
                mode="never",
                trace_path=trace_path,
                sampling=SamplingParams(max_tokens=args.max_tokens),
            )
            with SafeContextAgent(config) as agent:
                agent_t, direct_t = per_turn(agent, client, kwargs, args.rounds)
                agent_rps, direct_rps, ratio = asyncio.run(
                    throughput(
                        agent, endpoint.base_url, kwargs, args.concurrency, args.throughput_rounds
                    )
                )
            print(f"[{label}]")
            print(
                f"  per turn: agent {agent_t * 1000:.1f} ms, direct {direct_t * 1000:.1f} ms, overhead {100 * (agent_t / direct_t - 1):+.1f} % (target <= 3 %)"
            )
            print(
                f"  {args.concurrency} concurrent, median of {args.throughput_rounds}: agent"
                f" {agent_rps:.2f} runs/s, direct {direct_rps:.2f} calls/s, ratio {ratio:.2f}x"
                " (target >= 0.9x)"
            )


if __name__ == "__main__":
    main()
