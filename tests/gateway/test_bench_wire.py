"""The wire-timed hops: known hop times on synthetic emulator logs come back out, call by call."""

from __future__ import annotations

from gateway.bench_wire import describe, wire_overhead

WAIT = 0.45  # endpointing + STT final delay


def first_phrase(reply: str) -> int:
    return 2  # the third token completes the first phrase


def build(calls: list[tuple[float, list[tuple[float, float, float, float]]]]):
    """calls: (start, [(end of speech offset, stt->llm, llm->tts, tts->caller) per turn]). Sockets are
    logged in reverse call order, so only the matching can pair them up."""
    records, deepgram, openai, elevenlabs = [], [], [], []
    n = 0
    for start, turns in calls:
        rec_turns, finals, gens = [], [], []
        for offset, a, b, c in turns:
            n += 1
            end = start + offset
            final = end + WAIT + 0.003
            request = final + a
            tokens = [request + 0.3 + 0.02 * i for i in range(6)]
            phrase_at = tokens[2] + b
            first_byte = phrase_at + 0.15
            arrival = first_byte + c
            rec_turns.append({"kind": "audio", "text": "hello there", "speech_end": end, "reply_arrival": arrival})
            finals.append({"t": final, "is_final": True, "speech_final": True, "from_finalize": False,
                           "transcript": "hello there"})
            finals.append({"t": final + 0.2, "is_final": True, "speech_final": False, "from_finalize": True,
                           "transcript": ""})
            openai.append({"t": request, "token_at": tokens, "reply": {"text": f"Booking {n}: sure, fine."}})
            gens.append({"t": phrase_at, "text": f"Booking {n}: ", "first_byte_at": first_byte})
            gens.append({"t": phrase_at + 0.1, "text": "sure, fine. ", "first_byte_at": first_byte + 0.2})
        records.append({"turns": rec_turns})
        deepgram.insert(0, {"transcripts": finals})
        elevenlabs.insert(0, {"generations": gens})
    deepgram.append({"transcripts": []})  # a socket of nobody's call (a probe)
    return records, {"deepgram": deepgram, "openai": openai, "elevenlabs": elevenlabs}


def test_hops_come_back_per_call_when_calls_overlap() -> None:
    # Two calls 50 ms apart with the same script; the second call's hops are slower.
    records, log = build([(100.0, [(1.0, 0.004, 0.002, 0.001), (5.0, 0.006, 0.003, 0.002)]),
                          (100.05, [(1.0, 0.040, 0.030, 0.020), (5.0, 0.041, 0.031, 0.021)])])
    wire = wire_overhead(records, log, stt_wait_s=WAIT, first_phrase_token=first_phrase, wall_offset=0.0,
                         keep_turns=True)
    assert wire["turns_matched"] == 4 and wire["turns_unmatched"] == 0
    got = sorted(tuple(row["ms"]) for row in wire["turns"])
    assert got == [(4.0, 2.0, 1.0), (6.0, 3.0, 2.0), (40.0, 30.0, 20.0), (41.0, 31.0, 21.0)]
    assert wire["total"]["max"] == 93.0
    assert "p50" in describe(wire)[0]


def test_a_turn_without_its_final_is_unmatched_not_guessed() -> None:
    records, log = build([(100.0, [(1.0, 0.004, 0.002, 0.001)])])
    log["deepgram"] = [{"transcripts": []}]
    wire = wire_overhead(records, log, stt_wait_s=WAIT, first_phrase_token=first_phrase, wall_offset=0.0)
    assert wire["turns_matched"] == 0 and wire["turns_unmatched"] == 1
    assert describe(wire) == ["no turn matched (1 tried)"]
