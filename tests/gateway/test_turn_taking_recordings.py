"""The call core with the real model VAD on real recordings, without sockets or real time: noise beds
start no turn, a caller's voice under them does and ends where they stop, and noises while the agent
talks do not stop it. The same decisions the media endpoint drives, with `SpeechDetector` answering
each `AnalyzeSpeech` at once."""

from __future__ import annotations

import pytest

from audio import mulaw
from dialog.events import ReplyDone, SendClear, TranscribeUtterance
from loadgen.core_replay import ModelDrivenCall
from loadgen.recordings import (active_level_dbfs, active_span, concat_with_pauses, loop_to, mix_at_snr, overlay,
                                rms_dbfs, scale_db)

pytest.importorskip("faster_whisper")

NOISE_BEDS = ["babble_6", "crowd_applause", "traffic_truck", "moh_cold_day", "keyboard_typing",
              "machine_3d_printer", "train_passby", "helicopter"]
GREETING = "Hi, thanks for calling the clinic. Would you like to book an appointment?"
VOICES = ["allison_please_hold", "librivox_0880", "cards_001", "sphinx_go_forward", "allison_weasels",
          "tidigits_2934z"]


@pytest.fixture(scope="module")
def detector():
    from providers.speech_model import SpeechDetector, SpeechModel

    return SpeechDetector(SpeechModel.shared())


def utterances(actions: list) -> list[TranscribeUtterance]:
    return [a for a in actions if isinstance(a, TranscribeUtterance)]


@pytest.mark.parametrize("bed", NOISE_BEDS)
def test_a_noise_bed_with_nobody_speaking_starts_no_turn(detector, recordings, bed):
    d = ModelDrivenCall(detector)
    d.feed(ReplyDone(d.now, 0))  # a greeting with nothing to say: the line is the caller's
    assert utterances(d.play(loop_to(recordings.audio(bed), 30.0))) == []


@pytest.mark.parametrize("bed", ["babble_6", "crowd_applause"])
@pytest.mark.parametrize("level_dbfs", [-31.0, -26.0])
def test_a_loud_bed_from_the_first_frame_neither_cuts_the_greeting_nor_starts_a_turn(detector, recordings, piper,
                                                                                      bed, level_dbfs):
    """A caller in a café: the talk around them is on the line from its first frame, 10 dB under a
    caller's voice (-26 dBFS is 10 dB under the loudest caller voice in the booking benchmark). Every
    frame stood out from the VAD's starting floor, so none counted as the line's quiet level, and the
    babble's first seconds were taken for the caller: the greeting was cut and whisper's "Thank you very
    much." for the babble answered. Then a caller speaking 10 dB over it is heard (the talk around them
    can hold their turn open up to `held_open_max_ms`: 12 s of it follow their words)."""
    d = ModelDrivenCall(detector)
    noise = loop_to(recordings.audio(bed), 20.0)
    noise = scale_db(noise, level_dbfs - rms_dbfs(noise))
    out = d.play(noise[:4000])  # the greeting starts half a second into the call, as on a real one
    d.greet(GREETING, piper.synthesize_mulaw)
    out += d.play(noise[4000:8000 * 8])
    assert [a for a in out if isinstance(a, SendClear)] == [], (bed, level_dbfs)
    assert utterances(out) == [], (bed, level_dbfs)
    voice = recordings.audio("allison_please_hold")
    voice = scale_db(voice, level_dbfs + 10.0 - active_level_dbfs(voice))
    said = overlay(noise[8000 * 8:], voice)
    assert len(utterances(d.play(said))) == 1, (bed, level_dbfs)


def test_three_talkers_close_by_never_hold_a_turn_open_for_good(detector, recordings):
    """Three people talking right beside the phone are speech, to the model as to anyone: their talk can
    start an utterance. It must still end, so that a caller's turn is never held open by them: after
    `held_open_max_ms` at the latest (the STT's guards then judge what is in it)."""
    d = ModelDrivenCall(detector)
    d.feed(ReplyDone(d.now, 0))
    found = utterances(d.play(loop_to(recordings.audio("babble_3"), 30.0)))
    limit = d.session.settings.held_open_max_ms / 1000 + 0.5  # the cap, plus pre-roll and tail
    assert all(len(u.audio) / 8000 <= limit for u in found), [len(u.audio) / 8000 for u in found]
    assert len(found) <= 30 / (d.session.settings.held_open_max_ms / 1000)


@pytest.mark.parametrize("snr", [20, 10, 5])
def test_a_voice_under_babble_is_heard_and_its_turn_ends(detector, recordings, snr):
    """Six real voices under a six-talker babble: each is sent to the STT, in one utterance or two where
    the speaker pauses, holding most of the voice, and the turn ends before the babble does (it goes on
    3 s after the voice)."""
    ended = 0
    for voice in VOICES:
        d = ModelDrivenCall(detector)
        d.feed(ReplyDone(d.now, 0))
        speech = recordings.audio(voice)
        clip = concat_with_pauses([speech], lead_ms=3000, tail_ms=3000)
        mixed = mix_at_snr(clip, loop_to(recordings.audio("babble_6"), len(clip) / 8000), snr)
        start = d.now
        found: list[tuple[float, TranscribeUtterance]] = []
        for i in range(0, len(mixed) - len(mixed) % 160, 160):
            found += [(d.now, u) for u in utterances(d.frame(mixed[i:i + 160]))]
        assert 1 <= len(found) <= 2, (voice, snr, len(found))
        seconds = sum(len(u.audio) for _, u in found) / 8000
        voiced = active_span(speech)
        assert seconds >= 0.6 * (voiced[1] - voiced[0]), (voice, snr, seconds, voiced)
        ended += found[-1][0] - start < len(mixed) / 8000 - 1.0
    # Babble is speech, and at 10 dB and under its loudest talkers reach within the caller's own range:
    # then it can hold a turn open (2 of the 6 at 10 and 5 dB when this was written; bench/turn_taking.py
    # measures it on real calls). Most turns end with the voice.
    assert ended >= len(VOICES) - 2, (snr, ended)


# Not here: a car horn, whose harmonics Silero scores like a vowel (0.8), and the melodies of a ringback and
# a ringtone, which it scores as a voice at some phases of the call's frames (next test); they stop the
# agent, and the reply resumes when no words follow (tests/gateway/test_turn_taking.py shows the resume).
@pytest.mark.parametrize("clip", ["door", "clatter", "burp", "laugh", "thud", "busy_tone", "crowd_oooh",
                                  "metal_drop", "cash_till", "jackhammer", "ring_burst"])
def test_a_noise_while_the_agent_talks_does_not_stop_it(detector, recordings, piper, clip):
    d = ModelDrivenCall(detector)
    d.greet(GREETING, piper.synthesize_mulaw)
    line = overlay(mulaw.silence(8000 * 3), recordings.audio(clip), at_s=1.0)
    out = d.play(line)
    assert [a for a in out if isinstance(a, SendClear)] == [], clip
    assert utterances(out) == []


LONG_NOISES = ["door", "clatter", "burp", "laugh", "thud", "busy_tone", "ringback_twinkle", "crowd_oooh", "metal_drop",
               "cash_till", "jackhammer", "ring_burst", "ringtone_twinkle", "ring_incoming", "calling_tone",
               "beep_error", "car_horn", "crow_caw", "crash"]


def test_whole_noises_at_seven_frame_phases_rarely_stop_the_agent(detector, recordings, piper):
    """Each noise whole (up to seconds of it: a melody goes on while the model is asked again and again),
    at seven phases of the call's frames. Melodies and a horn are the model's weak spot: with each request
    run cold (466d9dd) 16 of these 133 stopped the agent (car horn 7, ringtone 7, ringback 2); with the model
    going on from its last analysis (SpeechStream) 15 (car horn 3, ringtone 5, ringback 7). Nothing else may."""
    stopped = {}
    for clip in LONG_NOISES:
        for shift_ms in range(0, 35, 5):
            d = ModelDrivenCall(detector)
            d.greet(GREETING, piper.synthesize_mulaw)
            out = d.play(overlay(mulaw.silence(8000 * 3), recordings.audio(clip), at_s=1.0 + shift_ms / 1000))
            if any(isinstance(a, SendClear) for a in out):
                stopped[clip] = stopped.get(clip, 0) + 1
    assert set(stopped) <= {"car_horn", "ringtone_twinkle", "ringback_twinkle"}, stopped
    assert sum(stopped.values()) <= 16, stopped


@pytest.mark.parametrize("shift_ms", [0, 5, 10, 15])
@pytest.mark.parametrize("clip", ["burp", "laugh", "crowd_oooh"])
def test_where_the_frames_fall_does_not_decide_a_noise(detector, recordings, piper, clip, shift_ms):
    """The same sound a few ms later on the line (the phase of a call's frames is chance). Silero's score
    on phone audio swings with where its 32 ms windows fall on a sound: this burp scored 0.12 one way and
    0.76 the way 10 ms later, and stopped the agent. The model is asked twice, half a window apart."""
    d = ModelDrivenCall(detector)
    d.greet(GREETING, piper.synthesize_mulaw)
    line = overlay(mulaw.silence(8000 * 3), recordings.audio(clip), at_s=1.0 + shift_ms / 1000)
    out = d.play(line)
    assert [a for a in out if isinstance(a, SendClear)] == [], (clip, shift_ms)
