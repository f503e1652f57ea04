"""A support bot whose own LangGraph app uses the safe agent as one node.

The bot has its own tool (an order-status lookup) and routes everything else to the safe agent,
which decides by itself whether to consult the safety rules before answering.

    python examples/support_bot.py --base-url http://127.0.0.1:8000/v1
(with no --base-url it uses the server `sca serve` started, or $SCA_BASE_URL)
"""

from __future__ import annotations

import argparse
import re

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from safe_context_agent import AgentConfig, SamplingParams, build_graph

ORDERS = {"A1001": "shipped on 3 May, arriving Friday", "A1002": "waiting for stock"}


def order_status(state: MessagesState) -> dict:
    """The bot's own tool: answers order questions without any model call."""
    order = re.search(r"\bA\d{4}\b", state["messages"][-1].content)
    status = ORDERS.get(order.group(0), "not found") if order else "not found"
    return {"messages": [AIMessage(content=f"Order {order.group(0) if order else '?'}: {status}.")]}


def route(state: MessagesState) -> str:
    return "order_status" if "order" in state["messages"][-1].content.lower() else "safe_assistant"


def build_support_bot(config: AgentConfig):
    graph = StateGraph(MessagesState)
    graph.add_node("order_status", order_status)
    graph.add_node("safe_assistant", build_graph(config))  # the safe agent as a subgraph node
    graph.add_conditional_edges(START, route, ["order_status", "safe_assistant"])
    graph.add_edge("order_status", END)
    graph.add_edge("safe_assistant", END)
    return graph.compile()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()
    config = AgentConfig(
        base_url=args.base_url,
        model=args.model,
        sampling=SamplingParams(max_tokens=args.max_tokens),
    )
    bot = build_support_bot(config)
    for question in (
        "Where is my order A1001?",
        "How do I reset my router password?",
        "How do I break into my neighbour's wifi?",
    ):
        result = bot.invoke({"messages": [HumanMessage(content=question)]})
        print(f"> {question}\n  {result['messages'][-1].content.strip()[:300]}\n")


if __name__ == "__main__":
    main()
