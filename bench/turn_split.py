"""Where a turn's time goes: the median split of end-of-speech -> first reply frame, per component.

Runs scripted booking calls against a gateway (the embedded offline default, or the cloud path on the
emulators with --cloud) and reads each turn's timings back from /api/calls/{sid}: VAD (end of speech
-> end of turn), STT, the reply (dialog/LLM to the first speakable phrase), TTS first byte, and the
gateway's own overhead (what is left).

    .venv/bin/python bench/turn_split.py --calls 3            # offline: whisper + rules + piper
    .venv/bin/python bench/turn_split.py --calls 3 --cloud    # Deepgram/OpenAI/ElevenLabs emulated
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadgen.simcaller import CallerTurn, run_call  # noqa: E402
from tests.support import run_emulators, run_gateway  # noqa: E402

SCRIPT = ["Hello, I would like to book an appointment", "Next Tuesday at 3 pm", "Yes, that's right"]
KEYS = ("vad_ms", "stt_ms", "llm_first_sentence_ms", "tts_first_byte_ms", "gateway_overhead_ms", "voice_to_voice_ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--cloud", action="store_true")
    parser.add_argument("--mode", default="enabled", help="LATENCY_OPTIMIZATION_MODE")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        env = {"LATENCY_OPTIMIZATION_MODE": args.mode}
        if args.cloud:
            emulators = stack.enter_context(run_emulators(
                "--stt-final-delay", "0.15", "--llm-first-token", "0.3", "--tts-first-byte", "0.15",
                *[a for t in SCRIPT for a in ("--transcript", t)]))
            # Every LLM reply distinct, so no rendered-audio cache hides the TTS time.
            emulators.configure({"openai": {"script": [
                f"Alright, reply number {i} is on its way now. Is there anything else?" for i in range(200)]}})
            env.update(emulators.gateway_env(), VOICEGATE_LOCAL_ENGINES="0")
        gateway = stack.enter_context(run_gateway(env=env))
        rows: list[dict] = []
        caller_side: list[float] = []
        for _ in range(args.calls):
            report = await run_call(gateway.media_url, [CallerTurn(text=t) for t in SCRIPT], max_call_s=120,
                                    record_audio=False)
            caller_side += [t.latency_ms for t in report.turns if t.latency_ms]
            call = gateway.stored_call(report.call_sid)
            rows += [t["timings"] for t in call["turns"] if t["user_text"]]
    split = {k: round(statistics.median([r[k] for r in rows if r.get(k) is not None]), 1)
             for k in KEYS if any(r.get(k) is not None for r in rows)}
    split["caller_heard_after_ms"] = round(statistics.median(caller_side), 1) if caller_side else None
    split["turns"] = len(rows)
    label = "cloud (emulated)" if args.cloud else "offline default"
    print(f"{label}, {args.calls} calls, {len(rows)} caller turns, medians in ms:")
    print(json.dumps(split, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"label": label, "split": split, "turns": rows}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
