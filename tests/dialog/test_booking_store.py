"""The SQLite store: bookings (with real races between threads, Store instances and processes)
and call transcripts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dialog.machine import Conversation, DialogSettings, State
from dialog.store import Booking, BookingStore, Store, mask_caller

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 18, 10, 0, tzinfo=NY)  # Wednesday
FRI_3PM = datetime(2026, 11, 20, 15, 0, tzinfo=NY)
SETTINGS = DialogSettings()


@pytest.fixture
def store(db: str):
    with Store(db) as s:
        yield s


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=NY)


# ---------------------------------------------------------------- bookings


def test_booking_store_is_the_sqlite_store() -> None:
    assert BookingStore is Store


def test_book_then_the_slot_is_taken(store: Store) -> None:
    assert store.is_free(FRI_3PM)
    booking = store.book(FRI_3PM, "CA1", "+15551234567", created_at=NOW)
    assert booking is not None and booking.start == FRI_3PM and booking.call_sid == "CA1"
    assert not store.is_free(FRI_3PM)
    assert store.book(FRI_3PM, "CA2", "+15557654321") is None
    assert [b.call_sid for b in store.list_bookings()] == ["CA1"]


def test_the_same_instant_in_another_offset_is_the_same_slot(store: Store) -> None:
    assert store.book(FRI_3PM, "CA1", "") is not None
    assert store.book(FRI_3PM.astimezone(timezone.utc), "CA2", "") is None


def test_naive_times_are_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        store.book(datetime(2026, 11, 20, 15, 0), "CA1", "")
    with pytest.raises(ValueError):
        store.is_free(datetime(2026, 11, 20, 15, 0))


def test_booking_round_trips_and_masks(store: Store) -> None:
    booking = store.book(FRI_3PM, "CA1", "+15551234567", created_at=NOW)
    assert booking is not None
    listed = store.list_bookings()[0]
    assert listed == booking
    assert listed.start.utcoffset() == timedelta(hours=-5)  # kept in the business's offset
    data = booking.to_dict()
    assert data["caller"] == "+15551234567" and data["start"] == "2026-11-20T15:00:00-05:00"
    assert booking.to_dict(mask=True)["caller"] == "+1******4567"
    assert Booking.from_dict(json.loads(json.dumps(data))) == booking
    assert mask_caller("123") == "***"


def test_list_bookings_in_start_order(store: Store) -> None:
    for hour in (16, 9, 12):
        store.book(at(20, hour), f"CA{hour}", "")
    assert [b.start.hour for b in store.list_bookings()] == [9, 12, 16]
    assert len(store.list_bookings(limit=2)) == 2


def test_schema_creation_is_idempotent(db: str) -> None:
    with Store(db) as first:
        first.book(FRI_3PM, "CA1", "")
        first.start_call("CA1", "MZ1", "+1555", "inbound", 1.0)
    with Store(db) as second:  # reopening must not wipe or fail
        assert [b.call_sid for b in second.list_bookings()] == ["CA1"]
        assert second.get_call("CA1") is not None
        assert second._query("PRAGMA journal_mode")[0][0] == "wal"


# ---------------------------------------------------------------- nearest free slot


def test_nearest_free_is_the_slot_itself_when_free(store: Store) -> None:
    assert store.nearest_free(FRI_3PM, SETTINGS, NOW) == FRI_3PM


def test_nearest_free_prefers_later_on_a_tie(store: Store) -> None:
    store.book(FRI_3PM, "CA1", "")
    assert store.nearest_free(FRI_3PM, SETTINGS, NOW) == at(20, 15, 30)


def test_nearest_free_searches_backward_too(store: Store) -> None:
    for hhmm in ((15, 0), (15, 30), (16, 0)):
        store.book(at(20, *hhmm), "CA", "")
    assert store.nearest_free(FRI_3PM, SETTINGS, NOW) == at(20, 14, 30)


def test_nearest_free_stays_in_business_hours(store: Store) -> None:
    assert store.nearest_free(at(20, 19), SETTINGS, NOW) == at(20, 16, 30)  # 7 pm -> last slot
    assert store.nearest_free(at(20, 7), SETTINGS, NOW) == at(20, 9)
    assert store.nearest_free(at(21, 12), SETTINGS, NOW) == at(20, 16, 30)  # Saturday noon -> Friday
    assert store.nearest_free(at(20, 15, 10), SETTINGS, NOW) == at(20, 15)  # off the grid


def test_nearest_free_excludes_the_past(store: Store) -> None:
    assert store.nearest_free(at(18, 9), SETTINGS, NOW) == at(18, 10, 30)  # 10:00 is now: not bookable
    assert store.nearest_free(at(18, 9), SETTINGS) == at(18, 9)  # without `now` nothing is past


def test_nearest_free_gives_up_beyond_the_window(store: Store) -> None:
    tiny = DialogSettings(open_hour=9, close_hour=10, slot_minutes=60, open_weekdays=(0, 1, 2, 3, 4, 5, 6))
    for offset in range(-3, 4):
        store.book(at(20, 9) + timedelta(days=offset), "CA", "")
    assert store.nearest_free(at(20, 9), tiny, NOW, days=3) is None
    assert store.nearest_free(at(20, 9), tiny, NOW, days=4) == at(24, 9)


# ---------------------------------------------------------------- races


def test_threads_racing_on_one_store_book_each_slot_once(store: Store) -> None:
    slots = [at(20, 9) + timedelta(minutes=30 * i) for i in range(10)]
    barrier = threading.Barrier(8)
    won: list[Booking] = []
    lock = threading.Lock()

    def caller(n: int) -> None:
        barrier.wait()
        for start in slots:
            booking = store.book(start, f"CA{n}", "")
            if booking is not None:
                with lock:
                    won.append(booking)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(b.start for b in won) == slots
    assert len(store.list_bookings()) == len(slots)


def test_two_store_instances_racing_like_two_processes(db: str) -> None:
    stores = [Store(db), Store(db)]
    barrier = threading.Barrier(2)
    results: list[Booking | None] = [None, None]

    def caller(n: int) -> None:
        barrier.wait()
        results[n] = stores[n].book(FRI_3PM, f"CA{n}", "")

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    for s in stores:
        assert not s.is_free(FRI_3PM)
        s.close()


_PROCESS_SCRIPT = """
import json, sys
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo
from dialog.store import Store
store = Store(sys.argv[1])
sys.stdin.readline()  # start together
first = datetime(2026, 11, 20, 9, 0, tzinfo=ZoneInfo("America/New_York"))
won = [i for i in range(16) if store.book(first + timedelta(minutes=30 * i), sys.argv[2], "")]
print(json.dumps(won))
"""


def test_processes_racing_book_each_slot_once(db: str) -> None:
    Store(db).close()  # schema first, so the race is about bookings
    procs = [subprocess.Popen([sys.executable, "-c", _PROCESS_SCRIPT, db, f"CA{n}"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
             for n in range(4)]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    won = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(i for w in won for i in w) == list(range(16))


def test_a_conversation_that_loses_the_race_offers_another_slot(db: str) -> None:
    a_store, b_store = Store(db), Store(db)
    a = Conversation(SETTINGS, a_store, "CAa", "+15550000001")
    b = Conversation(SETTINGS, b_store, "CAb", "+15550000002")
    for conv in (a, b):
        conv.greet(NOW)
        reply = conv.on_user("Friday at 3 pm", NOW)
        assert reply.state is State.CONFIRMATION and reply.prompt_key == "confirm"

    barrier = threading.Barrier(2)
    replies = {}

    def say_yes(name: str, conv: Conversation) -> None:
        barrier.wait()
        replies[name] = conv.on_user("yes", NOW)

    threads = [threading.Thread(target=say_yes, args=item) for item in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    winner, loser = sorted(replies.values(), key=lambda r: r.booking is None)
    assert winner.state is State.TERMINAL and winner.booking is not None and winner.booking.start == FRI_3PM
    assert loser.state is State.CONFIRMATION and loser.prompt_key == "race_offer" and loser.booking is None
    assert "3:30 pm" in loser.text and loser.slots == {"date": "2026-11-20", "time": "15:30"}
    loser_conv = b if replies["b"] is loser else a
    final = loser_conv.on_user("yes", NOW)
    assert final.state is State.TERMINAL and final.booking is not None
    assert final.booking.start == at(20, 15, 30)
    assert len(a_store.list_bookings()) == 2
    a_store.close()
    b_store.close()


# ---------------------------------------------------------------- calls and turns


def test_call_transcript_round_trip(store: Store) -> None:
    store.start_call("CA1", "MZ1", "+15551234567", "inbound", 1000.0)
    store.add_turn("CA1", {"turn_id": 1, "user_text": "next tuesday at 3", "agent_text": "So that's...",
                           "heard_text": "So that's", "interrupted": True, "dtmf": "",
                           "timings": {"stt_ms": 120.5, "llm_first_token_ms": 300}, "at": 1001.5})
    store.add_turn("CA1", {"turn_id": 2, "user_text": "", "dtmf": "1", "at": 1003.0})
    store.end_call("CA1", 1010.0, "hangup")
    call = store.get_call("CA1")
    assert call is not None
    assert call["stream_sid"] == "MZ1" and call["caller"] == "+15551234567" and call["direction"] == "inbound"
    assert call["started_at"] == 1000.0 and call["ended_at"] == 1010.0 and call["end_reason"] == "hangup"
    assert [t["turn_id"] for t in call["turns"]] == [1, 2]
    first = call["turns"][0]
    assert first["interrupted"] is True and first["timings"] == {"stt_ms": 120.5, "llm_first_token_ms": 300}
    assert first["heard_text"] == "So that's" and first["at"] == 1001.5
    assert call["turns"][1]["dtmf"] == "1" and call["turns"][1]["timings"] == {}
    json.dumps(call)  # JSON-safe for the API


def test_start_call_is_idempotent(store: Store) -> None:
    store.start_call("CA1", "MZ1", "+1555", "inbound", 1000.0)
    store.start_call("CA1", "MZ2", "+1555", "inbound", 2000.0)  # resumed elsewhere: new stream
    call = store.get_call("CA1")
    assert call is not None and call["stream_sid"] == "MZ2" and call["started_at"] == 1000.0


def test_turns_are_kept_without_a_call_row(store: Store) -> None:
    assert store.get_call("CAx") is None
    store.add_turn("CAx", {"turn_id": 1, "user_text": "hello", "timings": {"odd": datetime(2026, 1, 1)}})
    call = store.get_call("CAx")
    assert call is not None and call["turns"][0]["user_text"] == "hello"
    assert call["turns"][0]["timings"] == {"odd": "2026-01-01 00:00:00"}


def test_list_calls_newest_first_with_turn_counts(store: Store) -> None:
    for n in range(5):
        store.start_call(f"CA{n}", f"MZ{n}", "", "inbound", 1000.0 + n)
    store.add_turn("CA4", {"turn_id": 1})
    calls = store.list_calls(limit=3)
    assert [c["call_sid"] for c in calls] == ["CA4", "CA3", "CA2"]
    assert calls[0]["turn_count"] == 1 and calls[1]["turn_count"] == 0
    assert len(store.list_calls()) == 5


def test_worker_threads_can_write_transcripts(store: Store) -> None:
    def write(n: int) -> None:
        for i in range(20):
            store.add_turn("CA1", {"turn_id": n * 100 + i})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    call = store.get_call("CA1")
    assert call is not None and len(call["turns"]) == 80


def test_booking_at(store: Store) -> None:
    assert store.booking_at(FRI_3PM) is None
    booking = store.book(FRI_3PM, "CA1", "+1555", created_at=NOW)
    assert store.booking_at(FRI_3PM) == booking


def test_a_backchannel_turn_is_stored_as_one(tmp_path):
    store = Store(str(tmp_path / "v.db"))
    store.start_call("CA1", "MZ1", "+15550001111", "inbound", 1.0)
    store.add_turn("CA1", {"turn_id": 1, "user_text": "Uh-huh.", "backchannel": True, "timings": {}, "at": 2.0})
    store.add_turn("CA1", {"turn_id": 2, "user_text": "Tuesday", "timings": {}, "at": 3.0})
    turns = store.get_call("CA1")["turns"]
    assert [t["backchannel"] for t in turns] == [True, False]


def test_a_store_from_before_backchannels_gains_the_column(tmp_path):
    import sqlite3

    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE turns (id INTEGER PRIMARY KEY AUTOINCREMENT, call_sid TEXT NOT NULL,
        turn_id INTEGER, user_text TEXT NOT NULL DEFAULT '', agent_text TEXT NOT NULL DEFAULT '',
        heard_text TEXT NOT NULL DEFAULT '', interrupted INTEGER NOT NULL DEFAULT 0, dtmf TEXT NOT NULL DEFAULT '',
        timings TEXT NOT NULL DEFAULT '{}', at REAL);
        INSERT INTO turns (call_sid, turn_id, user_text) VALUES ('CA0', 1, 'hello');""")
    db.commit()
    db.close()
    store = Store(path)
    assert store.get_call("CA0")["turns"][0]["backchannel"] is False
    store.add_turn("CA0", {"turn_id": 2, "user_text": "yeah", "backchannel": True, "timings": {}})
    assert [t["backchannel"] for t in store.get_call("CA0")["turns"]] == [False, True]
