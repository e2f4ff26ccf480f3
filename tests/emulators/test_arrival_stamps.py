"""The emulators stamp a request or message when its bytes are read, not when a handler reaches it.

Both tests send two things in one write: the second waits for the first to be handled (a pipelined
HTTP request, a WebSocket message behind uvicorn's one-message backpressure), so a handler's stamp
would tell them apart, while the arrival stamp is the same read.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from emulators.server import EmulatorServer

pytestmark = pytest.mark.timeout(30)


async def wait_for(predicate, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def completion_request(port: int) -> bytes:
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer sk-test\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def test_pipelined_requests_carry_the_time_they_were_read(emu: EmulatorServer) -> None:
    emu.config.merge({"llm_first_token": 0.2})  # the first reply holds the second request back 0.2 s
    reader, writer = await asyncio.open_connection(emu.host, emu.port)
    try:
        writer.write(completion_request(emu.port) * 2)
        await writer.drain()
        await wait_for(lambda: len(emu.log.openai) == 2 and all(r.get("status") for r in emu.log.openai))
    finally:
        writer.close()
        await writer.wait_closed()
    first, second = emu.log.openai
    assert first["status"] == second["status"] == 200
    assert first["t"] == second["t"]  # one read, one stamp
    assert second["first_token_at"] - second["t"] >= 0.2 + 0.2  # its handler only ran after the first reply


async def test_websocket_messages_read_together_carry_one_stamp(emu: EmulatorServer) -> None:
    url = (f"{emu.ws_url}/v1/text-to-speech/voice1/stream-input?model_id=eleven_flash_v2_5"
           "&output_format=ulaw_8000")
    async with connect(url, additional_headers={"xi-api-key": "xi-test"}) as ws:
        frames = [Frame(Opcode.TEXT, orjson.dumps(m)) for m in ({"text": " "}, {"text": "Hi there. ", "flush": True})]
        # Both frames in one write, masked as a client must, bypassing the send path's one-frame writes.
        ws.transport.write(b"".join(f.serialize(mask=True, extensions=[]) for f in frames))
        await wait_for(lambda: emu.log.elevenlabs and len(emu.log.elevenlabs[-1]["messages"]) == 2)
        await ws.send(orjson.dumps({"text": ""}))
    first, second = emu.log.elevenlabs[-1]["messages"][:2]
    assert second.get("flush") is True
    assert first["t"] == second["t"]

