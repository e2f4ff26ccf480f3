"""The call core, event by event: no sockets, no event loop, time passed in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from dialog.events import (
    AudioReceived, CallEnded, CallStarted, CancelReply, DtmfReceived, HangUp, MarkEchoed, ProviderFailed,
    ReplyDelta, ReplyDone, SendClear, SendMark, SendMedia, SpeechAudio, SpeechDone, StartReply, Synthesize, Tick,
    TranscribeUtterance, TranscriptReceived, TurnTimings,
)
from gateway.session import Phase, SessionSettings
from tests.gateway.session_helpers import Driver, FRAME, finish_greeting, of, silence_frames, speech_frames


def test_start_greets_once():
    d = Driver()
    out = d.start()
    assert out == [StartReply(0, None, (), dtmf="", reprompt="")]
    assert d.session.phase is Phase.ACTIVE
    assert d.feed(CallStarted(d.now, "CA1", "MZ1")) == []


def test_reply_is_cut_into_sentences_and_paced_with_marks():
    d = Driver()
    d.start()
    out = d.feed(ReplyDelta(d.now, 0, "Hello, thanks for calling. How can "))
    assert of(Synthesize, out) == [Synthesize(0, 0, "Hello, thanks for calling.")]
    out = d.feed(ReplyDelta(d.now, 0, "I help?"))
    assert of(Synthesize, out) == []  # no boundary yet: the last sentence waits for the end
    out = d.feed(ReplyDone(d.now, 0))
    assert of(Synthesize, out) == [Synthesize(0, 1, "How can I help?")]
    out = d.feed(SpeechAudio(d.now, 0, 0, b"\x10" * 8000))  # 1 s of audio
    frames = of(SendMedia, out)
    assert all(len(f.payload) == FRAME for f in frames)
    # Only the lead (300 ms) goes out at once, not the whole second.
    assert 14 <= len(frames) <= 16
    out = d.feed(SpeechDone(d.now, 0, 0))
    assert of(SendMark, out) == []  # its audio is not all out yet
    sent = len(frames)
    marks = []
    for _ in range(200):
        d.now += 0.02
        step = d.feed(Tick(d.now))
        sent += len(of(SendMedia, step))
        marks += of(SendMark, step)
    assert sent == 50 and marks == [SendMark("t0s0")]


def test_full_reply_played_goes_into_history():
    d = Driver()
    d.start()
    d.reply(0, "Hello. How can I help?")
    for _ in range(150):
        d.now += 0.02
        d.feed(Tick(d.now))
    assert [m.name for m in of(SendMark, d.actions)] == ["t0s0", "t0s1"]
    assert d.feed(MarkEchoed(d.now, "t0s0")) == []
    out = d.feed(MarkEchoed(d.now, "t0s1"))
    (timings,) = of(TurnTimings, out)
    assert timings.heard_text == "Hello. How can I help?" and not timings.interrupted
    assert d.session.history == [{"role": "assistant", "content": "Hello. How can I help?"}]
    assert not d.session.agent_speaking


def test_caller_turn_vad_end_then_transcript_starts_reply():
    d = Driver()
    finish_greeting(d)
    d.audio(silence_frames(0.5))
    out = d.audio(speech_frames(1.2))
    assert of(TranscribeUtterance, out) == []
    out = d.audio(silence_frames(0.8))
    (utterance,) = of(TranscribeUtterance, out)
    # Pre-roll included (300 ms) and the 1.2 s of speech, plus a short tail.
    assert 1.2 * 8000 <= len(utterance.audio) <= (1.2 + 0.3 + 0.2) * 8000
    out = d.feed(TranscriptReceived(d.now, "I would like to book an appointment"))
    (start,) = of(StartReply, out)
    assert start.turn_id == 1 and start.user_text == "I would like to book an appointment"
    assert start.history == ({"role": "assistant", "content": "Hi."},)


def test_empty_transcript_is_noise_and_starts_nothing():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(0.4))
    d.audio(silence_frames(0.8))
    assert d.feed(TranscriptReceived(d.now, "  ")) == []


def _speak_reply(d: Driver, turn: int, text: str, seconds: float) -> None:
    d.reply(turn, text, seconds_per_sentence=seconds)


def test_barge_in_clears_at_once_and_the_words_cancel_keeping_only_what_was_heard():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(1.0))
    d.audio(silence_frames(0.7))
    d.feed(TranscriptReceived(d.now, "book me in"))
    _speak_reply(d, 1, "Sure, I can do that. What day works for you? Mornings are quiet.", seconds=1.0)
    # Caller hears the first sentence (mark echoes), then talks over the second.
    heard_first = False
    for _ in range(60):  # 1.2 s of silence from the caller while the agent talks
        d.audio(silence_frames(0.02))
        names = [a.name for a in of(SendMark, d.actions)]
        if "t1s0" in names and not heard_first:
            d.feed(MarkEchoed(d.now, "t1s0"))
            heard_first = True
    assert heard_first and d.session.agent_speaking
    out = d.audio(speech_frames(0.4))
    # The agent stops at once, but an interruption is a hypothesis until words come: nothing cancelled yet.
    assert of(SendClear, out) == [SendClear()]
    assert of(CancelReply, out) == [] and of(TurnTimings, out) == []
    assert not d.session.agent_speaking
    d.audio(silence_frames(0.6))
    out = d.feed(TranscriptReceived(d.now, "no wait, make it Thursday"))
    assert of(CancelReply, out)[0] == CancelReply(1, rollback=False)
    (timings,) = of(TurnTimings, out)
    assert timings.interrupted
    # The first sentence whole, and the words of the second that played before the clear (about 0.3 s
    # of its 1 s: "What" and maybe "day"), nothing of the third.
    assert timings.heard_text.startswith("Sure, I can do that. What")
    assert "for you" not in timings.heard_text and "Mornings" not in timings.heard_text
    assert d.session.history[-1] == {"role": "assistant", "content": timings.heard_text}
    assert d.session.history[-2] == {"role": "user", "content": "book me in"}
    (start,) = of(StartReply, out)
    assert start.user_text == "no wait, make it Thursday"
    # Twilio echoes every pending mark on clear: those echoes are stale and change nothing.
    history = list(d.session.history)
    for name in ("t1s1", "t1s2"):
        assert d.feed(MarkEchoed(d.now, name)) == []
    assert d.session.history == history
    # No more frames of the cancelled reply go out.
    late = d.feed(SpeechAudio(d.now, 1, 2, b"\x10" * 800)) + d.feed(Tick(d.now + 1))
    assert of(SendMedia, late) == []


def test_barge_in_onset_to_clear_is_the_vad_confirmation_time():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(1.0))
    d.audio(silence_frames(0.7))
    d.feed(TranscriptReceived(d.now, "hello"))
    _speak_reply(d, 1, "A long answer that goes on.", seconds=3.0)
    d.audio(silence_frames(0.5))
    onset = d.now
    for frame in speech_frames(1.0):
        d.now += 0.02
        if of(SendClear, d.feed(AudioReceived(d.now, frame))):
            break
    assert d.now - onset <= 0.3


def test_caller_resumes_before_reply_is_audible_combines_the_turns():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(0.8))
    d.audio(silence_frames(0.7))
    out = d.feed(TranscriptReceived(d.now, "I want to book"))
    (first,) = of(StartReply, out)
    # The reply has not produced audio yet when the caller goes on talking.
    out = d.audio(speech_frames(0.6, seed=1))
    assert of(CancelReply, out) == [CancelReply(first.turn_id, rollback=True)]
    assert of(SendClear, out) == []
    d.audio(silence_frames(0.7))
    out = d.feed(TranscriptReceived(d.now, "next Tuesday"))
    (second,) = of(StartReply, out)
    assert second.user_text == "I want to book next Tuesday"
    # The late reply of the cancelled turn is ignored.
    assert d.feed(ReplyDelta(d.now, first.turn_id, "Sure. ")) == []


def test_streaming_stt_end_of_turn_waits_while_caller_still_talks():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(0.6))
    # Deepgram says speech_final while our VAD still hears the caller: hold the text.
    assert d.feed(TranscriptReceived(d.now, "next tuesday", end_of_turn=True)) == []
    d.audio(silence_frames(0.3))
    out = d.feed(TranscriptReceived(d.now, "at three", end_of_turn=True))
    (start,) = of(StartReply, out)
    assert start.user_text == "next tuesday at three"


def test_interim_transcript_barges_in():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(0.6))
    d.audio(silence_frames(0.7))
    d.feed(TranscriptReceived(d.now, "hello"))
    _speak_reply(d, 1, "Let me tell you about our hours.", seconds=2.0)
    d.audio(silence_frames(0.2))
    out = d.feed(TranscriptReceived(d.now, "wait", is_final=False, end_of_turn=False))
    assert of(SendClear, out) == [SendClear()]


def test_dtmf_starts_a_turn_and_interrupts():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(0.6))
    d.audio(silence_frames(0.7))
    d.feed(TranscriptReceived(d.now, "yes"))
    _speak_reply(d, 1, "Press 1 to confirm, 2 to change.", seconds=2.0)
    d.audio(silence_frames(0.2))
    out = d.feed(DtmfReceived(d.now, "1"))
    assert of(SendClear, out) == [SendClear()]
    (start,) = of(StartReply, out)
    assert start.dtmf == "1" and start.user_text is None


def test_hang_up_after_last_sentence_played():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(0.6))
    d.audio(silence_frames(0.7))
    d.feed(TranscriptReceived(d.now, "goodbye"))
    out = d.feed(ReplyDelta(d.now, 1, "Goodbye!"))
    out += d.feed(ReplyDone(d.now, 1, hang_up=True))
    out += d.feed(SpeechAudio(d.now, 1, 0, b"\x10" * 1600))
    out += d.feed(SpeechDone(d.now, 1, 0))
    assert of(HangUp, out) == []
    for _ in range(30):
        d.now += 0.02
        d.feed(Tick(d.now))
    out = d.feed(MarkEchoed(d.now, "t1s0"))
    assert of(HangUp, out) == [HangUp("dialog")]


def test_reply_finishes_without_mark_echoes_after_grace():
    d = Driver()
    d.start()
    d.reply(0, "Hi there.", seconds_per_sentence=0.5)
    finished = []
    for _ in range(200):
        d.now += 0.02
        finished += of(TurnTimings, d.feed(Tick(d.now)))
    assert len(finished) == 1 and finished[0].heard_text == "Hi there."


def test_provider_failure_apologises_then_hangs_up_after_repeats():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(0.6))
    d.audio(silence_frames(0.7))
    d.feed(TranscriptReceived(d.now, "hello"))
    turn = d.session.reply_turn
    out = d.feed(ProviderFailed(d.now, "llm", turn, "timeout"))
    (apology,) = of(StartReply, out)
    assert apology.reprompt == "apology" and apology.user_text == "hello"
    hung = []
    for _ in range(5):
        turn = d.session.reply_turn
        if turn is None:
            break
        hung += of(HangUp, d.feed(ProviderFailed(d.now, "llm", turn, "timeout")))
    assert hung == [HangUp("provider_failure")]


def test_watchdog_apologises_when_no_audio_comes():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(0.6))
    d.audio(silence_frames(0.7))
    d.feed(TranscriptReceived(d.now, "hello"))
    out = d.audio(silence_frames(7.0))
    assert any(isinstance(a, StartReply) and a.reprompt == "apology" for a in out)


def test_stop_stores_unanswered_caller_words():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(0.6))
    d.feed(TranscriptReceived(d.now, "wait one", end_of_turn=False))
    out = d.feed(CallEnded(d.now, "stop"))
    (timings,) = of(TurnTimings, out)
    assert timings.user_text == "wait one"
    assert d.session.phase is Phase.ENDED
    assert d.feed(AudioReceived(d.now, b"\xff" * 160)) == []


def test_idle_and_max_duration_hang_up():
    d = Driver(SessionSettings(idle_timeout_seconds=2.0))
    d.start()
    d.now += 2.5
    assert of(HangUp, d.feed(Tick(d.now))) == [HangUp("idle")]
    d = Driver(SessionSettings(max_call_seconds=1.0))
    d.start()
    out = d.audio(silence_frames(1.2))
    assert of(HangUp, out) == [HangUp("max_duration")]


def test_next_deadline_tracks_pacing():
    d = Driver()
    d.start()
    assert d.session.next_deadline() is not None  # idle timeout and max duration are always armed
    d.reply(0, "Hello there.", seconds_per_sentence=1.0)
    deadline = d.session.next_deadline()
    assert d.now < deadline <= d.now + 0.3


def test_turn_timings_split_adds_up():
    d = Driver()
    finish_greeting(d)
    d.audio(speech_frames(0.8))
    d.audio(silence_frames(0.6))
    d.now += 0.2
    d.feed(TranscriptReceived(d.now, "hello"))
    d.now += 0.3
    d.feed(ReplyDelta(d.now, 1, "Hi. "))
    d.now += 0.1
    d.feed(SpeechAudio(d.now, 1, 0, b"\x10" * 800))
    d.feed(ReplyDone(d.now, 1))
    d.feed(SpeechDone(d.now, 1, 0))
    for _ in range(40):
        d.now += 0.02
        d.feed(Tick(d.now))
    (timings,) = of(TurnTimings, d.feed(MarkEchoed(d.now, "t1s0")))
    split = timings.split()
    assert split["stt_ms"] == pytest.approx(300, abs=25)  # 100 ms of the 600 ms silence came after the VAD end
    assert split["llm_first_sentence_ms"] == pytest.approx(300, abs=1)
    assert split["tts_first_byte_ms"] == pytest.approx(100, abs=1)
    assert split["gateway_overhead_ms"] == pytest.approx(0, abs=1)
    assert 500 <= split["vad_ms"] <= 700


def test_streaming_stt_gets_only_speech_with_preroll_and_tail():
    from dialog.events import ForwardAudio

    d = Driver()
    d.session.forward_audio = True
    finish_greeting(d)
    out = d.audio(silence_frames(1.0))
    assert of(ForwardAudio, out) == []  # silence costs nothing: the engine gets KeepAlives instead
    out = d.audio(speech_frames(1.0))
    forwarded = of(ForwardAudio, out)
    # The first piece carries the pre-roll and the onset frames the VAD needed to confirm speech;
    # then the speech goes in batches of stt_forward_batch_ms (100 ms), not one write per frame.
    batch = d.session.settings.stt_forward_batch_ms * 8
    assert len(forwarded[0].audio) >= 300 * 8 and all(len(f.audio) == batch for f in forwarded[1:])
    assert len(forwarded) <= 1 + 1.0 * 8000 // batch
    out = d.audio(silence_frames(0.8))
    forwarded = of(ForwardAudio, out)
    kinds = [type(a).__name__ for a in out if isinstance(a, (ForwardAudio, TranscribeUtterance))]
    # The trailing silence goes too, frame by frame as it comes (the engine endpoints on it), the
    # last batch of speech first; then the end of speech; then nothing.
    assert kinds[-1] == "TranscribeUtterance" and kinds.count("ForwardAudio") >= 20
    assert len(forwarded[0].audio) <= batch and all(len(f.audio) == FRAME for f in forwarded[1:])
    total = sum(len(f.audio) for f in of(ForwardAudio, d.actions))
    assert 1.0 * 8000 + 300 * 8 <= total <= (1.0 + 0.3 + 0.6) * 8000
    assert of(ForwardAudio, d.audio(silence_frames(1.0))) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["speech", "silence", "reply", "tick", "mark"]),
                          st.integers(min_value=1, max_value=40)), min_size=1, max_size=25))
def test_a_frame_that_asks_for_nothing_never_brings_the_deadline_forward(steps):
    """The media loop skips `next_deadline` after such a frame when a wake-up is already set
    (`MediaCall._core`): the core must keep the promise `CallSession.audio` makes."""
    d = Driver()
    d.session.forward_audio = True
    d.start()
    turn = 0
    speech = speech_frames(1.0)
    for kind, n in steps:
        if kind in ("speech", "silence"):
            frames = speech[:n] if kind == "speech" else silence_frames(n * 0.02)
            for frame in frames:
                before = d.session.next_deadline()
                d.now += 0.02
                out = d.session.audio(d.now, frame)
                after = d.session.next_deadline()
                if not out and before is not None:
                    assert after is not None and after >= before
        elif kind == "reply":
            d.reply(turn, "Sure. Tuesday at ten works.", seconds_per_sentence=n * 0.05)
            turn += 1
        elif kind == "tick":
            d.now += n * 0.01
            d.feed(Tick(d.now))
        else:
            for mark in of(SendMark, d.actions):
                d.feed(MarkEchoed(d.now, mark.name))
