"""What the offline speech recognition makes of booking answers under 10 dB babble, decoded four ways.

The booking success benchmark's weakest mode is a caller under 6-talker babble (bench/results/
booking_success.md): whisper writes what the babble says, or a guess, for most of the flite voices'
lines. This measures, utterance by utterance, whether three remedies a deployment could turn on would
change that:

- `tiny.en`: the engine as a call runs it (`WhisperEngine.transcribe_float`: greedy, its guards);
- `tiny.en + prompt`: the same with whisper's `initial_prompt` holding the booking vocabulary (weekdays,
  "the 16th of December", "half past two", "2:30 p.m."), which biases the decoder towards those words;
- `tiny.en + denoise`: the audio through a spectral-subtraction filter first, the noise's spectrum taken
  from the lead-in before the caller speaks (the line's babble alone);
- `base`: whisper base (74 M parameters, `WHISPER_MODEL=base`, extra `whisper-base`).

Utterances: 40 of the corpus phrasings (tests/dialog/corpus/phrasings.py, a fixed sample) in five voices
(flite kal, awb, rms, slt; Piper joe), at telephone bandwidth with babble_6 (loadgen.recordings, pinned
and sha256-checked) 10 dB under the voice's active level, as the corpus's noisy voices are made. An
utterance is *understood* when the dialog's extraction, given the transcript and the question asked,
finds what the caller meant (`tests.dialog.corpus.check`), and the engine did not reject it.
Decoding is deterministic (temperature 0), so the counts repeat exactly; the times depend on the load.

    nice -n 5 .venv/bin/python bench/stt_under_babble.py          # ~12 min; bench/results/stt_under_babble.json
    .venv/bin/python bench/stt_under_babble.py --variants tiny.en --phrasings 5
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audio import mulaw  # noqa: E402
from audio.resample import int16_to_float32, resample  # noqa: E402
from providers.whisper_stt import WHISPER_RATE, WhisperEngine  # noqa: E402
from tests.dialog.corpus.check import entry_mismatches  # noqa: E402
from tests.dialog.corpus.phrasings import PHRASINGS  # noqa: E402
from tests.dialog.corpus.voices import LEAD_MS, Synthesizer, Voice  # noqa: E402
from tests.dialog.corpus.wer import word_errors  # noqa: E402

VOICES = tuple(Voice(f"flite-{v}", "flite", (v,), noise="babble_6") for v in ("kal", "awb", "rms", "slt")) + (
    Voice("piper-joe-1.0", "piper", ("1.0",), noise="babble_6"),)
PROMPT = ("A caller books a clinic appointment. Monday, Tuesday, Wednesday, Thursday, Friday. "
          "The 16th of December at half past two, 2:30 p.m., 10 a.m., 11 o'clock. Yes, that's right.")
VARIANTS = ("tiny.en", "tiny.en + prompt", "tiny.en + denoise", "base")
SEED = 7
# Spectral subtraction: 32 ms frames at 16 kHz, a quarter hop; the noise estimate is over-subtracted a
# little and the gain floored, the usual guard against "musical noise".
N_FFT, HOP = 512, 128
OVER_SUBTRACT = 1.5
GAIN_FLOOR = 0.15


def denoise(samples: np.ndarray, lead_s: float) -> np.ndarray:
    """Spectral subtraction with the noise's power spectrum from the first `lead_s` (noise alone)."""
    window = np.hanning(N_FFT)
    padded = np.pad(samples.astype(np.float64), (N_FFT, N_FFT))
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP] * window
    spectrum = np.fft.rfft(frames, axis=1)
    power = np.abs(spectrum) ** 2
    lead = max(1, int((lead_s * WHISPER_RATE + N_FFT) / HOP))
    noise = power[:lead].mean(axis=0) * OVER_SUBTRACT
    gain = np.sqrt(np.maximum(1.0 - noise / np.maximum(power, 1e-12), GAIN_FLOOR))
    out_frames = np.fft.irfft(spectrum * gain, n=N_FFT, axis=1) * window
    out = np.zeros(len(padded))
    norm = np.zeros(len(padded))
    for i, frame in enumerate(out_frames):  # overlap-add
        out[i * HOP:i * HOP + N_FFT] += frame
        norm[i * HOP:i * HOP + N_FFT] += window ** 2
    return (out / np.maximum(norm, 1e-6))[N_FFT:N_FFT + len(samples)].astype(np.float32)


class _Prompted:
    """A whisper model that always decodes with `initial_prompt` (the engine's own call otherwise)."""

    def __init__(self, model, prompt: str) -> None:
        self._model, self._prompt = model, prompt

    def transcribe(self, samples, **options):
        return self._model.transcribe(samples, initial_prompt=self._prompt, **options)


def engine_for(variant: str) -> WhisperEngine:
    engine = WhisperEngine(workers=1, model="base" if variant == "base" else "tiny.en")
    if variant.endswith("prompt"):
        engine._model = _Prompted(engine._model, PROMPT)
    return engine


def run(variants: list[str], n_phrasings: int) -> dict:
    synth = Synthesizer()
    phrasings = random.Random(SEED).sample(PHRASINGS, n_phrasings)
    utterances = [(voice.name, pid, spoken, asked, expect,
                   int16_to_float32(resample(mulaw.decode(synth.telephone(voice, spoken)), 8000, WHISPER_RATE)))
                  for voice in VOICES for pid, spoken, asked, expect in phrasings]
    results = {}
    for variant in variants:
        engine = engine_for(variant)
        understood, errors, words, seconds, by_voice = 0, 0, 0, 0.0, {}
        for voice, pid, spoken, asked, expect, samples in utterances:
            if variant.endswith("denoise"):
                samples = denoise(samples, LEAD_MS / 1000.0)
            started = time.perf_counter()
            result = engine.transcribe_float(samples)
            seconds += time.perf_counter() - started
            entry = {"asked": asked, "heard": result.heard, "rejected": result.rejected, "expect": expect}
            ok = not result.rejected and not entry_mismatches(entry)
            understood += ok
            e, n = word_errors(spoken, result.heard)
            errors, words = errors + e, words + n
            by_voice.setdefault(voice, [0, 0])
            by_voice[voice][0] += ok
            by_voice[voice][1] += 1
        results[variant] = {"utterances": len(utterances), "understood": understood,
                            "word_error_rate": round(errors / max(words, 1), 3),
                            "decode_ms_mean": round(seconds / len(utterances) * 1000),
                            "understood_by_voice": {v: f"{a}/{b}" for v, (a, b) in by_voice.items()}}
        print(variant, results[variant], flush=True)
    return {"about": __doc__.split("\n\n")[0], "phrasings": n_phrasings, "seed": SEED, "snr_db": 10.0,
            "prompt": PROMPT, "at": time.strftime("%Y-%m-%dT%H:%M", time.gmtime()), "results": results}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--phrasings", type=int, default=40)
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "stt_under_babble.json")
    args = p.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants: {sorted(unknown)} (choose from {VARIANTS})")
    report = run(args.variants.split(","), args.phrasings)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print("| decoding | understood | word error rate | decode time, mean |")
    print("|---|---|---|---|")
    for variant, r in report["results"].items():
        share = r["understood"] / r["utterances"] * 100
        print(f"| {variant} | {r['understood']}/{r['utterances']} ({share:.1f} %) | {r['word_error_rate'] * 100:.1f} % "
              f"| {r['decode_ms_mean']} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
