"""Rule packs and their retrieval: load and validate a pack, index it, `consult` it.

```python
from safe_context_agent.rules import open_index

index = open_index("general")  # loads the pack, builds or loads its FAISS index
for hit in index.consult("how do I kill a stuck process?", k=3):
    print(hit.rank, hit.rule.id, round(hit.score, 3))
```
"""

from safe_context_agent.rules._embedder import (
    DEFAULT_EMBEDDING_MODEL,
    Embedder,
    get_embedder,
    resolve_model_path,
)
from safe_context_agent.rules._index import (
    IndexConfig,
    IndexInspection,
    RetrievedRule,
    RuleIndex,
    default_index_dir,
    inspect_index,
    open_index,
)
from safe_context_agent.rules._loader import builtin_pack_names, load_rule_pack
from safe_context_agent.rules._schema import ExtraCategory, PackManifest, Rule, RulePack, Severity
from safe_context_agent.rules._store import IndexManifest
from safe_context_agent.rules._taxonomy import DEFAULT_CATEGORIES
from safe_context_agent.rules._texts import VectorStrategy

__all__ = [
    "DEFAULT_CATEGORIES",
    "DEFAULT_EMBEDDING_MODEL",
    "Embedder",
    "ExtraCategory",
    "IndexConfig",
    "IndexInspection",
    "IndexManifest",
    "PackManifest",
    "RetrievedRule",
    "Rule",
    "RuleIndex",
    "RulePack",
    "Severity",
    "VectorStrategy",
    "builtin_pack_names",
    "default_index_dir",
    "get_embedder",
    "inspect_index",
    "load_rule_pack",
    "open_index",
    "resolve_model_path",
]
