"""Which benchmark prompts the recipe trains and evaluates on.

Both come from the public benchmark files beside the checkout (``../shared/data``, see its
SOURCES.md) and the project's own ``everyday`` suite, cut by the fixed split of
:func:`~safe_context_agent.eval.prompt_split`: demonstrations and RL prompts from ``train``,
every evaluation from ``dev``. The split is a function of the normalised prompt text, so no
request is in both, across suites too (tests/training/test_prompts.py checks it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from safe_context_agent.errors import ConfigError
from safe_context_agent.eval import (
    EvalPrompt,
    Split,
    SuiteSource,
    everyday_prompts_path,
    load_suite,
)

__all__ = [
    "MAX_TRAIN_PROMPT_CHARS",
    "SUITE_FILES",
    "SuiteCounts",
    "recipe_prompts",
    "suite_sources",
]

SUITE_FILES: Mapping[str, str] = {
    "strongreject": "strongreject/strongreject_dataset.csv",
    "harmbench": "harmbench/harmbench_behaviors_text_all.csv",
    "advbench": "advbench/harmful_behaviors.csv",
    "jailbreakbench_harmful": "jailbreakbench/harmful-behaviors.csv",
    "xstest": "xstest/xstest_prompts.csv",
    "jailbreakbench_benign": "jailbreakbench/benign-behaviors.csv",
    "gsm8k": "gsm8k/test.jsonl",
}
"""Each suite's file under the data folder (``everyday`` ships with the package)."""

MAX_TRAIN_PROMPT_CHARS = 600
"""Training prompts longer than this are left out (HarmBench's contextual rows carry pages of
context): on this CPU one such sequence costs as much as five ordinary ones."""


@dataclass(frozen=True)
class SuiteCounts:
    """Prompts per suite for one use (training demonstrations, or an evaluation)."""

    counts: Mapping[str, int]

    def total(self) -> int:
        return sum(self.counts.values())


def suite_sources(data_dir: str | Path, names: list[str]) -> list[SuiteSource]:
    """:class:`SuiteSource` of each suite in ``names`` (for ``sca eval`` / ``run_eval``)."""
    root = Path(data_dir).expanduser()
    sources = []
    for name in names:
        if name == "everyday":
            sources.append(SuiteSource(name="everyday", path=everyday_prompts_path()))
            continue
        if name not in SUITE_FILES:
            raise ConfigError(
                f"unknown suite {name!r} for the recipe. Fix: use one of "
                f"{', '.join([*SUITE_FILES, 'everyday'])}"
            )
        path = root / SUITE_FILES[name]
        if not path.is_file():
            raise ConfigError(
                f"{path}: benchmark file missing. Fix: pass --data with the folder that holds "
                f"{SUITE_FILES[name]} (the shared benchmark data, see its SOURCES.md)"
            )
        sources.append(SuiteSource(name=name, path=path))
    return sources


def recipe_prompts(
    data_dir: str | Path,
    counts: SuiteCounts,
    *,
    split: Split,
    seed: int = 0,
    max_chars: int | None = None,
) -> list[EvalPrompt]:
    """Up to ``counts[suite]`` prompts of each suite from ``split``, a seeded subset.

    ``max_chars`` leaves out longer prompts before the subset is taken.
    """
    prompts: list[EvalPrompt] = []
    for source in suite_sources(data_dir, list(counts.counts)):
        rows = load_suite(source.name, source.path, split=split, seed=seed)
        if max_chars is not None:
            rows = [row for row in rows if len(row.prompt) <= max_chars]
        prompts.extend(rows[: counts.counts[source.name]])
    return prompts
