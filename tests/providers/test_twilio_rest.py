"""TwilioRest against the Twilio REST emulator: the SDK's own requests, redirected by base URL."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from emulators.server import EmulatorServer
from providers.settings import Settings
from providers.base import ProviderAuthError, ProviderError
from providers.twilio_rest import TwilioRest
from provider_helpers import closed_port

SID = "AC" + "1" * 32
TOKEN = "twilio-secret-token-0123456789"
TWIML = "<Response><Say>Hello</Say></Response>"


def make_rest(emu: EmulatorServer | None, token: str = TOKEN) -> TwilioRest:
    base = emu.url if emu is not None else f"http://127.0.0.1:{closed_port()}"
    return TwilioRest(Settings(twilio_account_sid=SID, twilio_auth_token=token, twilio_api_base_url=base))


@pytest.fixture
async def rest(emu: EmulatorServer) -> AsyncIterator[TwilioRest]:
    emu.config.merge({"twilio": {"account_sid": SID, "auth_token": TOKEN}})
    client = make_rest(emu)
    yield client
    await client.close()


async def test_create_call(emu: EmulatorServer, rest: TwilioRest) -> None:
    sid = await rest.create_call("+15550002222", "+15550001111", twiml=TWIML,
                                 status_callback="https://gw.example.com/twilio/status")
    assert sid.startswith("CA")
    record = emu.log.twilio[-1]
    assert record["path"] == f"/2010-04-01/Accounts/{SID}/Calls.json" and record["status"] == 201
    assert record["form"] == {"To": "+15550002222", "From": "+15550001111", "Twiml": TWIML,
                              "StatusCallback": "https://gw.example.com/twilio/status"}
    assert emu.state.twilio_calls[sid]["status"] == "queued"


async def test_hang_up(emu: EmulatorServer, rest: TwilioRest) -> None:
    sid = await rest.create_call("+15550002222", "+15550001111", url="https://gw.example.com/twilio/voice")
    assert await rest.hang_up(sid) is True
    assert emu.state.twilio_calls[sid]["status"] == "completed"
    assert emu.log.twilio[-1]["form"] == {"Status": "completed"}
    assert await rest.hang_up(sid) is False  # already ended (Twilio error 21220): nothing to do


async def test_transfer_sends_dial_twiml(emu: EmulatorServer, rest: TwilioRest) -> None:
    sid = await rest.create_call("+15550002222", "+15550001111", twiml=TWIML)
    assert await rest.transfer(sid, "+15559990000") is True
    twiml = emu.state.twilio_calls[sid]["_twiml"]
    assert "<Response><Dial>+15559990000</Dial></Response>" in twiml


async def test_unknown_call_is_a_404_provider_error(rest: TwilioRest) -> None:
    with pytest.raises(ProviderError) as caught:
        await rest.hang_up("CA" + "0" * 32)
    error = caught.value
    assert (error.status, error.code, error.retryable) == (404, 20404, False)  # type: ignore[attr-defined]
    assert not isinstance(error, ProviderAuthError)


async def test_server_error_is_retryable(emu: EmulatorServer, rest: TwilioRest) -> None:
    emu.config.merge({"twilio": {"fault": "error500", "fault_count": 1}})
    with pytest.raises(ProviderError) as caught:
        await rest.create_call("+15550002222", "+15550001111", twiml=TWIML)
    assert caught.value.status == 500 and caught.value.retryable


async def test_wrong_token_is_an_auth_error_without_the_token(emu: EmulatorServer) -> None:
    emu.config.merge({"twilio": {"account_sid": SID, "auth_token": TOKEN}})
    rest = make_rest(emu, token="wrong-token-abcdef")
    with pytest.raises(ProviderAuthError) as caught:
        await rest.probe()
    await rest.close()
    assert caught.value.status == 401
    assert "wrong-token" not in str(caught.value) and "wrong-token" not in repr(rest)


async def test_probe_fetches_the_account(emu: EmulatorServer, rest: TwilioRest) -> None:
    assert await rest.probe() == "active"
    assert emu.log.twilio[-1]["path"] == f"/2010-04-01/Accounts/{SID}.json"


async def test_unreachable() -> None:
    rest = make_rest(None)
    with pytest.raises(ProviderError) as caught:
        await rest.hang_up("CA" + "0" * 32)
    await rest.close()
    assert caught.value.retryable and caught.value.status is None


async def test_create_call_needs_twiml_or_url(rest: TwilioRest) -> None:
    with pytest.raises(ValueError):
        await rest.create_call("+15550002222", "+15550001111")
