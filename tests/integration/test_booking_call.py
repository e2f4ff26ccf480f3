"""A whole booking call, offline, spoken: the caller's answers are audio, transcribed by the gateway."""

from __future__ import annotations

import json
import tempfile
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dialog.machine import Conversation, DialogSettings
from dialog.store import Store
from loadgen.simcaller import CallerTurn, run_call

pytestmark = pytest.mark.timeout(240)

SCRIPT = ["Hello, I would like to book an appointment", "Next Tuesday at 3 pm", "Yes, that's right"]


def expected_booking() -> datetime:
    """What the dialog books for this script today (the gateway runs on the real clock)."""
    settings = DialogSettings()
    with tempfile.TemporaryDirectory() as tmp:
        conversation = Conversation(settings, Store(str(Path(tmp) / "x.db")), call_sid="CAexpect")
        now = datetime.now(ZoneInfo(settings.timezone))
        conversation.greet(now)
        for text in SCRIPT:
            reply = conversation.on_user(text, now)
        assert reply.booking is not None, reply
        return reply.booking.start


async def test_spoken_booking_call_ends_with_the_booking_stored(offline_gateway):
    want = expected_booking()
    report = await run_call(offline_gateway.media_url, [CallerTurn(text=t) for t in SCRIPT],
                            parameters={"caller": "+15550004321"}, max_call_s=120)
    assert report.error is None, report
    assert report.hung_up_by_gateway and report.close_code == 1000  # the agent ended the call
    bookings = json.loads(offline_gateway.get("/api/bookings")[1])["bookings"]
    ours = [b for b in bookings if b["call_sid"] == report.call_sid]
    assert len(ours) == 1, bookings
    assert datetime.fromisoformat(ours[0]["start"]) == want
    assert "4321" in ours[0]["caller"] and "555000" not in ours[0]["caller"]  # masked
    call = offline_gateway.stored_call(report.call_sid)
    said = [t["user_text"] for t in call["turns"] if t["user_text"]]
    assert len(said) == 3 and "tuesday" in said[1].lower()
    assert "booked" in call["turns"][-1]["heard_text"].lower()
    # After the stream closed, Twilio would ask /twilio/voice again: the call is over, so <Hangup/>.
    data = urllib.parse.urlencode({"CallSid": report.call_sid, "From": "+15550004321"}).encode()
    with urllib.request.urlopen(urllib.request.Request(offline_gateway.url + "/twilio/voice?attempt=1", data=data),
                                timeout=5) as resp:
        assert "<Hangup" in resp.read().decode()
