"""Turn-taking decisions of the call core, as event/action transcripts: an interruption is a hypothesis
until words confirm it; a false one resumes the reply where the caller stopped hearing it; an
acknowledgement does not cancel it; the model VAD rejects noise and the agent's own echo; a thought that
is not finished is waited for."""

from __future__ import annotations

import numpy as np
import pytest

from audio import mulaw
from dialog.events import (
    AnalyzeSpeech, CancelReply, ForwardAudio, Interruption, MarkEchoed, ReplyDelta, ReplyDone, SendClear, SendMark,
    SendMedia, SpeechAnalyzed, SpeechAudio, SpeechDone, StartReply, Synthesize, Tick, TranscribeUtterance,
    TranscriptReceived, TurnTimings,
)
from gateway.session import SessionSettings
from tests.gateway.session_helpers import Driver, answer_analysis, finish_greeting, of, silence_frames, speech_frames

WITH_MODEL = SessionSettings(model_vad=True)


def tone(seconds: float, level: float = 6000.0) -> bytes:
    """Reply audio with a level the sentence-share estimate can measure (a steady voiced tone)."""
    t = np.arange(int(seconds * 8000)) / 8000
    return mulaw.encode((np.sin(2 * np.pi * 200 * t) * level).astype(np.int16))


def phrase_audio(first: float, gap: float, second: float) -> bytes:
    """A sentence of two phrases with a pause between them, as a TTS engine renders a comma."""
    return tone(first) + mulaw.silence(int(gap * 8000)) + tone(second)


def speak(d: Driver, turn: int, sentences: list[bytes], text: str) -> None:
    """The dialog answers `text` and TTS renders each sentence as the given audio, at once."""
    out = d.feed(ReplyDelta(d.now, turn, text))
    out += d.feed(ReplyDone(d.now, turn))
    for action in of(Synthesize, out):
        d.feed(SpeechAudio(d.now, turn, action.sentence, sentences[action.sentence]))
        d.feed(SpeechDone(d.now, turn, action.sentence))


def caller_turn(d: Driver, text: str = "hello") -> int:
    """The caller says something and the turn is answered: returns the reply's turn id."""
    d.audio(speech_frames(0.8))
    d.audio(silence_frames(0.7))
    if d.session.settings.model_vad:
        answer_analysis(d, 0.9)  # the onset's check (it arrived during the speech in a real call)
    (start,) = of(StartReply, d.feed(TranscriptReceived(d.now, text)))
    return start.turn_id


def play(d: Driver, seconds: float, echo_marks: bool = True) -> list:
    """Silence from the caller while the agent plays. Marks are echoed as Twilio does, once the audio
    before them has played: the pacer sends a mark with its sentence's last frame, up to the 300 ms lead
    ahead of the caller's ear."""
    out = []
    due: list[tuple[float, str]] = getattr(d, "marks_due", [])
    d.marks_due = due
    for _ in range(int(seconds * 50)):
        step = d.audio(silence_frames(0.02))
        out += step
        due += [(d.now + d.session.settings.outbound_lead_ms / 1000.0, m.name) for m in of(SendMark, step)]
        while echo_marks and due and due[0][0] <= d.now:
            out += d.feed(MarkEchoed(d.now, due.pop(0)[1]))
    return out


def replying(sentences: list[bytes], text: str, played_s: float,
             settings: SessionSettings = SessionSettings()) -> tuple[Driver, int]:
    """A call past its greeting and one caller turn, whose reply `text` (rendered as `sentences`) has played
    for `played_s`: the driver and the reply's turn id."""
    d = Driver(settings)
    finish_greeting(d)
    turn = caller_turn(d)
    speak(d, turn, sentences, text)
    play(d, played_s)
    return d, turn


def first_payload_after(actions: list, clear_index: int) -> bytes:
    media = [a for a in actions[clear_index:] if isinstance(a, SendMedia)]
    return media[0].payload


# ------------------------------------------------------------------ resume after a false interruption


def test_false_barge_in_mid_sentence_resumes_from_the_phrase_before_it():
    sentence = phrase_audio(1.0, 0.15, 1.5)
    d, turn = replying([sentence], "We can book that for next week on Monday.",
                       played_s=1.6)  # the second phrase has been playing for ~0.4 s
    before = len(d.actions)
    out = d.audio(speech_frames(0.3))  # a cough-length noise, taken for speech (energy VAD only)
    assert of(SendClear, out) == [SendClear()] and of(CancelReply, out) == []
    out = d.audio(silence_frames(0.8))
    (utterance,) = of(TranscribeUtterance, out)
    out = d.feed(TranscriptReceived(d.now, ""))  # the STT engine heard no words
    assert of(Interruption, out) == [Interruption("resumed", turn, of(Interruption, out)[0].paused_ms)]
    assert of(CancelReply, out) == [] and of(TurnTimings, out) == []
    # The agent starts again at the pause before the phrase the caller talked over: the first frame
    # resumed is the pause's first frame, not where the audio stopped.
    resumed = first_payload_after(d.actions, before + len(d.actions[before:]) - len(out))
    pause_start = len(tone(1.0)) // 160 * 160
    assert resumed == sentence[pause_start:pause_start + 160]
    out = play(d, 3.0)
    (timings,) = of(TurnTimings, out)
    assert not timings.interrupted and timings.heard_text == "We can book that for next week on Monday."
    assert [m.name for m in of(SendMark, d.actions)][-1] == f"t{turn}s0r1"  # a fresh name after the clear


def test_false_barge_in_at_a_sentence_boundary_resumes_the_next_sentence_whole():
    # 0.72 s played: the second sentence has just begun (its first words went by as the caller coughed)
    d, turn = replying([tone(0.6), tone(1.2)], "Sure thing. What day would you like?", played_s=0.72)
    d.audio(speech_frames(0.3))
    d.audio(silence_frames(0.7))
    out = d.feed(TranscriptReceived(d.now, ""))
    media = of(SendMedia, out)
    assert media and media[0].payload == tone(1.2)[:160]  # sentence 1 from its start
    out = play(d, 2.0)
    (timings,) = of(TurnTimings, out)
    assert timings.heard_text == "Sure thing. What day would you like?" and not timings.interrupted


def test_false_barge_in_during_the_last_sentence_resumes_and_the_reply_completes():
    d, turn = replying([tone(0.4), tone(1.0)], "Okay. Goodbye for now.", played_s=0.8)
    d.audio(speech_frames(0.3))
    d.audio(silence_frames(0.7))
    # No transcript comes at all (a streaming engine that finalised nothing): the timeout resumes it.
    out = []
    for _ in range(100):
        d.now += 0.02
        out += d.feed(Tick(d.now))
    assert [i.outcome for i in of(Interruption, out)] == ["resumed"]
    out = play(d, 2.0)
    (timings,) = of(TurnTimings, out)
    assert timings.heard_text == "Okay. Goodbye for now."


def test_real_barge_in_is_confirmed_by_words_and_keeps_what_played():
    d, turn = replying([tone(2.0), tone(1.0)],
                       "We have openings on Monday Tuesday and Wednesday this week. Which suits?",
                       played_s=1.0)  # about half of the first sentence, no mark back yet
    d.audio(speech_frames(0.6))
    d.audio(silence_frames(0.6))
    out = d.feed(TranscriptReceived(d.now, "Thursday please"))
    assert of(CancelReply, out) == [CancelReply(turn, rollback=False)]
    assert of(Interruption, out)[0].outcome == "confirmed"
    (timings,) = of(TurnTimings, out)
    # Heard by the playout clock: about the first half of the sentence in flight (1.0 s of 2.0 s, plus the
    # VAD's 120 ms before the clear), not nothing.
    assert timings.heard_text.startswith("We have openings on Monday")
    assert "Which" not in timings.heard_text and "this week" not in timings.heard_text
    (start,) = of(StartReply, out)
    assert start.user_text == "Thursday please"


def test_interim_words_confirm_at_once():
    d, turn = replying([tone(2.0)], "Let me tell you about our opening hours.", played_s=0.5)
    d.audio(speech_frames(0.2))
    out = d.feed(TranscriptReceived(d.now, "no wait I", is_final=False, end_of_turn=False))
    assert of(CancelReply, out) == [CancelReply(turn, rollback=False)]


# ------------------------------------------------------------------ backchannels


@pytest.mark.parametrize("words", [
    "Uh-huh.",
    "I have to...",  # a fragment: whisper's writing of a short "uh huh", or of talk nearby
])
def test_backchannel_is_recorded_and_the_reply_goes_on(words):
    d, turn = replying([tone(1.0), tone(1.0)], "We are open weekdays. The earliest time is nine.", played_s=0.5)
    d.audio(speech_frames(0.3))
    d.audio(silence_frames(0.6))
    out = d.feed(TranscriptReceived(d.now, words))
    (ack,) = of(TurnTimings, out)
    assert ack.backchannel and ack.user_text == words
    assert of(Interruption, out)[0].outcome == "backchannel"
    assert of(StartReply, out) == [] and of(CancelReply, out) == []
    out = play(d, 3.0)
    (timings,) = of(TurnTimings, out)
    assert timings.heard_text == "We are open weekdays. The earliest time is nine." and not timings.interrupted
    assert of(StartReply, d.actions[-len(out):]) == []  # it is never answered as a turn
    assert {"role": "user", "content": words} not in d.session.history


def test_a_longer_start_trailing_off_is_a_turn():
    d, turn = replying([tone(2.0)], "We are open weekdays from nine to five.", played_s=0.5)
    d.audio(speech_frames(0.6))
    d.audio(silence_frames(0.6))
    out = d.feed(TranscriptReceived(d.now, "I'd like to book a..."))
    assert of(CancelReply, out) == [CancelReply(turn, rollback=False)]


def test_yes_during_a_question_answers_it():
    d, turn = replying([tone(0.4), tone(1.2)], "Got it. Shall I book Tuesday at three?",
                       played_s=1.4)  # most of the question has played
    d.audio(speech_frames(0.3))
    d.audio(silence_frames(0.6))
    out = d.feed(TranscriptReceived(d.now, "Yeah."))
    assert of(CancelReply, out) == [CancelReply(turn, rollback=False)]
    (start,) = of(StartReply, out)
    assert start.user_text == "Yeah."


def test_backchannels_off_makes_an_acknowledgement_an_interruption():
    d, turn = replying([tone(2.0)], "We are open weekdays from nine to five.",
                       played_s=0.5, settings=SessionSettings(backchannels=False))
    d.audio(speech_frames(0.3))
    d.audio(silence_frames(0.6))
    out = d.feed(TranscriptReceived(d.now, "okay"))
    assert of(CancelReply, out) == [CancelReply(turn, rollback=False)]


# ------------------------------------------------------------------ the model VAD: noise, echo, speech


def test_echo_onset_holds_the_agent_for_the_verdict_and_lets_it_go_on():
    d, turn = replying([tone(3.0)], "A long answer with plenty of words in it for the caller.",
                       played_s=0.5, settings=WITH_MODEL)
    out = d.audio(speech_frames(0.2))  # the agent's own voice coming back, loud enough for the energy VAD
    (request,) = of(AnalyzeSpeech, out)
    assert request.reference and request.max_lag == 400 * 8  # what played, to take the echo out
    assert len(request.reference) == len(request.audio) + request.max_lag
    assert of(SendClear, out) == []
    held = d.audio(silence_frames(0.2))
    assert of(SendMedia, held) == []  # held while the model judges (the caller still has ~300 ms queued)
    out = answer_analysis(d, 0.05, echo_erle_db=30.0)  # with the echo out, no speech is left
    assert of(Interruption, out) == [Interruption("echo", turn)]
    assert of(SendMedia, out)  # the held frames go out at once: no gap at the caller
    out = play(d, 1.0)
    assert of(SendClear, out) == [] and of(TranscribeUtterance, out) == []  # the echo is never transcribed
    assert d.session.agent_speaking


def test_speech_onset_is_confirmed_by_the_model_and_stops_the_agent():
    d, turn = replying([tone(3.0)], "A long answer with plenty of words in it for the caller.",
                       played_s=0.5, settings=WITH_MODEL)
    d.audio(speech_frames(0.2))
    out = answer_analysis(d, 0.9)
    assert of(SendClear, out) == [SendClear()]
    assert d.session.reply_turn == turn  # kept until words confirm it


def test_noise_on_an_idle_line_starts_no_turn_and_reaches_no_stt():
    d = Driver(WITH_MODEL)
    d.session.forward_audio = True  # a streaming engine (Deepgram) is listening
    finish_greeting(d)
    d.audio(speech_frames(0.4))  # a door, traffic: loud enough for the energy VAD
    answer_analysis(d, 0.02)
    out = d.audio(silence_frames(0.8))
    assert of(TranscribeUtterance, out) == [] and of(ForwardAudio, d.actions) == []
    assert of(StartReply, d.actions[1:]) == []


def test_speech_starting_under_a_noise_is_caught_by_a_recheck():
    d = Driver(WITH_MODEL)
    finish_greeting(d)
    # The line's own quiet first, as while a real greeting plays: a call's first 300 ms set its ambient
    # level, and a noise there would be the line's level, which the caller's words here do not stand over.
    d.audio(silence_frames(0.5))
    d.audio(speech_frames(0.3))  # noise first
    answer_analysis(d, 0.02)
    checks = []
    for frame in speech_frames(0.6, seed=3):  # then the caller talks, without a gap the VAD could see
        checks += of(AnalyzeSpeech, d.audio([frame]))
        if checks:
            break
    assert checks, "a re-check while the noise-judged utterance lasts"
    answer_analysis(d, 0.9)
    d.audio(speech_frames(0.4, seed=4))
    out = d.audio(silence_frames(0.8))
    (utterance,) = of(TranscribeUtterance, out)
    assert len(utterance.audio) < (0.3 + 1.0 + 0.3) * 8000  # from the speech (with pre-roll), not the noise's onset


def test_a_noise_bed_holding_the_vad_open_ends_where_the_model_heard_speech_stop():
    d = Driver(WITH_MODEL)
    finish_greeting(d)
    d.audio(speech_frames(0.8))
    answer_analysis(d, 0.9)
    # Babble that keeps the energy VAD above its threshold: it would never see 500 ms of quiet.
    rng = np.random.default_rng(7)
    bed = (rng.standard_normal(8000 * 3) * 2500 * (1 + 0.6 * np.sin(np.arange(8000 * 3) / 400))).astype(np.int16)
    frames = [mulaw.encode(bed[i:i + 160]) for i in range(0, len(bed), 160)]
    utterances = []
    for frame in frames:
        out = d.audio([frame])
        if of(AnalyzeSpeech, out):
            out += answer_analysis(d, 0.03)  # no speech in the recent window
        utterances += of(TranscribeUtterance, out)
        if utterances:
            break
    assert utterances, "the model ended the utterance the noise held open"


def test_no_verdict_in_time_falls_back_to_the_energy_vad():
    d, turn = replying([tone(3.0)], "A long answer with plenty of words in it for the caller.",
                       played_s=0.5, settings=WITH_MODEL)
    d.audio(speech_frames(0.2))
    out = d.audio(speech_frames(0.4))  # no SpeechAnalyzed ever comes
    assert of(SendClear, out) == [SendClear()]


def test_a_late_verdict_for_an_old_request_is_ignored():
    d = Driver(SessionSettings(model_vad=True, verdict_timeout_ms=2000))
    finish_greeting(d)
    d.audio(speech_frames(0.4))
    (request,) = of(AnalyzeSpeech, d.actions)
    d.audio(silence_frames(0.8))  # the utterance ends while the verdict is pending
    answer_analysis(d, 0.02)  # noise: nothing to transcribe
    assert of(TranscribeUtterance, d.actions) == []
    assert d.feed(SpeechAnalyzed(d.now, request.request_id, (0.9,) * 5)) == []


# ------------------------------------------------------------------ end of turn


def test_an_unfinished_thought_waits_for_the_rest():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(0.8))
    d.audio(silence_frames(0.7))
    assert of(StartReply, d.feed(TranscriptReceived(d.now, "I would like to come in on"))) == []
    d.audio(silence_frames(0.3))  # a 1 s pause in all
    d.audio(speech_frames(0.5, seed=2))
    d.audio(silence_frames(0.7))
    (start,) = of(StartReply, d.feed(TranscriptReceived(d.now, "Tuesday at three")))
    assert start.user_text == "I would like to come in on Tuesday at three"


def test_an_unfinished_thought_is_answered_when_the_caller_does_not_go_on():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(0.8))
    d.audio(silence_frames(0.7))
    assert of(StartReply, d.feed(TranscriptReceived(d.now, "I would like to come in on"))) == []
    out = d.audio(silence_frames(1.0))
    assert of(StartReply, out) == []
    out = d.audio(silence_frames(0.5))  # 2 s of silence after the last word
    (start,) = of(StartReply, out)
    assert start.user_text == "I would like to come in on"


def test_a_finished_sentence_is_answered_at_once():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(0.8))
    d.audio(silence_frames(0.7))
    (start,) = of(StartReply, d.feed(TranscriptReceived(d.now, "Next Tuesday at three.")))
    assert start.user_text == "Next Tuesday at three."


def test_an_onset_the_model_cannot_settle_is_looked_at_again_soon():
    d, turn = replying([tone(3.0)], "A long answer with plenty of words in it for the caller.",
                       played_s=0.5, settings=WITH_MODEL)
    d.audio(speech_frames(0.14))
    (request,) = of(AnalyzeSpeech, d.actions)[-1:]
    n = len(request.audio) // 256
    out = d.feed(SpeechAnalyzed(d.now, request.request_id, (0.1,) * (n - 2) + (0.6, 0.4), (-20.0,) * n))
    assert of(Interruption, out) == [] and of(SendClear, out) == []  # still held: neither resumed nor stopped
    out = d.audio(speech_frames(0.08, seed=5))
    (again,) = of(AnalyzeSpeech, out)
    assert len(again.audio) > len(request.audio)  # the same start, and the audio since
    out = answer_analysis(d, 0.9)
    assert of(SendClear, out) == [SendClear()]


def test_a_new_reply_waits_while_the_caller_starts_again_and_is_dropped_if_they_go_on():
    d = Driver(WITH_MODEL)
    finish_greeting(d)
    turn = caller_turn(d, "I would like to come in")
    d.audio(speech_frames(0.06, seed=4))  # the caller goes on: an onset the energy VAD has not confirmed yet
    out = d.feed(ReplyDelta(d.now, turn, "Sure.")) + d.feed(ReplyDone(d.now, turn))
    out += d.feed(SpeechAudio(d.now, turn, 0, tone(1.0)))  # the reply's audio is ready...
    assert d.session._pacer.queued_bytes and of(SendMedia, out) == []  # ...but waits
    out = d.audio(speech_frames(0.2, seed=5))
    assert of(SendMedia, out) == []
    out = answer_analysis(d, 0.9)  # it is speech: the reply goes, unheard, and both parts are answered together
    assert of(CancelReply, out) == [CancelReply(turn, rollback=True)]
    assert of(SendMedia, d.actions[-len(out):]) == []
    # Its frames that waited in the pacer went with it: none plays over the caller going on (in the
    # benchmark they did, with no reply left to stop them and no `clear`).
    assert d.session._pacer.queued_bytes == 0
    out = d.audio(speech_frames(0.6, seed=6)) + d.audio(silence_frames(0.2))
    assert of(SendMedia, out) == []


def test_a_new_reply_waits_for_a_click_and_then_plays():
    d = Driver(WITH_MODEL)
    finish_greeting(d)
    turn = caller_turn(d, "I would like to come in on Tuesday.")
    d.audio(speech_frames(0.04, seed=4))  # a click: too short for the energy VAD's onset
    out = d.feed(ReplyDelta(d.now, turn, "Sure.")) + d.feed(ReplyDone(d.now, turn))
    out += d.feed(SpeechAudio(d.now, turn, 0, tone(1.0)))
    assert d.session._pacer.queued_bytes and of(SendMedia, out) == []
    out = d.audio(silence_frames(0.04))  # it fizzled out: the next frame lets the reply go
    assert of(SendMedia, out)


def test_words_that_waited_for_a_caller_talking_on_are_answered_when_that_turns_out_to_be_noise():
    """Under a babble the sound right after the caller's words kept the line "busy" until the model judged
    it; the words waited for the caller to finish, and when it was judged noise nothing answered them (only
    the end of a later turn would have): the caller sat in silence. Now they are answered then."""
    d = Driver(WITH_MODEL)
    finish_greeting(d)
    d.audio(silence_frames(0.5))
    d.audio(speech_frames(0.6))
    answer_analysis(d, 0.9)
    (utterance,) = of(TranscribeUtterance, d.audio(silence_frames(0.8)))
    d.audio(speech_frames(0.2, seed=5))  # a sound starts before the transcript is back
    assert of(StartReply, d.feed(TranscriptReceived(d.now, "Tuesday at three please"))) == []  # they talk on?
    out = answer_analysis(d, 0.02)  # no: a noise
    (start,) = of(StartReply, out)
    assert start.user_text == "Tuesday at three please"
