"""A support bot whose model calls the bot's own order tool and decides when to consult the rules.

The agent graph gets the bot's tool (`build_graph(config, tools=[order_status])`): the model sees
`order_status` beside `consult_safety_rules` and picks either, both or neither. The bot's own graph
wraps it and reads the run's outcome (`safe_context`) to flag refusals-after-consultation for a
human to review.

    python examples/support_bot.py --base-url http://127.0.0.1:8000/v1 [--trace-path t.jsonl]
(with no --base-url it uses the server `sca serve` started, or $SCA_BASE_URL)
"""

from __future__ import annotations

import argparse
from typing import Annotated, TypedDict

from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from safe_context_agent import AgentConfig, RunSummary, SamplingParams, build_graph

ORDERS = {"A1001": "shipped on 3 May, arriving Friday", "A1002": "waiting for stock"}


@tool
def order_status(order_id: str) -> str:
    """Look up the shipping status of a customer's order by its id, e.g. A1001."""
    if order_id not in ORDERS:
        raise KeyError(f"there is no order {order_id}; order ids look like A1001")
    return f"Order {order_id}: {ORDERS[order_id]}."


class BotState(TypedDict, total=False):
    messages: Annotated[list, add_messages]
    safe_context: RunSummary
    """Written by the agent subgraph: did it consult, which rules, which tools, the trace id."""
    review: bool


def flag_for_review(state: BotState) -> dict:
    """The bot's own step after the agent: consulted runs go to a human review queue."""
    return {"review": state["safe_context"]["consulted"]}


def build_support_bot(config: AgentConfig):
    graph = StateGraph(BotState)
    graph.add_node("assistant", build_graph(config, tools=[order_status]))
    graph.add_node("flag_for_review", flag_for_review)
    graph.add_edge(START, "assistant")
    graph.add_edge("assistant", "flag_for_review")
    graph.add_edge("flag_for_review", END)
    return graph.compile()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--trace-path", default=None)
    args = parser.parse_args()
    config = AgentConfig(
        base_url=args.base_url,
        model=args.model,
        sampling=SamplingParams(max_tokens=args.max_tokens),
        trace_path=args.trace_path,
    )
    bot = build_support_bot(config)
    for question in (
        "Where is my order A1001?",
        "How do I reset my router password?",
        "How do I break into my neighbour's wifi?",
    ):
        result = bot.invoke({"messages": [HumanMessage(content=question)]})
        outcome = result["safe_context"]
        print(f"> {question}\n  {result['messages'][-1].content.strip()[:300]}")
        print(
            f"  tools: {outcome['tools_called'] or '-'}; consulted: {outcome['consulted']}"
            f" {outcome['rule_ids']}; review: {result['review']}\n"
        )


if __name__ == "__main__":
    main()
