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

When the database refuses (another process holds the write lock past the wait, the file or its
filesystem is read-only, the disk is full, the file cannot be opened):
- The dialog's calls (`book`, `cancel`, the availability reads) run on the event loop, on a
  connection of their own that waits at most `DIALOG_BUSY_TIMEOUT_MS` for a lock, so a locked file
  never holds every call's loop for long. They raise `StoreUnavailable`; the dialog tells the
  caller the booking could not be saved (`dialog.machine`, Check.STORE_FAILED). Each booking is one
  INSERT, atomic in SQLite: a failed one leaves no row, so a booking exists only if it was made.
- Transcript writes (`start_call`, `add_turn`, `end_call`) never raise for it: a refused write is
  held, in order, in a bounded in-memory backlog and written when the database takes writes again
  (`flush_backlog`, called periodically by the gateway, and before the next write once
  `RETRY_SECONDS` have passed). Nothing stored before is touched; nothing said is dropped unless the
  backlog overflows its bound (counted in `lost_writes` and logged).
- A connection that failed because it could not be opened, or was opened read-only, is reopened
  (at most once per `RETRY_SECONDS`), so a filesystem remounted writable is used again without a
  restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from dialog.schedule import SEARCH_DAYS, DialogSettings, nearest_slot

log = logging.getLogger("voicegate.store")

# How long a transcript writer (the store's worker thread) waits for another process's write before
# the write goes to the backlog. Writes here take microseconds; 2 s only runs out when another
# writer is stuck (a backup, a long transaction), and the backlog keeps the write meanwhile.
BUSY_TIMEOUT_MS = 2_000
# The dialog's wait for a lock, on the event loop: every call's audio waits with it, and the outbound
# lead is 300 ms. A healthy writer holds the lock for microseconds; past 100 ms the caller is told
# the booking could not be saved.
DIALOG_BUSY_TIMEOUT_MS = 100
# A refused database is tried again this often (reopened if it could not be opened or was read-only).
RETRY_SECONDS = 2.0
# Transcript writes held while the database refuses them: a turn is a few hundred bytes, so 10,000
# (a few MB) is hours of a busy gateway's turns; past it the oldest are dropped and counted.
MAX_BACKLOG = 10_000
# SQLite's names for "the database cannot take this now" (sqlite3.Error.sqlite_errorname prefixes).
_UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_FULL", "SQLITE_IOERR",
                "SQLITE_CANTOPEN", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_PERM")
# Errors after which the connection itself is suspect (opened read-only, file gone): reopen it.
_REOPEN = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_NOTADB", "SQLITE_PERM")


class StoreUnavailable(Exception):
    """The database refused the operation (locked, read-only, full, unopenable). `kind` says which."""

    def __init__(self, operation: str, error: BaseException) -> None:
        self.kind = _kind(error)
        super().__init__(f"{operation}: the store is unavailable ({self.kind})")


def _kind(error: BaseException) -> str:
    name = getattr(error, "sqlite_errorname", "") or ""
    for prefix, kind in (("SQLITE_BUSY", "locked"), ("SQLITE_LOCKED", "locked"), ("SQLITE_READONLY", "read-only"),
                         ("SQLITE_FULL", "disk full"), ("SQLITE_CANTOPEN", "cannot open"), ("SQLITE_IOERR", "I/O error"),
                         ("SQLITE_PERM", "permission denied")):
        if name.startswith(prefix):
            return kind
    return name.removeprefix("SQLITE_").lower() or type(error).__name__


def _unavailable(error: BaseException) -> bool:
    if not isinstance(error, sqlite3.Error) or isinstance(error, (sqlite3.IntegrityError, sqlite3.ProgrammingError)):
        return False
    name = getattr(error, "sqlite_errorname", "") or ""
    return not name or name.startswith(_UNAVAILABLE)

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
    backchannel INTEGER NOT NULL DEFAULT 0,  -- an acknowledgement said while the agent talked: not answered
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


@dataclass(frozen=True, slots=True)
class _Result:
    rows: list[sqlite3.Row]
    rowcount: int
    lastrowid: int | None


class _Connection:
    """One SQLite connection behind a lock, opened (and reopened after a failure) on demand."""

    def __init__(self, path: str, busy_timeout_ms: int, lock: threading.Lock | None = None) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.lock = lock or threading.Lock()
        self.db: sqlite3.Connection | None = None
        self.failed_at: float | None = None  # monotonic time the connection last failed to open / broke
        self.error: BaseException | None = None

    def get(self, operation: str) -> sqlite3.Connection:
        """The open connection (call with `lock` held); raises StoreUnavailable while it cannot be."""
        if self.db is not None:
            return self.db
        if self.failed_at is not None and time.monotonic() - self.failed_at < RETRY_SECONDS:
            raise StoreUnavailable(operation, self.error or sqlite3.OperationalError("unavailable"))
        try:
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, check_same_thread=False,
                                 isolation_level=None)
            try:
                db.row_factory = sqlite3.Row
                db.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")  # durable across app crashes in WAL mode
                db.executescript(_SCHEMA)
                _add_missing_columns(db)
            except BaseException:
                db.close()
                raise
        except sqlite3.Error as exc:
            self.broke(exc)
            raise StoreUnavailable(operation, exc) from exc
        self.db, self.failed_at, self.error = db, None, None
        return db

    def broke(self, exc: BaseException) -> None:
        """An operation failed with `exc` (lock held): a suspect connection is closed for a reopen."""
        self.error = exc
        name = getattr(exc, "sqlite_errorname", "") or ""
        if self.db is None or name.startswith(_REOPEN):
            if self.db is not None:
                try:
                    self.db.close()
                except sqlite3.Error:
                    pass
                self.db = None
            self.failed_at = time.monotonic()

    def close(self) -> None:
        with self.lock:
            if self.db is not None:
                self.db.close()
                self.db = None


class Store:
    """Bookings and call transcripts in one SQLite file (":memory:" works for tests)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer = _Connection(path, BUSY_TIMEOUT_MS)  # transcripts and the API's reads (worker thread)
        # The dialog's own connection (event loop); ":memory:" is one database per connection, so there
        # it shares the writer's.
        self._dialog = self._writer if path == ":memory:" else _Connection(path, DIALOG_BUSY_TIMEOUT_MS)
        self._backlog: deque[tuple[str, str, tuple[Any, ...]]] = deque()  # (call_sid, sql, params), in order
        self._backlog_lock = threading.Lock()
        self._next_retry = 0.0  # monotonic time before which a held backlog is not retried
        self.lost_writes = 0  # transcript writes dropped by MAX_BACKLOG
        # Bookings to withdraw that the database refused to delete (id -> call sid): deleted before the
        # next booking and with the backlog, so a booking the caller never heard does not stay.
        self._pending_cancels: dict[int, str] = {}
        self._cancels_lock = threading.Lock()
        self.on_backlog: Callable[[int], None] | None = None  # told the backlog's size when it changes
        try:
            with self._writer.lock:
                self._writer.get("open")
        except StoreUnavailable as exc:
            log.error("the store cannot be opened (%s): bookings are refused and transcripts are held until "
                      "it can", exc.kind, extra={"fields": {"path": path}})

    def close(self) -> None:
        self._writer.close()
        if self._dialog is not self._writer:
            self._dialog.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, conn: _Connection, operation: str, sql: str, params: tuple[Any, ...] = ()) -> "_Result":
        """One statement on `conn`; a refusal is StoreUnavailable (IntegrityError and bugs pass through)."""
        with conn.lock:
            db = conn.get(operation)
            try:
                cursor = db.execute(sql, params)
                return _Result(cursor.fetchall(), cursor.rowcount, cursor.lastrowid)  # read under the lock
            except sqlite3.Error as exc:
                if not _unavailable(exc):
                    raise
                conn.broke(exc)
                raise StoreUnavailable(operation, exc) from exc

    def _query(self, sql: str, params: tuple[Any, ...] = (), *, dialog: bool = False) -> list[sqlite3.Row]:
        return self._run(self._dialog if dialog else self._writer, "read", sql, params).rows

    # ------------------------------------------------------------ bookings (the dialog, on the event loop)

    def book(self, start: datetime, call_sid: str = "", caller: str = "", *,
             created_at: datetime | None = None) -> Booking | None:
        """Book the slot starting at `start`; None if it is already taken (the INSERT is the check).
        Raises StoreUnavailable if the database refused: then no booking was made."""
        _require_aware(start, "start")
        created = created_at or datetime.now(timezone.utc)
        _require_aware(created, "created_at")
        try:
            self._apply_cancels(self._dialog)  # a withdrawn booking goes before any new one
            cursor = self._run(self._dialog, "book",
                               "INSERT INTO bookings (start_ts, start_iso, call_sid, caller, created_at) "
                               "VALUES (?, ?, ?, ?, ?)",
                               (int(start.timestamp()), start.isoformat(), call_sid, caller, created.isoformat()))
        except sqlite3.IntegrityError:
            return None
        except StoreUnavailable as exc:
            log.error("booking not saved: the store is unavailable (%s)", exc.kind,
                      extra={"fields": {"call_sid": call_sid, "start": start.isoformat()}})
            raise
        return Booking(int(cursor.lastrowid or 0), start, call_sid, caller, created)

    def cancel(self, booking_id: int, call_sid: str) -> bool:
        """Withdraw a booking, only by the call that made it (a turn the caller never heard was undone).
        If the database refuses, the withdrawal is kept and done before the next booking or with the
        backlog: False then."""
        try:
            cursor = self._run(self._dialog, "cancel", "DELETE FROM bookings WHERE id = ? AND call_sid = ?",
                               (booking_id, call_sid))
        except StoreUnavailable as exc:
            with self._cancels_lock:
                self._pending_cancels[booking_id] = call_sid
            log.warning("withdrawing a booking was refused (%s): it is withdrawn when the store takes writes",
                        exc.kind, extra={"fields": {"call_sid": call_sid, "booking_id": booking_id}})
            return False
        return cursor.rowcount == 1

    def _apply_cancels(self, conn: _Connection) -> None:
        """Delete the withdrawn bookings the database refused before; raises StoreUnavailable if it still does."""
        with self._cancels_lock:
            for booking_id, call_sid in list(self._pending_cancels.items()):
                self._run(conn, "cancel", "DELETE FROM bookings WHERE id = ? AND call_sid = ?", (booking_id, call_sid))
                del self._pending_cancels[booking_id]

    def is_free(self, start: datetime) -> bool:
        _require_aware(start, "start")
        return not self._query("SELECT 1 FROM bookings WHERE start_ts = ?", (int(start.timestamp()),), dialog=True)

    def booking_at(self, start: datetime) -> Booking | None:
        _require_aware(start, "start")
        rows = self._query("SELECT * FROM bookings WHERE start_ts = ?", (int(start.timestamp()),), dialog=True)
        return _booking(rows[0]) if rows else None

    def taken_between(self, first: datetime, last: datetime) -> list[datetime]:
        rows = self._query("SELECT start_iso FROM bookings WHERE start_ts BETWEEN ? AND ?",
                           (int(first.timestamp()), int(last.timestamp())), dialog=True)
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

    # ------------------------------------------------------------ the transcript backlog

    @property
    def backlog(self) -> int:
        """Writes held: transcript writes, and booking withdrawals the database refused."""
        return len(self._backlog) + len(self._pending_cancels)

    def _write(self, call_sid: str, sql: str, params: tuple[Any, ...]) -> None:
        """A transcript write: now if the database takes it and nothing is held before it, else held."""
        with self._backlog_lock:
            if self._backlog and time.monotonic() >= self._next_retry:
                self._flush_locked()
            if not self._backlog:
                try:
                    self._run(self._writer, "write", sql, params)
                    return
                except StoreUnavailable as exc:
                    self._hold_first(exc, call_sid)
            self._hold(call_sid, sql, params)

    def flush_backlog(self) -> int:
        """Write what is held, oldest first, until the database refuses again; how many are left."""
        with contextlib.suppress(StoreUnavailable):
            self._apply_cancels(self._writer)
        with self._backlog_lock:
            if self._backlog:
                self._flush_locked()
            return len(self._backlog)

    def _flush_locked(self) -> None:
        written = 0
        while self._backlog:
            call_sid, sql, params = self._backlog[0]
            try:
                self._run(self._writer, "write", sql, params)
            except StoreUnavailable:
                self._next_retry = time.monotonic() + RETRY_SECONDS
                break
            self._backlog.popleft()
            written += 1
        if written:
            self._backlog_changed()
            if not self._backlog:
                log.warning("the store takes writes again: %d held transcript write(s) saved", written)

    def _hold_first(self, exc: StoreUnavailable, call_sid: str) -> None:
        self._next_retry = time.monotonic() + RETRY_SECONDS
        log.warning("the store refused a transcript write (%s): holding writes in memory, retrying every %g s",
                    exc.kind, RETRY_SECONDS, extra={"fields": {"call_sid": call_sid}})

    def _hold(self, call_sid: str, sql: str, params: tuple[Any, ...]) -> None:
        self._backlog.append((call_sid, sql, params))
        if len(self._backlog) > MAX_BACKLOG:
            lost_sid = self._backlog.popleft()[0]
            self.lost_writes += 1
            log.error("transcript backlog full: the oldest held write is lost", extra={"fields": {"call_sid": lost_sid}})
        self._backlog_changed()

    def _backlog_changed(self) -> None:
        if self.on_backlog is not None:
            try:
                self.on_backlog(len(self._backlog))
            except Exception:
                log.exception("store backlog callback failed")

    # ------------------------------------------------------------ calls and transcripts

    def start_call(self, call_sid: str, stream_sid: str = "", caller: str = "", direction: str = "inbound",
                   started_at: float | None = None) -> None:
        """Record a call's start (idempotent: a call resumed in another process keeps its start)."""
        self._write(call_sid,
                    "INSERT INTO calls (call_sid, stream_sid, caller, direction, started_at) "
                    "VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (call_sid) DO UPDATE SET stream_sid = excluded.stream_sid",
                    (call_sid, stream_sid, caller, direction, started_at))

    def add_turn(self, call_sid: str, turn: Mapping[str, Any]) -> None:
        """Store one turn: turn_id, user_text, agent_text, heard_text, interrupted, dtmf, timings, at."""
        timings = json.dumps(turn.get("timings") or {}, default=str)  # never lose a turn to a bad value
        self._write(call_sid,
                    "INSERT INTO turns (call_sid, turn_id, user_text, agent_text, heard_text, interrupted, dtmf, "
                    "backchannel, timings, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (call_sid, turn.get("turn_id"), str(turn.get("user_text") or ""),
                     str(turn.get("agent_text") or ""), str(turn.get("heard_text") or ""),
                     int(bool(turn.get("interrupted"))), str(turn.get("dtmf") or ""),
                     int(bool(turn.get("backchannel"))), timings, turn.get("at")))

    def end_call(self, call_sid: str, ended_at: float, reason: str) -> None:
        self._write(call_sid, "UPDATE calls SET ended_at = ?, end_reason = ? WHERE call_sid = ?",
                    (ended_at, reason, call_sid))

    def get_call(self, call_sid: str) -> dict[str, Any] | None:
        """The call row with its turns in order, or None if nothing of it was stored."""
        rows = self._query("SELECT * FROM calls WHERE call_sid = ?", (call_sid,))
        row = rows[0] if rows else None
        turns = self._query("SELECT * FROM turns WHERE call_sid = ? ORDER BY id", (call_sid,))
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


# Columns added since the first schema, with their definitions: a store written by an older version
# gains them when opened (CREATE TABLE IF NOT EXISTS leaves an existing table as it is).
_ADDED_COLUMNS = {"turns": {"backchannel": "INTEGER NOT NULL DEFAULT 0"}}


def _add_missing_columns(db: sqlite3.Connection) -> None:
    for table, columns in _ADDED_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, definition in columns.items():
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")


def _turn_dict(row: sqlite3.Row) -> dict[str, Any]:
    turn = dict(row)
    del turn["id"], turn["call_sid"]
    turn["interrupted"] = bool(turn["interrupted"])
    turn["backchannel"] = bool(turn["backchannel"])
    turn["timings"] = json.loads(turn["timings"])
    return turn


# The dialog is written against a booking store; the SQLite store is the one there is.
BookingStore = Store
