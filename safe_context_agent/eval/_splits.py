"""Fixed train / dev / test splits of benchmark prompts, decided by the prompt's own text.

Training on a benchmark prompt and then evaluating on it would measure memory, not judgement.
The split of a prompt is a pure function of its normalised text (a salted sha256 mapped to
[0, 1)), so:

- it needs no stored list and no seed: every command, machine and later session agrees;
- the same request appearing in two suites (AdvBench rows repeated in StrongREJECT, or a
  casing or whitespace variant) lands in the same split, so train and dev never share a
  request across suites either;
- adding rows to a file never moves an existing prompt to another split.

Shares: 60 % train (demonstrations, RL prompts), 20 % dev (the recipe's evaluations and model
selection), 20 % test (untouched by the recipe; for a final report).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Literal, TypeVar, get_args

__all__ = ["SPLIT_SHARES", "Split", "normalise_prompt", "prompt_split", "select_split"]

Split = Literal["train", "dev", "test"]

SPLIT_SHARES: dict[Split, float] = {"train": 0.6, "dev": 0.2, "test": 0.2}
"""Expected share of prompts in each split (in this order along [0, 1))."""

_SALT = "safe-context-agent/split/v1\n"
"""Changing the salt reshuffles every split: never do it for a released recipe."""

_NON_WORD = re.compile(r"[\W_]+")

_PromptT = TypeVar("_PromptT")


def normalise_prompt(text: str) -> str:
    """Compatibility-fold, case-fold and reduce to words separated by single spaces.

    ``"How do I kill a Python process?"`` and ``"how do i  KILL a python process"`` normalise
    alike; the words themselves (and their order) are kept.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NON_WORD.sub(" ", folded).split())


def _position(text: str) -> float:
    digest = hashlib.sha256((_SALT + normalise_prompt(text)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def prompt_split(text: str) -> Split:
    """The split ``text`` belongs to (the same answer everywhere, for every suite)."""
    position = _position(text)
    edge = 0.0
    for name in get_args(Split):
        edge += SPLIT_SHARES[name]
        if position < edge:
            return name
    return "test"  # float rounding at the very top of [0, 1)


def select_split(
    prompts: Iterable[_PromptT], split: Split, *, text_of: Callable[[_PromptT], str] | None = None
) -> list[_PromptT]:
    """The prompts of ``split``, in their order. Items are strings or have a ``prompt`` field
    (an :class:`~safe_context_agent.eval.EvalPrompt`); ``text_of`` overrides how to read them."""
    if split not in SPLIT_SHARES:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLIT_SHARES)}")
    read = text_of or _prompt_text
    return [item for item in prompts if prompt_split(read(item)) == split]


def _prompt_text(item: object) -> str:
    if isinstance(item, str):
        return item
    text = getattr(item, "prompt", None)
    if not isinstance(text, str):
        raise TypeError(f"cannot read a prompt from {type(item).__name__}; pass text_of=")
    return text
