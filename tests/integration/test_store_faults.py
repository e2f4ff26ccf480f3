"""The SQLite store refusing writes, through the real server, with real faults:

- locked by another writer: this test process holds the database's write lock (BEGIN IMMEDIATE);
- read-only: the database lives on a tmpfs mounted read-only when the gateway starts (a volume
  attached read-only), remounted writable later;
- disk full: the database lives on a small tmpfs that a filler file fills up, deleted later.

(The last two mount a tmpfs, which needs root or CAP_SYS_ADMIN; without it they are skipped and say so.
A read-only remount is refused while the gateway holds the file open for writing, which is why the
read-only case starts read-only.)

In each, a call books: its "yes" meets the fault and the caller hears that the booking could not be
saved, the gateway logs it with the call sid, and no booking row exists; the fault is lifted, the
caller says yes again, and the booking is made (a booking exists only once the caller was told so).
Another call runs beside it. Nothing stored before the fault is touched, and the transcript writes
the store refused meanwhile are held and written once it takes writes again: every utterance of
both calls is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from dialog.store import Store
from tests.integration import fault_table, spoken
from tests.integration.handover import follow_call
from tests.support import eventually, run_emulators, run_gateway

pytestmark = pytest.mark.timeout(300)

BOOKING = ("I would like to book an appointment", "next Thursday", "at 2 pm", "yes please", "sure go ahead")
OTHER = ("I would like to book an appointment", "okay that is all goodbye")
SAVE_FAILED = "I couldn't save that booking just now"
FAULT_FROM_UTTERANCE = 2  # the fault comes once "at 2 pm" is transcribed: the next turn is the "yes"


@pytest.fixture(scope="module")
def emulators():
    with run_emulators("--stt-final-delay", "0.15", "--tts-first-byte", "0.15") as emu:
        emu.configure({"deepgram": {"voiceprints": spoken.voiceprints(BOOKING + OTHER)}})
        yield emu


def env_for(emu, db: str) -> dict[str, str]:
    return {**emu.gateway_env(), "OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "VOICEGATE_DB": db,
            "VOICEGATE_LOCAL_ENGINES": "0"}


@contextlib.contextmanager
def tmpfs(size_kb: int):
    directory = tempfile.mkdtemp(prefix="voicegate-tmpfs-")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", directory],
                          capture_output=True, text=True)
    if done.returncode != 0:
        os.rmdir(directory)
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield Path(directory)
    finally:
        subprocess.run(["umount", "-l", directory], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


def remount(directory: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(directory)], check=True, capture_output=True)


def transcribed(emu, text: str) -> bool:
    """The Deepgram emulator has sent the final of `text` (the gateway has the words)."""
    return any(t["is_final"] and spoken.words(t["transcript"]) == spoken.words(text)
               for conn in emu.log()["deepgram"] for t in conn["transcripts"])


async def run_scenario(emu, gateway, db: str, key: str, label: str, fault_on, fault_off, *, faulty_from_start=False):
    """A booking call F meets the fault at its "yes"; a call H runs beside it. Returns what to check."""
    emu.reset()
    sid_f, sid_h = "CA" + os.urandom(16).hex(), "CA" + os.urandom(16).hex()
    before = None
    if not faulty_from_start:
        before = await asyncio.to_thread(_stored_turns, gateway)  # what was stored before the fault
    f = asyncio.create_task(follow_call(gateway, [gateway], spoken.turns(BOOKING), sid_f, max_call_s=120))
    await eventually(lambda: transcribed(emu, BOOKING[FAULT_FROM_UTTERANCE]), "F's time transcribed", 60, poll_s=0.05)
    if not faulty_from_start:
        await asyncio.to_thread(fault_on)
    h = asyncio.create_task(follow_call(gateway, [gateway], spoken.turns(OTHER), sid_h, max_call_s=120))
    await eventually(lambda: f'"call_sid":"{sid_f}"' in gateway.logs() and "booking not saved" in gateway.logs(),
                     "the booking refused and logged", 30, poll_s=0.05)
    booked_during = await asyncio.to_thread(_bookings, db)
    await asyncio.to_thread(fault_off)
    followed_f, followed_h = await asyncio.gather(f, h)
    stored_f = await asyncio.to_thread(gateway.stored_call, sid_f, lambda c: c.get("end_reason"), 20.0)
    stored_h = await asyncio.to_thread(gateway.stored_call, sid_h, lambda c: c.get("end_reason"), 20.0)
    after = await asyncio.to_thread(_stored_turns, gateway) if before is not None else None
    bookings = await asyncio.to_thread(_bookings, db)
    logs = gateway.logs()

    counts = {**{k: v for k, v in spoken.utterance_counts(stored_f, BOOKING).items()},
              **{f"H: {k}": v for k, v in spoken.utterance_counts(stored_h, OTHER).items()}}
    dropped = sum(1 for c in (followed_f, followed_h) if not c.completed)
    fault_table.save(key, fault_table.FaultRow(
        fault=label, worst_ms=max(followed_f.latencies_ms() + followed_h.latencies_ms()), calls=2, dropped=dropped,
        lost=sum(1 for n in counts.values() if n == 0), twice=sum(1 for n in counts.values() if n > 1),
        detail=f"bookings while refused: {len(booked_during)}; after the retry: {len(bookings)}"))

    assert dropped == 0, [leg.error for c in (followed_f, followed_h) for leg in c.legs]
    assert all(n == 1 for n in counts.values()), counts
    agent = [t["agent_text"] for t in stored_f["turns"]]
    assert any(SAVE_FAILED in a for a in agent), agent  # told, in the dialog's own words
    assert agent[-1].startswith("You're booked for"), agent
    assert booked_during == [], booked_during  # nothing half-written: no row until the caller heard "booked"
    assert [b["call_sid"] for b in bookings] == [sid_f]
    refused = [json.loads(line) for line in logs.splitlines() if "booking not saved" in line]
    assert refused and all(r["call_sid"] == sid_f for r in refused), refused
    if before is not None:
        assert after[: len(before)] == before  # the transcripts stored before the fault are untouched
    return followed_f


def _stored_turns(gateway) -> list[tuple]:
    """Every stored turn of every call, in storage order (the API reads the same file)."""
    calls = json.loads(gateway.get("/api/calls?limit=1000")[1])["calls"]
    out = []
    for call in sorted(calls, key=lambda c: c.get("started_at") or 0):
        stored = json.loads(gateway.get(f"/api/calls/{call['call_sid']}")[1])
        out += [(call["call_sid"], t["turn_id"], t["user_text"], t["agent_text"]) for t in stored["turns"]]
    return out


def _bookings(db: str) -> list[dict]:
    try:
        return _read_bookings(f"file:{db}?mode=ro")
    except sqlite3.OperationalError:
        # A WAL database on a read-only filesystem cannot be opened normally (no -shm can be made);
        # nothing can have been written there either, so the file alone is the whole truth.
        return _read_bookings(f"file:{db}?mode=ro&immutable=1")


def _read_bookings(uri: str) -> list[dict]:
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM bookings")]


async def test_store_locked_by_another_writer(emulators, tmp_path):
    db = str(tmp_path / "voicegate.db")
    lock: list[sqlite3.Connection] = []

    def hold_the_write_lock() -> None:
        conn = sqlite3.connect(db, timeout=5, isolation_level=None, check_same_thread=False)  # released from another worker thread
        conn.execute("BEGIN IMMEDIATE")  # a backup, a migration, another process's long transaction
        lock.append(conn)

    def release() -> None:
        lock.pop().rollback()

    with run_gateway(env=env_for(emulators, db)) as gateway:
        warm = await follow_call(gateway, [gateway], spoken.turns(OTHER), "CA" + os.urandom(16).hex(), max_call_s=60)
        assert warm.completed  # a call stored before the fault
        await run_scenario(emulators, gateway, db, "store-locked", "store locked by another writer (a held write lock)",
                           hold_the_write_lock, release)


async def test_store_read_only(emulators):
    with tmpfs(8192) as directory:
        db = str(directory / "voicegate.db")
        Store(db).close()  # the database exists (a volume attached read-only holds yesterday's data)
        remount(directory, "ro")
        with run_gateway(env=env_for(emulators, db)) as gateway:
            status, body = gateway.get("/readyz")
            assert status == 200, body  # degraded, not down: calls are taken
            await run_scenario(emulators, gateway, db, "store-read-only",
                               "store read-only (tmpfs mounted ro, remounted rw mid-call)",
                               lambda: None, lambda: remount(directory, "rw"), faulty_from_start=True)
            assert "the store cannot be opened" in gateway.logs()


async def test_disk_full(emulators):
    with tmpfs(8192) as directory:
        db = str(directory / "voicegate.db")
        filler = directory / "filler"

        def fill() -> None:
            with open(filler, "wb") as f:
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()

        with run_gateway(env=env_for(emulators, db)) as gateway:
            warm = await follow_call(gateway, [gateway], spoken.turns(OTHER), "CA" + os.urandom(16).hex(), max_call_s=60)
            assert warm.completed
            await run_scenario(emulators, gateway, db, "disk-full", "disk full (a filler file fills the tmpfs)",
                               fill, filler.unlink)
