"""What the LangChain faces cost, measured in one run on one server (issue 12).

1. ``SafeContextMiddleware``: the same ``create_agent`` app (ChatVLLM, one app tool, a direct
   question) with and without the middleware, alternating, median per turn. In ``never`` mode the
   requests are identical, so the difference is the middleware's own work (hooks, records, one
   trace to a JSONL sink with fsync); ``adaptive`` adds the consult tool and its guidance to the
   prompt, so its figure also holds the longer prompt. Model calls per direct answer are counted.
2. The middleware's own time without a server (a scripted model answering at once): ms per run,
   and the agent graph's own time per run the same way.
3. ``ChatVLLM`` against ``ChatOpenAI`` on the same server with the same request (logprobs and
   ``return_token_ids`` on both), alternating, median per call.

    .venv/bin/python bench/integrations.py [--base-url URL] [--rounds 30] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from safe_context_agent import ChatVLLM, SafeContextMiddleware
from safe_context_agent.client._chat import _finish_reply
from safe_context_agent.serve import find_endpoint

PROMPT = "Give me three tips for a good night's sleep."


@tool
def order_status(order_id: str) -> str:
    """Look up the shipping status of an order by its id."""
    return "shipped"


class CountCalls(AgentMiddleware):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def wrap_model_call(self, request, handler):
        self.calls += 1
        return handler(request)


def _alternate(
    arms: dict[str, Callable[[], int]], rounds: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall seconds and median client CPU seconds (this process's ``process_time``: the
    server's time is not in it, so it holds up on a shared machine) per model turn for each arm
    (a run's time over the model calls it made, which each arm's function returns); the order of
    the arms turns each round."""
    wall: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for round_ in range(rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            started, started_cpu = time.perf_counter(), time.process_time()
            calls = max(1, arms[name]())
            wall[name].append((time.perf_counter() - started) / calls)
            cpu[name].append((time.process_time() - started_cpu) / calls)
    median = statistics.median
    return (
        {name: median(values) for name, values in wall.items()},
        {name: median(values) for name, values in cpu.items()},
    )


def _counted(agent, counter: CountCalls, question: dict) -> Callable[[], int]:
    def run() -> int:
        before = counter.calls
        agent.invoke(question)
        return counter.calls - before

    return run


def middleware_on_server(base_url: str, model: str, max_tokens: int, rounds: int, out: Path):
    llm = ChatVLLM(base_url=base_url, model=model, max_tokens=max_tokens)
    counters = {"plain": CountCalls(), "never": CountCalls(), "adaptive": CountCalls()}
    agents = {
        "plain": create_agent(llm, tools=[order_status], middleware=[counters["plain"]]),
        "never": create_agent(
            llm,
            tools=[order_status],
            middleware=[
                counters["never"],
                SafeContextMiddleware(mode="never", trace_path=out / "never.jsonl"),
            ],
        ),
        "adaptive": create_agent(
            llm,
            tools=[order_status],
            middleware=[
                counters["adaptive"],
                SafeContextMiddleware(mode="adaptive", trace_path=out / "adaptive.jsonl"),
            ],
        ),
    }
    question = {"messages": [HumanMessage(content=PROMPT)]}
    for agent in agents.values():  # warm: index, clients, caches
        agent.invoke(question)
    for counter in counters.values():
        counter.calls = 0
    medians, cpu = _alternate(
        {n: _counted(a, counters[n], question) for n, a in agents.items()}, rounds
    )
    calls = {name: counter.calls / rounds for name, counter in counters.items()}
    return medians, cpu, calls


class _Instant:
    """A client answering at once, so only the agent's own work is timed."""

    base_url = "http://instant/v1"

    def request(self, messages, tools):
        return {"model": "instant", "messages": messages, "tools": tools}

    def _reply(self):
        return _finish_reply(
            "Sleep well.", [], "stop", list(range(50)), [1, 2, 3], [-0.1] * 3,
            {"prompt_tokens": 50, "completion_tokens": 3}, 0.0,
        )  # fmt: skip

    def complete(self, kwargs, on_token=None):
        return self._reply()

    def stream(self, kwargs):
        yield self._reply()


def middleware_alone(rounds: int, out: Path) -> dict[str, float]:
    llm = ChatVLLM(client=_Instant(), model="instant")
    plain = create_agent(llm, tools=[order_status])
    safe = create_agent(
        llm,
        tools=[order_status],
        middleware=[SafeContextMiddleware(mode="never", trace_path=out / "alone.jsonl")],
    )
    question = {"messages": [HumanMessage(content=PROMPT)]}
    plain.invoke(question), safe.invoke(question)
    wall, _cpu = _alternate(
        {
            "plain": lambda: plain.invoke(question) and 1,
            "never": lambda: safe.invoke(question) and 1,
        },
        rounds * 10,
    )
    return wall


def graph_alone(rounds: int, out: Path) -> float:
    """Seconds per run of the agent's own graph (never mode, instant model, JSONL trace)."""
    from safe_context_agent import AgentConfig, SafeContextAgent

    agent = SafeContextAgent(
        AgentConfig(base_url=_Instant.base_url, mode="never", trace_path=out / "graph.jsonl"),
        client=_Instant(),
    )
    agent.invoke(PROMPT)
    times = []
    for _ in range(rounds * 10):
        started = time.perf_counter()
        agent.invoke(PROMPT)
        times.append(time.perf_counter() - started)
    agent.close()
    return statistics.median(times)


def chat_models(base_url: str, model: str, max_tokens: int, rounds: int) -> dict[str, float]:
    vllm = ChatVLLM(base_url=base_url, model=model, max_tokens=max_tokens)
    openai = ChatOpenAI(
        base_url=base_url,
        model=model,
        api_key="EMPTY",
        max_tokens=max_tokens,
        temperature=0.0,
        top_p=1.0,
        logprobs=True,
        extra_body={"return_token_ids": True},
    )
    messages = [HumanMessage(content=PROMPT)]
    vllm.invoke(messages), openai.invoke(messages)
    return _alternate(
        {
            "ChatVLLM": lambda: vllm.invoke(messages) and 1,
            "ChatOpenAI": lambda: openai.invoke(messages) and 1,
        },
        rounds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    endpoint = find_endpoint(args.base_url)
    if endpoint is None:
        raise SystemExit("no model endpoint: pass --base-url, set $SCA_BASE_URL, or run sca serve")
    base_url = endpoint.base_url
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        wall, cpu, calls = middleware_on_server(
            base_url, args.model, args.max_tokens, args.rounds, out
        )
        alone = middleware_alone(args.rounds, out)
        graph = graph_alone(args.rounds, out)
    chat_wall, chat_cpu = chat_models(base_url, args.model, args.max_tokens, args.rounds)
    print(
        f"create_agent per model turn, median of {args.rounds} runs, alternating, "
        f"{args.max_tokens} tokens (wall | client CPU):"
    )
    for name in ("plain", "never", "adaptive"):
        print(
            f"  {name:9s} {wall[name] * 1e3:8.1f} ms {wall[name] / wall['plain'] - 1:+6.1%}"
            f" | {cpu[name] * 1e3:6.1f} ms {(cpu[name] - cpu['plain']) * 1e3:+6.1f} ms"
            f"  model calls per run: {calls[name]:.2f}"
        )
    print(
        f"middleware's own work (instant model, median of {args.rounds * 10}): "
        f"{(alone['never'] - alone['plain']) * 1e3:+.2f} ms per run "
        f"({alone['plain'] * 1e3:.2f} -> {alone['never'] * 1e3:.2f} ms)"
    )
    print(
        f"the agent graph's own work per run (instant model, never mode, JSONL): {graph * 1e3:.2f} ms"
    )
    for name in ("ChatVLLM", "ChatOpenAI"):
        print(
            f"{name:10s} per call {chat_wall[name] * 1e3:8.1f} ms"
            f" | client CPU {chat_cpu[name] * 1e3:6.1f} ms"
        )
    ratio = chat_wall["ChatVLLM"] / chat_wall["ChatOpenAI"]
    cpu_ratio = chat_cpu["ChatVLLM"] / chat_cpu["ChatOpenAI"]
    print(
        f"ChatVLLM / ChatOpenAI: wall {ratio:.3f}x ({ratio - 1:+.1%}), client CPU {cpu_ratio:.3f}x"
    )


if __name__ == "__main__":
    main()
