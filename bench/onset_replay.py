"""Does a sound during the agent's reply stop it? The turn-taking bench's events replayed at several
frame phases, without sockets or real time.

`bench/turn_taking.py` plays each non-speech event, backchannel and barge-in once, into a real call
whose 20 ms frames fall where they fall. Whether the model VAD calls a sound speech can depend on that
phase (where its 32 ms windows land on the sound), so one run samples one phase of each event. This
replays the same probes (`loadgen.turn_taking`) through the call core (`gateway.session.CallSession`)
with the real model VAD answering each `AnalyzeSpeech` after `--delay-ms`, the greeting synthesized by
Piper and playing, each event shifted by each of `--phases-ms`; and reports per kind the share of
events that sent `clear`, and for barge-ins the time from the speech's onset to `clear`.

`--looks 1` scores each window once and each request cold (the model VAD before 9aabe4d), for comparison.

    .venv/bin/python bench/onset_replay.py                  # results/onset_replay.json
    .venv/bin/python bench/onset_replay.py --looks 1 --json /tmp/one_look.json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audio import mulaw  # noqa: E402
from dialog.events import SendClear  # noqa: E402
from gateway.session import SessionSettings  # noqa: E402
from loadgen import turn_taking as tt  # noqa: E402
from loadgen.core_replay import FRAME, ModelDrivenCall  # noqa: E402
from loadgen.recordings import fetch  # noqa: E402

GREETING = "Hi, thanks for calling the clinic. Would you like to book an appointment?"
SCENARIOS = {"nonspeech": 24, "barge_in": 14, "backchannel": 14}  # as many as the turn-taking bench plays


def clear_times(call: ModelDrivenCall, audio: bytes) -> list[float]:
    """Times of the `clear`s sent while `audio` plays, s after its first frame."""
    start, clears = call.now, []
    for i in range(0, len(audio) - len(audio) % FRAME, FRAME):
        clears += [call.now - start for a in call.frame(audio[i:i + FRAME]) if isinstance(a, SendClear)]
    return clears


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
        model.probabilities = functools.partial(model.probabilities, looks=1)
    detector = SpeechDetector(model)
    piper = PiperEngine.shared()
    cat = fetch()
    probes = (tt.nonspeech_probes(cat, SCENARIOS["nonspeech"]) + tt.barge_in_probes(cat, SCENARIOS["barge_in"])
              + tt.backchannel_probes(cat, SCENARIOS["backchannel"]))
    # One synthesis of the greeting for every replay: Piper's voice varies from one synthesis to the next.
    speak = functools.cache(piper.synthesize_mulaw)
    settings = SessionSettings(model_vad=True)
    phases = [int(x) for x in args.phases_ms.split(",") if x.strip()]
    started = time.time()
    rows = []
    for probe in probes:
        for phase in phases:
            call = ModelDrivenCall(detector, settings, args.delay_ms / 1000, chain=args.looks == 2)
            call.greet(GREETING, speak)
            turn = probe.turns[0]
            lead = mulaw.silence(8 * turn.barge_in_ms + 8 * phase)
            onset = turn.barge_in_ms / 1000 + phase / 1000 + probe.parts[0].onset_s
            clears = clear_times(call, lead + turn.audio + mulaw.silence(16000))
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


if __name__ == "__main__":
    sys.exit(main())
