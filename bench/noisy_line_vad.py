"""What the model VAD costs on a noisy line: real noise beds, nobody speaking, through the call core.

On a quiet line the call core asks the speech model only at an onset. Under a noise bed the energy VAD
hears "speech" that the model calls noise, and while that goes on the core asks again every 200 ms
about the last 0.9 s (`recheck_ms`, `recheck_window_ms`), so the same audio was scored about four
times over. Each bed (`loadgen.turn_taking.NOISE_ONLY_BEDS`, at the catalogue's -36 dBFS and 5 dB
louder) plays for `--seconds` into a `CallSession` with the real model (`loadgen.core_replay`), once
with each request run cold (`SpeechDetector.analyze`, before the per-call `SpeechStream`) and once
with the call's stream; reported: analyses a second, model windows run a second, and the CPU time of
the analyses per second of call (process time, so a busy machine does not inflate it), with what 100
such calls would take of a core.

    .venv/bin/python bench/noisy_line_vad.py            # results/noisy_line_vad.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dialog.events import AnalyzeSpeech, ReplyDone, TranscribeUtterance  # noqa: E402
from loadgen import turn_taking as tt  # noqa: E402
from loadgen.core_replay import ModelDrivenCall  # noqa: E402
from loadgen.recordings import fetch, loop_to, rms_dbfs, scale_db  # noqa: E402
from providers.speech_model import WINDOW_8K  # noqa: E402


class Timed:
    """Wraps an `analyze`, adding up its process time."""

    def __init__(self, analyze) -> None:
        self.analyze_fn, self.cpu = analyze, 0.0

    def __call__(self, *args):
        t = time.process_time()
        try:
            return self.analyze_fn(*args)
        finally:
            self.cpu += time.process_time() - t


def replay(detector, audio: bytes, chain: bool) -> dict:
    call = ModelDrivenCall(detector, chain=chain)
    if chain:
        timed = call.speech.analyze = Timed(call.speech.analyze)
    else:
        timed = Timed(detector.analyze)
        call.detector = SimpleNamespace(analyze=timed)
    call.feed(ReplyDone(call.now, 0))  # the line is the caller's: nothing playing
    out = call.play(audio)
    seconds = len(audio) / 8000
    asked = [a for a in out if isinstance(a, AnalyzeSpeech)]
    windows = call.speech.windows_run if chain else sum(len(a.audio) // WINDOW_8K for a in asked)
    return {"analyses_per_s": round(len(asked) / seconds, 2), "windows_per_s": round(windows / seconds, 1),
            "cpu_ms_per_s": round(timed.cpu * 1000 / seconds, 2),
            "turns": sum(isinstance(a, TranscribeUtterance) for a in out)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--levels", default="-36,-31", help="bed levels, dBFS RMS")
    p.add_argument("--json", type=Path, default=ROOT / "bench/results/noisy_line_vad.json")
    args = p.parse_args(argv)
    from providers.speech_model import SpeechDetector, SpeechModel

    detector = SpeechDetector(SpeechModel.shared())
    cat = fetch()
    rows = []
    print(f"{'bed':18s} {'dBFS':>5s}  {'asks/s':>6s}  {'windows/s cold→stream':>22s}  "
          f"{'CPU ms/s cold→stream':>21s}")
    for bed in tt.NOISE_ONLY_BEDS:
        for level in (float(x) for x in args.levels.split(",")):
            noise = loop_to(cat.audio(bed), args.seconds)
            noise = scale_db(noise, level - rms_dbfs(noise))
            cold, stream = replay(detector, noise, False), replay(detector, noise, True)
            rows.append({"bed": bed, "level_dbfs": level, "cold": cold, "stream": stream})
            print(f"{bed:18s} {level:5.0f}  {stream['analyses_per_s']:6.2f}  "
                  f"{cold['windows_per_s']:10.1f} → {stream['windows_per_s']:<9.1f}  "
                  f"{cold['cpu_ms_per_s']:9.2f} → {stream['cpu_ms_per_s']:<9.2f}")
    total = {k: round(sum(r[k]["cpu_ms_per_s"] for r in rows) / len(rows), 2) for k in ("cold", "stream")}
    print(f"mean CPU per second of a noisy call: cold {total['cold']} ms, stream {total['stream']} ms "
          f"(100 such calls: {total['cold'] * 10:.0f} % → {total['stream'] * 10:.0f} % of a core)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    summary = {"seconds": args.seconds, "rows": rows, "mean_cpu_ms_per_s": total}
    args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
