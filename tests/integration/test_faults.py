"""Fault injection on the cloud path: one test per emulator fault flag, and the open-breaker test.

Every fault test places two calls into one gateway that has every engine: the cloud ones on the
provider emulators, and the local whisper and Piper behind them, so each chain has its fallback.

- The faulty call F meets the fault, configured to hit F alone: a connection-level fault on the
  socket F opens, or request-level faults (OpenAI) on the requests of F's first turn.
- The healthy call H starts once the emulator has used the fault up, while F is still talking.

Each test asserts that
1. both simulated callers carried out their whole script and heard every reply (the greeting and
   each turn's) within the bound stated for the fault: nothing went silent;
2. the stored transcript of each call has every caller utterance: nothing was lost;
3. H was unaffected: its replies came as fast as usual and from the primary providers;
and checks, through the emulators' log, that the fault really hit F and took the documented path
(retry, fallback, reconnect and replay, continuation with the unspoken rest).

The open-breaker test stalls OpenAI on every request, places calls until its breaker opens, and
shows the next call's replies come at once, from the rules, without a request to OpenAI. It has a
gateway of its own whose breakers stay open for a minute, so that whole call runs under the open
breaker.

The worst time to first reply audio under each fault goes to artifacts/faults.json and into a table
printed when the module ends (`pytest -s` shows it).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest

from loadgen.simcaller import CallerTurn, CallReport, run_call
from providers.deepgram_stt import RESULT_TIMEOUT_SECONDS
from providers.elevenlabs_tts import FIRST_BYTE_TIMEOUT_SECONDS
from providers.openai_llm import BETWEEN_TOKENS_TIMEOUT_SECONDS, FIRST_TOKEN_TIMEOUT_SECONDS
from tests.support import ROOT, RunningEmulators, RunningGateway, eventually, run_emulators, run_gateway

pytestmark = pytest.mark.timeout(600)

# ------------------------------------------------------------------ bounds
# Time to first reply audio: from the caller's end of speech (from the call's start for the
# greeting) to the reply's first audio playing at the caller. A healthy turn takes ~1 s on these
# emulators (the caller's trailing silence, ~0.3 s Deepgram endpointing, 0.3 s first token, 0.15 s
# first byte). Each fault's bound is the product's own timeout on the failing phase plus the recovery
# path, with about 2 s of headroom for a loaded 2-core CI machine.

# Replies of a call that met no fault (about 3x the idle figure).
HEALTHY_BOUND_S = 3.0
# Faults the client sees at once (a refused handshake, a 5xx, a 429 with a short retry-after, an error
# event mid-stream, a dropped socket): a retry or the next engine answers within about a second.
FAST_FAULT_BOUND_S = 4.0
# Deepgram refusing (whisper transcribes on the CPU), dropping (reconnect + replay), stalling (a
# Finalize unanswered for RESULT_TIMEOUT_SECONDS, then reconnect + replay).
STT_FAULT_BOUND_S = RESULT_TIMEOUT_SECONDS + 3.0
# OpenAI stalling before the first token: FIRST_TOKEN_TIMEOUT_SECONDS at most (see
# OPEN_BREAKER_BOUND_S: the SDK's read timeout ends it after 3 s), then one retry.
LLM_STALL_BOUND_S = FIRST_TOKEN_TIMEOUT_SECONDS + 3.0
# ElevenLabs stalling: FIRST_BYTE_TIMEOUT_SECONDS on the WebSocket, then the HTTP engine.
TTS_STALL_BOUND_S = FIRST_BYTE_TIMEOUT_SECONDS + 3.0

CALL_LIMIT_S = 120  # one simulated call, at most (a healthy one takes ~15 s)
CONSUME_TIMEOUT_S = 45.0  # the faulty call reaches the fault (its first turn) within this
SETTLE_TIMEOUT_S = 30.0  # breakers leave "open" (BREAKER_RESET_SECONDS=2) and calls end within this

# ------------------------------------------------------------------ the script
# What the callers say, and a content word that any transcript of each utterance must contain. The
# faulty call says both (its second turn shows the call goes on after the fault), the healthy call the
# first. No commas: a pause inside an utterance would make the Deepgram emulator take two script entries.
UTTERANCES = ("I would like to book an appointment", "next Tuesday at three pm")
KEYWORDS = dict(zip(UTTERANCES, ("appointment", "tuesday")))
HEALTHY_UTTERANCES = UTTERANCES[:1]
# The Deepgram emulator cannot hear; it answers from this script. Its transcripts carry a word whisper
# never writes, so a stored turn shows which engine transcribed it (a word: caller text loses brackets).
DG_MARK = "dgmark"
DEEPGRAM_SCRIPT = [f"{text} {DG_MARK}" for text in UTTERANCES]
# Every greeting is phrased by the LLM as this text (an emulator rule on the greeting's user message).
# Rendered sentences are cached by text: after the first call, greetings never reach the TTS engine,
# so a connection-level ElevenLabs fault hits F's first turn, not its greeting.
GREETING = "Hello, how can I help?"
NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")

OPENAI_MODEL = "gpt-4o-mini"  # the gateway's default OPENAI_MODEL; its breaker is "openai:<model>"
BREAKER_THRESHOLD = 3  # BREAKER_FAILURE_THRESHOLD: failures in a row that open a breaker
BREAKER_RESET_S = 2  # BREAKER_RESET_SECONDS: short, so one test's opened breaker is gone by the next
EMULATOR_FLAGS = ("--stt-final-delay", "0.15", "--llm-first-token", "0.3", "--tts-first-byte", "0.15")
# Settings a test may change, put back before each test (a reset clears only faults and logs).
BASE_CONFIG: dict[str, Any] = {
    "stt_final_delay": 0.15, "llm_first_token": 0.3, "tts_first_byte": 0.15,
    "deepgram": {"script": DEEPGRAM_SCRIPT, "repeat_last": True},
    "openai": {"rules": {"just connected": GREETING}, "retry_after": 1.0, "fault_after_tokens": 3,
               "stall_seconds": 60.0},
    "elevenlabs": {"chunk_ms": 100, "stall_seconds": 60.0},
}


def replies_for(tag: str) -> list[str]:
    """LLM replies no other test uses (so each sentence really reaches the TTS engine), marked with
    the test's tag (so a stored reply shows it came from the LLM, not the rules' template)."""
    # No comma (so the chunker keeps each reply one sentence) and the number last (so the unspoken rest of
    # one reply, which the fallback engine says, is never a piece of another reply's text).
    return [f"The {tag} test notes reply number {n}." for n in NUMBERS]


# ------------------------------------------------------------------ the results table

RESULTS = ROOT / "artifacts" / "faults.json"


@dataclass
class Row:
    fault: str
    worst_ms: float | None  # the faulty call's worst time to first reply audio
    bound_s: float
    transcripts_complete: bool
    healthy_unaffected: bool | None  # None: no healthy call in this scenario
    healthy_worst_ms: float | None
    detail: str = ""
    dropped: int = 0  # calls that did not carry out their whole script
    lost: int = 0  # caller utterances missing from the stored transcripts


def save_row(rows: dict[str, Row], key: str, row: Row) -> None:
    """Into this session's table, and into artifacts/faults.json (rows of earlier runs are kept)."""
    rows[key] = row
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        saved = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        saved = {}
    saved[key] = {**row.__dict__, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    RESULTS.write_text(json.dumps(saved, indent=2) + "\n")


def table(rows: dict[str, Row]) -> str:
    def ms(value: float | None) -> str:
        return "no reply" if value is None else f"{value / 1000:.2f} s"

    def healthy(row: Row) -> str:
        if row.healthy_unaffected is None:
            return "n/a"
        return f"{'yes' if row.healthy_unaffected else 'NO'} (worst {ms(row.healthy_worst_ms)})"

    lines = ["| fault | worst time to first reply audio | bound | calls dropped | utterances lost | "
             "healthy call unaffected? |", "|---|---|---|---|---|---|"]
    for row in rows.values():
        lines.append(f"| {row.fault} | {ms(row.worst_ms)} | {row.bound_s:g} s | {row.dropped} | {row.lost} | "
                     f"{healthy(row)} |")
    return "\n".join(lines) + ("\n\nEvery fault row of the README (these and the other fault tests'): "
                               "`.venv/bin/python -m tests.integration.fault_table`")


# ------------------------------------------------------------------ fixtures


@dataclass
class Stack:
    emulators: RunningEmulators
    gateway: RunningGateway
    rows: dict[str, Row] = field(default_factory=dict)
    warm: bool = False


def gateway_env(emulators: RunningEmulators, **extra: str) -> dict[str, str]:
    env = {**emulators.gateway_env(), "LATENCY_OPTIMIZATION_MODE": "disabled",
           "BREAKER_RESET_SECONDS": str(BREAKER_RESET_S), "BREAKER_FAILURE_THRESHOLD": str(BREAKER_THRESHOLD),
           "OPENAI_FALLBACK_MODEL": ""}  # unset: the LLM chain is the primary model, then the rules
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def stack():
    with run_emulators(*EMULATOR_FLAGS) as emulators:
        emulators.configure(BASE_CONFIG)
        # Local engines stay on (the default): whisper and Piper are the chains' last fallbacks.
        with run_gateway(env=gateway_env(emulators)) as gateway:
            s = Stack(emulators, gateway)
            try:
                yield s
            finally:
                if s.rows:
                    print(f"\n\nFault injection: time to first reply audio ({RESULTS}):\n\n{table(s.rows)}\n")


# ------------------------------------------------------------------ helpers


def emulator_config(emulators: RunningEmulators) -> dict:
    with urllib.request.urlopen(emulators.url + "/_emulator/config", timeout=10) as resp:
        return json.loads(resp.read())


def readiness(gateway: RunningGateway) -> dict:
    status, body = gateway.get("/readyz")
    return json.loads(body)


def breaker_gauge(gateway: RunningGateway, provider: str) -> float | None:
    text = gateway.get("/metrics")[1].decode()
    match = re.search(r'^voicegate_circuit_breaker_state\{provider="%s"\} (\S+)$' % re.escape(provider), text, re.M)
    return float(match.group(1)) if match else None


async def settle(stack: Stack) -> None:
    """No call in progress and no breaker open: a previous test's fault does not leak into this one."""
    def quiet() -> bool:
        ready = readiness(stack.gateway)
        return ready["active_calls"] == 0 and "open" not in ready["breakers"].values()

    await eventually(quiet, "the gateway to settle (no calls, no open breaker)", SETTLE_TIMEOUT_S)


async def place_call(gateway: RunningGateway, utterances=UTTERANCES) -> tuple[CallReport, float]:
    started = time.monotonic()
    report = await run_call(gateway.media_url, [CallerTurn(text=t) for t in utterances], max_call_s=CALL_LIMIT_S)
    return report, started


def latencies_ms(report: CallReport) -> list[float | None]:
    """Time to first reply audio of the greeting and of each turn (None: that reply never came)."""
    return [report.greeting_latency_ms, *(t.latency_ms for t in report.turns)]


def worst_ms(report: CallReport) -> float | None:
    values = latencies_ms(report)
    return None if None in values else max(values)


def missing_utterances(stored: dict, utterances=UTTERANCES) -> list[str]:
    """The utterances whose content word no stored caller turn has."""
    said = " ".join(t.get("user_text") or "" for t in stored.get("turns", [])).lower()
    return [u for u in utterances if KEYWORDS[u] not in said]


def caller_turns(stored: dict) -> list[dict]:
    return [t for t in stored.get("turns", []) if t.get("user_text")]


def chats(log: dict) -> list[dict]:
    return [r for r in log["openai"] if r["path"].endswith("/chat/completions")]


def retry_of(requests: list[dict], failed: dict) -> dict:
    """The next request with the same messages: the retry (the healthy call's same turn comes later)."""
    later = requests[requests.index(failed) + 1:]
    return next(r for r in later if r["body"]["messages"] == failed["body"]["messages"])


def norm(text: str) -> str:
    return " ".join(text.split()).strip()


# ------------------------------------------------------------------ one fault, two calls


@dataclass(frozen=True)
class Fault:
    key: str
    label: str
    provider: str  # deepgram | openai | elevenlabs
    flag: str  # the emulator's fault name
    count: int  # requests/connections it hits
    bound_s: float
    on_first_turn: bool = False  # configured after F's greeting, so F's first turn meets it
    config: dict = field(default_factory=dict)  # other emulator settings for this test


@dataclass
class Outcome:
    fault: Fault
    faulty: CallReport
    healthy: CallReport
    faulty_stored: dict
    healthy_stored: dict
    log: dict
    tag: str
    overlap_s: float  # how long the two calls were both in progress


async def run_fault(stack: Stack, fault: Fault) -> Outcome:
    emulators, gateway = stack.emulators, stack.gateway
    await warm_up(stack)
    await settle(stack)
    emulators.reset()
    tag = fault.key.replace("-", " ")
    replies = replies_for(tag)
    emulators.configure(BASE_CONFIG)
    emulators.configure({"openai": {"script": replies, "default_reply": replies[-1]}})
    if fault.config:
        emulators.configure(fault.config)
    inject = {fault.provider: {"fault": fault.flag, "fault_count": fault.count}}
    if not fault.on_first_turn:
        emulators.configure(inject)
    faulty_task = asyncio.create_task(place_call(gateway))
    healthy_task: asyncio.Task | None = None
    try:
        if fault.on_first_turn:
            # F's greeting has been phrased: the next LLM request is F's first turn.
            await eventually(lambda: any(r["last_chunk_at"] for r in chats(emulators.log())),
                             "the faulty call's greeting", CONSUME_TIMEOUT_S)
            await asyncio.to_thread(emulators.configure, inject)
        await eventually(lambda: emulator_config(emulators)[fault.provider]["fault"] is None,
                         f"the faulty call to use up the {fault.provider} {fault.flag} fault", CONSUME_TIMEOUT_S)
        # A refused key opens the breaker at once; H comes when it lets a trial through again.
        await eventually(lambda: "open" not in readiness(gateway)["breakers"].values(),
                         "no open breaker", SETTLE_TIMEOUT_S)
        healthy_task = asyncio.create_task(place_call(gateway, HEALTHY_UTTERANCES))
        (faulty, f_start), (healthy, h_start) = await asyncio.gather(faulty_task, healthy_task)
    finally:
        for task in (faulty_task, healthy_task):
            if task is not None and not task.done():
                task.cancel()
    faulty_stored = await asyncio.to_thread(gateway.stored_call, faulty.call_sid, timeout=20.0)
    healthy_stored = await asyncio.to_thread(gateway.stored_call, healthy.call_sid, timeout=20.0)
    log = await asyncio.to_thread(emulators.log)
    overlap = min(f_start + faulty.duration_s, h_start + healthy.duration_s) - max(f_start, h_start)
    return Outcome(fault, faulty, healthy, faulty_stored, healthy_stored, log, tag, overlap)


def healthy_problems(outcome: Outcome) -> list[str]:
    """Why H does not look like an ordinary call on the primary providers (empty: it does)."""
    h, stored, log = outcome.healthy, outcome.healthy_stored, outcome.log
    problems = []
    if h.error is not None or not h.completed:
        problems.append(f"error={h.error!r} completed={h.completed}")
    slow = [v for v in latencies_ms(h) if v is None or v > HEALTHY_BOUND_S * 1000]
    if slow:
        problems.append(f"replies not within {HEALTHY_BOUND_S} s: {latencies_ms(h)}")
    turns = caller_turns(stored)
    if len(turns) != len(HEALTHY_UTTERANCES):
        problems.append(f"{len(turns)} caller turns stored, {len(HEALTHY_UTTERANCES)} spoken")
    provider = outcome.fault.provider
    if provider == "deepgram":
        if not all(DG_MARK in t["user_text"] for t in turns):
            problems.append(f"not transcribed by Deepgram: {[t['user_text'] for t in turns]}")
    elif provider == "openai":
        for t in stored.get("turns", []):
            if t["agent_text"] != GREETING and outcome.tag not in t["agent_text"]:
                problems.append(f"a reply not phrased by the LLM: {t['agent_text']!r}")
    elif provider == "elevenlabs":
        sockets = [s for s in log["elevenlabs"] if s["kind"] == "multi-stream-input" and s["fault"] is None]
        on_ws = [norm(g["text"]) for s in sockets for g in s["generations"]]
        over_http = [norm((r.get("body") or {}).get("text", "")) for r in log["elevenlabs"] if r["kind"] == "http"]
        for t in turns:
            reply = norm(t["agent_text"])
            if not any(text and text in reply for text in on_ws):
                problems.append(f"reply not synthesized over the WebSocket: {reply!r}")
            if any(text and text in reply for text in over_http):
                problems.append(f"reply synthesized over HTTP (the fallback): {reply!r}")
    if outcome.overlap_s <= 0:
        problems.append("the two calls did not overlap")
    return problems


def check(stack: Stack, outcome: Outcome) -> None:
    """The assertions every fault shares; the table row is saved first, so a failure still shows."""
    fault, f = outcome.fault, outcome.faulty
    lost = {"faulty": missing_utterances(outcome.faulty_stored),
            "healthy": missing_utterances(outcome.healthy_stored, HEALTHY_UTTERANCES)}
    healthy = healthy_problems(outcome)
    dropped = sum(1 for call in (f, outcome.healthy) if call.error is not None or not call.completed)
    save_row(stack.rows, fault.key, Row(
        fault=fault.label, worst_ms=worst_ms(f), bound_s=fault.bound_s,
        transcripts_complete=not lost["faulty"] and not lost["healthy"],
        healthy_unaffected=not healthy, healthy_worst_ms=worst_ms(outcome.healthy),
        detail=f"faulty {latencies_ms(f)} healthy {latencies_ms(outcome.healthy)} overlap {outcome.overlap_s:.1f} s",
        dropped=dropped, lost=len(lost["faulty"]) + len(lost["healthy"])))
    assert f.error is None and f.completed, f"faulty call: error={f.error!r} completed={f.completed}"
    values = latencies_ms(f)
    assert None not in values, f"the faulty caller missed a reply: {values} ms (greeting, turns)"
    assert max(values) <= fault.bound_s * 1000, f"a reply took longer than {fault.bound_s} s: {values} ms"
    assert len(caller_turns(outcome.faulty_stored)) == len(UTTERANCES), outcome.faulty_stored
    assert not lost["faulty"] and not lost["healthy"], (lost, outcome.faulty_stored, outcome.healthy_stored)
    assert not healthy, healthy


async def warm_up(stack: Stack) -> None:
    """One healthy call first: it renders the greeting into the TTS cache and is the baseline row."""
    if stack.warm:
        return
    stack.warm = True  # once, even if it fails: the greeting is rendered either way
    await settle(stack)
    stack.emulators.reset()
    stack.emulators.configure(BASE_CONFIG)
    stack.emulators.configure({"openai": {"script": replies_for("baseline"), "default_reply": GREETING}})
    report, _ = await place_call(stack.gateway)
    stored = await asyncio.to_thread(stack.gateway.stored_call, report.call_sid, timeout=20.0)
    save_row(stack.rows, "none", Row(
        fault="none (baseline)", worst_ms=worst_ms(report), bound_s=HEALTHY_BOUND_S,
        transcripts_complete=not missing_utterances(stored), healthy_unaffected=None, healthy_worst_ms=None,
        detail=f"{latencies_ms(report)}", dropped=int(report.error is not None or not report.completed),
        lost=len(missing_utterances(stored))))
    assert report.error is None and report.completed, report.error
    assert worst_ms(report) is not None and worst_ms(report) <= HEALTHY_BOUND_S * 1000, latencies_ms(report)


def faulty_turns(outcome: Outcome) -> list[dict]:
    return caller_turns(outcome.faulty_stored)


# ------------------------------------------------------------------ Deepgram


async def test_deepgram_refuses_401(stack):
    fault = Fault("deepgram-refuse", "Deepgram refuses the key (401)", "deepgram", "refuse", 1, STT_FAULT_BOUND_S)
    outcome = await run_fault(stack, fault)
    check(stack, outcome)
    refused = [c for c in outcome.log["deepgram"] if c["fault"] == "refuse"]
    assert len(refused) == 1 and refused[0]["status"] == 401, outcome.log["deepgram"]
    # F went to whisper (which transcribed the real audio); H, after the breaker let a trial through, to Deepgram.
    assert not any(DG_MARK in t["user_text"] for t in faulty_turns(outcome)), faulty_turns(outcome)


async def test_deepgram_drops_mid_utterance(stack):
    fault = Fault("deepgram-drop", "Deepgram drops mid-utterance", "deepgram", "drop", 1, STT_FAULT_BOUND_S)
    outcome = await run_fault(stack, fault)
    check(stack, outcome)
    dropped = [c for c in outcome.log["deepgram"] if c["fault"] == "drop"]
    assert len(dropped) == 1 and dropped[0]["closed_by"] == "server-drop", dropped
    speech = dropped[0]["speech"]
    assert speech and speech[0]["end_at"] is None, f"the socket was cut while the caller spoke: {speech}"
    # F reconnected and replayed the utterance: Deepgram transcribed every turn, each word once.
    turns = faulty_turns(outcome)
    assert all(DG_MARK in t["user_text"] for t in turns), turns
    assert turns[0]["user_text"].lower().count("appointment") == 1, turns


async def test_deepgram_stalls(stack):
    fault = Fault("deepgram-stall", "Deepgram stalls (accepts audio, answers nothing)", "deepgram", "stall", 1,
                  STT_FAULT_BOUND_S)
    outcome = await run_fault(stack, fault)
    check(stack, outcome)
    stalled = [c for c in outcome.log["deepgram"] if c["fault"] == "stall"]
    assert len(stalled) == 1 and stalled[0]["finalizes"] and not stalled[0]["sent"], stalled
    turns = faulty_turns(outcome)
    assert all(DG_MARK in t["user_text"] for t in turns), turns  # reconnected and replayed on Deepgram
    assert turns[0]["user_text"].lower().count("appointment") == 1, turns


# ------------------------------------------------------------------ OpenAI


async def test_openai_answers_500(stack):
    # Twice: the guarded LLM retries once, then the chain falls to the rules' own wording.
    fault = Fault("openai-500", "OpenAI answers 500 (the request and its retry)", "openai", "error500", 2,
                  FAST_FAULT_BOUND_S, on_first_turn=True)
    outcome = await run_fault(stack, fault)
    check(stack, outcome)
    failed = [r for r in chats(outcome.log) if r["fault"] == "error500"]
    assert len(failed) == 2 and all(r["status"] == 500 for r in failed), failed
    first = faulty_turns(outcome)[0]
    assert first["agent_text"] and outcome.tag not in first["agent_text"], first  # the rules' template


async def test_openai_answers_429_with_retry_after(stack):
    fault = Fault("openai-429", "OpenAI answers 429, retry-after 0.5 s", "openai", "error429", 1,
                  FAST_FAULT_BOUND_S, on_first_turn=True, config={"openai": {"retry_after": 0.5}})
    outcome = await run_fault(stack, fault)
    check(stack, outcome)
    requests = chats(outcome.log)
    (limited,) = [r for r in requests if r["fault"] == "error429"]
    assert limited["status"] == 429
    retry = retry_of(requests, limited)
    assert retry["t"] - limited["t"] >= 0.5 - 0.05, "the retry honoured retry-after"
    first = faulty_turns(outcome)[0]
    assert outcome.tag in first["agent_text"], first  # the retry's reply, from the LLM


async def test_openai_errors_mid_stream(stack):
    fault = Fault("openai-midstream", "OpenAI errors mid-stream (after 3 tokens)", "openai", "midstream", 1,
                  FAST_FAULT_BOUND_S, on_first_turn=True)
    outcome = await run_fault(stack, fault)
    check(stack, outcome)
    (broken,) = [r for r in chats(outcome.log) if r["fault"] == "midstream"]
    assert broken["tokens_sent"] == 3, broken
    # F heard that turn's reply only up to the error ("Noted, reply"): the chain ends a reply whose
    # text had started (dialog/llm_responder.py), although none of it had been spoken yet.
    first = faulty_turns(outcome)[0]
    assert first["agent_text"], first


async def test_openai_stalls_before_the_first_token(stack):
    fault = Fault("openai-stall", "OpenAI stalls before the first token", "openai", "stall", 1, LLM_STALL_BOUND_S,
                  on_first_turn=True)
    outcome = await run_fault(stack, fault)
    check(stack, outcome)
    requests = chats(outcome.log)
    (stalled,) = [r for r in requests if r["fault"] == "stall"]
    assert stalled["tokens_sent"] == 0
    # No second wait on the stalled provider: once its first-token budget ran out, the next engine in
    # the chain (the dialog's own template, not the LLM's tagged phrasing) answered that turn.
    first = faulty_turns(outcome)[0]
    assert first["agent_text"] and outcome.tag not in first["agent_text"], first


# ------------------------------------------------------------------ ElevenLabs


def http_texts(log: dict) -> list[str]:
    return [norm((r.get("body") or {}).get("text", "")) for r in log["elevenlabs"] if r["kind"] == "http"]


async def test_elevenlabs_drops_mid_sentence(stack):
    # 1 s audio messages: the socket is cut after the first second of the sentence, so the HTTP engine
    # continues with the words not yet heard.
    fault = Fault("elevenlabs-drop", "ElevenLabs drops mid-sentence", "elevenlabs", "drop", 1, FAST_FAULT_BOUND_S,
                  config={"elevenlabs": {"chunk_ms": 1000}})
    outcome = await run_fault(stack, fault)
    check(stack, outcome)
    (dropped,) = [s for s in outcome.log["elevenlabs"] if s["fault"] == "drop"]
    assert dropped["audio_bytes"] > 0, dropped  # part of the sentence had been sent
    sentence = norm(dropped["generations"][0]["text"])
    rests = [t for t in http_texts(outcome.log) if t and sentence.endswith(t)]
    assert rests and len(rests[0]) < len(sentence), (sentence, http_texts(outcome.log))


async def test_elevenlabs_stalls(stack):
    fault = Fault("elevenlabs-stall", "ElevenLabs stalls (no audio)", "elevenlabs", "stall", 1, TTS_STALL_BOUND_S)
    outcome = await run_fault(stack, fault)
    check(stack, outcome)
    (stalled,) = [s for s in outcome.log["elevenlabs"] if s["fault"] == "stall"]
    assert stalled["audio_bytes"] == 0 and stalled["generations"], stalled
    sentence = norm(stalled["generations"][0]["text"])
    assert sentence in http_texts(outcome.log), "the HTTP engine said the stalled sentence"


async def test_elevenlabs_answers_5xx(stack):
    fault = Fault("elevenlabs-5xx", "ElevenLabs answers 500 (WebSocket handshake)", "elevenlabs", "error5xx", 1,
                  FAST_FAULT_BOUND_S)
    outcome = await run_fault(stack, fault)
    check(stack, outcome)
    (refused,) = [s for s in outcome.log["elevenlabs"] if s["fault"] == "error5xx"]
    assert refused["status"] == 500
    first = norm(faulty_turns(outcome)[0]["agent_text"])
    assert any(t and t in first for t in http_texts(outcome.log)), "the HTTP engine said F's reply"


# ------------------------------------------------------------------ the open breaker

BREAKER = f"openai:{OPENAI_MODEL}"
# This test's own gateway keeps an opened breaker open this long, so the whole next call runs while
# it is open (the shared gateway's BREAKER_RESET_S would half-open it before that call's first turn).
BREAKER_HOLD_S = 60
OPENERS = BREAKER_THRESHOLD  # that many stalled greetings at once: as many failures in a row
# A reply that waited for the stalled LLM would take its first-token timeout. With the breaker open,
# every reply must come well before it (and before the between-token timeout).
OPEN_BREAKER_BOUND_S = min(FIRST_TOKEN_TIMEOUT_SECONDS, BETWEEN_TOKENS_TIMEOUT_SECONDS) - 0.5


@pytest.fixture
def breaker_gateway(stack):
    """A gateway of its own for the breaker test: cloud engines only (the LLM chain is primary ->
    rules either way), and an opened breaker held open for BREAKER_HOLD_S."""
    env = gateway_env(stack.emulators, BREAKER_RESET_SECONDS=str(BREAKER_HOLD_S), VOICEGATE_LOCAL_ENGINES="0")
    try:
        with run_gateway(env=env) as gateway:
            yield gateway
    finally:
        stack.emulators.reset()  # the always-on stall goes


async def test_open_breaker_skips_the_stalled_llm_without_waiting(stack, breaker_gateway):
    emulators, gateway = stack.emulators, breaker_gateway
    emulators.reset()
    emulators.configure(BASE_CONFIG)
    emulators.configure({"openai": {"script": replies_for("breaker"), "default_reply": GREETING}})
    emulators.configure({"openai": {"fault": "stall", "fault_count": 0}})  # every request, from now on

    # Calls until the breaker opens: three greetings at once, each stalled until its timeout. Each
    # caller still hears a greeting: the rules' wording, once the breaker refuses the retry.
    openers = await asyncio.gather(*(place_call(gateway, ()) for _ in range(OPENERS)))
    for report, _ in openers:
        assert report.error is None and report.greeting_latency_ms is not None, report.error
        assert report.greeting_latency_ms <= LLM_STALL_BOUND_S * 1000, report.greeting_latency_ms
    assert (await asyncio.to_thread(readiness, gateway))["breakers"][BREAKER] == "open"
    assert await asyncio.to_thread(breaker_gauge, gateway, BREAKER) == 2  # BreakerState.OPEN
    tried = len(chats(await asyncio.to_thread(emulators.log)))
    assert tried >= OPENERS

    # The next call: every reply without waiting for the stalled LLM, which is not asked at all.
    report, _ = await place_call(gateway, HEALTHY_UTTERANCES)
    log = await asyncio.to_thread(emulators.log)
    stored = await asyncio.to_thread(gateway.stored_call, report.call_sid, timeout=20.0)
    still_open = (await asyncio.to_thread(readiness, gateway))["breakers"][BREAKER] == "open"
    lost = missing_utterances(stored, HEALTHY_UTTERANCES)
    save_row(stack.rows, "breaker-open", Row(
        fault="OpenAI stalling, its breaker open: the next call", worst_ms=worst_ms(report),
        bound_s=OPEN_BREAKER_BOUND_S, transcripts_complete=not lost, healthy_unaffected=None,
        healthy_worst_ms=None,
        detail=f"openers {[r.greeting_latency_ms for r, _ in openers]} next call {latencies_ms(report)}",
        dropped=int(report.error is not None or not report.completed), lost=len(lost)))
    assert report.error is None and report.completed, report.error
    values = latencies_ms(report)
    assert None not in values and max(values) <= OPEN_BREAKER_BOUND_S * 1000, values
    assert len(chats(log)) == tried, "no request reached the LLM while its breaker was open"
    assert still_open, "the breaker stayed open for the whole call, so every reply above was under it"
    assert not lost, stored
    replies = [t["agent_text"] for t in stored["turns"]]
    assert all(r and "breaker" not in r and r != GREETING for r in replies), replies  # the rules' wording
