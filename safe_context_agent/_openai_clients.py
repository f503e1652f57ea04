"""The OpenAI SDK clients of one endpoint: one sync client, and one async client per event loop.

An async client's pooled connections belong to the event loop that opened them. A caller that
runs ``asyncio.run`` twice (a script, a notebook cell after another, a test) would otherwise
reuse a dead loop's connections and fail with "Event loop is closed", so each loop gets its own
client, made on first use in it and forgotten with it (the map holds loops weakly).

The ``openai`` package is imported when the first client is made, so modules that only may call
an endpoint (the LLM judge) stay light to import.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai

__all__ = ["OpenAIClients"]


class OpenAIClients:
    """Clients made lazily from ``options()`` (the keyword arguments of ``openai.OpenAI``:
    ``base_url``, ``api_key``, ``timeout``, ...), called once per client made, so a key read
    from the environment there is read when the client is made and kept nowhere else."""

    def __init__(self, options: Callable[[], dict[str, Any]]) -> None:
        self._options = options
        self._sync: openai.OpenAI | None = None
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def sync(self) -> openai.OpenAI:
        """The sync client (one, made on first use)."""
        if self._sync is None:
            import openai

            self._sync = openai.OpenAI(**self._options())
        return self._sync

    def _new_async(self) -> openai.AsyncOpenAI:
        import openai

        options = self._options()
        # The SDK's own default HTTP client has a finaliser that schedules closing its
        # connections on whatever loop is running when it is collected, which is a later loop
        # once its own has closed; the plain default client leaves those connections to their
        # loop instead.
        return openai.AsyncOpenAI(
            **options, http_client=openai.DefaultAsyncHttpxClient(timeout=options.get("timeout"))
        )

    def for_running_loop(self) -> openai.AsyncOpenAI:
        """The running loop's async client, made here when it is new (reads the CA bundle from
        disk: in async code prefer :meth:`aget`)."""
        loop = asyncio.get_running_loop()
        client = self._by_loop.get(loop)
        if client is None:
            client = self._by_loop.setdefault(loop, self._new_async())
        return client

    async def aget(self) -> openai.AsyncOpenAI:
        """:meth:`for_running_loop`, made in a worker thread when it is new: building an HTTP
        client reads the CA bundle from disk, which must not block the event loop (LangGraph
        Server's blocking-call detector fails the run that does)."""
        loop = asyncio.get_running_loop()
        client = self._by_loop.get(loop)
        if client is None:
            made = await asyncio.to_thread(self._new_async)
            client = self._by_loop.setdefault(loop, made)
        return client

    @property
    def closed(self) -> bool:
        """True when no client is open (none made yet, or all closed)."""
        return self._sync is None and not self._by_loop

    def close(self) -> None:
        """Close the sync client and forget the async ones: an async client closes only on its
        own loop (:meth:`aclose` there), and one whose loop has ended lost its connections
        with it."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        self._by_loop.clear()

    async def aclose(self) -> None:
        """Close the running loop's async client (its connections close on this loop), then
        the rest as :meth:`close` does."""
        client = self._by_loop.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()
        self.close()
