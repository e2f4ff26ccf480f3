"""Regenerate the STT corpus: every phrasing in every voice, through the offline whisper engine.

    nice -n 10 .venv/bin/python -m tests.dialog.corpus.build            # tiny.en -> stt_corpus.json
    nice -n 10 .venv/bin/python -m tests.dialog.corpus.build --model base --out /tmp/base.json

Audio is synthesized, put through the telephone path (8 kHz mu-law, voices.telephone) and handed to
`WhisperEngine.transcribe_checked` as a call's utterance is; nothing but the transcripts (and the
decoder's statistics, for tuning the engine's guards) is kept. Transcripts that changed since the
previous corpus are listed, for checking the hand-read lists in check.py. Prints the decode time and
the word error rate against the spoken text (`wer.py`), for comparing models.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

from providers.whisper_stt import WhisperEngine
from tests.dialog.corpus.phrasings import PHRASINGS, RECORDED_PHRASINGS
from tests.dialog.corpus.voices import VOICES, Synthesizer, tool_versions
from tests.dialog.corpus.wer import word_errors

CORPUS = Path(__file__).with_name("stt_corpus.json")


def build(model: str, voices: list[str] | None, previous: dict[tuple[str, str], dict],
          save: Callable[[dict], None] = lambda corpus: None) -> dict:
    """Every phrasing in the chosen voices (all by default); entries of other voices are kept from
    `previous`. `save` gets the corpus so far after each voice, so a long run can be stopped."""
    synth = Synthesizer()
    engine = WhisperEngine(workers=1, model=model)
    entries = []
    decode_seconds = audio_seconds = 0.0
    errors = words = 0
    review = []
    for voice in VOICES:
        if voices and voice.name not in voices:
            continue
        for pid, spoken, asked, expect in RECORDED_PHRASINGS if voice.recorded else PHRASINGS:
            audio = synth.telephone(voice, spoken)
            started = time.perf_counter()
            result = engine.transcribe_checked(audio)
            decode_seconds += time.perf_counter() - started
            audio_seconds += len(audio) / 8000
            e, n = word_errors(spoken, result.heard)
            errors, words = errors + e, words + n
            entry = {"id": pid, "voice": voice.name, "asked": asked, "spoken": spoken, "heard": result.heard,
                     "rejected": result.rejected, "expect": expect,
                     "avg_log_prob": round(result.avg_log_prob, 3),
                     "compression_ratio": round(result.compression_ratio, 2)}
            old = previous.get((pid, voice.name))
            if old is not None and old.get("heard") != result.heard:
                review.append(f"{voice.name} {pid}: {old.get('heard')!r} -> {result.heard!r}")
            entries.append(entry)
        print(f"{voice.name}: done", file=sys.stderr, flush=True)
        save(_corpus(model, entries, previous, voices, decode_seconds, audio_seconds, errors, words))
    for line in review:
        print("changed:", line, file=sys.stderr)
    return _corpus(model, entries, previous, voices, decode_seconds, audio_seconds, errors, words)


def _corpus(model: str, entries: list[dict], previous: dict[tuple[str, str], dict], voices: list[str] | None,
            decode_seconds: float, audio_seconds: float, errors: int, words: int) -> dict:
    kept = [e for (_, voice), e in previous.items() if voices and voice not in voices]
    order = {v.name: i for i, v in enumerate(VOICES)}
    entries = sorted(kept + entries, key=lambda e: order.get(e["voice"], len(order)))
    stats = {"model": model, "utterances": len(entries), "decoded_now": len(entries) - len(kept),
             "audio_seconds": round(audio_seconds, 1),
             "decode_seconds": round(decode_seconds, 1),
             "real_time_factor": round(decode_seconds / max(audio_seconds, 1e-9), 3),
             "word_error_rate": round(errors / max(words, 1), 4)}
    return {"about": "What the offline whisper engine wrote for each phrasing in each voice (tests/dialog/"
                     "corpus/build.py). `expect`: what the caller meant; `rejected`: why the engine did not "
                     "pass the transcript on.",
            "tools": tool_versions(), "stats": stats, "entries": entries}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--voice", action="append", help="only these voices (repeatable)")
    parser.add_argument("--out", type=Path, default=CORPUS)
    args = parser.parse_args(argv)
    previous: dict[tuple[str, str], dict] = {}
    if args.out.exists():
        previous = {(e["id"], e["voice"]): e for e in json.loads(args.out.read_text())["entries"]}

    def save(corpus: dict) -> None:
        args.out.write_text(json.dumps(corpus, indent=1, ensure_ascii=False) + "\n")

    corpus = build(args.model, args.voice, previous, save)
    save(corpus)
    print(json.dumps(corpus["stats"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
