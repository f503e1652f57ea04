"""One sync client and one async client per event loop, against a fake endpoint; closing them."""

from __future__ import annotations

import asyncio

from safe_context_agent import SafeContextAgent
from safe_context_agent._openai_clients import OpenAIClients
from safe_context_agent.client import ChatClient
from safe_context_agent.config import AgentConfig

MESSAGES = [{"role": "user", "content": "hi"}]


def _clients(base_url: str, made: list[int]) -> OpenAIClients:
    def options() -> dict:
        made.append(1)
        return {"base_url": base_url, "api_key": "EMPTY", "timeout": 5.0, "max_retries": 0}

    return OpenAIClients(options)


def test_one_async_client_per_loop_each_working_after_the_last_loop_closed(fake_server) -> None:
    base_url, bodies = fake_server
    made: list[int] = []
    clients = _clients(base_url, made)

    async def two_calls() -> tuple[object, str | None]:
        first = await clients.aget()
        assert clients.for_running_loop() is first  # the same loop reuses its client
        reply = await first.chat.completions.create(model="fake", messages=MESSAGES)
        again = await (await clients.aget()).chat.completions.create(
            model="fake", messages=MESSAGES
        )
        assert again.choices[0].message.content == "hi"
        return first, reply.choices[0].message.content

    # Each asyncio.run is a new loop: the second must not reuse the first loop's connections
    # (that fails with "Event loop is closed").
    first_loop_client, first_answer = asyncio.run(two_calls())
    second_loop_client, second_answer = asyncio.run(two_calls())
    assert first_answer == second_answer == "hi"
    assert first_loop_client is not second_loop_client
    assert len(made) == 2 and len(bodies) == 4
    assert clients.sync is clients.sync and len(made) == 3


def test_close_and_aclose_close_the_clients_they_hold(fake_server) -> None:
    base_url, _ = fake_server
    clients = _clients(base_url, [])
    assert clients.closed  # nothing made yet
    sync = clients.sync
    clients.close()
    assert sync.is_closed() and clients.closed

    async def use_then_close() -> tuple[object, object]:
        async_client = await clients.aget()
        await async_client.chat.completions.create(model="fake", messages=MESSAGES)
        sync_client = clients.sync
        assert not clients.closed
        await clients.aclose()
        return async_client, sync_client

    async_client, sync_client = asyncio.run(use_then_close())
    assert async_client.is_closed() and sync_client.is_closed() and clients.closed


def test_chat_client_closes_and_opens_again_on_the_next_call(fake_server) -> None:
    base_url, bodies = fake_server
    client = ChatClient(AgentConfig(base_url=base_url, model="fake"), base_url)
    request = client.request(MESSAGES, None)
    assert client.complete(request).content == "hi"
    client.close()
    assert client.closed
    assert client.complete(request).content == "hi"  # a closed client reconnects

    async def call_then_close() -> str | None:
        reply = await client.acomplete(request)
        await client.aclose()
        return reply.content

    assert asyncio.run(call_then_close()) == "hi"
    assert client.closed and len(bodies) == 3


def test_the_agent_closes_the_client_its_graph_made_and_leaves_a_given_one_open(
    fake_server,
) -> None:
    base_url, _ = fake_server
    config = AgentConfig(base_url=base_url, model="fake", mode="never")
    agent = SafeContextAgent(config)
    assert agent.invoke("Say hi.").answer == "hi"
    (made,) = agent.resources.owned_clients
    assert isinstance(made, ChatClient) and not made.closed
    agent.close()
    assert made.closed

    async def run_async() -> ChatClient:
        async with SafeContextAgent(config) as async_agent:
            assert (await async_agent.ainvoke("Say hi.")).answer == "hi"
            (client,) = async_agent.resources.owned_clients
            assert isinstance(client, ChatClient) and not client.closed
        return client

    assert asyncio.run(run_async()).closed

    given = ChatClient(config, base_url)
    with SafeContextAgent(config, client=given) as caller_owned:
        assert caller_owned.invoke("Say hi.").answer == "hi"
        assert caller_owned.resources.owned_clients == ()
    assert not given.closed  # the caller's to close
    given.close()
