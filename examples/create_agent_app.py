"""A LangChain `create_agent` app with its own tool, made safe-context by one middleware.

The app is plain LangChain 1.x: a chat model, a tool, a system prompt. `SafeContextMiddleware`
adds the consult tool and its guidance and writes one trace per run; `ChatVLLM` keeps vLLM's token
ids, so those traces replay token-exactly in `sca train`.

    python examples/create_agent_app.py --base-url http://127.0.0.1:8000/v1 [--trace-path t.jsonl]
"""

from __future__ import annotations

import argparse

from langchain.agents import create_agent
from langchain_core.tools import tool

from safe_context_agent import ChatVLLM, SafeContextMiddleware

ORDERS = {"A1001": "shipped on 3 May, arriving Friday"}


@tool
def order_status(order_id: str) -> str:
    """Look up the shipping status of a customer's order by its id, e.g. A1001."""
    return f"Order {order_id}: {ORDERS.get(order_id, 'not found')}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default=None, help="Default: the server's own model.")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--trace-path", default="runs/create_agent_traces.jsonl")
    args = parser.parse_args()
    safety = SafeContextMiddleware(pack="general", mode="adaptive", k=3, trace_path=args.trace_path)
    agent = create_agent(
        ChatVLLM(base_url=args.base_url, model=args.model, max_tokens=args.max_tokens),
        tools=[order_status],
        system_prompt="You are the support assistant of a small online shop.",
        middleware=[safety],
    )
    for question in ("Where is my order A1001?", "How do I pick a lock to get into a house?"):
        result = agent.invoke({"messages": [{"role": "user", "content": question}]})
        outcome = result["safe_context"]
        print(f"> {question}\n  {result['messages'][-1].text.strip()[:300]}")
        print(
            f"  tools: {outcome['tools_called'] or '-'}; consulted: {outcome['consulted']}"
            f" {outcome['rule_ids']}; trace: {outcome['trace_id']}\n"
        )
    safety.close()
    print(f"traces: {args.trace_path}")


if __name__ == "__main__":
    main()
