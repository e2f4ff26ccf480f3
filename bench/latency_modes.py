"""Scripted calls with LATENCY_OPTIMIZATION_MODE=disabled, shadow and enabled, side by side.

The gateway runs on the cloud path against the emulators (STT final 150 ms after end of speech, LLM
first token 300 ms, TTS first byte 150 ms). Each mode gets a fresh gateway and database and the same
scripted calls: booking calls whose every line the rules understand, and off-script calls
(loadgen/conversations.py: 5 of 8 caller turns off script, the emulated model scripted per line to
speak or to record details through its tool). The script prints per-turn voice-to-voice latency (the
caller's side: end of speech to reply playback), overall and per turn kind: what the gateway's first
audio waited for, as it recorded each turn (quick response, cache, one LLM request, LLM + tool), and
the quick-response and cache hit rates read from the gateway's /metrics.

    .venv/bin/python bench/latency_modes.py --calls 6 --json bench/results/latency_modes.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadgen.conversations import OFF_SCRIPT, off_script_rules  # noqa: E402
from loadgen.simcaller import CallerTurn, run_call  # noqa: E402
from tests.support import run_emulators, run_gateway  # noqa: E402

# Booking calls, two kinds alternating: one books (its offers differ call to call as slots fill), one
# asks for a day the clinic is closed and gives up (the same offer every time: what the response cache
# is for). Then the off-script call.
SCRIPTS = {
    "booking": ["Hello, I would like to book an appointment", "Next Tuesday at 3 pm", "Yes, that's right"],
    "closed day": ["Hello, I would like to book an appointment", "Sunday at 10 am please", "Goodbye"],
    "off-script": [text for text, _ in OFF_SCRIPT],
}
KINDS = ("quick", "cache", "llm", "llm_tool", "rules")


def counters(gateway, name: str) -> dict[str, float]:
    text = gateway.get("/metrics")[1].decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf'^{name}{{result="(\w+)"}} ([0-9.e+]+)$', text, re.M)}


def rate(hits: dict[str, float]) -> float | None:
    total = hits.get("hit", 0) + hits.get("miss", 0)
    return round(hits.get("hit", 0) / total, 3) if total else None


def percentiles(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"n": 0, "p50_ms": None, "p95_ms": None}
    return {"n": len(values), "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(values[int(0.95 * (len(values) - 1))], 1)}


def reply_kinds(gateway, report) -> list[str | None]:
    """Each caller turn's reply kind from the gateway's record of the call, matched by the words."""
    call = gateway.stored_call(report.call_sid)
    stored = [t for t in call.get("turns", []) if t.get("user_text")]
    out, i = [], 0
    for turn in report.turns:
        j = next((k for k in range(i, len(stored)) if stored[k]["user_text"] == turn.text), None)
        out.append(None if j is None else stored[j]["timings"].get("reply_kind"))
        i = i if j is None else j + 1
    return out


async def run_mode(emulators, mode: str, calls: int) -> dict:
    env = {**emulators.gateway_env(), "VOICEGATE_LOCAL_ENGINES": "0", "LATENCY_OPTIMIZATION_MODE": mode}
    rows: list[tuple[str, str | None, float]] = []  # (conversation, reply kind, latency)
    greeting: list[float] = []
    with run_gateway(env=env) as gateway:
        for i in range(calls):
            for name, script in SCRIPTS.items():
                if name == "closed day" and i % 2 == 0 or name == "booking" and i % 2 == 1:
                    continue  # the two booking calls alternate; the off-script call runs every time
                emulators.configure({"deepgram": {"script": script}})
                report = await run_call(gateway.media_url, [CallerTurn(text=t) for t in script], max_call_s=120,
                                        record_audio=False)
                for turn, kind in zip(report.turns, reply_kinds(gateway, report)):
                    if turn.latency_ms is not None:
                        rows.append(("off-script" if name == "off-script" else "booking", kind, turn.latency_ms))
                if report.greeting_latency_ms is not None:
                    greeting.append(report.greeting_latency_ms)
        quick, cache = counters(gateway, "voicegate_quick_responses_total"), counters(gateway, "voicegate_response_cache_total")
    result = {"mode": mode, "calls": calls * 2, "greeting": percentiles(greeting),
              "quick_hit_rate": rate(quick), "cache_hit_rate": rate(cache), "quick": quick, "cache": cache}
    for conversation in ("booking", "off-script"):
        mine = [r for r in rows if r[0] == conversation]
        result[conversation] = {"all": percentiles([r[2] for r in mine]),
                                **{kind: percentiles([r[2] for r in mine if r[1] == kind]) for kind in KINDS}}
    return result


def cell(p: dict) -> str:
    return "–" if not p["n"] else f"{p['p50_ms']:.0f} / {p['p95_ms']:.0f} ms ({p['n']})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=4, help="booking calls per mode; as many off-script calls")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="latency-modes-") as tmp:
        rules = Path(tmp) / "off_script_rules.json"
        rules.write_text(json.dumps(off_script_rules()))
        with run_emulators("--stt-final-delay", "0.15", "--llm-first-token", "0.3", "--tts-first-byte", "0.15",
                           "--llm-reply", "Certainly, let me take care of that for you. Does that work?",
                           "--llm-rules", str(rules)) as emulators:
            results = [await run_mode(emulators, mode, args.calls) for mode in ("disabled", "shadow", "enabled")]
    print("| mode | conversation | caller turns | heard after p50 / p95 (n) | quick | cache | one LLM request "
          "| LLM + tool | greeting p50 | quick-response hit rate | cache hit rate |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for conversation in ("booking", "off-script"):
            c = r[conversation]
            print(f"| {r['mode']} | {conversation} | {c['all']['n']} | {cell(c['all'])} | {cell(c['quick'])} "
                  f"| {cell(c['cache'])} | {cell(c['llm'])} | {cell(c['llm_tool'])} | {r['greeting']['p50_ms']} ms "
                  f"| {r['quick_hit_rate']} | {r['cache_hit_rate']} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
