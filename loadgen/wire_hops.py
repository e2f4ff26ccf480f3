"""Where each turn's caller-side overhead went, timed on the wire by the emulators and the caller.

Caller-side overhead is voice-to-voice minus the configured waits (endpointing, and each provider's
configured latency). Besides the gateway it holds the emulators' and the load generator's own
lateness: a timer fires up to a millisecond after its deadline (epoll waits in whole milliseconds),
later on a busy loop. Here each turn is split at stamps two processes take of the same bytes on this
machine's clock (the emulators' `time.time()`, the caller's `time.monotonic()` moved onto it). A
receiver stamps when the bytes come off its socket (`emulators/arrival.py`,
`simcaller.ArrivalStampedConnection`), so its own loop's later work on them is not counted.

The gateway's four hops:

0. inbound: the caller sent the audio frame that completed the endpointing silence; the Deepgram
   emulator received it (through the gateway's ring buffer, VAD and Deepgram socket).
1. STT -> LLM: the Deepgram emulator sent the end-of-turn final; the LLM emulator received the request.
2. LLM -> TTS: the LLM emulator sent the token that completes the first phrase; the ElevenLabs
   emulator received that phrase.
3. TTS -> caller: the ElevenLabs emulator sent the phrase's first audio; the caller received the
   first reply frame.

The test rig's share (each beyond its configured time): the caller sending that frame later than
speech end + the endpointing wait; the Deepgram final after the deciding frame; the LLM's
first-phrase token after the request; the first audio after the phrase; and the reply waiting at the
caller for earlier audio to finish playing. Gateway hops + rig = caller-side overhead, turn by turn.

Matching, without any ids in the gateway's requests: a caller's Deepgram socket is the one whose
end-of-turn finals come the configured wait after each of its turns ended, and its ElevenLabs socket
the one whose phrases start just before each reply reaches the caller (one socket of each per call).
The phrase that started a reply names its LLM request: every emulated reply is numbered
("Booking n: ...").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from dialog.latency import normalize_intent as _norm  # lower-case words only
from loadgen.stats import summarize
from loadgen.simcaller import FRAME_MS  # the caller's audio frames

# A final more than this after the caller stopped speaking belongs to nobody's turn.
MAX_STT_WAIT_S = 2.0
# A hop longer than this is not one hop (a reply's first audio long before the caller heard it).
MAX_HOP_S = 1.0
# Two processes' stamps of one event may disagree by this much (each stamps around its own syscall).
CLOCK_SLACK_S = 0.002

def _finals(record: dict[str, Any], *, strict: bool) -> list[float]:
    """When a Deepgram socket sent an end-of-turn signal. `strict`: Deepgram's own endpointing, a
    `speech_final` final or an `UtteranceEnd` (what pairs a socket with its call: it follows the end
    of speech by the configured wait). Otherwise any final too: the answer to a Finalize, or a final
    the gateway's own VAD agrees with, can end a turn as well."""
    times = [float(e["t"]) for e in record.get("transcripts") or ()
             if e.get("is_final") and (not strict or e.get("speech_final"))]
    times += [float(e["t"]) for e in record.get("sent") or () if e.get("type") == "UtteranceEnd"]
    return sorted(times)


def _assign(calls: Sequence[Sequence[Any]], sockets: Sequence[Sequence[float]],
            gap: Callable[[Any, float], float | None]) -> dict[int, int]:
    """Call -> socket, cheapest total first, each used once. `gap(turn, t)` is how far a socket's
    event at `t` is from where the turn expects it (None: it cannot be the turn's)."""
    def cost(call: Sequence[Any], times: Sequence[float]) -> float | None:
        total, seen = 0.0, 0
        for turn in call:
            gaps = [g for t in times if (g := gap(turn, t)) is not None]
            total += min(gaps) if gaps else MAX_HOP_S  # a turn this socket says nothing about
            seen += bool(gaps)
        return total if seen else None

    pairs = sorted((c, ci, si) for ci, call in enumerate(calls) if call for si, times in enumerate(sockets)
                   if (c := cost(call, times)) is not None)
    chosen: dict[int, int] = {}
    used: set[int] = set()
    for _, ci, si in pairs:
        if ci not in chosen and si not in used:
            chosen[ci] = si
            used.add(si)
    return chosen


@dataclass(frozen=True, slots=True)
class Configured:
    """The waits caller-side overhead subtracts from voice-to-voice, in ms."""

    end_of_speech_ms: float  # the endpointing silence the gateway asked Deepgram for
    stt_final_ms: float
    llm_first_phrase_ms: float  # first token + the tokens up to the first speakable phrase
    tts_first_byte_ms: float

    @property
    def stt_wait_s(self) -> float:
        return (self.end_of_speech_ms + self.stt_final_ms) / 1000

    @property
    def total_ms(self) -> float:
        return self.end_of_speech_ms + self.stt_final_ms + self.llm_first_phrase_ms + self.tts_first_byte_ms


HOPS = ("inbound", "stt_to_llm", "llm_to_tts", "tts_to_caller")
RIG = ("caller_send", "stt_extra", "llm_extra", "tts_extra", "playback_wait")


def wire_overhead(records: Sequence[dict[str, Any]], log: dict[str, Any], *, configured: Configured,
                  first_phrase_token: Callable[[str], int], wall_offset: float | None = None,
                  keep_turns: bool = False) -> dict[str, Any]:
    """Per-turn hop times in ms, the rig's share beside them, and their summaries.
    `first_phrase_token(reply_text) -> k`, the index of the token on whose arrival the gateway has
    its first phrase."""

    offset = time.time() - time.monotonic() if wall_offset is None else wall_offset
    calls = [[_Turn(t["speech_end"] + offset, t["reply_arrival"] + offset, t["text"], t.get("latency_ms"),
                    [x + offset for x in t.get("sends_after_end") or ()])
              for t in r["turns"] if t.get("kind") in ("speech", "wav", "audio") and t.get("text")
              and t.get("speech_end") is not None and t.get("reply_arrival") is not None]
             for r in records]
    stt_wait_s = configured.stt_wait_s
    deciding = max(1, math.ceil(configured.end_of_speech_ms / FRAME_MS))  # as the Deepgram emulator counts
    # Each call's Deepgram socket: its end-of-turn finals come the configured wait after the turns end.
    stt_of = _assign(calls, [_finals(r, strict=True) for r in log.get("deepgram") or ()],
                     lambda turn, t: abs(t - turn.end - stt_wait_s) if 0 <= t - turn.end <= MAX_STT_WAIT_S else None)
    finals = [_finals(r, strict=False) for r in log.get("deepgram") or ()]
    # When each socket's endpointing decided a turn was over: the deciding frame's arrival.
    decisions = [sorted(float(e["end_at"]) for e in r.get("speech") or () if e.get("end_at") is not None)
                 for r in log.get("deepgram") or ()]
    # Each call's ElevenLabs socket: a phrase's first audio goes out just before the caller hears a reply.
    tts_sockets = [[g for g in r.get("generations") or () if g.get("first_byte_at") is not None]
                   for r in log.get("elevenlabs") or ()]
    tts_of = _assign(calls, [[g["first_byte_at"] for g in gens] for gens in tts_sockets],
                     lambda turn, t: turn.arrival - t if 0 <= turn.arrival - t <= MAX_HOP_S else None)
    # A phrase names the LLM request whose reply it starts: every emulated reply is numbered.
    replies = [(_norm(r["reply"]["text"]) + " ", r) for r in log.get("openai") or ()
               if r.get("token_at") and (r.get("reply") or {}).get("text")]

    hops: dict[str, list[float]] = {name: [] for name in (*HOPS, "outbound", "total")}
    rig: dict[str, list[float]] = {name: [] for name in (*RIG, "total")}
    caller: list[float] = []
    residual = 0.0
    rows: list[dict[str, Any]] = []
    unmatched = no_inbound = 0
    for ci, call in enumerate(calls):
        for turn in call:
            end, arrival = turn.end, turn.arrival
            near = [t for t in finals[stt_of[ci]] if 0 <= t - end <= MAX_STT_WAIT_S] if ci in stt_of else []
            heard = [g for g in tts_sockets[tts_of[ci]] if 0 <= arrival - g["first_byte_at"] <= MAX_HOP_S] \
                if ci in tts_of else []
            gen = max(heard, key=lambda g: g["first_byte_at"]) if heard else None
            phrase = _norm(gen.get("text") or "") + " " if gen is not None else ""
            request = next((r for said, r in replies if phrase.strip() and said.startswith(phrase)), None)
            # The turn's final: the last end-of-turn signal before the gateway asked for the reply.
            before = [t for t in near if request is not None and t <= request["t"] + CLOCK_SLACK_S]
            if not before:
                unmatched += 1
                continue
            final = max(before)
            k = min(first_phrase_token(request["reply"]["text"]), len(request["token_at"]) - 1)
            token = request["token_at"][k]
            a = (request["t"] - final) * 1000
            b = (gen["t"] - token) * 1000
            c = (arrival - gen["first_byte_at"]) * 1000
            for name, value in (("stt_to_llm", a), ("llm_to_tts", b), ("tts_to_caller", c), ("outbound", a + b + c)):
                hops[name].append(value)
            row: dict[str, Any] = {"utterance": turn.text, "end": end, "final": final, "request": request["t"],
                                   "reply": request["reply"]["text"], "phrase": gen["t"],
                                   "first_byte": gen["first_byte_at"], "arrival": arrival,
                                   "ms": [round(a, 1), round(b, 1), round(c, 1)]}
            # The inbound hop: the frame whose arrival let the endpointing decide, from the caller's send.
            # That is the k-th silent frame after the last voiced one (the emulator counts frames), not
            # the last one sent before the decision's stamp: a caller preempted between a write and
            # its stamp would pass for a frame that came 20 ms later.
            decided = [t for t in decisions[stt_of[ci]] if end <= t <= final] if ci in stt_of else []
            sent = turn.sends[deciding - 1] if decided and len(turn.sends) >= deciding else None
            if sent is not None and not -CLOCK_SLACK_S <= decided[-1] - sent <= MAX_HOP_S:
                sent = None  # not that frame: the emulator heard the speech end elsewhere
            if sent is None or turn.latency_ms is None:
                no_inbound += 1
            else:
                at = decided[-1]
                inbound = (at - sent) * 1000
                parts = {"caller_send": (sent - end) * 1000 - configured.end_of_speech_ms,
                         "stt_extra": (final - at) * 1000 - configured.stt_final_ms,
                         "llm_extra": (token - request["t"]) * 1000 - configured.llm_first_phrase_ms,
                         "tts_extra": (gen["first_byte_at"] - gen["t"]) * 1000 - configured.tts_first_byte_ms,
                         "playback_wait": turn.latency_ms - (arrival - end) * 1000}
                gateway = inbound + a + b + c
                overhead = turn.latency_ms - configured.total_ms
                hops["inbound"].append(inbound)
                hops["total"].append(gateway)
                for name, value in parts.items():
                    rig[name].append(value)
                rig["total"].append(sum(parts.values()))
                caller.append(overhead)
                residual = max(residual, abs(overhead - gateway - sum(parts.values())))
                row.update(sent=sent, decided=at, inbound_ms=round(inbound, 1),
                           rig_ms={name: round(value, 1) for name, value in parts.items()})
            if keep_turns:
                rows.append(row)
    out: dict[str, Any] = {"turns_matched": len(hops["outbound"]), "turns_unmatched": unmatched,
                           "turns_without_inbound": no_inbound,
                           **{name: summarize(values) for name, values in hops.items()},
                           "rig": {name: summarize(values) for name, values in rig.items()},
                           "caller_overhead": summarize(caller), "residual_max_ms": round(residual, 3)}
    if keep_turns:
        out["turns"] = rows
    return out


@dataclass(frozen=True, slots=True)
class _Turn:
    end: float  # the caller sent the utterance's last frame (wall clock)
    arrival: float  # the reply's first audio reached the caller
    text: str
    latency_ms: float | None  # voice-to-voice: speech end -> reply playing
    sends: list[float]  # the frames after `end`, when each was sent


def describe(wire: dict[str, Any]) -> Iterable[str]:
    total, outbound = wire["total"], wire["outbound"]
    if not outbound.get("n"):
        return [f"no turn matched ({wire['turns_unmatched']} tried)"]
    missed = [f"{wire['turns_unmatched']} unmatched"] if wire["turns_unmatched"] else []
    if wire["turns_without_inbound"]:
        missed.append(f"{wire['turns_without_inbound']} without the inbound hop")
    lines = [f"p50 {total.get('p50')}  p95 {total.get('p95')}  p99 {total.get('p99')}  n={total.get('n', 0)}"
             + (f" ({', '.join(missed)})" if missed else ""),
             ", ".join(f"{name.replace('_', ' ')} p50 {wire[name].get('p50')} / p99 {wire[name].get('p99')}"
                       for name in HOPS)]
    rig = wire["rig"]
    if rig["total"].get("n"):
        lines.append(f"test rig (emulators and caller past their configured times) p50 {rig['total']['p50']} / "
                     f"p99 {rig['total']['p99']}: " + ", ".join(f"{name.replace('_', ' ')} {rig[name]['p50']}"
                                                                for name in RIG) + " (p50)")
        lines.append(f"gateway + rig = caller-side overhead turn by turn (largest difference "
                     f"{wire['residual_max_ms']} ms)")
    return lines
