"""The gateway's own share of each turn, timed on the wire by the emulators and the caller.

Caller-side overhead (voice-to-voice minus the configured waits) also holds the emulators' own
lateness and the load generator's. Here each reply is followed through the three hops it makes
inside the gateway, each timed between two processes that stamp the same bytes on this machine's
clock (the emulators' `time.time()`, the caller's `time.monotonic()` moved onto it). A receiver
stamps when the bytes come off its socket (`emulators/arrival.py`, `simcaller.ArrivalStampedConnection`),
so its own loop's later work on them is not counted:

1. STT -> LLM: the Deepgram emulator sent the end-of-turn final; the LLM emulator received the request.
2. LLM -> TTS: the LLM emulator sent the token that completes the first phrase; the ElevenLabs
   emulator received that phrase.
3. TTS -> caller: the ElevenLabs emulator sent the phrase's first audio; the caller received the
   first reply frame.

Not covered: the inbound hop (the caller's last speech frame through the gateway to Deepgram),
whose end the Deepgram emulator marks only as "speech ended somewhere in this frame".

Matching, without any ids in the gateway's requests: a caller's Deepgram socket is the one whose
end-of-turn finals come the configured wait after each of its turns ended, and its ElevenLabs socket
the one whose phrases start just before each reply reaches the caller (one socket of each per call).
The phrase that started a reply names its LLM request: every emulated reply is numbered
("Booking n: ...").
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

from dialog.latency import normalize_intent as _norm  # lower-case words only

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


def wire_overhead(records: Sequence[dict[str, Any]], log: dict[str, Any], *, stt_wait_s: float,
                  first_phrase_token: Callable[[str], int], wall_offset: float | None = None,
                  keep_turns: bool = False) -> dict[str, Any]:
    """Per-turn hop times in ms and their summaries. `stt_wait_s`: the expected end of speech to
    final (endpointing + STT delay); `first_phrase_token(reply_text) -> k`, the index of the token on
    whose arrival the gateway has its first phrase."""
    from gateway.bench import summarize

    offset = time.time() - time.monotonic() if wall_offset is None else wall_offset
    calls = [[(t["speech_end"] + offset, t["reply_arrival"] + offset, t["text"])
              for t in r["turns"] if t.get("kind") in ("speech", "wav", "audio") and t.get("text")
              and t.get("speech_end") is not None and t.get("reply_arrival") is not None]
             for r in records]
    # Each call's Deepgram socket: its end-of-turn finals come the configured wait after the turns end.
    stt_of = _assign(calls, [_finals(r, strict=True) for r in log.get("deepgram") or ()],
                     lambda turn, t: abs(t - turn[0] - stt_wait_s) if 0 <= t - turn[0] <= MAX_STT_WAIT_S else None)
    finals = [_finals(r, strict=False) for r in log.get("deepgram") or ()]
    # Each call's ElevenLabs socket: a phrase's first audio goes out just before the caller hears a reply.
    tts_sockets = [[g for g in r.get("generations") or () if g.get("first_byte_at") is not None]
                   for r in log.get("elevenlabs") or ()]
    tts_of = _assign(calls, [[g["first_byte_at"] for g in gens] for gens in tts_sockets],
                     lambda turn, t: turn[1] - t if 0 <= turn[1] - t <= MAX_HOP_S else None)
    # A phrase names the LLM request whose reply it starts: every emulated reply is numbered.
    replies = [(_norm(r["reply"]["text"]) + " ", r) for r in log.get("openai") or ()
               if r.get("token_at") and (r.get("reply") or {}).get("text")]

    hops: dict[str, list[float]] = {"stt_to_llm": [], "llm_to_tts": [], "tts_to_caller": [], "total": []}
    rows: list[dict[str, Any]] = []
    unmatched = 0
    for ci, call in enumerate(calls):
        for end, arrival, text in call:
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
            a = (request["t"] - final) * 1000
            b = (gen["t"] - request["token_at"][k]) * 1000
            c = (arrival - gen["first_byte_at"]) * 1000
            for name, value in zip(hops, (a, b, c, a + b + c)):
                hops[name].append(value)
            if keep_turns:
                rows.append({"utterance": text, "end": end, "final": final, "request": request["t"],
                             "reply": request["reply"]["text"], "phrase": gen["t"],
                             "first_byte": gen["first_byte_at"], "arrival": arrival,
                             "ms": [round(a, 1), round(b, 1), round(c, 1)]})
    out: dict[str, Any] = {"turns_matched": len(hops["total"]), "turns_unmatched": unmatched,
                           **{name: summarize(values) for name, values in hops.items()}}
    if keep_turns:
        out["turns"] = rows
    return out


def describe(wire: dict[str, Any]) -> Iterable[str]:
    total = wire["total"]
    if not total.get("n"):
        return [f"no turn matched ({wire['turns_unmatched']} tried)"]
    parts = ", ".join(f"{name.replace('_', ' ')} p50 {wire[name]['p50']} / p99 {wire[name]['p99']}"
                      for name in ("stt_to_llm", "llm_to_tts", "tts_to_caller"))
    missed = f" ({wire['turns_unmatched']} unmatched)" if wire["turns_unmatched"] else ""
    return [f"p50 {total['p50']}  p95 {total['p95']}  p99 {total['p99']}  n={total['n']}{missed}", parts]
