"""Rule packs and their retrieval: load and validate a pack, index it, `consult` it.

```python
from safe_context_agent.rules import open_index

index = open_index("general")  # loads the pack, builds or loads its FAISS index
for hit in index.consult("how do I kill a stuck process?", k=3):
    print(hit.rank, hit.rule.id, round(hit.score, 3))
```
"""

from safe_context_agent.rules._audit import (
    AuditConfig,
    AuditFinding,
    AuditKind,
    AuditReport,
    AuditTotals,
    RuleAudit,
    WeakConsultation,
    audit_rules,
    best_ranks,
    rank_weights,
)
from safe_context_agent.rules._audit_report import (
    audit_markdown,
    plot_over_refusal,
    plot_suite_heatmap,
    what_to_change,
    write_audit,
)
from safe_context_agent.rules._embedder import (
    DEFAULT_EMBEDDING_MODEL,
    Embedder,
    get_embedder,
    resolve_model_path,
)
from safe_context_agent.rules._findings import Finding
from safe_context_agent.rules._index import (
    IndexConfig,
    IndexInspection,
    RetrievedRule,
    RuleIndex,
    default_index_dir,
    inspect_index,
    open_index,
)
from safe_context_agent.rules._lint import (
    ExampleRetrieval,
    LintConfig,
    LintFinding,
    LintKind,
    LintReport,
    RuleLint,
    held_out_scores,
    lint_pack,
    similar_pairs,
)
from safe_context_agent.rules._loader import builtin_pack_names, load_rule_pack
from safe_context_agent.rules._schema import ExtraCategory, PackManifest, Rule, RulePack, Severity
from safe_context_agent.rules._store import IndexManifest
from safe_context_agent.rules._taxonomy import DEFAULT_CATEGORIES
from safe_context_agent.rules._texts import VectorStrategy

__all__ = [
    "DEFAULT_CATEGORIES",
    "DEFAULT_EMBEDDING_MODEL",
    "AuditConfig",
    "AuditFinding",
    "AuditKind",
    "AuditReport",
    "AuditTotals",
    "Embedder",
    "ExampleRetrieval",
    "ExtraCategory",
    "Finding",
    "IndexConfig",
    "IndexInspection",
    "IndexManifest",
    "LintConfig",
    "LintFinding",
    "LintKind",
    "LintReport",
    "PackManifest",
    "RetrievedRule",
    "Rule",
    "RuleAudit",
    "RuleIndex",
    "RuleLint",
    "RulePack",
    "Severity",
    "VectorStrategy",
    "WeakConsultation",
    "audit_markdown",
    "audit_rules",
    "best_ranks",
    "builtin_pack_names",
    "default_index_dir",
    "get_embedder",
    "held_out_scores",
    "inspect_index",
    "lint_pack",
    "load_rule_pack",
    "open_index",
    "plot_over_refusal",
    "plot_suite_heatmap",
    "rank_weights",
    "resolve_model_path",
    "similar_pairs",
    "what_to_change",
    "write_audit",
]
