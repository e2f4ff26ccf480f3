"""Turn-taking through the real server with real recordings (issue 20, "What it must show").

The gateway runs on its offline default (whisper + rules + Piper, the model VAD on) as a subprocess on
127.0.0.1; a simulated Twilio caller plays real recordings from `loadgen.recordings` (pinned Debian
packages, fetched once per session: `apt-get download` on a fresh machine) into real-time calls. Nothing
of ours is mocked. Each call is a few seconds: the greeting ("Hi, thanks for calling the clinic. Would
you like to book an appointment?", ~4 s) is the reply that a door slam or a barge-in falls on.

What each test checks is what a caller and the stored transcript show: `clear`s, the audio that played
and the marks it echoed (`CallReport`), and `GET /api/calls/{call_sid}`.
"""

from __future__ import annotations

import pytest

from loadgen import turn_taking as tt
from loadgen.recordings import concat_with_pauses, fade, fetch
from loadgen.simcaller import CallerTurn, CallReport, run_call
from loadgen.turn_taking_verdicts import Wire, wer, words

# Each call takes seconds; the first test's setup may also fetch the recordings on a fresh machine (~80 MB
# of Debian packages downloaded, checked and converted, with an apt-get update), hence the long bound.
pytestmark = pytest.mark.timeout(900)

RATE = 8000
# A mark echoed this soon after a `clear` arrived was flushed by it (Twilio echoes every pending mark on
# `clear`), not played out: the simulated caller echoes them in the same step.
FLUSH_S = 0.05


@pytest.fixture(scope="session")
def recordings():
    """The pinned real recordings (fetched and converted once; a warm cache only hashes the clips)."""
    return fetch()


def played_marks(report: CallReport) -> list[str]:
    """The marks the caller echoed because their audio had played (not flushed by a `clear`)."""
    return [name for name, t in zip(report.marks_echoed, report.mark_echo_times)
            if not any(0 <= t - c <= FLUSH_S for c in report.clear_times)]


def in_order_share(said: str, heard: str) -> float:
    """The share of `said`'s words that `heard` holds in the same order (longest common subsequence)."""
    a, b = words(said), words(heard)
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[len(b)] / max(len(a), 1)


def greeting_of(call: dict) -> dict:
    return next(t for t in call["turns"] if t["turn_id"] == 0)


def answered_turns(call: dict) -> list[dict]:
    return [t for t in call["turns"] if (t["user_text"] or "").strip() and (t["agent_text"] or "").strip()]


def during_greeting(audio: bytes, onset_ms: int, lead_ms: int = 100) -> list[CallerTurn]:
    """`audio` (with `lead_ms` of silence before its onset) so its onset falls `onset_ms` into the greeting's
    playback, then 2 s of silence after whatever answers it has played."""
    return [CallerTurn(audio=audio, barge_in_ms=onset_ms - lead_ms), CallerTurn(wait_ms=2000, gap_ms=0)]


async def test_a_door_slam_during_the_reply_leaves_it_complete(offline_gateway, recordings, whisper):
    door = fade(tt.trim(recordings.audio("door"))[: 600 * RATE // 1000], 0, 5)  # 600 ms of a slammed door
    report = await run_call(offline_gateway.media_url,
                            during_greeting(concat_with_pauses([door], lead_ms=100, tail_ms=100), 1200),
                            max_call_s=40, max_reply_wait_s=8)
    assert report.error is None, report.error
    call = offline_gateway.stored_call(report.call_sid)
    greeting = greeting_of(call)
    # Stored as said in full: not interrupted, and the caller is credited with all of it.
    assert greeting["interrupted"] is False, call["turns"]
    assert greeting["heard_text"] == greeting["agent_text"], call["turns"]
    assert answered_turns(call) == [], "the door was answered as a caller turn"
    # The caller's speaker played the whole reply: its last mark came back because its audio had played
    # (a `clear`, if the door caused one, was followed by the reply resuming), and the words of the whole
    # greeting are in what played, in order.
    assert report.marks_sent and report.marks_sent[-1] in played_marks(report), (report.marks_sent,
                                                                                 report.marks_echoed)
    heard = whisper.transcribe_mulaw(report.heard)
    assert in_order_share(greeting["agent_text"], heard) >= 0.8, (greeting["agent_text"], heard)
    assert words(greeting["agent_text"])[-2:] == words(heard)[-2:], heard  # "...an appointment"


async def test_a_real_barge_in_stops_the_reply_and_keeps_what_was_heard(offline_gateway, recordings, whisper):
    speech = concat_with_pauses([tt.trim(recordings.audio("allison_please_hold"))], lead_ms=100, tail_ms=100)
    onset_ms = 1500
    report = await run_call(offline_gateway.media_url, during_greeting(speech, onset_ms),
                            max_call_s=40, max_reply_wait_s=10)
    assert report.error is None, report.error
    wire = Wire.of(report)
    onset = wire.turns[0]["speech_start"] + 0.1  # the clip's first active frame, 100 ms in
    clears = wire.clears_between(onset, wire.turns[0]["speech_end"])
    assert clears, f"no clear while the caller talked over the greeting: {wire.clears}"
    call = offline_gateway.stored_call(report.call_sid)
    greeting = greeting_of(call)
    # Cut for good, with the part that played kept: a first stretch of its words.
    assert greeting["interrupted"] is True, call["turns"]
    said, heard_text = words(greeting["agent_text"]), words(greeting["heard_text"])
    assert 0 < len(heard_text) < len(said) and said[: len(heard_text)] == heard_text, greeting
    # What played before the clear holds those words (whisper may miss one).
    played = sum(n for start, n in report.heard_segments if start < report.clear_times[0])
    heard_audio = whisper.transcribe_mulaw(report.heard[:played])
    assert in_order_share(greeting["heard_text"], heard_audio) >= 0.75, (greeting["heard_text"], heard_audio)
    # And the barge-in itself is the next turn, answered.
    turns = answered_turns(call)
    assert len(turns) == 1 and wer(recordings.transcript("allison_please_hold"), turns[0]["user_text"]) <= 0.3, turns


@pytest.mark.parametrize("item, first, second", [
    ("tuesday at | three pm", "tuesday", "pm"),  # real words, joined: "Tuesday at ... three P.M."
    ("allison_locate_person", "locate", "calling"),  # a real sentence cut where its talker paused
])
async def test_a_700_ms_pause_mid_sentence_gets_one_answer_at_the_end(offline_gateway, recordings,
                                                                      item, first, second):
    label, a, b, transcript = next(x for x in tt.pause_items(recordings) if x[0] == item)
    probe = next(p for p in tt.pause_probes(recordings, 8) if p.group == "700" and p.parts[0].clip == label)
    report = await run_call(offline_gateway.media_url, probe.turns, max_call_s=40, max_reply_wait_s=10)
    assert report.error is None, report.error
    wire = Wire.of(report)
    part = probe.parts[0]
    start = wire.turns[0]["speech_start"]
    first_half_end, end = start + part.a_end_s, start + part.end_s
    # Nothing was said into the pause or over the second half ...
    assert wire.audio_starts_between(first_half_end, end) == [], (wire.segments, first_half_end, end)
    # ... and one answer came at the end, to both halves.
    assert wire.first_audio_after(end) is not None, "no answer at all"
    call = offline_gateway.stored_call(report.call_sid)
    turns = answered_turns(call)
    assert len(turns) == 1, call["turns"]
    said = words(turns[0]["user_text"])
    assert first in said and second in said and wer(transcript, turns[0]["user_text"]) <= 0.5, turns
