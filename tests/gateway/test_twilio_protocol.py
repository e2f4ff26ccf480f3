"""The Media Streams serializer: every message both ways, and every way a message can be wrong."""

from __future__ import annotations

import base64

import orjson
import pytest

from gateway import twilio_protocol as tp


def test_round_trip_of_every_inbound_message():
    assert tp.parse(tp.connected_message()) == tp.Connected("Call", "1.0.0")
    start = tp.parse(tp.start_message("MZ1", "CA1", custom_parameters={"caller": "+15550001111"}))
    assert start == tp.Start("MZ1", "CA1", "AC" + "0" * 32, ("inbound",), "audio/x-mulaw", 8000,
                             {"caller": "+15550001111"})
    media = tp.parse(tp.inbound_media_message("MZ1", b"\x01\x02\xff", 3, 2, 20))
    assert media == tp.Media("MZ1", b"\x01\x02\xff", "inbound", 20)
    assert tp.parse(tp.dtmf_message("MZ1", "7", 4)) == tp.Dtmf("MZ1", "7")
    assert tp.parse(tp.mark_echo_message("MZ1", "t1s0", 5)) == tp.Mark("MZ1", "t1s0")
    assert tp.parse(tp.stop_message("MZ1", "CA1", 6)) == tp.Stop("MZ1", "CA1")


def test_outbound_messages_match_the_documented_shape():
    media = orjson.loads(tp.media_message("MZ9", b"\xff" * 160))
    assert media == {"event": "media", "streamSid": "MZ9", "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}}
    assert orjson.loads(tp.mark_message("MZ9", "t0s1")) == {"event": "mark", "streamSid": "MZ9", "mark": {"name": "t0s1"}}
    assert orjson.loads(tp.clear_message("MZ9")) == {"event": "clear", "streamSid": "MZ9"}
    # The gateway's own outbound messages parse too (the softphone and simulated caller read them).
    assert tp.parse(tp.media_message("MZ9", b"\x00")) == tp.Media("MZ9", b"\x00", "inbound", None)
    assert tp.parse(tp.clear_message("MZ9")) == tp.Clear("MZ9")


def test_numbers_may_be_numbers_not_strings():
    raw = orjson.dumps({"event": "media", "streamSid": "MZ", "media": {"timestamp": 40, "payload": "AAA="}})
    assert tp.parse(raw).timestamp_ms == 40


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "invalid_json"),
        ("[1,2]", "invalid_json"),
        ('{"event":"media","media":{"payload":"@@@"}}', "bad_base64"),
        ('{"event":"media","media":{"payload":5}}', "bad_field"),
        ('{"event":"media","media":"x"}', "bad_field"),
        ('{"event":"media"}', "bad_field"),
        ('{"event":"dtmf","dtmf":{"digit":"x"}}', "bad_field"),
        ('{"event":"mark","mark":{}}', "bad_field"),
        ('{"event":"start","start":{"streamSid":""}}', "bad_field"),
        ('{"event":"start","start":{"streamSid":"MZ","customParameters":[1]}}', "bad_field"),
        ('{"event":"hello"}', "unknown_event"),
        ('{"streamSid":5,"event":"media"}', "bad_field"),
        ("{}", "unknown_event"),
    ],
)
def test_malformed_messages_raise_protocol_error_with_a_reason(raw, reason):
    with pytest.raises(tp.ProtocolError) as info:
        tp.parse(raw)
    assert info.value.reason == reason


def test_oversized_payload_is_refused_before_decoding():
    big = base64.b64encode(b"\xff" * 5000).decode()
    raw = orjson.dumps({"event": "media", "streamSid": "MZ", "media": {"payload": big}})
    with pytest.raises(tp.ProtocolError) as info:
        tp.parse(raw, max_payload_bytes=1000)
    assert info.value.reason == "payload_too_large"
    assert len(tp.parse(raw, max_payload_bytes=5000).payload) == 5000


def test_custom_parameters_are_bounded():
    params = {f"k{i}": "v" * 1000 for i in range(100)}
    start = tp.parse(tp.start_message("MZ", "CA", custom_parameters=params))
    assert len(start.custom_parameters) == 32
    assert all(len(v) <= 256 for v in start.custom_parameters.values())
