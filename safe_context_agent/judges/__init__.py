"""Judges shared by evaluation and training rewards.

- Refusal: :func:`judge_refusal` / :class:`RefusalJudge` (phrase patterns, no model) and
  :class:`LLMJudge` (a rubric prompt to an OpenAI-compatible endpoint). Both implement
  :class:`Judge` and return a :class:`RefusalVerdict`; :func:`make_judge` picks one by name.
- Echo: :func:`judge_echo` / :func:`judge_trace_echo`: an answer that repeats the retrieved
  rules instead of answering (neither a refusal nor help).
- Task correctness: :func:`extract_final_number` and :func:`numeric_match` (GSM8K-style).
"""

from safe_context_agent.judges._correctness import (
    extract_final_number,
    format_number,
    gsm8k_reference,
    numeric_match,
)
from safe_context_agent.judges._echo import (
    ECHO_THRESHOLD,
    EchoVerdict,
    judge_echo,
    judge_trace_echo,
    rule_context,
)
from safe_context_agent.judges._llm import LLMJudge, LLMJudgeStats, parse_llm_verdict
from safe_context_agent.judges._refusal import RefusalJudge, judge_refusal
from safe_context_agent.judges._select import JudgeKind, make_judge
from safe_context_agent.judges._verdict import Judge, RefusalLabel, RefusalVerdict
from safe_context_agent.judges._visible import visible_answer

__all__ = [
    "ECHO_THRESHOLD",
    "EchoVerdict",
    "Judge",
    "JudgeKind",
    "LLMJudge",
    "LLMJudgeStats",
    "RefusalJudge",
    "RefusalLabel",
    "RefusalVerdict",
    "extract_final_number",
    "format_number",
    "gsm8k_reference",
    "judge_echo",
    "judge_refusal",
    "judge_trace_echo",
    "make_judge",
    "numeric_match",
    "parse_llm_verdict",
    "rule_context",
    "visible_answer",
]
