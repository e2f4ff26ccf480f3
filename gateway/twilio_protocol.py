"""Twilio Media Streams wire format, isolated in one place (PROTOCOLS.md section 5).

`parse` turns one inbound text frame into a typed message or raises `ProtocolError` (the peer
misbehaved); it never raises anything else. The `*_message` functions build the outbound JSON.
Both directions are here so the simulated caller and the gateway cannot drift apart.

Twilio sends `sequenceNumber`, `chunk` and `timestamp` as strings; we accept numbers too.
"""

from __future__ import annotations

import binascii
from base64 import b64encode
from dataclasses import dataclass, field
from typing import Mapping

import orjson


class ProtocolError(ValueError):
    """An inbound message does not follow the Media Streams protocol. `reason` is a short code for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    encoding: str
    sample_rate: int
    custom_parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Media:
    stream_sid: str
    payload: bytes
    track: str = "inbound"
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Dtmf:
    stream_sid: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    stream_sid: str


@dataclass(frozen=True, slots=True)
class Stop:
    stream_sid: str
    call_sid: str


Message = Connected | Start | Media | Dtmf | Mark | Clear | Stop

DTMF_DIGITS = frozenset("0123456789*#ABCD")


def parse(raw: str | bytes, *, max_payload_bytes: int = 1 << 20) -> Message:
    """Parse one Media Streams JSON frame (either direction)."""
    return message(load(raw), max_payload_bytes=max_payload_bytes)


def load(raw: str | bytes) -> dict:
    """The JSON object of one frame. `message` or, for a media frame, `media_payload` reads it."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("invalid_json", str(exc)[:80]) from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_json", "message is not a JSON object")
    return data


def media_payload(data: dict, max_payload_bytes: int) -> tuple[str, bytes]:
    """(streamSid, decoded audio) of a loaded `media` frame: the gateway's per-frame fast path,
    50 a second per call, which needs neither the `Media` object nor the timestamp."""
    sid = data.get("streamSid") or ""
    media = data.get("media")
    if not isinstance(sid, str):
        raise ProtocolError("bad_field", "streamSid is not a string")
    if not isinstance(media, dict):
        raise ProtocolError("bad_field", "media is not an object")
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise ProtocolError("bad_field", "media.payload is not a string")
    # base64 grows 4/3: reject before decoding so a huge payload costs nothing.
    if len(payload) > (max_payload_bytes * 4) // 3 + 4:
        raise ProtocolError("payload_too_large", f"{len(payload)} base64 chars")
    try:
        return sid, binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_base64", "media.payload is not valid base64") from None


def message(data: dict, *, max_payload_bytes: int = 1 << 20) -> Message:
    """The typed message of a loaded frame."""
    event = data.get("event")
    sid = data.get("streamSid") or ""
    if not isinstance(sid, str):
        raise ProtocolError("bad_field", "streamSid is not a string")
    match event:
        case "media":
            sid, audio = media_payload(data, max_payload_bytes)
            media = data["media"]
            track = media.get("track", "inbound")
            return Media(sid, audio, track if isinstance(track, str) else "inbound", _int_or_none(media.get("timestamp")))
        case "mark":
            name = _obj(data, "mark").get("name")
            if not isinstance(name, str):
                raise ProtocolError("bad_field", "mark.name is not a string")
            return Mark(sid, name)
        case "dtmf":
            digit = _obj(data, "dtmf").get("digit")
            if not isinstance(digit, str) or digit not in DTMF_DIGITS:
                raise ProtocolError("bad_field", "dtmf.digit is not a DTMF digit")
            return Dtmf(sid, digit)
        case "start":
            start = _obj(data, "start")
            fmt = start.get("mediaFormat") or {}
            if not isinstance(fmt, dict):
                raise ProtocolError("bad_field", "start.mediaFormat is not an object")
            params = start.get("customParameters") or {}
            if not isinstance(params, dict):
                raise ProtocolError("bad_field", "start.customParameters is not an object")
            stream_sid = start.get("streamSid") or sid
            call_sid = start.get("callSid") or ""
            if not isinstance(stream_sid, str) or not stream_sid or not isinstance(call_sid, str):
                raise ProtocolError("bad_field", "start.streamSid/callSid missing")
            tracks = start.get("tracks") or ["inbound"]
            return Start(
                stream_sid=stream_sid,
                call_sid=call_sid,
                account_sid=str(start.get("accountSid") or ""),
                tracks=tuple(str(t) for t in tracks) if isinstance(tracks, list) else ("inbound",),
                encoding=str(fmt.get("encoding", "audio/x-mulaw")),
                sample_rate=_int_or_none(fmt.get("sampleRate")) or 8000,
                custom_parameters={str(k)[:64]: str(v)[:256] for k, v in list(params.items())[:32]},
            )
        case "connected":
            return Connected(str(data.get("protocol", "")), str(data.get("version", "")))
        case "stop":
            stop = data.get("stop") or {}
            return Stop(sid, str(stop.get("callSid", "")) if isinstance(stop, dict) else "")
        case "clear":
            return Clear(sid)
        case _:
            raise ProtocolError("unknown_event", f"event {str(event)[:32]!r}")


def _obj(data: dict, key: str) -> dict:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ProtocolError("bad_field", f"{key} is not an object")
    return value


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


# ------------------------------------------------------------------ outbound (gateway -> Twilio)


def media_message(stream_sid: str, payload: bytes) -> str:
    # Hand-built: this runs 50 times a second per call, and the payload needs no escaping.
    return '{"event":"media","streamSid":"%s","media":{"payload":"%s"}}' % (
        stream_sid,
        b64encode(payload).decode("ascii"),
    )


def mark_message(stream_sid: str, name: str) -> str:
    return orjson.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}).decode()


def clear_message(stream_sid: str) -> str:
    return orjson.dumps({"event": "clear", "streamSid": stream_sid}).decode()


# ------------------------------------------------------------------ inbound (Twilio -> gateway), for simulated callers


def connected_message() -> str:
    return '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def start_message(stream_sid: str, call_sid: str, account_sid: str = "AC" + "0" * 32,
                  custom_parameters: Mapping[str, str] | None = None, sequence: int = 1) -> str:
    return orjson.dumps({
        "event": "start",
        "sequenceNumber": str(sequence),
        "streamSid": stream_sid,
        "start": {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": dict(custom_parameters or {}),
        },
    }).decode()


def inbound_media_message(stream_sid: str, payload: bytes, sequence: int, chunk: int, timestamp_ms: int) -> str:
    return '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"},"streamSid":"%s"}' % (
        sequence, chunk, timestamp_ms, b64encode(payload).decode("ascii"), stream_sid,
    )


def dtmf_message(stream_sid: str, digit: str, sequence: int) -> str:
    return orjson.dumps({"event": "dtmf", "streamSid": stream_sid, "sequenceNumber": str(sequence),
                         "dtmf": {"track": "inbound_track", "digit": digit}}).decode()


def mark_echo_message(stream_sid: str, name: str, sequence: int) -> str:
    return orjson.dumps({"event": "mark", "sequenceNumber": str(sequence), "streamSid": stream_sid,
                         "mark": {"name": name}}).decode()


def stop_message(stream_sid: str, call_sid: str, sequence: int, account_sid: str = "AC" + "0" * 32) -> str:
    return orjson.dumps({"event": "stop", "sequenceNumber": str(sequence), "streamSid": stream_sid,
                         "stop": {"accountSid": account_sid, "callSid": call_sid}}).decode()
