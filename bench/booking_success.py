"""The booking success benchmark (issue 22, item 4): whole spoken booking calls through the real server.

    nice -n 5 .venv/bin/python bench/booking_success.py                    # clean, babble, llm: 36 calls each
    .venv/bin/python bench/booking_success.py --modes clean --calls 2      # a smoke run

Each mode starts the gateway from this checkout (`python -m gateway serve`) on a free port with its own
database, places `--calls` real-time calls, `--concurrency` at a time (`loadgen.simcaller.run_call`: 20 ms
mu-law frames, the agent's audio played on a simulated phone, marks echoed), stops the gateway, and writes
`bench/results/booking_success.json` and `.md` (other modes' runs in the JSON are kept).

The caller (`loadgen/booking_caller.py`, where its policy is written down) wants one slot, different for
every call, says it in varied words, sometimes over two turns, sometimes changing its mind at the
read-back, and reacts to the agent's words only: after each reply has played out it reads what the agent
said from the stored transcript (`GET /api/calls/{call_sid}`) and chooses its next line. Its lines are
spoken in a voice per call: Piper's joe at three speaking rates, flite's kal, awb, rms and slt, and Allison
Smith's recorded words (the days and times her recordings can say; her caller's other lines in Piper's
joe), all at telephone bandwidth (`tests/dialog/corpus/voices.py`).

A call is booked right when the store holds exactly one booking for it, on the day and at the time the
caller wanted (`GET /api/bookings`). Turns per booking: the caller's lines in the calls booked right.

Modes:
- `clean`: the offline default (whisper tiny.en, the rule-based dialog, Piper), nothing on the line.
- `babble`: the same, with 6-talker babble (`loadgen.recordings` babble_6) under the whole call, from the
  first frame, its RMS 10 dB (`--snr`) under the active speech level of the caller's voice.
- `babble_speech` (a diagnostic, not in the default run): the same babble at the same level, but only under
  the caller's lines (each line's audio mixed with it, as the STT corpus mixes it); silence between them. It
  tells what the babble costs through whisper reading speech in noise, apart from what the noise costs while
  the caller is silent (words whisper writes for it, the agent's replies cut short, turns that do not end).
- `llm_babble` (a diagnostic): LLM mode under the babble of `babble`.
- `llm`: whisper and Piper as offline, and an LLM: the OpenAI emulator (`voicegate emulate`), so a line the
  rules do not understand goes to the model with the `record_booking_details` tool on offer. The emulated
  model's understanding is scripted: before the caller speaks a line, the benchmark transcribes the line's
  audio with the same whisper engine, and when that transcript still holds every word that carries the
  line's meaning (the corpus's `faithful` test, tests/dialog/corpus/check.py; a word whisper writes for a
  number that sounds like it, "for 30" for "four thirty", counts as the number) it teaches the emulator a
  rule keyed by it: a tool call with the day, time and intent the caller meant (what a real model would
  read from those words). A transcript that lost them gets no rule: the model says "Sorry, I didn't quite catch
  that." and the gateway adds its question. The emulator also phrases the machine's rarer replies (offers
  of another time) with that same line, as it cannot know the decision.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadgen.booking_caller import MAX_LINES, RECORDED_WORDS, BookingCaller, Line, Persona, plan_calls  # noqa: E402
from loadgen.simcaller import CallerTurn, CallReport, LineConditions, run_call  # noqa: E402
from loadgen.turn_taking import Gateway, code_version, spawn_gateway  # noqa: E402

MODES = ("clean", "babble", "llm", "babble_speech", "llm_babble")
NOISE_BED_MODES = ("babble", "llm_babble")
VOICES = ("piper-joe-1.0", "flite-slt", "piper-joe-0.85", "flite-awb", "allison-words", "piper-joe-1.2",
          "flite-rms", "flite-kal")
RECORDED = "allison-words"
FALLBACK_VOICE = "piper-joe-1.0"  # speaks the lines Allison's recorded words cannot
SNR_DB = 10.0
MAX_CALL_S = 150.0  # ten lines and their replies fit in well under this
MAX_REPLY_WAIT_S = 15.0
STORE_WAIT_S = 3.0  # the turn record is written as the reply's last mark comes back; it is there well before
LLM_REPLY = "Sorry, I didn't quite catch that."
TOOL = "record_booking_details"
GAPS_MS = (250, 400, 600)  # how long a caller takes to start answering
JSON_OUT = ROOT / "bench/results/booking_success.json"
MD_OUT = ROOT / "bench/results/booking_success.md"
TARGETS = {"clean": 0.95, "babble": 0.85}
TARGET_TURNS = 5.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="clean,babble,llm",
                   help="comma-separated: clean, babble, llm, babble_speech, llm_babble (default: %(default)s)")
    p.add_argument("--calls", type=int, default=36, help="calls per mode (default: %(default)s)")
    p.add_argument("-c", "--concurrency", type=int, default=3,
                   help="calls at a time (default: %(default)s; whisper is CPU-heavy on a 2-core box)")
    p.add_argument("--voices", default=",".join(VOICES), help="caller voices, taken in turn (tests/dialog/corpus/voices.py)")
    p.add_argument("--seed", type=int, default=22, help="the callers' plan (targets, styles, phrasings)")
    p.add_argument("--snr", type=float, default=SNR_DB, help="babble mode: speech level over the babble (dB)")
    p.add_argument("--json", type=Path, default=JSON_OUT)
    p.add_argument("--md", type=Path, default=MD_OUT)
    p.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the spawned gateway (repeatable)")
    p.add_argument("--no-warmup", action="store_true", help="skip the unmeasured first call")
    return p.parse_args(argv)


def business_tz() -> ZoneInfo:
    """The dialog's clock: the gateway's real clock in its timezone."""
    return ZoneInfo(os.environ.get("VOICEGATE_TIMEZONE", "").strip() or "America/New_York")


def today() -> dt.date:
    return dt.datetime.now(business_tz()).date()


# ------------------------------------------------------------------ speech


class Speech:
    """Renders a caller's lines in its voice, at telephone bandwidth; one at a time (Piper is not shared)."""

    def __init__(self) -> None:
        from tests.dialog.corpus.voices import BY_NAME, Synthesizer

        self.voices = BY_NAME
        self.synth = Synthesizer()
        self.lock = threading.Lock()

    def voice_for(self, persona: Persona, line: Line) -> str:
        if persona.voice != RECORDED:
            return persona.voice
        return RECORDED if line.in_words(RECORDED_WORDS) else FALLBACK_VOICE

    def render(self, voice: str, text: str) -> bytes:
        with self.lock:
            return self.synth.telephone(self.voices[voice], text)

    def level_dbfs(self, voice: str) -> float:
        """The active speech level of a voice, for setting the babble under it."""
        from loadgen.recordings import active_level_dbfs

        sample = "Tuesday at three p.m." if voice == RECORDED else "Could I come in on Tuesday at half past two?"
        return active_level_dbfs(self.render(voice, sample))


# Words whisper writes for a number that sounds like them ("How about for 30 in the afternoon?"). A model
# reading the transcript with the question in mind takes them for the number; the rules do not.
SOUNDALIKES = {"for": "4", "to": "2", "too": "2", "free": "3", "tree": "3", "won": "1", "ate": "8"}


def model_understands(spoken: str, heard: str) -> bool:
    """Whether the emulated model reads `heard` as the caller meant `spoken`: every word that carries the
    meaning is still there, in order (the corpus's `faithful`), a sound-alike counting as its number."""
    from tests.dialog.corpus.check import faithful
    from tests.dialog.corpus.wer import words

    if faithful(spoken, heard):
        return True
    return faithful(spoken, " ".join(SOUNDALIKES.get(w, w) for w in words(heard)))


class Model:
    """LLM mode: teaches the OpenAI emulator what each line means, keyed by how whisper writes it."""

    def __init__(self, emulators) -> None:  # type: ignore[no-untyped-def]
        from providers.whisper_stt import WhisperEngine

        self.emulators = emulators
        self.engine = WhisperEngine(workers=1)
        self.lock = threading.Lock()
        self.rules: dict[str, dict] = {}
        self.taught = self.withheld = 0

    def transcribe(self, audio: bytes) -> tuple[str, str | None]:
        with self.lock:
            result = self.engine.transcribe_checked(audio)
        return result.heard, result.rejected

    async def teach(self, line: Line, audio: bytes) -> dict:
        heard, rejected = await asyncio.to_thread(self.transcribe, audio)
        key = heard.strip().lower()
        understood = bool(key) and not rejected and model_understands(line.text, heard)
        if understood:
            self.rules[key] = {"tool": TOOL, "arguments": line.tool_arguments()}
            self.taught += 1
            # The longest key first: the emulator takes the first rule whose key is in the caller's words.
            rules = dict(sorted(self.rules.items(), key=lambda kv: -len(kv[0])))
            await asyncio.to_thread(self.emulators.configure, {"openai": {"rules": rules}})
        else:
            self.withheld += 1
        return {"pre_heard": heard, "pre_rejected": rejected, "model_understands": understood}

    def requests(self) -> list[dict]:
        return list(self.emulators.log().get("openai", []))


# ------------------------------------------------------------------ one call


def _get_json(url: str, timeout: float = 5.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _wall(monotonic_t: float) -> float:
    return time.time() - (time.monotonic() - monotonic_t)


def agent_words(gateway: Gateway, call_sid: str, since: float) -> str:
    """What the agent said to the caller (what it heard of it, if it cut in) in the reply the store holds
    as finished after `since` (wall clock: the end of the caller's last line); "" if none came within
    STORE_WAIT_S: the agent has said nothing since, and the caller is not answering an old question."""
    deadline = time.monotonic() + STORE_WAIT_S
    while True:
        call = _get_json(f"{gateway.url}/api/calls/{call_sid}") or {}
        replies = [t for t in call.get("turns", []) if t.get("agent_text") and (t.get("at") or 0) >= since]
        if replies or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not replies:
        return ""
    last = replies[-1]
    return (last["heard_text"] if last.get("interrupted") else last["agent_text"]) or ""


async def place_call(gateway: Gateway, persona: Persona, speech: Speech, *, line: LineConditions | None,
                     model: Model | None, under_speech: tuple[bytes, float] | None = None) -> dict[str, Any]:
    """One call; `line`: a noise bed under the whole call; `under_speech`: (noise, SNR) mixed into each line."""
    caller = BookingCaller(persona)
    rng = random.Random(persona.seed)
    said: list[dict[str, Any]] = []

    async def next_turn(report: CallReport) -> CallerTurn | None:
        last = report.turns[-1] if report.turns else None
        since = _wall(last.speech_end) if last is not None and last.speech_end is not None else 0.0
        words = await asyncio.to_thread(agent_words, gateway, report.call_sid, since)
        choice = caller.respond(words, today())
        if choice is None:
            return None
        voice = speech.voice_for(persona, choice)
        audio = await asyncio.to_thread(speech.render, voice, choice.text)
        if under_speech is not None:
            from loadgen.recordings import mix_at_snr

            audio = mix_at_snr(audio, under_speech[0], under_speech[1], noise_offset_s=rng.uniform(0, 20))
        entry: dict[str, Any] = {"text": choice.text, "kind": choice.kind, "voice": voice, "reacting_to": words,
                                 "means": choice.tool_arguments()}
        if model is not None:
            entry.update(await model.teach(choice, audio))
        said.append(entry)
        return CallerTurn(audio=audio, text=choice.text, gap_ms=rng.choice(GAPS_MS))

    report = await run_call(gateway.media_url, [], next_turn=next_turn, max_call_s=MAX_CALL_S,
                            max_reply_wait_s=MAX_REPLY_WAIT_S, record_audio=False, line=line)
    for entry, turn in zip(said, report.turns):
        entry["at"] = _wall(turn.speech_start) if turn.speech_start is not None else None
        entry["reply_timeout"] = turn.reply_timeout
    # A `clear` the caller's own speech did not cause: the noise cut the agent short.
    spans = [(t.speech_start, t.speech_end) for t in report.turns if t.speech_start is not None and t.speech_end]
    noise_clears = sum(1 for c in report.clear_times if not any(a - 0.1 <= c <= b + 1.5 for a, b in spans))
    stored = await asyncio.to_thread(gateway.stored_call, report.call_sid)
    bookings = (await asyncio.to_thread(_get_json, f"{gateway.url}/api/bookings") or {}).get("bookings", [])
    mine = [b for b in bookings if b.get("call_sid") == report.call_sid]
    result = verdict(persona, caller, report, stored, mine, said)
    result["clears_not_caused_by_the_caller"] = noise_clears
    return result


def _local(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso).astimezone(business_tz())


def verdict(persona: Persona, caller: BookingCaller, report: CallReport, stored: dict, bookings: list[dict],
            said: list[dict]) -> dict[str, Any]:
    target = persona.target
    booked = [_local(b["start"]) for b in bookings]
    ok = len(booked) == 1 and booked[0].date() == target.day and (booked[0].hour, booked[0].minute) == target.time
    turns = stored.get("turns", [])
    last_agent = next((t["agent_text"] for t in reversed(turns) if t.get("agent_text")), "")
    if ok:
        outcome = "booked right"
    elif booked:
        outcome = "booked the wrong slot: " + ", ".join(b.strftime("%a %Y-%m-%d %H:%M") for b in booked)
    elif report.error:
        outcome = f"no booking: call error ({report.error})"
    elif caller.gave_up:
        outcome = f"no booking: the caller gave up after {MAX_LINES} lines"
    elif "trouble understanding" in last_agent:
        outcome = "no booking: the agent gave up (too many misunderstandings)"
    elif "goodbye" in last_agent.lower():
        outcome = "no booking: the agent said goodbye"
    else:
        outcome = "no booking"
    return {
        "call_sid": report.call_sid, "persona": persona.to_json(), "ok": ok, "outcome": outcome,
        "booked": [b.isoformat() for b in booked], "caller_lines": len(said),
        # stored caller turns minus lines said: > 0, turns the caller did not speak (noise); < 0, lines merged
        "extra_stored_turns": sum(1 for t in turns if t.get("user_text")) - len(said),
        "correction": caller.decoy_said, "duration_s": round(report.duration_s, 1), "error": report.error,
        "end_reason": stored.get("end_reason"), "said": said,
        "stored_turns": [{"at": t.get("at"), "user_text": t.get("user_text"), "agent_text": t.get("agent_text"),
                          "heard_text": t.get("heard_text"), "interrupted": t.get("interrupted"),
                          "reply_kind": (t.get("timings") or {}).get("reply_kind")} for t in turns],
    }


def transcript(call: dict[str, Any]) -> list[str]:
    """The call as it went: what the caller said (and in which voice), what whisper wrote, what the agent
    said, in time order."""
    events: list[tuple[float, str]] = []
    for s in call["said"]:
        extra = ""
        if "model_understands" in s:
            extra = f"  [model: {'understands' if s['model_understands'] else 'does not'}; pre-heard {s['pre_heard']!r}]"
        events.append((s.get("at") or 0.0, f"caller ({s['voice']}): {s['text']}{extra}"))
    for t in call["stored_turns"]:
        lines = []
        if t.get("user_text"):
            lines.append(f"  whisper wrote: {t['user_text']!r}")
        if t.get("agent_text"):
            kind = f" [{t['reply_kind']}]" if t.get("reply_kind") else ""
            cut = f" (caller heard: {t['heard_text']!r})" if t.get("interrupted") else ""
            lines.append(f"  agent{kind}: {t['agent_text']}{cut}")
        events.append(((t.get("at") or 0.0) - 1e-3, "\n".join(lines)))
    return [text for _, text in sorted(events, key=lambda e: e[0]) if text]


# ------------------------------------------------------------------ a mode


async def run_mode(mode: str, args: argparse.Namespace, speech: Speech) -> dict[str, Any]:
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    personas = plan_calls(args.calls, today(), voices, seed=args.seed)
    env = dict(item.split("=", 1) for item in args.gateway_env)
    emulator_ctx = None
    model: Model | None = None
    if mode.startswith("llm"):
        from tests.support import run_emulators

        emulator_ctx = run_emulators("--llm-first-token", "0.3", "--llm-token-rate", "50", "--llm-reply", LLM_REPLY)
        emulators = emulator_ctx.__enter__()
        env.update({"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": emulators.url + "/v1"})
        model = await asyncio.to_thread(Model, emulators)
    lines: dict[str, LineConditions] = {}
    under_speech = None
    if mode == "babble_speech":
        from loadgen.recordings import fetch

        under_speech = ((await asyncio.to_thread(fetch)).audio("babble_6"), args.snr)
    if mode in NOISE_BED_MODES:
        from loadgen.recordings import fetch, rms_dbfs

        bed = (await asyncio.to_thread(fetch)).audio("babble_6")
        for voice in set(voices):
            level = await asyncio.to_thread(speech.level_dbfs, voice)
            lines[voice] = LineConditions(noise=bed, noise_gain_db=level - args.snr - rms_dbfs(bed))
    started = time.monotonic()
    try:
        with spawn_gateway(env=env) as gateway:
            if not args.no_warmup:
                audio = await asyncio.to_thread(speech.render, FALLBACK_VOICE, "Hello.")
                await run_call(gateway.media_url, [CallerTurn(audio=audio)], max_call_s=40, max_reply_wait_s=15,
                               record_audio=False)
            gate = asyncio.Semaphore(max(1, args.concurrency))
            done = 0

            async def one(persona: Persona) -> dict[str, Any]:
                nonlocal done
                line = None
                if mode in NOISE_BED_MODES:
                    base = lines[persona.voice]
                    line = LineConditions(noise=base.noise, noise_gain_db=base.noise_gain_db,
                                          noise_offset_s=random.Random(persona.seed).uniform(0, 20))
                async with gate:
                    result = await place_call(gateway, persona, speech, line=line, model=model,
                                              under_speech=under_speech)
                done += 1
                mark = "ok  " if result["ok"] else "FAIL"
                print(f"[{mode} {done}/{len(personas)}] {mark} {persona.voice:<15} {persona.target} "
                      f"lines={result['caller_lines']} {result['outcome']}", file=sys.stderr, flush=True)
                return result

            calls = list(await asyncio.gather(*(one(p) for p in personas)))
            llm = llm_figures(model, calls) if model is not None else None
    finally:
        if emulator_ctx is not None:
            emulator_ctx.__exit__(None, None, None)
    return summarize(mode, args, calls, time.monotonic() - started, llm)


def llm_figures(model: Model, calls: list[dict]) -> dict[str, Any]:
    requests = [r for r in model.requests() if r.get("body")]
    turn_requests = [r for r in requests if r.get("tools")]
    keyed = 0
    for r in turn_requests:
        users = [m for m in r["body"].get("messages", []) if m.get("role") == "user"]
        text = str(users[-1].get("content", "")).strip().lower() if users else ""
        keyed += text in model.rules
    kinds: dict[str, int] = {}
    for call in calls:
        for t in call["stored_turns"]:
            if t.get("user_text") and t.get("reply_kind"):
                kinds[t["reply_kind"]] = kinds.get(t["reply_kind"], 0) + 1
    return {"lines_taught": model.taught, "lines_not_understood_by_the_model": model.withheld,
            "requests": len(requests), "turn_requests": len(turn_requests),
            "phrase_requests": len(requests) - len(turn_requests),
            "tool_calls": sum(1 for r in turn_requests if (r.get("reply") or {}).get("tool")),
            "turn_requests_with_a_taught_transcript": keyed, "reply_kinds": kinds}


def summarize(mode: str, args: argparse.Namespace, calls: list[dict], seconds: float, llm: dict | None) -> dict:
    right = [c for c in calls if c["ok"]]

    def share(group: list[dict]) -> dict:
        ok = [c for c in group if c["ok"]]
        return {"calls": len(group), "booked_right": len(ok),
                "share": round(len(ok) / len(group), 3) if group else None}

    by: dict[str, dict] = {}
    for key in ("voice", "answer", "opening"):
        values = sorted({c["persona"][key] for c in calls})
        by[key] = {v: share([c for c in calls if c["persona"][key] == v]) for v in values}
    by["correction"] = {str(flag): share([c for c in calls if c["correction"] == flag]) for flag in (True, False)}
    return {
        "mode": mode, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code": code_version(ROOT), "calls": len(calls), "booked_right": len(right),
        "share_booked_right": round(len(right) / len(calls), 3) if calls else None,
        "caller_lines_per_booking": round(sum(c["caller_lines"] for c in right) / len(right), 2) if right else None,
        "caller_lines_all_calls": sum(c["caller_lines"] for c in calls),
        "wrong_bookings": sum(1 for c in calls if c["booked"] and not c["ok"]),
        "no_booking": sum(1 for c in calls if not c["booked"]),
        "errors": sum(1 for c in calls if c["error"]),
        "calls_with_extra_stored_turns": sum(1 for c in calls if c["extra_stored_turns"] > 0),
        # lines merged into one turn (a turn end not found), or lines no turn came of (nothing heard)
        "calls_with_merged_lines": sum(1 for c in calls if c["extra_stored_turns"] < 0),
        "clears_not_caused_by_the_caller": sum(c["clears_not_caused_by_the_caller"] for c in calls),
        "config": {"concurrency": args.concurrency, "voices": args.voices, "seed": args.seed,
                   "snr_db": args.snr if "babble" in mode else None, "wall_s": round(seconds, 1)},
        "by": by, "llm": llm, "call_details": calls,
    }


# ------------------------------------------------------------------ results


MODE_NAMES = {"clean": "offline, clean audio", "babble": "offline, 10 dB babble", "llm": "LLM mode (emulated), clean audio",
              "babble_speech": "offline, 10 dB babble under the caller's lines only",
              "llm_babble": "LLM mode (emulated), 10 dB babble"}


def render_md(runs: dict[str, dict]) -> str:
    out = ["# Booking success", "",
           "Whole spoken booking calls through the real server (`bench/booking_success.py`; the caller's policy is "
           "in `loadgen/booking_caller.py`). Booked right: the store holds one booking for the call, on the day and "
           "at the time the caller wanted. Lines per booking: the caller's lines in the calls booked right.", "",
           "| mode | calls | booked right | lines per booking | wrong slot booked | no booking | calls with turns "
           "the caller did not speak / with lines that got no reply of their own | agent cut short by noise | run |",
           "|---|---|---|---|---|---|---|---|---|"]
    for mode in MODES:
        r = runs.get(mode)
        if not r:
            continue
        snr = f", SNR {r['config']['snr_db']:g} dB" if r["config"].get("snr_db") is not None else ""
        out.append(f"| {MODE_NAMES[mode]} | {r['calls']} | {r['booked_right']} ({100 * r['share_booked_right']:.1f} %) "
                   f"| {r['caller_lines_per_booking']} | {r['wrong_bookings']} | {r['no_booking']} "
                   f"| {r.get('calls_with_extra_stored_turns', '–')} / {r.get('calls_with_merged_lines', '–')} "
                   f"| {r.get('clears_not_caused_by_the_caller', '–')} "
                   f"| {r['date'][:16]} at {r['code']['commit']}{snr} |")
    for mode in MODES:
        r = runs.get(mode)
        if not r:
            continue
        out += ["", f"## {MODE_NAMES[mode]}", ""]
        for key in ("voice", "answer", "opening", "correction"):
            cells = ", ".join(f"{k}: {v['booked_right']}/{v['calls']}" for k, v in r["by"][key].items())
            out.append(f"- by {key}: {cells}")
        if r.get("llm"):
            out.append(f"- the emulated model: {json.dumps(r['llm'])}")
        failed = [c for c in r["call_details"] if not c["ok"]]
        out += ["", f"Failed calls: {len(failed)}."]
        for c in failed:
            p = c["persona"]
            out += ["", f"### {c['call_sid']}: {c['outcome']}", "",
                    f"Wanted {p['target']} ({p['voice']}; opening {p['opening']}, answers {p['answer']}"
                    + (f", says {p['decoy']} first" if p["decoy"] else "") + f"); {c['caller_lines']} lines.", "",
                    "```", *transcript(c), "```"]
    return "\n".join(out) + "\n"


def save(results: list[dict], json_path: Path, md_path: Path) -> dict[str, dict]:
    runs: dict[str, dict] = {}
    if json_path.exists():
        try:
            runs = json.loads(json_path.read_text()).get("runs", {})
        except ValueError:
            runs = {}
    for r in results:
        runs[r["mode"]] = r
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"about": "bench/booking_success.py: per mode, the figures and every call "
                                              "(persona, lines said, stored turns, verdict)", "runs": runs},
                                    indent=1, ensure_ascii=False) + "\n")
    md_path.write_text(render_md(runs))
    return runs


async def main_async(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        print(f"unknown modes: {', '.join(sorted(unknown))} (known: {', '.join(MODES)})", file=sys.stderr)
        return 2
    speech = Speech()
    results = []
    for mode in modes:
        result = await run_mode(mode, args, speech)
        results.append(result)
        save(results, args.json, args.md)  # each mode as it finishes: a long run can be stopped
        print(f"{mode}: {result['booked_right']}/{result['calls']} booked right "
              f"({100 * result['share_booked_right']:.1f} %), {result['caller_lines_per_booking']} caller lines "
              f"per booking", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
