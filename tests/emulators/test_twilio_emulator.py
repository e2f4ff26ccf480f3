"""The Twilio REST emulator driven by the real twilio 9.13 client, sync and async (PROTOCOLS.md §4)."""

from __future__ import annotations

import asyncio

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from emulators.server import EmulatorServer

pytestmark = pytest.mark.timeout(30)

SID = "AC" + "0" * 32
TOKEN = "token-123"
TWIML = '<Response><Connect><Stream url="wss://gw.example.com/twilio/media"/></Connect></Response>'


def sync_client(emu: EmulatorServer, token: str = TOKEN) -> Client:
    c = Client(SID, token)
    c.api.base_url = emu.url
    return c


async def test_create_update_fetch_with_the_sync_client(emu: EmulatorServer) -> None:
    emu.config.merge({"twilio": {"account_sid": SID, "auth_token": TOKEN}})
    c = sync_client(emu)

    def flow() -> tuple:  # the sync client blocks: run it off the loop serving the emulator
        call = c.calls.create(to="+15550002222", from_="+15550001111", twiml=TWIML,
                              status_callback="https://gw.example.com/twilio/status")
        updated = c.calls(call.sid).update(twiml="<Response><Hangup/></Response>")
        ended = c.calls(call.sid).update(status="completed")
        fetched = c.calls(call.sid).fetch()
        listed = c.calls.list()
        account = c.api.v2010.accounts(SID).fetch()
        return call, updated, ended, fetched, listed, account

    call, updated, ended, fetched, listed, account = await asyncio.to_thread(flow)
    assert call.sid.startswith("CA") and len(call.sid) == 34
    assert (call.status, call.to, call._from, call.account_sid) == ("queued", "+15550002222", "+15550001111", SID)
    assert updated.sid == call.sid and ended.status == "completed" == fetched.status
    assert [x.sid for x in listed] == [call.sid]
    assert account.status == "active"

    log = list(emu.log.twilio)
    assert [(r["method"], r["status"]) for r in log] == [
        ("POST", 201), ("POST", 200), ("POST", 200), ("GET", 200), ("GET", 200), ("GET", 200)]
    assert log[0]["form"] == {"To": "+15550002222", "From": "+15550001111", "Twiml": TWIML,
                              "StatusCallback": "https://gw.example.com/twilio/status"}
    assert log[0]["path"] == f"/2010-04-01/Accounts/{SID}/Calls.json"
    assert log[1]["form"] == {"Twiml": "<Response><Hangup/></Response>"} and log[1]["call_sid"] == call.sid
    assert log[2]["form"] == {"Status": "completed"}
    assert all(r["auth"] for r in log)


async def test_unknown_call_and_bad_token(emu: EmulatorServer) -> None:
    emu.config.merge({"twilio": {"auth_token": TOKEN}})

    def unknown() -> None:
        sync_client(emu).calls("CA" + "f" * 32).update(status="completed")

    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(unknown)
    assert (info.value.status, info.value.code) == (404, 20404)
    assert info.value.msg.startswith("Unable to update record")

    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(lambda: sync_client(emu, "wrong").calls.create(to="+1", from_="+2", twiml=TWIML))
    assert (info.value.status, info.value.code) == (401, 20003)


async def test_async_client_and_fault(emu: EmulatorServer) -> None:
    http = AsyncTwilioHttpClient(timeout=5)  # created inside the running loop (PROTOCOLS.md §4)
    try:
        c = Client(SID, TOKEN, http_client=http)
        c.api.base_url = emu.url
        call = await c.calls.create_async(to="+15550002222", from_="+15550001111", url="https://gw.example.com/voice")
        ended = await c.calls(call.sid).update_async(status="completed")
        assert ended.status == "completed"
        emu.config.merge({"twilio": {"fault": "error500", "fault_count": 1}})
        with pytest.raises(TwilioRestException) as info:
            await c.calls(call.sid).fetch_async()
        assert info.value.status == 500
        assert (await c.calls(call.sid).fetch_async()).status == "completed"  # the fault was used up
    finally:
        await http.session.close()
    assert emu.log.twilio[0]["form"]["Url"] == "https://gw.example.com/voice"
