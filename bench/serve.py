"""vLLM-served embedded model vs in-process transformers `generate`, same prompts, greedy.

Prints time-to-first-token and decode tokens/s for both (single stream, one request at a time),
vLLM's aggregate tokens/s with all prompts in flight at once, and the ratios. Run:

    .venv/bin/python bench/serve.py [--base-url URL] [--prompts 8] [--max-tokens 128]

Without --base-url it uses the `sca serve` server, or starts one for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

PROMPTS = [
    "Explain in a few sentences why the sky is blue.",
    "Write a short poem about the sea.",
    "Give three tips for writing clean Python code.",
    "What is the difference between a virus and a bacterium?",
    "Summarise the plot of Romeo and Juliet.",
    "How does a refrigerator keep food cold?",
    "List five countries in South America and their capitals.",
    "What are the benefits of regular exercise?",
]


def vllm_single(
    base_url: str, model: str, prompts: list[str], max_tokens: int
) -> tuple[list[float], list[float]]:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="EMPTY")
    ttfts, rates = [], []
    for prompt in prompts:
        started = time.perf_counter()
        first = None
        tokens = 0
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        end = time.perf_counter()
        ttfts.append((first or end) - started)
        rates.append((tokens - 1) / (end - (first or started)) if tokens > 1 else 0.0)
    return ttfts, rates


async def vllm_concurrent(base_url: str, model: str, prompts: list[str], max_tokens: int) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="EMPTY")
    started = time.perf_counter()
    replies = await asyncio.gather(
        *(
            client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": p}],
                max_tokens=max_tokens,
                temperature=0,
            )
            for p in prompts
        )
    )
    return sum(r.usage.completion_tokens for r in replies) / (time.perf_counter() - started)


def transformers_single(prompts: list[str], max_tokens: int) -> tuple[list[float], list[float]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safe_context_agent.serve import embedded_chat_template, prepare_embedded_model

    folder = prepare_embedded_model()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # float32: the fast dtype for CPU matmuls in PyTorch (bf16 would be slower, not fairer).
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ttfts, rates = [], []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            chat_template=embedded_chat_template(),
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.inference_mode():
            started = time.perf_counter()
            model.generate(**ids, max_new_tokens=1, do_sample=False)
            ttft = time.perf_counter() - started
            started = time.perf_counter()
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
            elapsed = time.perf_counter() - started
        tokens = out.shape[1] - ids["input_ids"].shape[1]
        ttfts.append(ttft)
        rates.append((tokens - 1) / max(elapsed - ttft, 1e-9) if tokens > 1 else 0.0)
    return ttfts, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    prompts = (PROMPTS * (1 + args.prompts // len(PROMPTS)))[: args.prompts]

    from safe_context_agent.serve import model_endpoint

    with model_endpoint(args.base_url) as endpoint:
        base_url, model = endpoint.base_url, endpoint.model(args.model)
        vllm_single(base_url, model, prompts[:1], 8)  # warm-up
        v_ttft, v_rate = vllm_single(base_url, model, prompts, args.max_tokens)
        v_agg = asyncio.run(vllm_concurrent(base_url, model, prompts, args.max_tokens))
    t_ttft, t_rate = transformers_single(prompts, args.max_tokens)

    med = statistics.median
    print(f"{len(prompts)} prompts, max_tokens {args.max_tokens}, greedy, single stream")
    print(
        f"  time to first token  vLLM {med(v_ttft) * 1000:8.1f} ms   transformers {med(t_ttft) * 1000:8.1f} ms   ratio {med(t_ttft) / med(v_ttft):5.2f}x"
    )
    print(
        f"  decode tokens/s      vLLM {med(v_rate):8.1f}      transformers {med(t_rate):8.1f}      ratio {med(v_rate) / med(t_rate):5.2f}x"
    )
    print(
        f"  vLLM with all {len(prompts)} in flight: {v_agg:.1f} tok/s aggregate ({v_agg / med(t_rate):.2f}x transformers single stream)"
    )


if __name__ == "__main__":
    main()
