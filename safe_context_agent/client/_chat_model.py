"""``ChatVLLM``: a LangChain chat model on the project's client, keeping vLLM's token ids.

``ChatOpenAI`` on a vLLM endpoint keeps the logprobs but drops the prompt and completion token
ids, so an app built on it cannot log traces that replay token-exactly. This model sends the same
requests the agent's graph sends (``return_token_ids``, ``logprobs``, the text fallback for tool
calls) and puts what came back in ``response_metadata``; the graph's model node calls it too, so
``stream_mode="messages"`` gets token chunks as from any LangChain chat model.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from safe_context_agent.client._chat import ChatClient, ModelReply
from safe_context_agent.client._messages import history_to_wire, message_from_reply

__all__ = ["ChatVLLM"]

REQUEST_KEY = "sca_request"
"""Invocation keyword of the agent's graph: the request it prepared (its own system prompt and
tools); ``messages`` are then only what callbacks and tracers are shown."""
REPLY_KEY = "sca_reply"
"""Invocation keyword of the agent's graph: a list the :class:`ModelReply` is appended to."""


class ChatVLLM(BaseChatModel):
    """A chat model for OpenAI-compatible vLLM endpoints that keeps token ids and logprobs.

    Arguments follow ``ChatOpenAI``'s names; ``model=None`` asks the server for its (first)
    model. ``response_metadata`` of each reply holds ``prompt_token_ids``,
    ``completion_token_ids``, ``logprobs``, ``finish_reason`` and ``token_usage``.

    >>> llm = ChatVLLM(base_url="http://127.0.0.1:8000/v1", max_tokens=64)  # doctest: +SKIP
    >>> llm.bind_tools([lookup_order]).invoke("Where is order A1001?").tool_calls  # doctest: +SKIP
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    base_url: str | None = None
    """The endpoint, ending in /v1; None: ``$SCA_BASE_URL`` or the server ``sca serve`` started."""
    model: str | None = Field(default=None, alias="model_name")
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int | None = 256
    stop: list[str] | None = None
    api_key: SecretStr | None = None
    """Defaults to ``$SCA_API_KEY`` (vLLM started without a key accepts any)."""
    timeout: float = 60.0
    max_retries: int = 2
    logprobs: bool = True
    return_token_ids: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    client: Any = Field(default=None, exclude=True)
    """A ready client (``ChatClient`` or anything with its ``request``/``complete``/``stream``
    methods); built from the fields above when None."""

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _resolved_model: str | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "vllm-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url, "temperature": self.temperature}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "vllm"
        model = self._resolved_model or self.model
        if model:
            params["ls_model_name"] = model
        return params

    # -- the client ------------------------------------------------------------------------
    def _client(self) -> Any:
        if self.client is None:
            with self._lock:
                if self.client is None:
                    object.__setattr__(self, "client", self._build_client())
        return self.client

    def _build_client(self) -> ChatClient:
        import os

        from safe_context_agent.config import AgentConfig, SamplingParams
        from safe_context_agent.serve import find_endpoint

        endpoint = find_endpoint(self.base_url)
        if endpoint is None:
            from safe_context_agent.errors import ConfigError

            raise ConfigError(
                "ChatVLLM has no endpoint: pass base_url=..., set $SCA_BASE_URL, or start one with: sca serve"
            )
        if self.api_key is not None:
            os.environ.setdefault("SCA_API_KEY", self.api_key.get_secret_value())
        config = AgentConfig(
            base_url=endpoint.base_url,
            model=self.model or "unset",
            sampling=SamplingParams(
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=self.max_tokens or 256,
                stop=self.stop,
            ),
            logprobs=self.logprobs,
            return_token_ids=self.return_token_ids,
            chat_template_kwargs=self.chat_template_kwargs,
            request_timeout_s=self.timeout,
            max_retries=self.max_retries,
        )
        client = ChatClient(config, endpoint.base_url)
        if self.model is None:
            # The server's default: vLLM lists the base model first, then its LoRA adapters.
            served = [m.id for m in client.sync_client.models.list().data]
            if not served:
                raise ValueError(f"the endpoint {client.base_url} serves no model; pass model=...")
            config.model = served[0]
        self._resolved_model = config.model
        return client

    # -- requests --------------------------------------------------------------------------
    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], list[ModelReply] | None]:
        replies = kwargs.pop(REPLY_KEY, None)
        prepared = kwargs.pop(REQUEST_KEY, None)
        kwargs.pop("stream", None)  # BaseChatModel's switch for the streaming path, not a field
        client = self._client()
        if prepared is not None:
            return prepared, replies
        tools = kwargs.pop("tools", None)
        request = client.request(history_to_wire(messages, None), tools or None)
        if stop:
            request["stop"] = stop
        if "tool_choice" in kwargs and tools:
            request["tool_choice"] = kwargs.pop("tool_choice")
        request.update(kwargs)
        return request, replies

    def _result(self, reply: ModelReply, replies: list[ModelReply] | None) -> ChatResult:
        if replies is not None:
            replies.append(reply)
        message = message_from_reply(reply, model=self._resolved_model or self.model)
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"model_name": message.response_metadata.get("model_name")},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request, replies = self._request(messages, stop, kwargs)
        return self._result(self._client().complete(request), replies)

    async def _aready(self) -> None:
        # Building the client may ask the server for its model: never on the event loop.
        if self.client is None:
            await asyncio.to_thread(self._client)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await self._aready()
        request, replies = self._request(messages, stop, kwargs)
        return self._result(await self._client().acomplete(request), replies)

    def _last_chunk(
        self, reply: ModelReply, replies: list[ModelReply] | None
    ) -> ChatGenerationChunk:
        """The closing chunk: no text (the deltas carried it), the calls, ids and usage."""
        if replies is not None:
            replies.append(reply)
        whole = message_from_reply(reply, model=self._resolved_model or self.model)
        chunks = [
            tool_call_chunk(name=c["name"], args=_json(c["args"]), id=c["id"], index=i)
            for i, c in enumerate(whole.tool_calls)
        ]
        offset = len(chunks)
        # An unparseable call travels as a chunk whose args are not JSON: aggregating the stream
        # turns it back into an invalid tool call.
        chunks += [
            tool_call_chunk(name=c["name"], args=c["args"], id=c["id"], index=offset + i)
            for i, c in enumerate(whole.invalid_tool_calls)
        ]
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=chunks,
                response_metadata=whole.response_metadata,
                usage_metadata=whole.usage_metadata,
                chunk_position="last",
            )
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request, replies = self._request(messages, stop, kwargs)
        for item in self._client().stream(request):
            if isinstance(item, ModelReply):
                yield self._last_chunk(item, replies)
            else:
                # BaseChatModel reports each chunk to the callbacks (stream_mode="messages").
                yield ChatGenerationChunk(message=AIMessageChunk(content=item))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        await self._aready()
        request, replies = self._request(messages, stop, kwargs)
        async for item in self._client().astream(request):
            if isinstance(item, ModelReply):
                yield self._last_chunk(item, replies)
            else:
                yield ChatGenerationChunk(message=AIMessageChunk(content=item))

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` (LangChain tools, functions, pydantic models or OpenAI dicts)."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        bound: dict[str, Any] = {"tools": formatted, **kwargs}
        if tool_choice in ("auto", "none", "required"):
            bound["tool_choice"] = tool_choice
        elif tool_choice is not None:  # a tool's name: that tool, by OpenAI's object form
            bound["tool_choice"] = {"type": "function", "function": {"name": tool_choice}}
        return self.bind(**bound)


def _json(args: dict[str, Any]) -> str:
    import json

    return json.dumps(args, ensure_ascii=False)
