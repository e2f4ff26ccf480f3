"""Scripted booking calls with LATENCY_OPTIMIZATION_MODE=disabled, shadow and enabled, side by side.

The gateway runs on the cloud path against the emulators (STT final 150 ms after end of speech, LLM
first token 300 ms, TTS first byte 150 ms). Each mode gets a fresh gateway and database and the same
scripted calls; the script prints per-turn voice-to-voice latency (the caller's side: end of speech to
reply playback) and the quick-response and cache hit rates read from the gateway's /metrics.

    .venv/bin/python bench/latency_modes.py --calls 6 --json bench/results/latency_modes.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadgen.simcaller import CallerTurn, run_call  # noqa: E402
from tests.support import run_emulators, run_gateway  # noqa: E402

# Two kinds of calls, alternating: one books (its offers differ call to call as slots fill), one asks for a
# day the clinic is closed and gives up (the same offer every time: what the response cache is for).
SCRIPTS = [
    ["Hello, I would like to book an appointment", "Next Tuesday at 3 pm", "Yes, that's right"],
    ["Hello, I would like to book an appointment", "Sunday at 10 am please", "Goodbye"],
]


def counters(gateway, name: str) -> dict[str, float]:
    text = gateway.get("/metrics")[1].decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf'^{name}{{result="(\w+)"}} ([0-9.e+]+)$', text, re.M)}


def rate(hits: dict[str, float]) -> float | None:
    total = hits.get("hit", 0) + hits.get("miss", 0)
    return round(hits.get("hit", 0) / total, 3) if total else None


async def run_mode(emulators, mode: str, calls: int) -> dict:
    env = {**emulators.gateway_env(), "VOICEGATE_LOCAL_ENGINES": "0", "LATENCY_OPTIMIZATION_MODE": mode}
    with run_gateway(env=env) as gateway:
        latencies: list[float] = []
        greeting: list[float] = []
        for i in range(calls):
            script = SCRIPTS[i % len(SCRIPTS)]
            emulators.configure({"deepgram": {"script": script}})
            report = await run_call(gateway.media_url, [CallerTurn(text=t) for t in script], max_call_s=90,
                                    record_audio=False)
            latencies += [t.latency_ms for t in report.turns if t.latency_ms is not None]
            if report.greeting_latency_ms is not None:
                greeting.append(report.greeting_latency_ms)
        quick, cache = counters(gateway, "voicegate_quick_responses_total"), counters(gateway, "voicegate_response_cache_total")
    latencies.sort()
    return {
        "mode": mode, "calls": calls, "turns": len(latencies),
        "turn_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "turn_p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None,
        "greeting_p50_ms": round(statistics.median(greeting), 1) if greeting else None,
        "quick_hit_rate": rate(quick), "cache_hit_rate": rate(cache), "quick": quick, "cache": cache,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    with run_emulators("--stt-final-delay", "0.15", "--llm-first-token", "0.3", "--tts-first-byte", "0.15",
                       "--llm-reply", "Certainly, let me take care of that for you. Does that work?") as emulators:
        results = [await run_mode(emulators, mode, args.calls) for mode in ("disabled", "shadow", "enabled")]
    print("| mode | turns | voice-to-voice p50 | p95 | greeting p50 | quick-response hit rate | cache hit rate |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['turns']} | {r['turn_p50_ms']} ms | {r['turn_p95_ms']} ms | {r['greeting_p50_ms']} ms "
              f"| {r['quick_hit_rate']} | {r['cache_hit_rate']} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
