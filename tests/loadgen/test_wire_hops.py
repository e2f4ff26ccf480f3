"""The wire-timed hops: known hop times on synthetic emulator logs come back out, call by call, and
with the rig's lateness they add up to the caller-side overhead."""

from __future__ import annotations

import pytest

from loadgen.wire_hops import Configured, describe, wire_overhead

CONFIGURED = Configured(end_of_speech_ms=300, stt_final_ms=150, llm_first_phrase_ms=340, tts_first_byte_ms=150)
WAIT = CONFIGURED.stt_wait_s
INBOUND = 0.0015  # the deciding frame's trip through the gateway to Deepgram
LATE = (0.0004, 0.0011, 0.0007, 0.0009, 0.0)  # the rig: caller send, STT, LLM, TTS, playback wait


def first_phrase(reply: str) -> int:
    return 2  # the third token completes the first phrase


def build(calls: list[tuple[float, list[tuple[float, float, float, float]]]]):
    """calls: (start, [(end of speech offset, stt->llm, llm->tts, tts->caller) per turn]). Sockets are
    logged in reverse call order, so only the matching can pair them up."""
    records, deepgram, openai, elevenlabs = [], [], [], []
    n = 0
    caller_send, stt_late, llm_late, tts_late, _ = LATE
    for start, turns in calls:
        rec_turns, finals, gens, speech = [], [], [], []
        for offset, a, b, c in turns:
            n += 1
            end = start + offset
            sends = [end + 0.02 * (i + 1) for i in range(30)]
            sends[14] += caller_send  # the 15th silent frame completes 300 ms of endpointing silence
            decided = sends[14] + INBOUND
            speech.append({"onset_at": end - 1.0, "end_at": decided})
            final = decided + 0.15 + stt_late
            request = final + a
            tokens = [request + 0.3 + llm_late + 0.02 * i for i in range(6)]
            phrase_at = tokens[2] + b
            first_byte = phrase_at + 0.15 + tts_late
            arrival = first_byte + c
            latency = (arrival - end) * 1000
            rec_turns.append({"kind": "audio", "text": "hello there", "speech_end": end, "reply_arrival": arrival,
                              "latency_ms": latency, "sends_after_end": sends})
            finals.append({"t": final, "is_final": True, "speech_final": True, "from_finalize": False,
                           "transcript": "hello there"})
            finals.append({"t": final + 0.2, "is_final": True, "speech_final": False, "from_finalize": True,
                           "transcript": ""})
            openai.append({"t": request, "token_at": tokens, "reply": {"text": f"Booking {n}: sure, fine."}})
            gens.append({"t": phrase_at, "text": f"Booking {n}: ", "first_byte_at": first_byte})
            gens.append({"t": phrase_at + 0.1, "text": "sure, fine. ", "first_byte_at": first_byte + 0.2})
        records.append({"turns": rec_turns})
        deepgram.insert(0, {"transcripts": finals, "speech": speech})
        elevenlabs.insert(0, {"generations": gens})
    deepgram.append({"transcripts": []})  # a socket of nobody's call (a probe)
    return records, {"deepgram": deepgram, "openai": openai, "elevenlabs": elevenlabs}


def test_hops_come_back_per_call_when_calls_overlap() -> None:
    # Two calls 50 ms apart with the same script; the second call's hops are slower.
    records, log = build([(100.0, [(1.0, 0.004, 0.002, 0.001), (5.0, 0.006, 0.003, 0.002)]),
                          (100.05, [(1.0, 0.040, 0.030, 0.020), (5.0, 0.041, 0.031, 0.021)])])
    wire = wire_overhead(records, log, configured=CONFIGURED, first_phrase_token=first_phrase, wall_offset=0.0,
                         keep_turns=True)
    assert wire["turns_matched"] == 4 and wire["turns_unmatched"] == 0
    got = sorted(tuple(row["ms"]) for row in wire["turns"])
    assert got == [(4.0, 2.0, 1.0), (6.0, 3.0, 2.0), (40.0, 30.0, 20.0), (41.0, 31.0, 21.0)]
    assert wire["outbound"]["max"] == 93.0
    assert [row["inbound_ms"] for row in wire["turns"]] == [1.5] * 4
    assert wire["total"]["max"] == 94.5  # the inbound hop + the three outbound ones
    assert wire["turns_without_inbound"] == 0


def test_the_rig_share_and_the_gateway_hops_add_up_to_the_caller_side_overhead() -> None:
    records, log = build([(100.0, [(1.0, 0.004, 0.002, 0.001), (5.0, 0.006, 0.003, 0.002)]),
                          (100.05, [(1.0, 0.040, 0.030, 0.020)])])
    wire = wire_overhead(records, log, configured=CONFIGURED, first_phrase_token=first_phrase, wall_offset=0.0,
                         keep_turns=True)
    for row in wire["turns"]:
        assert row["rig_ms"] == {"caller_send": 0.4, "stt_extra": 1.1, "llm_extra": 0.7, "tts_extra": 0.9,
                                 "playback_wait": 0.0}
    assert wire["rig"]["total"]["max"] == pytest.approx(3.1)
    # The caller-side overhead of the slowest turn: 40 + 30 + 20 ms of hops, 1.5 inbound, 3.1 of rig.
    assert wire["caller_overhead"]["max"] == pytest.approx(94.6)
    assert wire["residual_max_ms"] < 0.001
    lines = describe(wire)
    assert "p50" in lines[0] and "inbound" in lines[1] and lines[2].startswith("test rig")


def test_a_turn_whose_deciding_frame_is_unknown_keeps_its_outbound_hops() -> None:
    records, log = build([(100.0, [(1.0, 0.004, 0.002, 0.001)])])
    log["deepgram"][0]["speech"] = []  # an emulator that did not log its endpointing decisions
    wire = wire_overhead(records, log, configured=CONFIGURED, first_phrase_token=first_phrase, wall_offset=0.0)
    assert wire["turns_matched"] == 1 and wire["turns_without_inbound"] == 1
    assert wire["outbound"]["n"] == 1 and wire["total"]["n"] == 0
    assert "1 without the inbound hop" in describe(wire)[0]


def test_a_turn_without_its_final_is_unmatched_not_guessed() -> None:
    records, log = build([(100.0, [(1.0, 0.004, 0.002, 0.001)])])
    log["deepgram"] = [{"transcripts": []}]
    wire = wire_overhead(records, log, configured=CONFIGURED, first_phrase_token=first_phrase, wall_offset=0.0)
    assert wire["turns_matched"] == 0 and wire["turns_unmatched"] == 1
    assert describe(wire) == ["no turn matched (1 tried)"]
