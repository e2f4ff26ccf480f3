"""Does a sound during the agent's reply stop it? The turn-taking bench's events replayed at several
frame phases, without sockets or real time.

`bench/turn_taking.py` plays each non-speech event, backchannel and barge-in once, into a real call
whose 20 ms frames fall where they fall. Whether the model VAD calls a sound speech can depend on that
phase (where its 32 ms windows land on the sound), so one run samples one phase of each event. This
replays the same probes (`loadgen.turn_taking`) through the call core (`gateway.session.CallSession`)
with the real model VAD answering each `AnalyzeSpeech` after `--delay-ms`, the greeting synthesized by
Piper and playing, each event shifted by each of `--phases-ms`; and reports per kind the share of
events that sent `clear`, and for barge-ins the time from the speech's onset to `clear`.

`--looks 1` scores each window once (the model VAD before 9aabe4d), for comparison.

    .venv/bin/python bench/onset_replay.py                  # results/onset_replay.json
    .venv/bin/python bench/onset_replay.py --looks 1 --json /tmp/one_look.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audio import mulaw  # noqa: E402
from dialog.events import (  # noqa: E402
    AnalyzeSpeech, CallStarted, ReplyDelta, ReplyDone, SendClear, SpeechAnalyzed, SpeechAudio, SpeechDone,
    Synthesize,
)
from gateway.session import CallSession, SessionSettings  # noqa: E402
from loadgen import turn_taking as tt  # noqa: E402
from loadgen.recordings import fetch  # noqa: E402

GREETING = "Hi, thanks for calling the clinic. Would you like to book an appointment?"
FRAME = 160  # 20 ms of 8 kHz mu-law
SCENARIOS = {"nonspeech": 24, "barge_in": 14, "backchannel": 14}  # as many as the turn-taking bench plays


class Replay:
    """One call core, fed 20 ms frames on a simulated clock; the model answers `delay` s after a request."""

    def __init__(self, settings: SessionSettings, detector, greeting: dict[str, bytes], delay: float) -> None:
        self.session = CallSession(settings)
        self.detector = detector
        self.delay = delay
        self.now = 100.0
        self.pending: list[tuple[float, int, object]] = []
        self.feed(CallStarted(self.now, "CA1", "MZ1"))
        out = self.feed(ReplyDelta(self.now, 0, GREETING)) + self.feed(ReplyDone(self.now, 0))
        for action in [a for a in out if isinstance(a, Synthesize)]:
            self.feed(SpeechAudio(self.now, 0, action.sentence, greeting[action.text]))
            self.feed(SpeechDone(self.now, 0, action.sentence))

    def feed(self, event) -> list:
        return self._carry(self.session.handle(event))

    def _carry(self, actions: list) -> list:
        out = []
        while actions:
            out += actions
            answers = []
            for a in actions:
                if isinstance(a, AnalyzeSpeech):
                    r = self.detector.analyze(a.audio, a.reference, a.max_lag)
                    if self.delay:
                        self.pending.append((self.now + self.delay, a.request_id, r))
                    else:
                        answers += self.session.handle(SpeechAnalyzed(self.now, a.request_id, r.probabilities,
                                                                      r.levels_dbfs, r.echo_erle_db))
            actions = answers
        return out

    def play(self, audio: bytes) -> list[float]:
        """Times of the `clear`s sent, s after the first frame of `audio`."""
        start, clears = self.now, []
        for i in range(0, len(audio) - len(audio) % FRAME, FRAME):
            self.now += 0.02
            out = self._carry(self.session.audio(self.now, audio[i:i + FRAME]))
            while self.pending and self.pending[0][0] <= self.now + 1e-9:
                _, request, r = self.pending.pop(0)
                out += self.feed(SpeechAnalyzed(self.now, request, r.probabilities, r.levels_dbfs, r.echo_erle_db))
            clears += [self.now - start for a in out if isinstance(a, SendClear)]
        return clears


def one_look(model):
    """The model's score with one look per window (before 9aabe4d), for `--looks 1`."""
    from audio.resample import int16_to_float32, resample
    from providers.speech_model import MODEL_RATE, WINDOW, WINDOW_8K

    def probabilities(pcm8k: np.ndarray) -> np.ndarray:
        n = len(pcm8k) // WINDOW_8K
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        x = int16_to_float32(resample(np.asarray(pcm8k[: n * WINDOW_8K], dtype=np.int16), 8000, MODEL_RATE))
        return model._run(np.pad(x[: n * WINDOW], (0, max(0, n * WINDOW - len(x)))), 0, n)
    return probabilities


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000) if values else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phases-ms", default="0,5,10,15", help="shifts of each event on the frame clock")
    p.add_argument("--delay-ms", type=float, default=10.0, help="the model's answer comes this late")
    p.add_argument("--looks", type=int, choices=(1, 2), default=2)
    p.add_argument("--json", type=Path, default=ROOT / "bench/results/onset_replay.json")
    args = p.parse_args(argv)

    from providers.piper_tts import PiperEngine
    from providers.speech_model import SpeechDetector, SpeechModel

    model = SpeechModel.shared()
    if args.looks == 1:
        model.probabilities = one_look(model)
    detector = SpeechDetector(model)
    piper = PiperEngine.shared()
    cat = fetch()
    probes = (tt.nonspeech_probes(cat, SCENARIOS["nonspeech"]) + tt.barge_in_probes(cat, SCENARIOS["barge_in"])
              + tt.backchannel_probes(cat, SCENARIOS["backchannel"]))
    # One synthesis of the greeting for every replay: Piper's voice varies from one synthesis to the next.
    greeting: dict[str, bytes] = {}
    settings = SessionSettings(model_vad=True)
    phases = [int(x) for x in args.phases_ms.split(",") if x.strip()]
    started = time.time()
    rows = []
    for probe in probes:
        for phase in phases:
            replay = _replay(settings, detector, piper, greeting, args.delay_ms / 1000)
            turn = probe.turns[0]
            lead = mulaw.silence(8 * turn.barge_in_ms + 8 * phase)
            onset = turn.barge_in_ms / 1000 + phase / 1000 + probe.parts[0].onset_s
            clears = replay.play(lead + turn.audio + mulaw.silence(16000))
            rows.append({"scenario": probe.scenario, "label": probe.label, "phase_ms": phase,
                         "clear_ms": round((clears[0] - onset) * 1000) if clears else None})
    summary = {}
    for scenario in SCENARIOS:
        mine = [r for r in rows if r["scenario"] == scenario]
        cleared = [r for r in mine if r["clear_ms"] is not None]
        entry = {"events": len(mine), "clear": len(cleared), "rate": round(len(cleared) / len(mine), 3)}
        if scenario == "barge_in":
            times = [r["clear_ms"] / 1000 for r in cleared]
            entry["clear_ms"] = {"p50": percentile(times, 50), "p95": percentile(times, 95)}
        else:
            entry["cleared"] = sorted({r["label"] for r in cleared})
        summary[scenario] = entry
        print(f"{scenario:12s} clear {len(cleared)}/{len(mine)}"
              + (f", onset to clear p50 / p95 {entry['clear_ms']['p50']} / {entry['clear_ms']['p95']} ms"
                 if scenario == "barge_in" else f" {entry['cleared']}"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"looks": args.looks, "phases_ms": phases, "delay_ms": args.delay_ms,
                                     "seconds": round(time.time() - started, 1), "summary": summary,
                                     "events": rows}, indent=1) + "\n")
    return 0


def _replay(settings, detector, piper, greeting: dict[str, bytes], delay: float) -> Replay:
    if not greeting:
        for text in _greeting_sentences(settings):
            greeting[text] = piper.synthesize_mulaw(text)
    return Replay(settings, detector, greeting, delay)


def _greeting_sentences(settings: SessionSettings) -> list[str]:
    s = CallSession(settings)
    s.handle(CallStarted(0.0, "CA1", "MZ1"))
    out = s.handle(ReplyDelta(0.0, 0, GREETING)) + s.handle(ReplyDone(0.0, 0))
    return [a.text for a in out if isinstance(a, Synthesize)]


if __name__ == "__main__":
    sys.exit(main())
