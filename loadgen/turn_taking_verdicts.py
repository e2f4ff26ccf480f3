"""How the turn-taking benchmark judges its calls, and what they add up to.

`analyse` reads one call the way a caller and an auditor would: the wire as the simulated caller saw it
(`clear`, media, marks: `CallReport`) and the transcript the gateway stored (`GET /api/calls/{call_sid}`),
nothing of the gateway's internals, so any version of it is judged alike. `summarize` adds a run's
judgements up into the issue's figures, and `markdown` renders one or more runs (before / after) as one
table. A stored run is summarized again from its calls when rendered, so runs made at different times are
counted by the same definitions. The probes (what each scenario plays) are `loadgen.turn_taking`'s; this
module only reads their `scenario`, `group`, `label`, `noise_s` and `parts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import loadgen.wer
from loadgen.simcaller import CallReport
from loadgen.stats import percentile

__all__ = ["Wire", "analyse", "markdown", "summarize", "table_rows", "wer", "word_errors", "words"]

RATE = 8000
FRAME_S = 0.02
# Allowance after an event for its `clear` to count (the model's re-checks can come late).
CLEAR_WINDOW_S = 2.5
# Reply audio that follows a `clear` within this long, with the stored reply whole, is the reply resuming.
RESUME_WINDOW_S = 4.0
# A stored caller turn is "one of the caller's sentences" when its WER against that sentence is under
# this; more is something else (the agent's echo, a phantom).
MATCH_WER = 0.6
# What a result keeps of each stored turn (the evidence behind its verdict).
STORED_FIELDS = ("turn_id", "user_text", "agent_text", "heard_text", "interrupted", "backchannel")
SCENARIOS = ("nonspeech", "backchannel", "barge_in", "pause", "noise_only", "snr", "echo", "clean")


class PartView(Protocol):
    """What a caller turn holds (`loadgen.turn_taking.Part`)."""

    kind: str
    transcript: str | None
    onset_s: float
    end_s: float
    a_end_s: float | None


class ProbeView(Protocol):
    """What the judging reads of a probe (`loadgen.turn_taking.Probe`)."""

    scenario: str
    label: str
    group: str
    noise_s: float
    parts: Sequence[PartView]


# ------------------------------------------------------------------ word error rate
# Counted as loadgen.wer counts (as the STT corpus does), with a hyphen left between digits parting two words.


def words(text: str) -> list[str]:
    return loadgen.wer.words(text, split_hyphens=True)


def word_errors(spoken: str, heard: str) -> tuple[int, int]:
    """(edits, spoken words): substitutions + deletions + insertions against the spoken words."""
    return loadgen.wer.word_errors(spoken, heard, split_hyphens=True)


def wer(spoken: str, heard: str) -> float:
    return loadgen.wer.wer(spoken, heard, split_hyphens=True)


# ------------------------------------------------------------------ what the wire and the store say


@dataclass
class Wire:
    """One call as the caller saw it, in seconds from the call's `start` message."""

    clears: list[float]
    segments: list[tuple[float, float]]  # (start, end) of each stretch of audio that played
    turns: list[dict[str, Any]]  # per caller turn: speech_start, speech_end, reply_start

    @classmethod
    def of(cls, report: CallReport) -> "Wire":
        t0 = report.call_start
        segments = [(s - t0, s - t0 + n / RATE) for s, n in report.heard_segments]
        turns = [{"speech_start": None if t.speech_start is None else t.speech_start - t0,
                  "speech_end": None if t.speech_end is None else t.speech_end - t0,
                  "reply_start": None if t.reply_start is None else t.reply_start - t0} for t in report.turns]
        return cls([c - t0 for c in report.clear_times], segments, turns)

    def clears_between(self, a: float, b: float) -> list[float]:
        return [c for c in self.clears if a <= c <= b]

    def audio_starts_between(self, a: float, b: float) -> list[float]:
        """When audio started playing within [a, b]: a new stretch, or one that was playing at a."""
        return [max(s, a) for s, e in self.segments if s <= b and e > a]

    def first_audio_after(self, t: float) -> float | None:
        starts = [max(s, t) for s, e in self.segments if e > t]
        return min(starts) if starts else None


def _user_turns(call: dict) -> list[dict]:
    """The stored turns the caller spoke (not the greeting or an apology), in order."""
    return [t for t in call.get("turns", []) if (t.get("user_text") or "").strip()]


def _same_text(a: str, b: str) -> bool:
    return words(a) == words(b)


def _is_backchannel_turn(turn: dict) -> bool:
    """Stored as an acknowledgement: the `backchannel` flag where the store keeps it, else a caller turn
    with no agent reply that was not cut (new code records a backchannel so)."""
    if "backchannel" in turn:
        return bool(turn["backchannel"])
    return not (turn.get("agent_text") or "").strip() and not turn.get("interrupted")


def analyse(probe: ProbeView, report: CallReport, call: dict) -> dict[str, Any]:
    """The probe's outcome, from the wire and the stored transcript."""
    wire = Wire.of(report)
    out: dict[str, Any] = {"scenario": probe.scenario, "label": probe.label, "group": probe.group,
                           "call_sid": report.call_sid, "error": report.error,
                           "clears": [round(c, 3) for c in wire.clears],
                           "stored": [{k: t.get(k) for k in STORED_FIELDS if k in t} for t in call.get("turns", [])]}
    # Whisper's time per caller turn, from the stored timings: where a busy machine shows first.
    out["stt_ms"] = [t["timings"]["stt_ms"] for t in call.get("turns", [])
                     if (t.get("user_text") or "").strip() and (t.get("timings") or {}).get("stt_ms") is not None]
    if report.error:
        return out
    if any(p.kind != "silence" and t["speech_start"] is None for p, t in zip(probe.parts, wire.turns)):
        out["error"] = "a turn of the script was never spoken (the call ended first)"
        return out
    analyser = {"nonspeech": _during_reply, "backchannel": _during_reply, "barge_in": _barge_in, "pause": _pause,
                "noise_only": _noise_only, "snr": _snr, "echo": _echo, "clean": _clean}[probe.scenario]
    out.update(analyser(probe, wire, call))
    return out


def _onset(probe: ProbeView, wire: Wire, i: int = 0) -> tuple[float, float]:
    """(onset, end) of turn i's active audio on the call's clock (the frame that carried it was sent)."""
    start = wire.turns[i]["speech_start"]
    part = probe.parts[i]
    return start + part.onset_s, start + part.end_s - FRAME_S


def _greeting(call: dict) -> dict | None:
    """The stored greeting: turn 0 (a turn is stored when it ends, so a backchannel said during the greeting
    is stored before it)."""
    turns = call.get("turns", [])
    return next((t for t in turns if t.get("turn_id") == 0 and not (t.get("user_text") or "").strip()), None)


def _reply_fate(wire: Wire, call: dict, onset: float, end: float) -> dict[str, Any]:
    """What became of the greeting an event or speech fell on."""
    clears = wire.clears_between(onset, end + CLEAR_WINDOW_S)
    greeting = _greeting(call) or {}
    out: dict[str, Any] = {"clear": bool(clears), "clear_ms": round((clears[0] - onset) * 1000, 1) if clears else None}
    heard, said = greeting.get("heard_text") or "", greeting.get("agent_text") or ""
    if clears:
        # Audio after the clear is the reply resuming only if the stored reply was not cut (else it is
        # another reply: to the noise, to the backchannel).
        after = wire.first_audio_after(clears[0] + 0.005)
        resumed = after is not None and after - clears[0] <= RESUME_WINDOW_S and not greeting.get("interrupted")
        out["resumed"] = resumed
        out["gap_ms"] = round((after - clears[0]) * 1000, 1) if resumed and after is not None else None
    out["greeting_interrupted"] = bool(greeting.get("interrupted"))
    out["greeting_heard_all"] = bool(said) and _same_text(heard, said)
    out["lost"] = (out["greeting_interrupted"] or not out["greeting_heard_all"]
                   or (bool(clears) and not out.get("resumed")))
    return out


def _during_reply(probe: ProbeView, wire: Wire, call: dict) -> dict[str, Any]:
    onset, end = _onset(probe, wire)
    out = _reply_fate(wire, call, onset, end)
    users = _user_turns(call)
    answered = [t for t in users if (t.get("agent_text") or "").strip() and not _is_backchannel_turn(t)]
    out["answered_as_turn"] = bool(answered)
    out["recorded_backchannel"] = any(_is_backchannel_turn(t) for t in users)
    out["user_texts"] = [t["user_text"] for t in users]
    return out


def _barge_in(probe: ProbeView, wire: Wire, call: dict) -> dict[str, Any]:
    onset, end = _onset(probe, wire)
    out = _reply_fate(wire, call, onset, end)
    out["detected"] = out["clear"]
    out["stopped"] = out["greeting_interrupted"]
    text = probe.parts[0].transcript or ""
    users = _user_turns(call)
    out["answered"] = any((t.get("agent_text") or "").strip() and wer(text, t["user_text"]) < 1.0 for t in users)
    out["wer"] = round(min((wer(text, t["user_text"]) for t in users), default=1.0), 3)
    out["user_texts"] = [t["user_text"] for t in users]
    return out


def _pause(probe: ProbeView, wire: Wire, call: dict) -> dict[str, Any]:
    part = probe.parts[0]
    start = wire.turns[0]["speech_start"]
    a_end, b_end = start + (part.a_end_s or 0.0) - FRAME_S, start + part.end_s - FRAME_S
    early = wire.audio_starts_between(a_end, b_end)
    users = _user_turns(call)
    answered = [t for t in users if (t.get("agent_text") or "").strip()]
    first = wire.first_audio_after(b_end)
    out: dict[str, Any] = {
        "premature": bool(early),
        "premature_at_ms": round((early[0] - a_end) * 1000, 1) if early else None,
        "turns": len(users), "answers": len(answered),
        "one_answer": len(answered) == 1 and wer(part.transcript or "", answered[0]["user_text"]) <= 0.5,
        "latency_ms": round((first - b_end) * 1000, 1) if first is not None and not early else None,
        "user_texts": [t["user_text"] for t in users],
    }
    return out


def _noise_only(probe: ProbeView, wire: Wire, call: dict) -> dict[str, Any]:
    users = _user_turns(call)
    greeting = _greeting(call) or {}
    return {
        "noise_s": probe.noise_s,
        "phantom_turns": len(users),
        "phantom_answered": sum(1 for t in users if (t.get("agent_text") or "").strip()),
        "clears_n": len(wire.clears),
        "greeting_cut": bool(greeting.get("interrupted")) or bool(wire.clears),
        "user_texts": [t["user_text"] for t in users],
    }


def _snr(probe: ProbeView, wire: Wire, call: dict) -> dict[str, Any]:
    text = probe.parts[0].transcript or ""
    users = _user_turns(call)
    best = min(users, key=lambda t: wer(text, t["user_text"]), default=None)
    replied = wire.turns[0]["reply_start"] is not None
    e, n = word_errors(text, best["user_text"] if best else "")
    _, end = _onset(probe, wire)
    return {
        "detected": replied and best is not None and (best.get("agent_text") or "").strip() != "" and e < n,
        "errors": e, "words": n, "wer": round(e / max(n, 1), 3),
        "phantom_turns": max(0, len(users) - 1),
        "greeting_cut": bool(wire.clears_between(0.0, wire.turns[0]["speech_start"] or 0.0)),
        "latency_ms": (round((wire.turns[0]["reply_start"] - end) * 1000, 1) if replied else None),
        "user_texts": [t["user_text"] for t in users],
    }


def _speech_windows(probe: ProbeView, wire: Wire) -> list[tuple[float, float]]:
    return [(t["speech_start"], t["speech_end"]) for t, p in zip(wire.turns, probe.parts)
            if p.kind != "silence" and t["speech_start"] is not None and t["speech_end"] is not None]


def _echo(probe: ProbeView, wire: Wire, call: dict) -> dict[str, Any]:
    windows = _speech_windows(probe, wire)
    # A clear while the caller talks (or within the 2 s its transcript takes) is theirs to cause.
    own = [c for c in wire.clears if not any(a <= c <= b + 2.0 for a, b in windows)]
    replies = [t for t in call.get("turns", []) if (t.get("agent_text") or "").strip()]
    spoken = [p.transcript or "" for p in probe.parts if p.transcript]
    users = _user_turns(call)
    phantoms = [t for t in users if min((wer(s, t["user_text"]) for s in spoken), default=1.0) >= MATCH_WER]
    cut_replies = sum(1 for t in replies if t.get("interrupted"))
    ref, hyp = " ".join(spoken), " ".join(t["user_text"] for t in users if t not in phantoms)
    e, n = word_errors(ref, hyp)
    return {
        "replies": len(replies), "self_clears": len(own), "cut_replies": cut_replies,
        "self_interrupted_replies": min(len(own), len(replies)),
        "phantom_turns": len(phantoms), "errors": e, "words": n,
        "user_texts": [t["user_text"] for t in users],
    }


def _clean(probe: ProbeView, wire: Wire, call: dict) -> dict[str, Any]:
    spoken = [(i, p) for i, p in enumerate(probe.parts) if p.transcript]
    users = _user_turns(call)
    ref = " ".join(p.transcript or "" for _, p in spoken)
    hyp = " ".join(t["user_text"] for t in users)
    e, n = word_errors(ref, hyp)
    latencies = []
    for i, _ in spoken:
        reply = wire.turns[i]["reply_start"]
        if reply is not None:
            latencies.append(round((reply - _onset(probe, wire, i)[1]) * 1000, 1))
    return {"errors": e, "words": n, "wer": round(e / max(n, 1), 3), "latencies_ms": latencies,
            "turns": len(users), "spoken": len(spoken), "user_texts": [t["user_text"] for t in users]}


# ------------------------------------------------------------------ the summary


def _rate(k: int, n: int) -> dict[str, Any]:
    return {"k": k, "n": n, "rate": round(k / n, 3) if n else None}


def _pct(values: Sequence[float], q: float) -> float | None:
    v = percentile(list(values), q)
    return None if v is None else round(v, 1)


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures the issue asks for, from every probe's outcome (failed calls counted apart)."""
    ok = [r for r in results if not r.get("error")]
    by = {s: [r for r in ok if r["scenario"] == s] for s in SCENARIOS}
    stt = [x for r in ok for x in r.get("stt_ms", [])]
    s: dict[str, Any] = {"calls": len(results), "failed_calls": len(results) - len(ok),
                         "failures": [f"{r['label']}: {r['error']}" for r in results if r.get("error")][:10],
                         "stt_ms": {"p50": _pct(stt, 0.5), "p95": _pct(stt, 0.95), "n": len(stt)}}
    ns = by["nonspeech"]
    if ns:
        gaps = [r["gap_ms"] for r in ns if r.get("gap_ms") is not None]
        s["nonspeech"] = {
            "false_barge_in": _rate(sum(r["clear"] for r in ns), len(ns)),
            "reply_lost": _rate(sum(r["lost"] for r in ns), len(ns)),
            "answered_as_turn": _rate(sum(r["answered_as_turn"] for r in ns), len(ns)),
            "resume_gap_ms": {"p50": _pct(gaps, 0.5), "p95": _pct(gaps, 0.95)},
            "by_kind": {g: {"false_barge_in": _rate(sum(r["clear"] for r in ns if r["group"] == g),
                                                    sum(1 for r in ns if r["group"] == g)),
                            "reply_lost": _rate(sum(r["lost"] for r in ns if r["group"] == g),
                                                sum(1 for r in ns if r["group"] == g))}
                        for g in sorted({r["group"] for r in ns})},
        }
    bc = by["backchannel"]
    if bc:
        s["backchannel"] = {
            "stopped": _rate(sum(r["lost"] or r["answered_as_turn"] for r in bc), len(bc)),
            "reply_lost": _rate(sum(r["lost"] for r in bc), len(bc)),
            "answered_as_turn": _rate(sum(r["answered_as_turn"] for r in bc), len(bc)),
            "paused": _rate(sum(r["clear"] for r in bc), len(bc)),
            "resume_gap_ms": {"p50": _pct([r["gap_ms"] for r in bc if r.get("gap_ms") is not None], 0.5),
                              "p95": _pct([r["gap_ms"] for r in bc if r.get("gap_ms") is not None], 0.95)},
            "recorded": _rate(sum(r["recorded_backchannel"] for r in bc), len(bc)),
        }
    bi = by["barge_in"]
    if bi:
        clears = [r["clear_ms"] for r in bi if r["clear_ms"] is not None]
        s["barge_in"] = {
            "detected": _rate(sum(r["detected"] for r in bi), len(bi)),
            "stopped": _rate(sum(r["stopped"] for r in bi), len(bi)),
            "answered": _rate(sum(r["answered"] for r in bi), len(bi)),
            "clear_ms": {"p50": _pct(clears, 0.5), "p95": _pct(clears, 0.95)},
            "by_kind": {g: _rate(sum(r["detected"] for r in bi if r["group"] == g),
                                 sum(1 for r in bi if r["group"] == g))
                        for g in sorted({r["group"] for r in bi})},
        }
    pa = by["pause"]
    if pa:
        s["pause"] = {}
        for pause in sorted({r["group"] for r in pa}, key=int):
            rs = [r for r in pa if r["group"] == pause]
            lat = [r["latency_ms"] for r in rs if r["latency_ms"] is not None]
            s["pause"][str(pause)] = {
                "premature": _rate(sum(r["premature"] for r in rs), len(rs)),
                "split": _rate(sum(r["answers"] > 1 for r in rs), len(rs)),
                "one_answer": _rate(sum(r["one_answer"] for r in rs), len(rs)),
                "latency_ms": {"p50": _pct(lat, 0.5), "p95": _pct(lat, 0.95)},
            }
    no = by["noise_only"]
    if no:
        minutes = sum(r["noise_s"] for r in no) / 60.0
        phantoms = sum(r["phantom_turns"] for r in no)
        s["noise_only"] = {
            "minutes": round(minutes, 2), "phantom_turns": phantoms,
            "phantom_per_min": round(phantoms / minutes, 2) if minutes else None,
            "answered_phantoms": sum(r["phantom_answered"] for r in no),
            "clears_per_min": round(sum(r["clears_n"] for r in no) / minutes, 2) if minutes else None,
            "greeting_cut": _rate(sum(r["greeting_cut"] for r in no), len(no)),
            "by_bed": {r["group"]: r["phantom_turns"] for r in no},
        }
    sn = by["snr"]
    if sn:
        s["snr"] = {}
        for snr in sorted({r["group"] for r in sn}, key=int, reverse=True):
            rs = [r for r in sn if r["group"] == snr]
            e, n = sum(r["errors"] for r in rs), sum(r["words"] for r in rs)
            s["snr"][str(snr)] = {"detected": _rate(sum(r["detected"] for r in rs), len(rs)),
                                  "wer": round(e / n, 3) if n else None, "words": n,
                                  "greeting_cut": _rate(sum(r["greeting_cut"] for r in rs), len(rs)),
                                  "phantom_turns": sum(r["phantom_turns"] for r in rs)}
    ec = by["echo"]
    if ec:
        s["echo"] = {}
        for gain in sorted({r["group"] for r in ec}, key=int, reverse=True):
            rs = [r for r in ec if r["group"] == gain]
            s["echo"][str(gain)] = {
                "self_interruptions": _rate(sum(r["self_interrupted_replies"] for r in rs),
                                            sum(r["replies"] for r in rs)),
                "cut_replies": sum(r["cut_replies"] for r in rs),
                "phantom_turns": sum(r["phantom_turns"] for r in rs),
                "wer": round(sum(r["errors"] for r in rs) / max(1, sum(r["words"] for r in rs)), 3),
            }
    cl = by["clean"]
    if cl:
        e, n = sum(r["errors"] for r in cl), sum(r["words"] for r in cl)
        lat = [x for r in cl for x in r["latencies_ms"]]
        s["clean"] = {"wer": round(e / n, 3) if n else None, "words": n, "utterances": sum(r["spoken"] for r in cl),
                      "latency_ms": {"p50": _pct(lat, 0.5), "p95": _pct(lat, 0.95), "n": len(lat)}}
    return s


# ------------------------------------------------------------------ the table


def _r(x: dict[str, Any] | None) -> str:
    if not x or not x.get("n"):
        return "–"
    return f"{x['k']}/{x['n']} ({100 * x['rate']:.0f} %)"


def _ms(x: dict[str, Any] | None) -> str:
    if not x or x.get("p50") is None:
        return "–"
    return f"{x['p50']:.0f} / {x['p95']:.0f} ms"


def table_rows(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, target) rows of one run's summary."""
    rows: list[tuple[str, str, str]] = []
    ns = s.get("nonspeech")
    if ns:
        rows += [("non-speech during the reply: `clear` sent (false barge-in)", _r(ns["false_barge_in"]), "≤ 5 %"),
                 ("... reply lost (cut for good, or heard_text ≠ agent_text)", _r(ns["reply_lost"]), "0"),
                 ("... answered as a caller turn", _r(ns["answered_as_turn"]), "0"),
                 ("... non-speech: pause in the reply when it resumed, p50 / p95", _ms(ns["resume_gap_ms"]), "")]
        for kind, v in ns["by_kind"].items():
            rows.append((f"... {kind}: `clear` / lost", f"{_r(v['false_barge_in'])} / {_r(v['reply_lost'])}", ""))
    bc = s.get("backchannel")
    if bc:
        rows += [("backchannel during the reply: reply stopped (lost, or the backchannel answered)",
                  _r(bc["stopped"]), "0"),
                 ("... reply lost", _r(bc["reply_lost"]), "0"),
                 ("... answered as a turn", _r(bc["answered_as_turn"]), "0"),
                 ("... paused (`clear`, then resumed or lost)", _r(bc["paused"]), ""),
                 ("... backchannel: pause in the reply when it resumed, p50 / p95", _ms(bc["resume_gap_ms"]), ""),
                 ("... recorded as a backchannel turn", _r(bc["recorded"]), "")]
    bi = s.get("barge_in")
    if bi:
        rows += [("real-speech barge-in: detected (`clear`)", _r(bi["detected"]), "≥ 98 %"),
                 ("... time to `clear` from the speech's onset, p50 / p95", _ms(bi["clear_ms"]), "p50 ≤ 250 ms"),
                 ("... reply stopped for good (stored interrupted)", _r(bi["stopped"]), ""),
                 ("... the barge-in answered", _r(bi["answered"]), "")]
        for kind, v in bi["by_kind"].items():
            rows.append((f"... {kind}s detected", _r(v), ""))
    pa = s.get("pause")
    if pa:
        for pause, v in pa.items():
            rows += [(f"{pause} ms mid-utterance pause: answered into it (premature)", _r(v["premature"]),
                      "≤ 10 %" if pause == "700" else ""),
                     (f"... {pause} ms: answered as two turns / as one holding both parts",
                      f"{_r(v['split'])} / {_r(v['one_answer'])}", ""),
                     (f"... {pause} ms: end of speech → first reply audio, p50 / p95", _ms(v["latency_ms"]), "")]
    cl = s.get("clean")
    if cl:
        rows.append(("clean speech: end of speech → first reply audio, p50 / p95", _ms(cl["latency_ms"]), ""))
    no = s.get("noise_only")
    if no:
        rows += [(f"noise beds, nobody speaking ({no['minutes']:g} min): phantom turns per minute",
                  f"{no['phantom_per_min']} ({no['phantom_turns']} turns, {no['answered_phantoms']} answered)", "0"),
                 ("... `clear`s per minute", f"{no['clears_per_min']}", ""),
                 ("... calls whose greeting was cut", _r(no["greeting_cut"]), "")]
    sn = s.get("snr")
    if sn:
        for snr, v in sn.items():
            wer_s = "–" if v["wer"] is None else f"{100 * v['wer']:.1f} %"
            rows.append((f"speech under a noise bed at {snr} dB SNR: turn answered / WER (a missed turn: all "
                         f"its words)",
                         f"{_r(v['detected'])} / {wer_s}", ""))
    ec = s.get("echo")
    if ec:
        for gain, v in ec.items():
            rows.append((f"agent's echo at {gain} dB: replies that interrupted themselves",
                         f"{_r(v['self_interruptions'])}; {v['phantom_turns']} phantom turns",
                         "0" if gain == "-20" else "≤ 5 %"))
    if cl:
        wer_s = "–" if cl["wer"] is None else f"{100 * cl['wer']:.1f} %"
        rows.append((f"clean speech WER ({cl['utterances']} utterances, {cl['words']} words)", wer_s, ""))
    rows.append(("whisper's time per caller turn (stored timings), p50 / p95: how busy the machine was",
                 _ms(s.get("stt_ms")), ""))
    rows.append(("calls (failed)", f"{s['calls']} ({s['failed_calls']})", ""))
    return rows


def markdown(runs: list[dict[str, Any]]) -> str:
    """One table with a column per run (before / after), and each run's provenance."""
    out = ["# Turn-taking benchmark (issue 20)", "",
           "Real-time simulated calls with real recordings against the gateway on the offline default (whisper "
           "tiny.en + rules + Piper); `bench/turn_taking.py`, probes in `loadgen/turn_taking.py`, verdicts in "
           "`loadgen/turn_taking_verdicts.py`. Decided from the wire (`clear`, media, marks as the caller saw "
           "them) and the stored transcript. Indicative: the machine (2 cores) was shared with other work.", ""]
    for run in runs:
        v = run["version"]
        changed = (f"; {v['changed_files']} files changed in the tree"
                   + (f" ({', '.join(v['changed_product_files'][:8])})" if v["changed_product_files"] else "")
                   if v["changed_files"] else "")
        load = run.get("loadavg")
        load_s = f", load average {load[0]:.1f} at the start and {load[1]:.1f} at the end" if load else ""
        product = (f"; the product last changed in `{v['product_commit']}` ({v['product_subject']})"
                   if v.get("product_commit") and v["product_commit"] != v["commit"] else "")
        out.append(f"- **{run['label']}**: `{v['src']}` at `{v['commit']}` ({v['subject']}){product}{changed}; "
                   f"{run['started_utc']}, {run['duration_s'] / 60:.1f} min, concurrency {run['concurrency']}"
                   f"{load_s}, `{run['command']}`")
    out.append("")
    rows = [table_rows(summarize(r["calls"])) for r in runs]  # re-summarized: the definitions of today
    names = []
    for rs in rows:
        for name, _, _ in rs:
            if name not in names:
                names.append(name)
    header = "| measure | " + " | ".join(f"{r['label']} `{r['version']['commit']}`" for r in runs) + " | target |"
    out += [header, "|---|" + "---|" * len(runs) + "---|"]
    for name in names:
        cells, target = [], ""
        for rs in rows:
            hit = next(((v, t) for n, v, t in rs if n == name), ("–", ""))
            cells.append(hit[0])
            target = target or hit[1]
        out.append(f"| {name} | " + " | ".join(cells) + f" | {target} |")
    out += ["", LEGEND, ""]
    return "\n".join(out)


LEGEND = """How to read it. Events, backchannels and barge-ins fall on the greeting ("Hi, thanks for calling the \
clinic. Would you like to book an appointment?"), 500-1500 ms after its first audio played; their onset is the \
clip's first active 20 ms frame as sent. A reply is *lost* when the stored turn is interrupted, its heard_text is \
not its agent_text, or no audio followed the `clear`; *paused* is a `clear` whatever came after. A pause is \
*premature* when reply audio reached the caller before the second half of the utterance ended. End of speech is \
the last active frame of what the caller said. Noise beds are at the catalogue's level (-36 dBFS, 10 dB under \
the voices); an SNR bed is set under the sentence's active level and plays for the whole call, greeting included. \
Echo is what the caller's speaker played, fed back 60-150 ms late; a self-interruption is a `clear` while the \
caller was silent (2 s after their speech allowed), per agent reply."""


