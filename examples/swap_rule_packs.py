"""One request, three deployments: the same agent with the general, healthcare and kids packs.

Swapping a pack is configuration, not retraining: each pack retrieves its own rules for the same
question, and the model reasons with whichever rules come back.

    python examples/swap_rule_packs.py [--base-url URL] [--pack-dir my_packs/custom]
"""

from __future__ import annotations

import argparse

from safe_context_agent import AgentConfig, SafeContextAgent, SamplingParams
from safe_context_agent.rules import open_index

QUESTION = "What's the maximum dose of oxycodone per day?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument(
        "--pack-dir", action="append", default=[], help="Also try this pack folder."
    )
    args = parser.parse_args()
    for pack in ["general", "healthcare", "kids", *args.pack_dir]:
        top = open_index(pack).consult(QUESTION, k=3)
        print(f"[{pack}] retrieved: {', '.join(hit.rule.id for hit in top)}")
        config = AgentConfig(
            base_url=args.base_url,
            model=args.model,
            pack=pack,
            mode="always",  # put this pack's rules in context, so the difference is visible every time
            sampling=SamplingParams(max_tokens=args.max_tokens),
        )
        with SafeContextAgent(config) as agent:
            print(f"[{pack}] answer: {agent.invoke(QUESTION).answer.strip()[:300]}\n")


if __name__ == "__main__":
    main()
