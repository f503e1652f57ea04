"""The default category taxonomy every rule pack may use without declaring it."""

from __future__ import annotations

__all__ = ["DEFAULT_CATEGORIES"]

# Ids are a fixed contract with the pack writers; descriptions are for people (docs, `sca rules stats`).
DEFAULT_CATEGORIES: dict[str, str] = {
    "violent_crimes": "Planning or carrying out violence against people or animals.",
    "weapons": "Making, acquiring or modifying conventional weapons and explosives.",
    "cbrn_weapons": "Chemical, biological, radiological and nuclear weapons.",
    "terrorism_extremism": "Terrorist attacks, violent extremist groups and their propaganda.",
    "cybercrime": "Intrusion, malware and attacks on computer systems.",
    "fraud_scams": "Deceiving people or institutions for money or access.",
    "illegal_goods": "Drugs, trafficking and other illegal trade.",
    "sex_crimes": "Sexual violence, exploitation and non-consensual imagery.",
    "child_safety": "Anything that could harm or sexualise minors.",
    "sexual_content": "Explicit sexual material between adults.",
    "hate_harassment": "Demeaning protected groups, bullying and threats.",
    "self_harm": "Suicide, self-injury and eating disorders.",
    "privacy": "Personal data, surveillance and doxxing.",
    "intellectual_property": "Reproducing or circumventing protection of others' work.",
    "defamation": "False statements that damage a real person's or company's reputation.",
    "misinformation": "Fabricated claims and disinformation campaigns.",
    "specialized_advice": "Medical, legal and financial advice that needs care.",
    "benign_sensitive": (
        "Requests that sound risky but are fine: definitions, history, fiction, safety education, "
        "homonyms, public facts about public figures."
    ),
}
