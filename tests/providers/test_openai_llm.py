"""OpenAiLlm against the OpenAI emulator: streaming text, tool calls, timeouts and the error mapping."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time

import pytest

from emulators.server import EmulatorServer
from providers.settings import Settings
from providers.base import ProviderAuthError, ProviderError, ProviderTimeout, ToolCall, ToolCallStarted
from providers.http_pool import SPARE_CONNECTIONS, SparePool
from providers.openai_llm import LlmTimeouts, OpenAiLlm, retry_after_seconds
from provider_helpers import closed_port

MESSAGES = [{"role": "system", "content": "You book appointments."}, {"role": "user", "content": "Hi there"}]
TOOLS = [{"type": "function", "function": {"name": "transfer_call", "description": "Transfer the caller.",
                                           "parameters": {"type": "object",
                                                          "properties": {"department": {"type": "string"}}}}}]


def make_llm(emu: EmulatorServer | None, key: str = "sk-test-key", **kwargs: object) -> OpenAiLlm:
    base = f"{emu.url}/v1" if emu is not None else f"http://127.0.0.1:{closed_port()}/v1"
    return OpenAiLlm(Settings(openai_api_key=key, openai_base_url=base), **kwargs)  # type: ignore[arg-type]


async def collect(llm: OpenAiLlm, **kwargs: object) -> list[object]:
    out: list[object] = []
    try:
        async for chunk in llm.stream(MESSAGES, **kwargs):  # type: ignore[arg-type]
            out.append(chunk)
    finally:
        await llm.aclose()
    return out


async def test_text_streams_as_deltas(emu: EmulatorServer) -> None:
    emu.config.openai.script = ["Sure, what day works for you?"]
    llm = make_llm(emu)
    assert llm.name == "gpt-4o-mini"
    chunks = await collect(llm)
    assert len(chunks) > 3 and all(isinstance(c, str) for c in chunks)
    assert "".join(chunks) == "Sure, what day works for you?"  # type: ignore[arg-type]
    record = emu.log.openai[0]
    assert record["body"]["stream"] is True
    assert record["body"]["stream_options"] == {"include_usage": True}
    assert record["max_tokens"] == 150 and "tools" not in record["body"]
    assert record["headers"]["x-stainless-retry-count"] == "0"


async def test_tool_call_is_reassembled_from_pieces(emu: EmulatorServer) -> None:
    emu.config.openai.script = [{"tool": "transfer_call", "arguments": {"department": "billing", "reason": "refund"},
                                 "text": "One moment."}]
    chunks = await collect(make_llm(emu), tools=TOOLS, max_tokens=60)
    text = "".join(c for c in chunks if isinstance(c, str))
    calls = [c for c in chunks if isinstance(c, ToolCall)]
    assert text == "One moment."
    assert len(calls) == 1 and calls[0].name == "transfer_call" and calls[0].id.startswith("call_")
    assert json.loads(calls[0].arguments) == {"department": "billing", "reason": "refund"}
    assert chunks[-1] == calls[0]  # yielded once whole, after the text
    # Its start came first, right after the text, with the id and name, before the arguments were whole.
    (started,) = [c for c in chunks if isinstance(c, ToolCallStarted)]
    assert chunks.index(started) == len(chunks) - 2 and (started.id, started.name) == (calls[0].id, "transfer_call")
    record = emu.log.openai[0]
    assert record["tools"] == TOOLS and record["max_tokens"] == 60


async def test_a_tool_call_starts_at_the_first_token_not_after_its_arguments(emu: EmulatorServer) -> None:
    emu.config.llm_first_token = 0.2
    emu.config.llm_token_rate = 20.0  # 8 characters of arguments every 50 ms: ~0.3 s more for these
    emu.config.openai.script = [{"tool": "transfer_call", "arguments": {"department": "billing",
                                                                          "reason": "a refund for last month"}}]
    llm = make_llm(emu)
    loop = asyncio.get_running_loop()
    started = loop.time()
    arrivals: list[tuple[object, float]] = []
    try:
        async for chunk in llm.stream(MESSAGES, tools=TOOLS):
            arrivals.append((chunk, loop.time() - started))
    finally:
        await llm.aclose()
    (begun, begun_at), (call, call_at) = arrivals
    assert isinstance(begun, ToolCallStarted) and isinstance(call, ToolCall) and begun.id == call.id
    assert 0.2 <= begun_at < 0.35 and call_at - begun_at >= 0.25
    assert emu.log.openai[0]["tokens_sent"] > 6  # the arguments came in many pieces


async def test_stall_before_first_token_times_out_within_budget(emu: EmulatorServer) -> None:
    emu.config.openai.fault = "stall"
    llm = make_llm(emu, timeouts=LlmTimeouts(first_token=0.5, between_tokens=5.0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderTimeout) as caught:
        await collect(llm)
    assert loop.time() - started < 2.0
    assert caught.value.retryable and not caught.value.heard_anything


async def test_first_token_budget_is_not_cut_short_by_the_between_token_budget(emu: EmulatorServer) -> None:
    emu.config.llm_first_token = 1.0  # slow to start, but within the 1.5 s first-token budget
    llm = make_llm(emu, timeouts=LlmTimeouts(first_token=1.5, between_tokens=0.4))
    chunks = await collect(llm)
    assert "".join(c for c in chunks if isinstance(c, str))


async def test_a_stall_between_tokens_times_out_after_text(emu: EmulatorServer) -> None:
    emu.config.llm_first_token = 0.05
    emu.config.llm_token_rate = 1.0  # a token a second: a stall against a 0.4 s between-token budget
    llm = make_llm(emu, timeouts=LlmTimeouts(first_token=2.0, between_tokens=0.4))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderTimeout) as caught:
        await collect(llm)
    assert loop.time() - started < 3.0
    assert caught.value.heard_anything and not caught.value.retryable


async def test_rate_limit_is_retryable_with_retry_after(emu: EmulatorServer) -> None:
    emu.config.merge({"openai": {"fault": "error429", "fault_count": 1, "retry_after": 2.5}})
    llm = make_llm(emu)
    with pytest.raises(ProviderError) as caught:
        await collect(llm)
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after) == (429, True, 2.5)
    assert len(emu.log.openai) == 1  # the SDK's own retries are off
    assert llm.counters.errors == 1
    assert "".join(await collect(make_llm(emu)))  # the fault was for one request only  # type: ignore[arg-type]


async def test_server_error_is_retryable(emu: EmulatorServer) -> None:
    emu.config.openai.fault = "error500"
    with pytest.raises(ProviderError) as caught:
        await collect(make_llm(emu))
    assert (caught.value.status, caught.value.retryable, caught.value.heard_anything) == (500, True, False)
    assert not isinstance(caught.value, ProviderTimeout)


async def test_midstream_error_after_text_says_the_caller_heard_something(emu: EmulatorServer) -> None:
    emu.config.merge({"openai": {"fault": "midstream", "fault_after_tokens": 3}})
    emu.config.openai.script = ["Let me check the calendar for you."]
    llm = make_llm(emu)
    got: list[object] = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in llm.stream(MESSAGES):
            got.append(chunk)
    await llm.aclose()
    assert "".join(got) == "Let me check"  # type: ignore[arg-type]
    assert caught.value.heard_anything and not caught.value.retryable
    assert "overloaded" in str(caught.value)


async def test_dropped_connection_mid_stream(emu: EmulatorServer) -> None:
    emu.config.merge({"openai": {"fault": "drop", "fault_after_tokens": 2}})
    with pytest.raises(ProviderError) as caught:
        await collect(make_llm(emu))
    assert caught.value.heard_anything


async def test_refused_key_is_an_auth_error(emu: EmulatorServer) -> None:
    emu.config.openai.bad_keys = ["sk-bad-key-123456"]
    with pytest.raises(ProviderAuthError) as caught:
        await collect(make_llm(emu, key="sk-bad-key-123456"))
    assert caught.value.status == 401 and not caught.value.retryable
    assert "sk-bad" not in str(caught.value)


async def test_unreachable_server_is_retryable() -> None:
    with pytest.raises(ProviderError) as caught:
        await collect(make_llm(None))
    assert caught.value.retryable and caught.value.status is None


async def test_warm_opens_the_connection_and_never_raises(emu: EmulatorServer) -> None:
    llm = make_llm(emu)
    assert await llm.warm() is True
    assert emu.log.openai[0]["path"] == "/v1/models"
    await llm.aclose()
    dead = make_llm(None)
    started = time.monotonic()
    assert await dead.warm() is False
    assert time.monotonic() - started < 4.0
    await dead.aclose()


async def test_replies_find_their_connections_already_open(emu: EmulatorServer) -> None:
    emu.config.openai.script = ["Sure."] * 40
    llm = make_llm(emu)

    async def reply() -> str:
        return "".join([c async for c in llm.stream(MESSAGES)])  # type: ignore[misc]

    try:
        assert await llm.warm() is True
        opened_by_requests = llm.pool.dry  # the warm-up's own GET /models
        # The warmed connection and the spares serve this many replies at once, none of them
        # waiting for a handshake.
        assert await asyncio.gather(*[reply() for _ in range(1 + SPARE_CONNECTIONS)]) == ["Sure."] * 3
        assert llm.pool.dry == opened_by_requests
        # A bigger burst opens what it lacks, and the pool is topped up ahead of the next one.
        burst = 2 * (1 + SPARE_CONNECTIONS)
        await asyncio.gather(*[reply() for _ in range(burst)])
        assert llm.pool.dry == opened_by_requests + burst - (1 + SPARE_CONNECTIONS)
        await llm.pool.settled()
        opened_by_requests = llm.pool.dry
        await asyncio.gather(*[reply() for _ in range(burst + SPARE_CONNECTIONS)])
        assert llm.pool.dry == opened_by_requests
    finally:
        await llm.aclose()


async def test_spares_that_cannot_open_fail_nothing() -> None:
    pool = SparePool(f"http://127.0.0.1:{closed_port()}/v1", connect_timeout=0.5)
    pool()  # the session, as the transport makes it at its first request
    pool.top_up()
    await pool.settled()
    assert pool.handed == 0
    await pool.aclose()


async def test_fallback_model_on_a_second_server(emu: EmulatorServer) -> None:
    settings = Settings(openai_api_key="sk-a", openai_base_url=f"http://127.0.0.1:{closed_port()}/v1",
                        openai_fallback_model="gpt-4o")
    fallback = OpenAiLlm.fallback(settings, base_url=f"{emu.url}/v1", api_key="sk-b")
    assert fallback is not None and fallback.name == "gpt-4o"
    chunks = await collect(fallback)
    assert chunks and emu.log.openai[0]["model"] == "gpt-4o"
    assert OpenAiLlm.fallback(Settings(openai_api_key="sk-a")) is None


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_seconds({"retry-after": future}) <= 30  # type: ignore[operator]
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


async def test_cancel_mid_stream_then_the_next_request_works(emu: EmulatorServer) -> None:
    emu.config.llm_token_rate = 20.0  # slow enough to interrupt
    emu.config.openai.script = ["One two three four five six seven eight nine ten.", "Hello again."]
    llm = make_llm(emu)
    got: list[object] = []

    async def consume() -> None:
        async for chunk in llm.stream(MESSAGES):
            got.append(chunk)

    task = asyncio.create_task(consume())
    while not got:
        await asyncio.sleep(0.01)
    task.cancel()  # barge-in
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "".join(await collect(llm)) == "Hello again."  # type: ignore[arg-type]
    assert emu.log.openai[0]["tokens_sent"] < 10
