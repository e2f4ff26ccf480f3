"""The store when the database refuses (issue 23, item 5), with a real lock held by another
connection: bookings fail fast and cleanly, the dialog says so and keeps the slot on offer,
transcript writes are held in order and written once the database takes writes again."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dialog import prompts
from dialog.machine import Check, Conversation, DialogSettings, State
from dialog.store import DIALOG_BUSY_TIMEOUT_MS, RETRY_SECONDS, Store, StoreUnavailable

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 18, 10, 0, tzinfo=NY)  # Wednesday
FRI_3PM = datetime(2026, 11, 20, 15, 0, tzinfo=NY)
SETTINGS = DialogSettings()


class WriteLock:
    """Another process's write transaction on the same file (a backup, a migration)."""

    def __init__(self, db: str) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None)

    def __enter__(self) -> "WriteLock":
        self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def test_a_booking_refused_by_a_locked_database_fails_fast_and_leaves_nothing(db: str) -> None:
    with Store(db) as store:
        with WriteLock(db):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as refused:
                store.book(FRI_3PM, "CA1", "+15551234567", created_at=NOW)
            waited = time.monotonic() - started
            assert refused.value.kind == "locked"
            assert waited < DIALOG_BUSY_TIMEOUT_MS / 1000 + 0.5  # the event loop is not held for long
            assert store.is_free(FRI_3PM)  # readers are not blocked by a writer (WAL)
        assert store.list_bookings() == []
        assert store.book(FRI_3PM, "CA1", "+15551234567", created_at=NOW) is not None  # the lock gone: it books


def test_transcript_writes_are_held_in_order_and_written_when_the_lock_goes(db: str) -> None:
    with Store(db) as store:
        store.start_call("CA1", "MZ1", "+15551234567", "inbound", 1.0)
        store.add_turn("CA1", {"turn_id": 0, "user_text": "", "agent_text": "Hi"})
        with WriteLock(db):
            store.add_turn("CA1", {"turn_id": 1, "user_text": "book me", "agent_text": "Sure"})
            store.add_turn("CA1", {"turn_id": 2, "user_text": "friday", "agent_text": "What time?"})
            store.end_call("CA1", 9.0, "stop")
            assert store.backlog == 3
            assert [t["turn_id"] for t in store.get_call("CA1")["turns"]] == [0]  # what was stored stays
        assert store.flush_backlog() == 0
        call = store.get_call("CA1")
    assert [t["user_text"] for t in call["turns"]] == ["", "book me", "friday"]
    assert call["end_reason"] == "stop" and store.lost_writes == 0


def test_a_write_after_the_lock_goes_waits_behind_the_held_ones(db: str) -> None:
    with Store(db) as store:
        with WriteLock(db):
            store.add_turn("CA1", {"turn_id": 1, "user_text": "one"})
        store._next_retry = time.monotonic() + RETRY_SECONDS  # not yet time to retry: held behind
        store.add_turn("CA1", {"turn_id": 2, "user_text": "two"})
        assert store.backlog == 2
        store._next_retry = 0.0
        store.add_turn("CA1", {"turn_id": 3, "user_text": "three"})  # retries first, then writes, in order
        assert store.backlog == 0
        assert [t["user_text"] for t in store.get_call("CA1")["turns"]] == ["one", "two", "three"]


def test_a_withdrawal_the_database_refused_is_done_before_the_next_booking(db: str) -> None:
    with Store(db) as store:
        booking = store.book(FRI_3PM, "CA1", "", created_at=NOW)
        with WriteLock(db):
            assert store.cancel(booking.id, "CA1") is False  # refused: kept
        assert store.backlog == 1
        assert store.book(FRI_3PM, "CA1", "", created_at=NOW) is not None  # the withdrawal went first
        assert len(store.list_bookings()) == 1 and store.backlog == 0


def test_the_dialog_tells_the_caller_and_keeps_the_slot_on_offer(db: str) -> None:
    with Store(db) as store:
        conv = Conversation(SETTINGS, store, call_sid="CA1", caller="+15551234567")
        conv.greet(NOW)
        conv.on_user("I'd like to book an appointment", NOW)
        offer = conv.on_user("Friday at 3 pm", NOW)
        assert offer.state is State.CONFIRMATION
        with WriteLock(db):
            refused = conv.on_user("yes", NOW)
        assert refused.prompt_key == "store_failed" and refused.booking is None
        assert refused.state is State.CONFIRMATION and not refused.hang_up
        assert refused.text.startswith("I couldn't save that booking just now.") and "Friday" in refused.text
        assert store.list_bookings() == []  # nothing was booked
        booked = conv.on_user("yes please", NOW)  # the caller says yes again; the store takes it now
        assert booked.prompt_key == "booked" and booked.booking is not None
        assert [b.start for b in store.list_bookings()] == [FRI_3PM]
    assert prompts.PROMPTS["store_failed"] and Check.STORE_FAILED.value == "store_failed"


def test_an_unopenable_store_refuses_and_is_reopened_when_it_can_be(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet" / "voicegate.db"  # its directory does not exist: cannot be opened
    store = Store(str(missing))
    with pytest.raises(StoreUnavailable) as refused:
        store.book(FRI_3PM, "CA1", "", created_at=NOW)
    assert refused.value.kind == "cannot open"
    store.add_turn("CA1", {"turn_id": 1, "user_text": "hello"})  # held, not raised
    assert store.backlog == 1
    missing.parent.mkdir()
    store._writer.failed_at = store._dialog.failed_at = time.monotonic() - RETRY_SECONDS  # the retry is due
    store._next_retry = 0.0
    assert store.flush_backlog() == 0
    assert store.book(FRI_3PM, "CA1", "", created_at=NOW) is not None
    assert [t["user_text"] for t in store.get_call("CA1")["turns"]] == ["hello"]
    store.close()
