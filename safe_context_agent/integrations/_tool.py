"""``make_consult_tool``: the consult action as a LangChain tool, for any graph or agent.

The same retrieval and the same short rule listing the agent's graph gives the model
(``graph._tool``), as a ``StructuredTool`` with ``response_format="content_and_artifact"``: the
model reads the listing, the app (and the middleware's trace) reads the artifact.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from langchain_core.tools import StructuredTool, ToolException
from pydantic import BaseModel, Field

from safe_context_agent.config import AgentConfig
from safe_context_agent.graph import (
    CONSULT_TOOL,
    CONSULT_TOOL_NAME,
    AgentResources,
    Retriever,
    format_rules,
)
from safe_context_agent.graph._tool import RULES_UNAVAILABLE

__all__ = ["ConsultArtifact", "ConsultInput", "make_consult_tool"]

_PARAMETERS = CONSULT_TOOL["function"]["parameters"]["properties"]


class ConsultInput(BaseModel):
    """The arguments the model gives (the schema the graph offers, as a pydantic model)."""

    query: str = Field(description=_PARAMETERS["query"]["description"], min_length=1)
    category: str | None = Field(default=None, description=_PARAMETERS["category"]["description"])


class ConsultArtifact(TypedDict):
    """``ToolMessage.artifact`` of a consultation: what was retrieved, for the app and traces."""

    query: str
    category: str | None
    """The category searched (None when the model gave none, or one the pack does not have)."""
    pack: str
    rules: list[dict[str, Any]]
    """``{"id", "category", "score"}`` per rule, best first."""


def _handle_error(error: ToolException) -> str:
    return f"{RULES_UNAVAILABLE} ({error})"


def make_consult_tool(
    pack: str = "general",
    *,
    k: int = 3,
    embedding_model: str | None = None,
    retriever: Retriever | None = None,
    resources: AgentResources | None = None,
) -> StructuredTool:
    """``consult_safety_rules`` over ``pack`` (a built-in name or a pack folder), top ``k`` rules.

    Usable in ``ToolNode``, ``create_agent`` or any graph; sync and async (the async path runs
    retrieval in a worker thread, so an event loop never blocks on the embedder). The rule index
    opens on the first call. A retrieval that fails becomes a tool message with
    ``status="error"`` saying the rules are unavailable (the app decides what a failure means;
    the graph and the middleware fail closed).

    >>> tool = make_consult_tool(pack="general", k=3)  # doctest: +SKIP
    >>> message = tool.invoke({"type": "tool_call", "id": "1", "name": tool.name,
    ...                        "args": {"query": "killing a process"}})  # doctest: +SKIP
    >>> message.artifact["rules"][0]["id"]  # doctest: +SKIP
    """
    if resources is None:
        options: dict[str, Any] = {"pack": pack, "k": k}
        if embedding_model is not None:
            options["embedding_model"] = embedding_model
        resources = AgentResources(AgentConfig(**options), retriever=retriever)

    def consult(query: str, category: str | None = None) -> tuple[str, ConsultArtifact]:
        searched = resources.known_category(category)
        try:
            results = list(resources.retrieve(query, searched))
        except Exception as exc:  # any index failure: reported to the model as a tool error
            raise ToolException(f"{type(exc).__name__}: {exc}") from exc
        artifact: ConsultArtifact = {
            "query": query,
            "category": searched,
            "pack": resources.config.pack,
            "rules": [
                {"id": r.rule.id, "category": r.rule.category, "score": float(r.score)}
                for r in results
            ],
        }
        return format_rules(results), artifact

    async def aconsult(query: str, category: str | None = None) -> tuple[str, ConsultArtifact]:
        return await asyncio.to_thread(consult, query, category)

    return StructuredTool.from_function(
        func=consult,
        coroutine=aconsult,
        name=CONSULT_TOOL_NAME,
        description=CONSULT_TOOL["function"]["description"],
        args_schema=ConsultInput,
        response_format="content_and_artifact",
        handle_tool_error=_handle_error,
    )
