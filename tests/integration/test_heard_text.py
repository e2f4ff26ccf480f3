"""What the transcript says the caller heard of a cut reply is what reached the caller's ear.

The caller (a real recorded voice) talks over the greeting; the stored turn's `heard_text` must match
the greeting audio the simulated phone actually played before the `clear`, transcribed by whisper:
the whole sentences, and the words of the sentence in flight that had played (issue 20, item 8)."""

from __future__ import annotations

import json
import re

import pytest

from loadgen.simcaller import CallerTurn, run_call

pytestmark = pytest.mark.timeout(180)

# Whisper may drop a word cut in half, or finish it: the stored count may differ by this much.
WORD_TOLERANCE = 2


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


@pytest.mark.parametrize("at_ms", [1500, 3000])
async def test_heard_text_is_the_audio_that_reached_the_caller(offline_gateway, whisper, recordings, at_ms):
    speech = recordings.audio("allison_please_hold")  # "Please hold while we try to connect you."
    report = await run_call(offline_gateway.media_url, [CallerTurn(audio=speech, at_ms=at_ms)],
                            parameters={"caller": "+15550002222"}, max_call_s=60, wait_for_greeting=False)
    assert report.error is None and report.clears >= 1, report
    first_clear = report.clear_times[0]
    # The greeting's audio as played: every stretch of playback that started before the clear, cut at it.
    played = 0
    for start, nbytes in report.heard_segments:
        if start >= first_clear:
            break
        played += min(nbytes, int((first_clear - start) * 8000))
    greeting_heard = report.heard[:played]
    status, body = offline_gateway.get(f"/api/calls/{report.call_sid}")
    assert status == 200
    greeting = json.loads(body)["turns"][0]
    assert greeting["interrupted"], greeting
    stored = words(greeting["heard_text"])
    assert stored, "the played share of the sentence in flight is credited"
    assert words(greeting["agent_text"])[: len(stored)] == stored  # a prefix of what was planned
    transcribed = words(whisper.transcribe_mulaw(greeting_heard))
    assert abs(len(stored) - len(transcribed)) <= WORD_TOLERANCE, (greeting["heard_text"], transcribed)
    # They end at the same place: the last words overlap (the word the cut fell in may be misheard: "the
    # clinic" cut in half came back as "the clip").
    assert set(stored[-WORD_TOLERANCE - 1:]) & set(transcribed[-WORD_TOLERANCE - 1:]), \
        (greeting["heard_text"], transcribed)
