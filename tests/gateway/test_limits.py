"""Limits: concurrent calls, call duration and idle timeout, each a named setting, on the real server."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import urllib.request

import pytest
import websockets

from gateway import twilio_protocol as tp
from tests.support import run_gateway

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def limited_gateway():
    env = {"MAX_CONCURRENT_CALLS": "1", "MAX_CALL_SECONDS": "4", "IDLE_TIMEOUT_SECONDS": "2"}
    with run_gateway(env=env) as gateway:
        yield gateway


async def _start(url: str, sid: str):
    ws = await websockets.connect(url)
    await ws.send(tp.connected_message())
    await ws.send(tp.start_message("MZ" + sid, "CA" + sid))
    return ws


async def _closed_code(ws, within: float) -> int | None:
    try:
        async with asyncio.timeout(within):
            while True:
                message = tp.parse(await ws.recv())
                if isinstance(message, tp.Mark):  # play along: echo marks so replies complete
                    await ws.send(tp.mark_echo_message(message.stream_sid, message.name, 1))
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def test_over_capacity_is_refused_with_a_clear_code_and_busy_twiml(limited_gateway):
    first = await _start(limited_gateway.media_url, "first")
    await asyncio.sleep(0.3)
    second = await websockets.connect(limited_gateway.media_url)
    assert await _closed_code(second, 5) == 4029
    data = urllib.parse.urlencode({"CallSid": "CAthird", "From": "+15550001111"}).encode()
    with urllib.request.urlopen(urllib.request.Request(limited_gateway.url + "/twilio/voice", data=data), timeout=5) as r:
        assert "<Reject" in r.read().decode()
    await first.close()


async def test_idle_call_is_ended(limited_gateway):
    await asyncio.sleep(0.5)  # the previous test's call is gone
    ws = await _start(limited_gateway.media_url, "idle")
    started = time.monotonic()
    code = await _closed_code(ws, 10)  # sends nothing: ended after IDLE_TIMEOUT_SECONDS
    assert code == 1000 and 1.5 < time.monotonic() - started < 8
    assert limited_gateway.stored_call("CAidle")["end_reason"] == "hangup:idle"


async def test_call_longer_than_max_is_ended(limited_gateway):
    ws = await _start(limited_gateway.media_url, "long")
    started = time.monotonic()

    async def talk() -> None:
        chunk = 1
        while True:
            await ws.send(tp.inbound_media_message("MZlong", b"\xff" * 160, chunk + 1, chunk, chunk * 20))
            chunk += 1
            await asyncio.sleep(0.02)

    sender = asyncio.create_task(talk())
    code = await _closed_code(ws, 15)
    sender.cancel()
    assert code == 1000 and 3.5 < time.monotonic() - started < 12
    assert limited_gateway.stored_call("CAlong")["end_reason"] == "hangup:max_duration"
