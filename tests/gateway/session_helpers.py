"""A session driven like the media endpoint drives it: events in, actions collected, time passed in."""

from __future__ import annotations

import numpy as np

from audio import mulaw
from dialog.events import (
    AnalyzeSpeech, CallStarted, MarkEchoed, ReplyDelta, ReplyDone, SpeechAnalyzed, SpeechAudio, SpeechDone,
    Synthesize, Tick, AudioReceived,
)
from gateway.session import CallSession, SessionSettings


FRAME = 160


def speech_frames(seconds: float, seed: int = 0) -> list[bytes]:
    """Speech-like audio: a voiced buzz with a syllable-rate envelope, about -15 dBFS."""
    n = int(seconds * 8000)
    t = np.arange(n) / 8000
    rng = np.random.default_rng(seed)
    buzz = np.sin(2 * np.pi * 180 * t) + 0.5 * np.sin(2 * np.pi * 360 * t) + 0.2 * rng.standard_normal(n)
    envelope = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 3 * t))
    pcm = (buzz * envelope * 5000).astype(np.int16)
    data = mulaw.encode(pcm)
    return [data[i:i + FRAME] for i in range(0, len(data) - FRAME + 1, FRAME)]


def silence_frames(seconds: float) -> list[bytes]:
    return [b"\xff" * FRAME] * int(seconds * 50)


class Driver:
    """Feeds a session like the media endpoint would, collecting actions."""

    def __init__(self, settings: SessionSettings = SessionSettings()) -> None:
        self.session = CallSession(settings)
        self.now = 100.0
        self.actions: list = []

    def feed(self, event) -> list:
        out = self.session.handle(event)
        self.actions += out
        return out

    def start(self) -> list:
        return self.feed(CallStarted(self.now, "CA1", "MZ1", {"caller": "+15550001111"}))

    def audio(self, frames: list[bytes]) -> list:
        out = []
        for frame in frames:
            self.now += 0.02
            out += self.feed(AudioReceived(self.now, frame))
        return out

    def reply(self, turn: int, text: str, seconds_per_sentence: float = 1.0) -> list:
        """The responder and TTS answer instantly: text, then audio + done for each sentence."""
        out = self.feed(ReplyDelta(self.now, turn, text))
        out += self.feed(ReplyDone(self.now, turn))
        for action in [a for a in out if isinstance(a, Synthesize)]:
            out += self.feed(SpeechAudio(self.now, turn, action.sentence, b"\x10" * int(8000 * seconds_per_sentence)))
            out += self.feed(SpeechDone(self.now, turn, action.sentence))
        return out


def of(kind, actions):
    return [a for a in actions if isinstance(a, kind)]


def finish_greeting(d: Driver) -> None:
    d.start()
    d.reply(0, "Hi.")
    for _ in range(60):
        d.now += 0.02
        d.feed(Tick(d.now))
    d.feed(MarkEchoed(d.now, "t0s0"))
    assert d.session.reply_turn is None


def answer_analysis(d: Driver, probability: float, echo_erle_db: float = 0.0, level: float = -20.0) -> list:
    """The model VAD answers the latest request: every window at `probability`."""
    (request,) = [a for a in d.actions if isinstance(a, AnalyzeSpeech)][-1:]
    n = len(request.audio) // 256
    return d.feed(SpeechAnalyzed(d.now, request.request_id, (probability,) * n, (level,) * n, echo_erle_db))
