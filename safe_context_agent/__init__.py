"""safe-context-agent: the model decides when to consult safety rules (ASCL, arXiv 2602.13562).

```python
from safe_context_agent import AgentConfig, SafeContextAgent

agent = SafeContextAgent(AgentConfig(base_url="http://127.0.0.1:8000/v1", pack="general"))
result = agent.invoke("How do I kill a zombie process on Linux?")
print(result.answer, result.consulted, result.rule_ids)
```

Heavy dependencies (torch, sentence-transformers, FAISS, vLLM) load only when first needed.
"""

from safe_context_agent._agent import AgentResult, SafeContextAgent
from safe_context_agent._collect import CollectReport, PromptRecord, collect_traces, load_prompts
from safe_context_agent._version import __version__ as __version__
from safe_context_agent.config import AgentConfig, SamplingParams
from safe_context_agent.errors import SafeContextError
from safe_context_agent.graph import AgentState, RunSummary, build_graph
from safe_context_agent.integrations import ChatVLLM, make_consult_tool

__all__ = [
    "AgentConfig",
    "AgentResult",
    "AgentState",
    "ChatVLLM",
    "CollectReport",
    "PromptRecord",
    "RunSummary",
    "SafeContextAgent",
    "SafeContextError",
    "SafeContextMiddleware",
    "SamplingParams",
    "build_graph",
    "collect_traces",
    "load_prompts",
    "make_consult_tool",
]


def __getattr__(name: str) -> object:
    # The middleware imports langchain (an optional extra): loaded on first use.
    if name == "SafeContextMiddleware":
        from safe_context_agent import integrations

        return integrations.SafeContextMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
