"""The embedded model served in float32 against bfloat16 on this machine: same prompts, ratios.

Starts one server per dtype, one after the other (on a free port each; a running `sca serve`
server is left alone, but stop it first for clean figures: two servers share the cores), and
measures time to first token, single-stream decode and aggregate tokens/s with 8 and 32
requests in flight. On CPUs without bf16 instructions bf16 is emulated; this is the measurement
behind `sca serve`'s dtype choice. Run:

    .venv/bin/python bench/serve_dtype.py [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from serve import PROMPTS, vllm_concurrent, vllm_single

from safe_context_agent.serve import ServerConfig, VLLMServer

DTYPES = ("float32", "bfloat16")


def measure(dtype: str, max_tokens: int) -> dict[str, float]:
    started = time.perf_counter()
    with VLLMServer(ServerConfig(dtype=dtype)) as server:
        figures = {"start_s": time.perf_counter() - started}
        vllm_single(server.base_url, server.model, PROMPTS[:1], 8)  # warm-up
        ttfts, rates = vllm_single(server.base_url, server.model, PROMPTS, max_tokens)
        figures["ttft_ms"] = 1000 * statistics.median(ttfts)
        figures["decode_tok_s"] = statistics.median(rates)
        for in_flight in (8, 32):
            prompts = (PROMPTS * (in_flight // len(PROMPTS) + 1))[:in_flight]
            figures[f"{in_flight}_in_flight_tok_s"] = asyncio.run(
                vllm_concurrent(server.base_url, server.model, prompts, max_tokens)
            )
    print(f"{dtype}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    results = {dtype: measure(dtype, args.max_tokens) for dtype in DTYPES}
    fp32, bf16 = results["float32"], results["bfloat16"]
    print("float32 / bfloat16 (above 1: float32 better)")
    print(f"  time to first token  {bf16['ttft_ms'] / fp32['ttft_ms']:.2f}x")
    for key in ("decode_tok_s", "8_in_flight_tok_s", "32_in_flight_tok_s"):
        print(f"  {key:<20} {fp32[key] / bf16[key]:.2f}x")


if __name__ == "__main__":
    main()
