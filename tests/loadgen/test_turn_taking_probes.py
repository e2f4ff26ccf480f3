"""The turn-taking benchmark's parts: the simulated caller's line conditions (a noise bed and the phone's
echo, against the tiny fake gateway of test_simcaller), the probes it builds from the real recordings,
and the verdicts it reads off a call's wire and stored transcript (pure).
"""

from __future__ import annotations

from base64 import b64decode

import numpy as np
import pytest

from audio import mulaw
from loadgen import turn_taking as tt
from loadgen.recordings import active_level_dbfs, active_span, fetch, loop_to, rms_dbfs
from loadgen.simcaller import CallerTurn, CallReport, LineConditions, Playback, TurnReport, run_call
from loadgen.turn_taking_verdicts import analyse, markdown, summarize, wer, word_errors
from tests.loadgen import test_simcaller as sim

RATE = 8000


@pytest.fixture(scope="session")
def recordings():
    return fetch()


def inbound(fake: sim.FakeGateway) -> list[tuple[float, np.ndarray]]:
    """(arrival, samples) of every media frame the caller sent."""
    return [(t, mulaw.decode(b64decode(m["media"]["payload"]))) for t, m in fake.events_of("media")]


def db(x: np.ndarray) -> float:
    return mulaw.rms_dbfs(np.asarray(x, dtype=np.int16))


# ------------------------------------------------------------------ the phone's speaker, read back


def test_playback_gives_back_what_played_when() -> None:
    audio = mulaw.encode((np.arange(1600) * 10 - 8000).astype(np.int16))  # 200 ms ramp
    pcm = mulaw.decode(audio)
    p = Playback()
    p.push(10.0, audio)
    assert np.array_equal(p.played(10.05, 160), pcm[400:560])
    before = p.played(9.99, 160)  # 10 ms of nothing, then the first 120 samples
    assert not before[:80].any() and np.array_equal(before[80:], pcm[:80])
    p.clear(10.1)  # the second half never plays
    assert not p.played(10.1, 160).any()
    p.push(11.0, audio[:800])  # a later stretch
    assert np.array_equal(p.played(11.0, 160), pcm[:160])
    assert np.array_equal(p.played(10.0, 160), pcm[:160])  # the first one is still there


# ------------------------------------------------------------------ line conditions on the wire


async def test_a_noise_bed_is_under_every_frame_speech_and_silence_alike(fake_gateway, recordings) -> None:
    fake = await fake_gateway(greeting_ms=300)
    bed = recordings.audio("traffic_truck")
    tone = sim.tone(400, 600.0)
    line = LineConditions(noise=bed, noise_gain_db=6.0)
    report = await run_call(fake.url, [CallerTurn(audio=tone, at_ms=600), CallerTurn(at_ms=1400)], line=line,
                            max_call_s=10, max_reply_wait_s=2)
    assert report.error is None, report.error
    frames = inbound(fake)
    sent = np.concatenate([f for _, f in frames]).astype(np.float64)
    expected = loop_to(mulaw.decode(bed), sent.size / RATE).astype(np.float64) * 10 ** (6 / 20)
    speech_at = round(0.6 / 0.02) * 160  # the tone starts with the frame due at 600 ms
    # Before the tone: the bed alone, from the first frame, at its level (mu-law requantizes it).
    quiet = slice(0, speech_at - 160)
    assert abs(db(sent[quiet]) - db(expected[quiet])) < 0.5
    assert np.corrcoef(sent[quiet], expected[quiet])[0, 1] > 0.99
    # Under the tone: both.
    loud = slice(speech_at + 320, speech_at + 2880)
    residual = sent[loud] - expected[loud]
    assert np.corrcoef(residual, mulaw.decode(tone)[320:2880])[0, 1] > 0.95


async def test_the_phone_echoes_what_its_speaker_played_late_and_quieter(fake_gateway) -> None:
    fake = await fake_gateway(greeting_ms=1000)  # a 440 Hz tone, as the gateway's greeting
    line = LineConditions(echo_gain_db=-10.0, echo_delay_ms=100.0)
    report = await run_call(fake.url, [CallerTurn(wait_ms=200)], line=line, max_call_s=10, max_reply_wait_s=3)
    assert report.error is None, report.error
    played_from = report.heard_segments[0][0]
    frames = inbound(fake)
    echoed = [(t, f) for t, f in frames if db(f) > -60]
    assert echoed, "no echo in what the caller sent"
    # The first frame holding echo carries the 20 ms that played 100 ms before it was sent.
    assert 0.095 <= echoed[0][0] - played_from <= 0.16, echoed[0][0] - played_from
    full = [f for t, f in echoed if played_from + 0.15 < t < played_from + 1.0]
    tone_db = db(mulaw.decode(sim.tone(1000)))
    assert full and all(abs(db(f) - (tone_db - 10)) < 1.0 for f in full)
    # It ends when the greeting's audio has played, 100 ms late.
    assert all(t < played_from + 1.0 + 0.16 for t, _ in echoed)


async def test_without_line_conditions_the_caller_sends_digital_silence(fake_gateway) -> None:
    fake = await fake_gateway(greeting_ms=300)
    report = await run_call(fake.url, [CallerTurn(wait_ms=100)], max_call_s=10, max_reply_wait_s=2)
    assert report.error is None
    assert all(b64decode(m["media"]["payload"]) == b"\xff" * 160 for _, m in fake.events_of("media"))


# ------------------------------------------------------------------ words


def test_word_errors_count_as_whisper_evaluations_do() -> None:
    assert word_errors("Ten of clubs.", "10 of clubs") == (0, 3)
    assert word_errors("he was not an ill disposed young man", "he was an ill disposed man") == (2, 8)
    assert word_errors("two nine three four zero", "2 9 3 4 0") == (0, 1)  # digit groups are one word
    assert wer("yes", "") == 1.0


# ------------------------------------------------------------------ the probes


def test_a_sentence_is_cut_where_its_talker_paused(recordings) -> None:
    a, b = tt.split_at_pause(recordings.audio("allison_locate_person"))
    whole = active_span(recordings.audio("allison_locate_person"))
    assert 0.25 < (len(a) / RATE) / (whole[1] - whole[0]) < 0.8
    assert active_level_dbfs(a) > -35 and active_level_dbfs(b) > -35
    # Synthetic: two bursts 300 ms apart are cut in that gap.
    burst = sim.tone(500)
    gap = mulaw.silence(int(0.3 * RATE))
    first, second = tt.split_at_pause(burst + gap + burst)
    assert abs(len(first) / RATE - 0.53) < 0.06 and abs(len(second) / RATE - 0.53) < 0.06
    assert tt.split_at_pause(sim.tone(1000)) is None


def test_every_scenario_builds_from_the_catalogue(recordings) -> None:
    probes = tt.build_probes(recordings)
    plan = tt.probe_plan(probes)
    assert set(plan) == set(tt.SCENARIOS)
    assert plan == tt.probe_plan(tt.build_probes(recordings))  # the same plan every time
    for p in probes:
        assert len(p.turns) == len(p.parts)
        for turn, part in zip(p.turns, p.parts):
            if part.kind in ("speech", "event", "backchannel"):  # a pause's parts are its halves' own
                assert active_span(turn.audio) == (part.onset_s, part.end_s) or (
                    abs(active_span(turn.audio)[0] - part.onset_s) < 1e-3
                    and abs(active_span(turn.audio)[1] - part.end_s) < 1e-3)
    events = [p for p in probes if p.scenario == "nonspeech"]
    assert {p.group for p in events} == {"transient", "noise_burst", "tone"}
    for p in events:  # the 350-600 ms (a transient's own length when shorter)
        length = p.parts[0].end_s - p.parts[0].onset_s
        assert length <= 0.62 and (p.group == "transient" or length >= 0.34), (p.label, length)


def test_snr_probes_put_the_bed_where_asked(recordings) -> None:
    for p in tt.snr_probes(recordings, 3):
        speech, line = p.turns[0].audio, p.line
        bed_db = rms_dbfs(line.noise) + line.noise_gain_db
        assert abs(active_level_dbfs(speech) - bed_db - int(p.group)) < 0.01


def test_pause_probes_hold_the_pause_asked_for(recordings) -> None:
    for p in tt.pause_probes(recordings, 4):
        part = p.parts[0]
        pause = part.b_start_s - part.a_end_s
        # The pause, plus the quiet edges each half keeps of its word (tens of ms).
        assert int(p.group) / 1000 <= pause + 0.02 < int(p.group) / 1000 + 0.16, (p.label, pause)


def test_echo_probes_cover_both_gains_and_the_delays(recordings) -> None:
    probes = tt.echo_probes(recordings, 4)
    assert {p.line.echo_gain_db for p in probes} == {-10, -20}
    assert {p.line.echo_delay_ms for p in probes} == {60, 90, 120, 150}


# ------------------------------------------------------------------ verdicts (pure)

GREETING = "Hi, thanks for calling the clinic. Would you like to book an appointment?"


def call_report(turns: list[tuple[float, float, float | None]], clears=(), segments=()) -> CallReport:
    """A report on the clock of a call started at t=100: turns (speech start, end, reply start) and the
    audio that played ((start, seconds))."""
    r = CallReport("CA1", "MZ1", call_start=100.0)
    r.turns = [TurnReport(index=i, speech_start=100 + a, speech_end=100 + b,
                          reply_start=None if c is None else 100 + c) for i, (a, b, c) in enumerate(turns)]
    r.clear_times = [100 + c for c in clears]
    r.heard_segments = [(100 + s, int(d * RATE)) for s, d in segments]
    return r


def event_probe(scenario: str = "nonspeech", transcript: str | None = None) -> tt.Probe:
    return tt.Probe(scenario, "door", "transient", [CallerTurn(audio=b"\xff" * 8000), CallerTurn(wait_ms=100)],
                    [tt.Part("event", "door", transcript, 0.1, 0.7), tt.Part("silence")])


def stored(*turns: dict) -> dict:
    return {"end_reason": "stop", "turns": list(turns)}


def greeting(**kw) -> dict:
    return {"turn_id": 0, "user_text": "", "agent_text": GREETING, "heard_text": GREETING, "interrupted": False, **kw}


def test_a_false_barge_in_that_resumes_is_paused_not_lost() -> None:
    report = call_report([(1.0, 1.8, 2.9)], clears=[1.25], segments=[(0.2, 1.05), (2.9, 3.0)])
    r = analyse(event_probe(), report, stored(greeting()))
    assert r["clear"] and r["resumed"] and not r["lost"] and not r["answered_as_turn"]
    assert r["clear_ms"] == pytest.approx(150, abs=1) and r["gap_ms"] == pytest.approx(1650, abs=1)


def test_a_false_barge_in_answered_as_a_turn_is_lost() -> None:
    report = call_report([(1.0, 1.8, 3.0)], clears=[1.2], segments=[(0.2, 1.0), (3.0, 2.0)])
    call = stored(greeting(heard_text="Hi, thanks for", interrupted=True),
                  {"turn_id": 1, "user_text": "Thanks.", "agent_text": "Sorry?", "heard_text": "Sorry?",
                   "interrupted": False})
    r = analyse(event_probe(), report, call)
    assert r["clear"] and r["lost"] and r["answered_as_turn"] and not r["resumed"] and r["gap_ms"] is None


def test_no_clear_and_the_whole_reply_heard_is_clean() -> None:
    report = call_report([(1.0, 1.8, None)], segments=[(0.2, 4.3)])
    r = analyse(event_probe(), report, stored(greeting()))
    assert not r["clear"] and not r["lost"]


def test_a_backchannel_recorded_before_the_greeting_it_fell_on() -> None:
    # A turn is stored when it ends: the backchannel (turn 1) before the greeting (turn 0).
    report = call_report([(1.0, 1.5, 2.6)], clears=[1.12], segments=[(0.2, 0.92), (2.6, 3.2)])
    call = stored({"turn_id": 1, "user_text": "Right.", "agent_text": "", "heard_text": "", "interrupted": False},
                  greeting())
    r = analyse(event_probe("backchannel", "right"), report, call)
    assert r["recorded_backchannel"] and not r["answered_as_turn"] and not r["lost"] and r["resumed"]


def test_pause_verdicts() -> None:
    part = tt.Part("pause_a_b", "x", "Tuesday at three P.M.", 0.2, 3.7, a_end_s=1.5, b_start_s=2.2)
    probe = tt.Probe("pause", "x", "700", [CallerTurn(audio=b"\xff"), CallerTurn(wait_ms=1)], [part, tt.Part("silence")])
    one = stored(greeting(), {"turn_id": 1, "user_text": "Tuesday at 3 PM", "agent_text": "So that's...",
                              "heard_text": "So that's...", "interrupted": False})
    ok = analyse(probe, call_report([(10.0, 14.0, 14.9)], segments=[(0.2, 4.3), (14.9, 3.0)]), one)
    assert not ok["premature"] and ok["one_answer"] and ok["latency_ms"] == pytest.approx(1220, abs=1)
    early = analyse(probe, call_report([(10.0, 14.0, 15.0)], segments=[(0.2, 4.3), (12.0, 0.3), (15.0, 3.0)]), one)
    assert early["premature"] and early["premature_at_ms"] == pytest.approx(520, abs=1)


def test_summary_and_table_put_runs_side_by_side() -> None:
    calls = [{"scenario": "nonspeech", "label": "a", "group": "tone", "clear": True, "lost": False,
              "answered_as_turn": False, "gap_ms": 1500.0},
             {"scenario": "nonspeech", "label": "b", "group": "transient", "clear": False, "lost": False,
              "answered_as_turn": False},
             {"scenario": "pause", "label": "c", "group": "700", "premature": False, "answers": 1,
              "one_answer": True, "latency_ms": 900.0},
             {"scenario": "clean", "label": "d", "group": "clean", "error": "connect failed"}]
    s = summarize(calls)
    assert s["nonspeech"]["false_barge_in"] == {"k": 1, "n": 2, "rate": 0.5}
    assert s["pause"]["700"]["premature"]["k"] == 0 and s["failed_calls"] == 1
    version = {"src": "/x", "commit": "abc", "subject": "s", "changed_files": 0, "changed_product_files": []}
    run = {"version": version, "started_utc": "2026-12-07 12:00 UTC", "duration_s": 60, "concurrency": 3,
           "command": "python bench/turn_taking.py", "calls": calls}
    md = markdown([{**run, "label": "before"}, {**run, "label": "after"}])
    assert "| measure | before `abc` | after `abc` | target |" in md
    assert "| non-speech during the reply: `clear` sent (false barge-in) | 1/2 (50 %) | 1/2 (50 %) | ≤ 5 % |" in md
    assert "700 ms mid-utterance pause" in md and "calls (failed) | 4 (1) | 4 (1)" in md

