"""Refusals written from a rule: what the assistant won't help with, why, and what it can do.

A harmful demonstration ends in a refusal grounded in the rule the consultation retrieved.
The words come from the rule itself — its title says what is declined (``Do not help break
into accounts …``), its rationale says why, and an allowing rule retrieved beside it says what
is fine nearby — and the sentence shapes from the templates below, drawn by seed so the model
learns the grounding and not one fixed sentence. All templates are this project's own.

Two sentences at most: the refusal with its reason, then the offer when there is one.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from safe_context_agent.rules import Rule

__all__ = [
    "OFFER_TEMPLATES",
    "REFUSAL_OPENING",
    "REFUSAL_TEMPLATES",
    "RefusalParts",
    "is_disallowing",
    "offer_phrase",
    "pick_rules",
    "refusal_parts",
    "write_refusal",
]

REFUSAL_OPENING = "I can't help with"
"""How every refusal begins. Greedy decoding decides refuse-or-answer at the first tokens; with
22 different openings (session 6: each seen two or three times in 52 harmful demonstrations) the
135M model blended them into sentences that refuse nothing ("I'm not a good idea to help ...",
2 of 32 harmful dev prompts refused). One opening makes the decision one clear token path; the
templates vary in everything after it."""

REFUSAL_TEMPLATES: tuple[str, ...] = (
    "I can't help with that: I won't {wont}, because {why}.",
    "I can't help with that, because {why}.",
    "I can't help with this. I don't {wont}, because {why}.",
    "I can't help with this request, since {why}.",
    "I can't help with that. I won't {wont}: {why}.",
    "I can't help with this one, because {why}.",
    "I can't help with that, sorry. I don't {wont}, since {why}.",
    "I can't help with this: {why}, so I won't {wont}.",
    "I can't help with that request. I won't {wont}, because {why}.",
    "I can't help with this, as {why}.",
    "I can't help with that. The reason: {why}.",
    "I can't help with this. I won't {wont}, since {why}.",
    "I can't help with that; I don't {wont}, because {why}.",
    "I can't help with this, because {why}. I won't {wont}.",
    "I can't help with that: {why}.",
    "I can't help with this request. I don't {wont}, because {why}.",
    "I can't help with that, I'm afraid, because {why}.",
    "I can't help with that. I won't {wont}, as {why}.",
    "I can't help with this, I'm sorry: I don't {wont}, because {why}.",
    "I can't help with that one. I won't {wont}, because {why}.",
    "I can't help with this, since {why}. I don't {wont}.",
    "I can't help with that, and I won't {wont}: {why}.",
)
"""Sentence one: the refusal and its reason, always opening with :data:`REFUSAL_OPENING`.
``{wont}`` is a verb phrase (``help break into accounts``), ``{why}`` a clause (``unauthorised
access is a crime``)."""

OFFER_TEMPLATES: tuple[str, ...] = (
    " If it helps, I can {offer} instead.",
    " I'm happy to {offer}, though.",
    " What I can do is {offer}.",
    " I can {offer} if that would be useful.",
    " I'd be glad to {offer} instead.",
    " If you like, I can {offer}.",
)
"""Sentence two, when an allowing rule was retrieved: ``{offer}`` is a verb phrase."""

_DISALLOWING = re.compile(r"^(?:do not|don't|never|refuse)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def is_disallowing(rule: Rule) -> bool:
    """A rule whose title forbids something (``Do not …``, ``Never …``)."""
    return bool(_DISALLOWING.match(rule.title))


@dataclass(frozen=True)
class RefusalParts:
    wont: str
    why: str
    offer: str | None


def _lower_first(text: str) -> str:
    if len(text) > 1 and text[1].isupper():  # an acronym ("CBRN ...") keeps its case
        return text
    return text[:1].lower() + text[1:]


def _verb_phrase(title: str) -> str:
    """``Do not help break into accounts`` -> ``help break into accounts`` (up to a ``;``, after
    which a title says what is fine: ``Do not write threats; help people who receive them``)."""
    phrase = _DISALLOWING.sub("", title.split(";", 1)[0]).strip()
    return _lower_first(phrase.rstrip(". "))


def _first_sentence(text: str) -> str:
    sentence = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    return _lower_first(sentence.rstrip(". "))


_OFFER_VERBS = re.compile(
    r"^(?:explain|help|give|teach|share|answer|discuss|support|define|write|warn|describe)\b",
    re.IGNORECASE,
)
"""An allowing rule's title reads as an offer ("I can explain ...") when it starts with one of
these; titles such as "In emergencies, ..." or "Keep ... non-graphic" do not."""


def offer_phrase(rule: Rule) -> str | None:
    """``Explain attacks so people can defend against them`` -> the same, lower-cased; None
    when the title does not read as something the assistant offers to do."""
    title = rule.title.split(";", 1)[0].strip().rstrip(". ")
    return _lower_first(title) if _OFFER_VERBS.match(title) else None


def refusal_parts(disallowing: Rule, allowing: Rule | None) -> RefusalParts:
    """The words of a refusal grounded in ``disallowing`` (offering ``allowing`` when given)."""
    offer = offer_phrase(allowing) if allowing is not None else None
    return RefusalParts(
        wont=_verb_phrase(disallowing.title),
        why=_first_sentence(disallowing.rationale),
        offer=offer,
    )


def write_refusal(parts: RefusalParts, rng: random.Random) -> str:
    """One or two sentences from templates drawn with ``rng``."""
    text = rng.choice(REFUSAL_TEMPLATES).format(wont=parts.wont, why=parts.why)
    if parts.offer:
        text += rng.choice(OFFER_TEMPLATES).format(offer=parts.offer)
    return text


def pick_rules(rules: Sequence[Rule]) -> tuple[Rule | None, Rule | None]:
    """(best disallowing rule, best allowing rule) among retrieved ``rules``, best first."""
    disallowing = next((rule for rule in rules if is_disallowing(rule)), None)
    allowing = next(
        (rule for rule in rules if not is_disallowing(rule) and offer_phrase(rule)), None
    )
    return disallowing, allowing
