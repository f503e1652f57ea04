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
from safe_context_agent.config import AgentConfig, SamplingParams
from safe_context_agent.errors import SafeContextError
from safe_context_agent.graph import AgentState, build_graph

__all__ = [
    "AgentConfig",
    "AgentResult",
    "AgentState",
    "CollectReport",
    "PromptRecord",
    "SafeContextAgent",
    "SafeContextError",
    "SamplingParams",
    "build_graph",
    "collect_traces",
    "load_prompts",
]

__version__ = "0.1.0"
