"""The SQLite store: bookings, and every call's transcript.

One `Store` per process, shared by the event loop and worker threads: it holds one connection
(`check_same_thread=False`) behind a lock, so calls from any thread are serialized within the
process. Across processes (several uvicorn workers on one file) SQLite's own locking serializes
writers; WAL lets readers go on while one writes, and `busy_timeout` makes a writer wait for
another process's write instead of failing at once.

Double booking is prevented by the database, not by a read-then-write in Python: `bookings` has a
UNIQUE constraint on the slot's start (epoch seconds, so the same instant written with different
UTC offsets collides), and `book` is a single INSERT. Of two racing calls, in one process or two,
exactly one INSERT succeeds; the other gets an IntegrityError, which `book` turns into None.
Starts are expected on the slot grid (the dialog only books grid starts), which is what makes
"same start" mean "same slot".

This is the only I/O in `dialog/`. Time still enters from outside where it matters (`now` for the
past, `started_at`/`at`/`ended_at` for calls); `book` stamps `created_at` from the clock only when
none is given.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from dialog.schedule import SEARCH_DAYS, DialogSettings, nearest_slot

# How long a writer waits for another process's write before giving up. Writes here take
# microseconds; 10 s only ever runs out when something is badly wrong.
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bookings (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    start_ts    INTEGER NOT NULL UNIQUE,  -- slot start, epoch seconds: the double-booking guard
    start_iso   TEXT NOT NULL,            -- as booked, with the business's UTC offset
    call_sid    TEXT NOT NULL DEFAULT '',
    caller      TEXT NOT NULL DEFAULT '', -- raw; the API masks it when listing
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    call_sid    TEXT PRIMARY KEY,
    stream_sid  TEXT NOT NULL DEFAULT '',
    caller      TEXT NOT NULL DEFAULT '',
    direction   TEXT NOT NULL DEFAULT '',
    started_at  REAL,
    ended_at    REAL,
    end_reason  TEXT
);
CREATE TABLE IF NOT EXISTS turns (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    call_sid    TEXT NOT NULL,  -- no foreign key: a turn is kept even if its call row is missing
    turn_id     INTEGER,
    user_text   TEXT NOT NULL DEFAULT '',
    agent_text  TEXT NOT NULL DEFAULT '',
    heard_text  TEXT NOT NULL DEFAULT '',
    interrupted INTEGER NOT NULL DEFAULT 0,
    dtmf        TEXT NOT NULL DEFAULT '',
    timings     TEXT NOT NULL DEFAULT '{}',
    at          REAL
);
CREATE INDEX IF NOT EXISTS turns_by_call ON turns (call_sid, id);
CREATE INDEX IF NOT EXISTS calls_by_start ON calls (started_at);
"""


def mask_caller(number: str) -> str:
    """'+15551234567' -> '+1******4567': enough to recognise a caller, not to dial them."""
    if len(number) <= 6:
        return "*" * len(number)
    return number[:2] + "*" * (len(number) - 6) + number[-4:]


@dataclass(frozen=True, slots=True)
class Booking:
    id: int
    start: datetime  # aware
    call_sid: str
    caller: str  # raw
    created_at: datetime  # aware

    def to_dict(self, mask: bool = False) -> dict[str, Any]:
        return {
            "id": self.id,
            "start": self.start.isoformat(),
            "call_sid": self.call_sid,
            "caller": mask_caller(self.caller) if mask else self.caller,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Booking":
        return cls(int(data["id"]), datetime.fromisoformat(data["start"]), str(data["call_sid"]),
                   str(data["caller"]), datetime.fromisoformat(data["created_at"]))


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


class Store:
    """Bookings and call transcripts in one SQLite file (":memory:" works for tests)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                                   isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")  # durable across app crashes in WAL mode
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # ------------------------------------------------------------ bookings

    def book(self, start: datetime, call_sid: str = "", caller: str = "", *,
             created_at: datetime | None = None) -> Booking | None:
        """Book the slot starting at `start`; None if it is already taken (the INSERT is the check)."""
        _require_aware(start, "start")
        created = created_at or datetime.now(timezone.utc)
        _require_aware(created, "created_at")
        with self._lock:
            try:
                cursor = self._db.execute(
                    "INSERT INTO bookings (start_ts, start_iso, call_sid, caller, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (int(start.timestamp()), start.isoformat(), call_sid, caller, created.isoformat()))
            except sqlite3.IntegrityError:
                return None
        return Booking(int(cursor.lastrowid or 0), start, call_sid, caller, created)

    def cancel(self, booking_id: int, call_sid: str) -> bool:
        """Withdraw a booking, only by the call that made it (a turn the caller never heard was undone)."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM bookings WHERE id = ? AND call_sid = ?", (booking_id, call_sid))
        return cursor.rowcount == 1

    def is_free(self, start: datetime) -> bool:
        _require_aware(start, "start")
        return not self._query("SELECT 1 FROM bookings WHERE start_ts = ?", (int(start.timestamp()),))

    def booking_at(self, start: datetime) -> Booking | None:
        _require_aware(start, "start")
        rows = self._query("SELECT * FROM bookings WHERE start_ts = ?", (int(start.timestamp()),))
        return _booking(rows[0]) if rows else None

    def taken_between(self, first: datetime, last: datetime) -> list[datetime]:
        rows = self._query("SELECT start_iso FROM bookings WHERE start_ts BETWEEN ? AND ?",
                           (int(first.timestamp()), int(last.timestamp())))
        return [datetime.fromisoformat(r["start_iso"]) for r in rows]

    def nearest_free(self, start: datetime, settings: DialogSettings, now: datetime | None = None,
                     days: int = SEARCH_DAYS) -> datetime | None:
        """The free slot nearest `start` (which may be `start`), within business hours and
        `days` either side, after `now` when given; None if there is none."""
        _require_aware(start, "start")
        window = timedelta(days=days + 1)
        taken = self.taken_between(start - window, start + window)
        return nearest_slot(start, settings, taken, now, days)

    def list_bookings(self, limit: int | None = None) -> list[Booking]:
        sql = "SELECT * FROM bookings ORDER BY start_ts"
        rows = self._query(sql + " LIMIT ?", (limit,)) if limit is not None else self._query(sql)
        return [_booking(r) for r in rows]

    # ------------------------------------------------------------ calls and transcripts

    def start_call(self, call_sid: str, stream_sid: str = "", caller: str = "", direction: str = "inbound",
                   started_at: float | None = None) -> None:
        """Record a call's start (idempotent: a call resumed in another process keeps its start)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO calls (call_sid, stream_sid, caller, direction, started_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (call_sid) DO UPDATE SET stream_sid = excluded.stream_sid",
                (call_sid, stream_sid, caller, direction, started_at))

    def add_turn(self, call_sid: str, turn: Mapping[str, Any]) -> None:
        """Store one turn: turn_id, user_text, agent_text, heard_text, interrupted, dtmf, timings, at."""
        timings = json.dumps(turn.get("timings") or {}, default=str)  # never lose a turn to a bad value
        with self._lock:
            self._db.execute(
                "INSERT INTO turns (call_sid, turn_id, user_text, agent_text, heard_text, interrupted, dtmf, "
                "timings, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (call_sid, turn.get("turn_id"), str(turn.get("user_text") or ""),
                 str(turn.get("agent_text") or ""), str(turn.get("heard_text") or ""),
                 int(bool(turn.get("interrupted"))), str(turn.get("dtmf") or ""), timings, turn.get("at")))

    def end_call(self, call_sid: str, ended_at: float, reason: str) -> None:
        with self._lock:
            self._db.execute("UPDATE calls SET ended_at = ?, end_reason = ? WHERE call_sid = ?",
                             (ended_at, reason, call_sid))

    def get_call(self, call_sid: str) -> dict[str, Any] | None:
        """The call row with its turns in order, or None if nothing of it was stored."""
        with self._lock:
            row = self._db.execute("SELECT * FROM calls WHERE call_sid = ?", (call_sid,)).fetchone()
            turns = self._db.execute("SELECT * FROM turns WHERE call_sid = ? ORDER BY id",
                                     (call_sid,)).fetchall()
        if row is None and not turns:
            return None
        call = dict(row) if row is not None else {
            "call_sid": call_sid, "stream_sid": "", "caller": "", "direction": "", "started_at": None,
            "ended_at": None, "end_reason": None}
        call["turns"] = [_turn_dict(t) for t in turns]
        return call

    def list_calls(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest calls first, each with its number of turns (not the turns themselves)."""
        rows = self._query(
            "SELECT calls.*, (SELECT COUNT(*) FROM turns WHERE turns.call_sid = calls.call_sid) AS turn_count "
            "FROM calls ORDER BY started_at DESC, rowid DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]


def _booking(row: sqlite3.Row) -> Booking:
    return Booking(row["id"], datetime.fromisoformat(row["start_iso"]), row["call_sid"], row["caller"],
                   datetime.fromisoformat(row["created_at"]))


def _turn_dict(row: sqlite3.Row) -> dict[str, Any]:
    turn = dict(row)
    del turn["id"], turn["call_sid"]
    turn["interrupted"] = bool(turn["interrupted"])
    turn["timings"] = json.loads(turn["timings"])
    return turn


# The dialog is written against a booking store; the SQLite store is the one there is.
BookingStore = Store
