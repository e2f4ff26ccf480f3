"""The call core driven as the media endpoint drives it, without sockets or real time: 20 ms frames on a
simulated clock, and the real model VAD answering each `AnalyzeSpeech` (at once, or `delay` s later, as
a worker thread would). Used by the recording tests and by `bench/onset_replay.py`."""

from __future__ import annotations

from typing import Callable

from dialog.events import (
    Action, AnalyzeSpeech, CallStarted, Event, ReplyDelta, ReplyDone, SpeechAnalyzed, SpeechAudio, SpeechDone,
    Synthesize,
)
from gateway.session import CallSession, SessionSettings

FRAME = 160  # 20 ms of 8 kHz mu-law
FRAME_S = 0.02


class ModelDrivenCall:
    """A started call's core; `detector` is a `providers.speech_model.SpeechDetector`."""

    def __init__(self, detector, settings: SessionSettings | None = None, delay: float = 0.0,
                 chain: bool = True) -> None:
        from providers.speech_model import SpeechStream

        self.session = CallSession(settings or SessionSettings(model_vad=True))
        self.detector = detector
        # The call's own run of the model, as the media endpoint has (chain=False: each request cold).
        self.speech = SpeechStream(detector) if chain else None
        self.delay = delay
        self.now = 100.0
        self._answers: list[tuple[float, int, object]] = []  # (due, request id, analysis)
        self.feed(CallStarted(self.now, "CA1", "MZ1"))

    def feed(self, event: Event) -> list[Action]:
        return self._carry(self.session.handle(event))

    def greet(self, text: str, speak: Callable[[str], bytes]) -> None:
        """The agent says `text` (each sentence synthesized by `speak`, text -> mu-law) and it starts playing."""
        out = self.feed(ReplyDelta(self.now, 0, text)) + self.feed(ReplyDone(self.now, 0))
        for action in [a for a in out if isinstance(a, Synthesize)]:
            self.feed(SpeechAudio(self.now, 0, action.sentence, speak(action.text)))
            self.feed(SpeechDone(self.now, 0, action.sentence))

    def frame(self, payload: bytes) -> list[Action]:
        """The clock moves 20 ms and the caller's frame comes in; then the model's answers now due."""
        self.now += FRAME_S
        out = self._carry(self.session.audio(self.now, payload))
        while self._answers and self._answers[0][0] <= self.now + 1e-9:
            _, request, r = self._answers.pop(0)
            out += self.feed(self._analyzed(request, r))
        return out

    def play(self, audio: bytes) -> list[Action]:
        out: list[Action] = []
        for i in range(0, len(audio) - len(audio) % FRAME, FRAME):
            out += self.frame(audio[i:i + FRAME])
        return out

    def _analyzed(self, request: int, r) -> SpeechAnalyzed:
        return SpeechAnalyzed(self.now, request, r.probabilities, r.levels_dbfs, r.echo_erle_db)

    def _carry(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        while actions:
            out += actions
            answers: list[Action] = []
            for action in actions:
                if isinstance(action, AnalyzeSpeech):
                    if self.speech is not None:
                        r = self.speech.analyze(action.audio, action.reference, action.max_lag, action.start)
                    else:
                        r = self.detector.analyze(action.audio, action.reference, action.max_lag)
                    if self.delay:
                        self._answers.append((self.now + self.delay, action.request_id, r))
                    else:
                        answers += self.session.handle(self._analyzed(action.request_id, r))
            actions = answers
        return out
