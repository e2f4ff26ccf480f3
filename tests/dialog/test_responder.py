"""The per-call responder: decisions, rollback of a turn the caller never heard, bookings withdrawn."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from dialog.machine import Conversation, DialogSettings, State
from dialog.responder import ReplyEnd, RuleResponder
from dialog.store import Store
from dialog.events import StartReply

NOW = datetime(2026, 11, 18, 10, 0, tzinfo=ZoneInfo("America/New_York"))


def make(tmp_path):
    store = Store(str(tmp_path / "db.sqlite"))
    settings = DialogSettings()

    def new(snapshot=None):
        if snapshot is not None:
            return Conversation.restore(snapshot, settings, store)
        return Conversation(settings, store, call_sid="CA1", caller="+15550001111")

    responder = RuleResponder(new(), lambda: NOW, restore=new,
                              cancel_booking=lambda b: store.cancel(b.id, b.call_sid))
    return responder, store


async def say(responder, turn, text=None, dtmf=""):
    pieces = [p async for p in responder.reply(StartReply(turn, text, (), dtmf=dtmf))]
    assert isinstance(pieces[-1], ReplyEnd)
    return "".join(p for p in pieces if isinstance(p, str)), pieces[-1]


async def test_rollback_undoes_the_turn_and_withdraws_its_booking(tmp_path):
    responder, store = make(tmp_path)
    await say(responder, 0)
    await say(responder, 1, "I'd like to book next Tuesday at 3 pm")
    assert responder.conversation.state is State.CONFIRMATION
    text, end = await say(responder, 2, "yes")
    assert end.hang_up and len(store.list_bookings()) == 1
    # The caller talked over "You're booked" before hearing any of it: the turn is undone.
    responder.rollback(2)
    assert responder.conversation.state is State.CONFIRMATION
    assert store.list_bookings() == []
    text, end = await say(responder, 3, "no, make it 4 pm")
    assert "4 pm" in text and not end.hang_up


async def test_dtmf_confirms(tmp_path):
    responder, store = make(tmp_path)
    await say(responder, 0)
    await say(responder, 1, "tomorrow at 10 am")
    text, end = await say(responder, 2, dtmf="1")
    assert end.hang_up and "booked" in text.lower()
    assert len(store.list_bookings()) == 1
