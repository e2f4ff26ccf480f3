"""A simulated Twilio caller: Twilio's side of a Media Stream plus a person holding the phone.

It is the `voicegate call` command, the caller of the integration tests, and the load of the
benchmark (hundreds of these run in one process), so the per-frame path is kept to one string
format and one `send` per 20 ms.

What it does, like Twilio (PROTOCOLS.md section 5):

- Sends `connected`, `start`, then one 160-byte mu-law `media` frame every 20 ms for the whole
  call: the script's speech when the caller talks, digital silence (0xFF) otherwise.
  `sequenceNumber` counts every message after `connected` (start is 1), `chunk` counts media
  frames from 1, `timestamp` is the frame's media time in ms (`(chunk - 1) * 20`). The clock is
  `start + n * 20 ms`: a late wake-up sends the frames already due back to back (catch-up), but
  never more than `MAX_CATCHUP_S` behind; beyond that the clock slips (reported) instead of
  bursting seconds of audio at once.
- Plays what the gateway sends through a simulated phone speaker (`Playback`): received audio is
  queued and plays in real time at 8000 bytes/s, starting the moment it arrives if the speaker is
  idle. A `mark` is echoed once the audio queued before it has played, or at once if nothing is
  buffered. `clear` drops the unplayed audio and echoes every pending mark at once, as Twilio does.
  `heard` is what actually played; `received` is everything that arrived.

The person follows a script of `CallerTurn`s. Each turn starts by one rule:

- after the reply (default): wait until the agent's reply to the previous turn (the greeting for
  the first turn) has started and then finished, i.e. the speaker has been idle for
  `reply_quiet_ms` (so no audio arrived for that long either: audio never plays before it
  arrives). Measuring from the end of playback, not from the last arrival, keeps a gateway that
  sends ahead of real time from looking finished between two sentences. Then pause `gap_ms`. A reply that does not start within
  `max_reply_wait_s` (or does not finish within that long after it started) is given up on.
- `barge_in_ms=N`: speak N ms after that reply started playing (barge-in tests).
- `at_ms=N`: speak N ms after the `start` message, whatever is playing.

A caller that reacts (`run_call(next_turn=...)`): after the script's turns, an async callback is asked
for each next turn once the previous reply has played out (or timed out), with the `CallReport` so far
(its `call_sid` and the turns spoken); it returns a `CallerTurn`, rendered then, or None to end the
call. The booking benchmark's caller reads the agent's words there and chooses what to say.

What a turn measures (times are `time.monotonic()` seconds; `TurnReport.to_json` shows them
relative to the call's `start` message):

- `speech_start` / `speech_end`: when the utterance's first / last frame was sent.
- `reply_start`: when the first audio that arrived after `speech_end` started playing (on arrival
  if the speaker was idle, else when the audio queued before it ran out).
  `latency_ms = reply_start - speech_end`.
- `reply_ms`: reply audio actually played from `reply_start` until the next turn's speech onset
  (or the end of the call). Audio dropped by a `clear` never played, so it never counts.
- `clear_ms`: from this turn's speech onset to the first `clear` received before this turn's own
  reply started (the barge-in reaction time). `barged_in` is `clear_ms is not None`.
- `interrupted`: this turn's reply was cut short: a `clear` that dropped unplayed audio arrived
  after the reply's first audio and before the next turn's reply began.
- `underruns`: see the rule below; counted for the time from this turn's speech onset to the next.

Line conditions (`LineConditions`, optional per call): a noise bed under every outbound frame
(speech and silence alike, from the first frame), and the phone's own speaker output (what
`Playback` played) coming back into its microphone, delayed and attenuated: a speakerphone or a
handset with no echo canceller. Unset, the per-frame path is unchanged but for one test of a local.

Underrun rule: the speaker ran dry inside a reply. When audio arrives while the speaker is idle,
and the audio that played last belongs to the same reply, the silence between them (at least
`UNDERRUN_MIN_GAP_S`) is an underrun, with that gap as its duration. Audio belongs to the same
reply unless the caller started a new utterance or DTMF, a `clear` arrived, or the silence lasted
`reply_quiet_ms` or more (the rule that decides the reply is over). So a slow sentence that leaves
a 400 ms hole in the middle of an answer counts; the next answer after the caller speaks does not.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
import threading
import time
import wave
from base64 import b64decode, b64encode
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import DATA_OPCODES, Frame

from audio import mulaw
from audio.resample import resample
from gateway import twilio_protocol as tp
from gateway.twilio_protocol import Clear, Mark, Media, ProtocolError
from providers.ws_direct import send_now

__all__ = [
    "CallReport",
    "CallerTurn",
    "LineConditions",
    "NextTurn",
    "Playback",
    "TurnReport",
    "load_wav_mulaw",
    "main",
    "mulaw_frames",
    "run_call",
    "save_wav",
]

log = logging.getLogger("voicegate.simcaller")

SAMPLE_RATE = 8000  # Media Streams audio is mu-law at 8 kHz, one byte per sample
FRAME_BYTES = 160  # 20 ms: the frame size Twilio sends (common practice, PROTOCOLS.md section 5)
FRAME_S = FRAME_BYTES / SAMPLE_RATE
FRAME_MS = 20
# A stalled event loop sends the frames already due back to back, but at most this much audio;
# beyond it the send clock slips rather than flooding the gateway with a burst it would never
# see from Twilio. 100 ms = 5 frames, about what a real network hiccup delivers at once.
MAX_CATCHUP_S = 0.1
# When the frames after an utterance's last one were sent, for this many frames (600 ms: past any
# endpointing a benchmark asks for). The inbound hop is timed from the frame that ended the turn.
SENDS_KEPT_AFTER_SPEECH = 30
# A playback gap shorter than this is timer noise, not an audible underrun.
UNDERRUN_MIN_GAP_S = 0.001
# A gateway may send a whole reply in one message; 16 MiB is ~25 min of audio in base64 JSON.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0  # waiting for the gateway's close frame after our stop
DTMF_GAP_S = 0.15  # between the digits of one DTMF turn: a person pressing keys
SPEECH_CACHE_SIZE = 512  # distinct sentences kept synthesized; a benchmark reuses a handful
# Normal closes: the gateway hanging up (1000) or going away (1001). Anything else is a failure.
NORMAL_CLOSE_CODES = (1000, 1001)

SILENCE_FRAME = mulaw.silence(FRAME_BYTES)
SILENCE_B64 = b64encode(SILENCE_FRAME)

# `twilio_protocol.inbound_media_message` as a bytes template with the stream id baked in per
# call: the payload's base64 is computed once per utterance, so a frame costs one %-format and no
# str->bytes copy (sent as a text frame, `send_now`). The import-time check below keeps the
# two byte-identical.
_MEDIA_TEMPLATE = (
    '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
    '"timestamp":"%d","payload":"%s"},"streamSid":"{sid}"}'
)


def _media_template(stream_sid: str) -> bytes:
    return _MEDIA_TEMPLATE.replace("{sid}", stream_sid.replace("%", "%%")).encode()


if _media_template("MZ%x") % (7, 6, 100, SILENCE_B64) != tp.inbound_media_message("MZ%x", SILENCE_FRAME, 7, 6, 100).encode():
    raise RuntimeError("gateway.twilio_protocol.inbound_media_message changed: update simcaller._MEDIA_TEMPLATE")


class ArrivalStampedConnection(ClientConnection):
    """The client connection, remembering when each message's bytes came off the socket.

    `reply_arrival` and the playback clock use it: stamped when `async for` hands the message over,
    they would also count this process's own loop lateness (100 callers share one loop), which the
    benchmark would charge to the gateway."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: deque[float] = deque()  # one per complete data message not yet read
        self._data_at = 0.0

    def data_received(self, data: bytes) -> None:
        self._data_at = time.monotonic()
        super().data_received(data)

    def process_event(self, event) -> None:
        super().process_event(event)
        if isinstance(event, Frame) and event.fin and event.opcode in DATA_OPCODES:
            self.arrivals.append(self._data_at)

    def arrival(self) -> float:
        """When the message just read arrived (now, if it was never stamped)."""
        return self.arrivals.popleft() if self.arrivals else time.monotonic()


# ------------------------------------------------------------------ the script


@dataclass
class CallerTurn:
    """One thing the caller does. Audio source by priority: `audio` (mu-law 8 kHz), `wav`, `text`
    (synthesized; also the label of the other two), `dtmf` (digits sent one by one). A turn with
    none of them is a pause: it only waits for its start rule and then `wait_ms`.

    Start rule: `at_ms` from the call's start, else `barge_in_ms` after the previous reply started
    playing, else after the previous reply finished plus `gap_ms`.
    """

    text: str = ""
    wav: str = ""
    audio: bytes = b""
    dtmf: str = ""
    barge_in_ms: int | None = None
    at_ms: int | None = None
    gap_ms: int = 300
    wait_ms: int = 0  # silence held after the start rule, before the turn acts

    def __post_init__(self) -> None:
        if self.barge_in_ms is not None and self.at_ms is not None:
            raise ValueError("a turn has one start rule: barge_in_ms or at_ms, not both")
        bad = [d for d in self.dtmf if d not in tp.DTMF_DIGITS]
        if bad:
            raise ValueError(f"not DTMF digits: {''.join(bad)!r}")
        for name in ("barge_in_ms", "at_ms", "gap_ms", "wait_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def kind(self) -> str:
        if self.audio:
            return "audio"
        if self.wav:
            return "wav"
        if self.text:
            return "speech"
        if self.dtmf:
            return "dtmf"
        return "wait"

    @property
    def rule(self) -> str:
        if self.at_ms is not None:
            return "at"
        if self.barge_in_ms is not None:
            return "barge_in"
        return "after_reply"


@dataclass(frozen=True)
class LineConditions:
    """What the line and the phone add to everything the caller sends (see the module docstring).

    `noise`: a noise bed (8 kHz mu-law) mixed under every outbound frame from the call's first, made
    `noise_gain_db` louder (negative: quieter) and looped without a seam from `noise_offset_s` into it
    (`loadgen.recordings.loop_to`). `echo_gain_db`: the audio the caller's speaker played comes back
    `echo_delay_ms` later at this gain (-10 dB: a loud speakerphone; None: no echo). Echo needs the
    played audio, so a call with it records audio whatever `record_audio` says.
    """

    noise: bytes = b""
    noise_gain_db: float = 0.0
    noise_offset_s: float = 0.0
    echo_gain_db: float | None = None
    echo_delay_ms: float = 100.0

    def __post_init__(self) -> None:
        if self.echo_delay_ms < 0 or self.noise_offset_s < 0:
            raise ValueError("echo_delay_ms and noise_offset_s must be >= 0")

    @property
    def echo(self) -> bool:
        return self.echo_gain_db is not None


@dataclass
class TurnReport:
    """What happened in one turn; see the module docstring for each measurement's definition."""

    index: int  # position in the script; -1 is the greeting
    text: str = ""
    kind: str = "speech"  # speech | wav | audio | dtmf | wait | greeting
    rule: str = "after_reply"
    speech_start: float | None = None
    speech_end: float | None = None
    reply_arrival: float | None = None  # when the reply's first audio arrived (reply_start is when it played)
    sends_after_end: list[float] = field(default_factory=list)  # the next frames' send times (SENDS_KEPT_AFTER_SPEECH)
    reply_start: float | None = None
    latency_ms: float | None = None
    reply_ms: float = 0.0
    clear_ms: float | None = None
    interrupted: bool = False
    barged_in: bool = False
    reply_timeout: bool = False  # the reply did not start (or finish) within max_reply_wait_s
    underruns: int = 0
    underrun_gaps_ms: list[float] = field(default_factory=list)
    underrun_at_ms: list[float] = field(default_factory=list)  # when each gap ended, ms after reply_start
    speech_ms: float = 0.0
    call_start: float = 0.0

    def _rel(self, t: float | None) -> float | None:
        return None if t is None else round(t - self.call_start, 3)

    def to_json(self) -> dict:
        """The turn's JSON line. Times are seconds since the call's `start` message."""
        return {
            "turn": self.index,
            "text": self.text,
            "kind": self.kind,
            "rule": self.rule,
            "speech_start": self._rel(self.speech_start),
            "speech_end": self._rel(self.speech_end),
            "reply_start": self._rel(self.reply_start),
            "latency_ms": _round(self.latency_ms),
            "reply_ms": _round(self.reply_ms),
            "clear_ms": _round(self.clear_ms),
            "interrupted": self.interrupted,
            "barged_in": self.barged_in,
            "underruns": self.underruns,
            "reply_timeout": self.reply_timeout,
        }


@dataclass
class CallReport:
    call_sid: str
    stream_sid: str
    turns: list[TurnReport] = field(default_factory=list)
    greeting_latency_ms: float | None = None  # `start` sent -> greeting audio starts playing
    greeting_ms: float = 0.0  # greeting audio played before the first turn's speech onset
    heard: bytes = b""  # mu-law that actually played (cleared audio excluded)
    received: bytes = b""  # every media payload received, in order
    heard_segments: list[tuple[float, int]] = field(default_factory=list)  # (monotonic start, bytes) of each stretch of continuous playback
    marks_sent: list[str] = field(default_factory=list)  # mark names the gateway sent, in order
    marks_echoed: list[str] = field(default_factory=list)  # mark names echoed back, in order
    mark_echo_times: list[float] = field(default_factory=list)  # monotonic time of each echo
    clears: int = 0
    clear_times: list[float] = field(default_factory=list)
    hung_up_by_gateway: bool = False
    completed: bool = False  # every turn of the script was carried out
    error: str | None = None
    underruns: int = 0
    underrun_gaps_ms: list[float] = field(default_factory=list)
    duration_s: float = 0.0  # `start` sent -> call over
    messages_received: int = 0
    protocol_errors: int = 0
    frames_sent: int = 0
    clock_slip_ms: float = 0.0  # send clock slipped because this process could not keep up
    max_send_lag_ms: float = 0.0  # worst lateness of a media frame against the 20 ms clock
    close_code: int | None = None
    call_start: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict:
        """The summary line: everything but the audio."""
        return {
            "summary": True,
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "turns": len(self.turns),
            "completed": self.completed,
            "hung_up_by_gateway": self.hung_up_by_gateway,
            "error": self.error,
            "greeting_latency_ms": _round(self.greeting_latency_ms),
            "greeting_ms": _round(self.greeting_ms),
            "heard_ms": round(len(self.heard) * 1000 / SAMPLE_RATE, 1),
            "received_ms": round(len(self.received) * 1000 / SAMPLE_RATE, 1),
            "marks_sent": len(self.marks_sent),
            "marks_echoed": len(self.marks_echoed),
            "clears": self.clears,
            "underruns": self.underruns,
            "underrun_gaps_ms": [round(g, 1) for g in self.underrun_gaps_ms],
            "duration_s": round(self.duration_s, 3),
            "messages_received": self.messages_received,
            "protocol_errors": self.protocol_errors,
            "frames_sent": self.frames_sent,
            "clock_slip_ms": _round(self.clock_slip_ms),
            "max_send_lag_ms": _round(self.max_send_lag_ms),
            "close_code": self.close_code,
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


# ------------------------------------------------------------------ the phone speaker (pure, time passed in)


@dataclass(slots=True)
class _Run:
    start: float
    nbytes: int


class Playback:
    """The caller's speaker: a playback queue on a real-time clock. Synchronous; `now` is passed in.

    Queued audio always forms the tail of the timeline (from `now` to `busy_until`), so dropping
    unplayed audio is a cut at the end: no per-chunk bookkeeping.
    """

    def __init__(self, *, reply_quiet_s: float = 0.7, record: bool = True) -> None:
        self.reply_quiet_s = reply_quiet_s
        self.record = record
        self.busy_until = 0.0  # when the queued audio finishes playing; <= now means idle
        self.last_arrival: float | None = None
        self.runs: list[_Run] = []  # stretches of continuous playback
        self.heard = bytearray()  # played, plus the queued tail until `finish`/`clear` cut it
        self.received = bytearray()
        self.heard_bytes = 0
        self.received_bytes = 0
        self.underruns: list[tuple[float, float]] = []  # (arrival of the late audio, gap seconds)
        self._marks: deque[tuple[float, str]] = deque()  # (due, name); due times never decrease
        self._in_reply = False

    def idle(self, now: float) -> bool:
        return self.busy_until <= now

    def push(self, now: float, audio: bytes) -> float:
        """Queue received audio; returns when it starts playing."""
        n = len(audio)
        self.received_bytes += n
        if self.record:
            self.received += audio
        if n == 0:
            return max(now, self.busy_until)
        self.last_arrival = now
        if now > self.busy_until or not self.runs:
            gap = now - self.busy_until
            if self._in_reply and UNDERRUN_MIN_GAP_S <= gap < self.reply_quiet_s:
                self.underruns.append((now, gap))
            start = now
            self.runs.append(_Run(now, n))
        else:
            start = self.busy_until
            self.runs[-1].nbytes += n
        self.busy_until = start + n / SAMPLE_RATE
        self.heard_bytes += n
        if self.record:
            self.heard += audio
        self._in_reply = True
        return start

    def mark(self, now: float, name: str) -> list[str]:
        """Queue a mark behind the audio; returns the marks due now (this one if idle)."""
        self._marks.append((self.busy_until, name))
        return self.advance(now)

    def advance(self, now: float) -> list[str]:
        """Marks whose audio has finished playing by `now`, in order."""
        marks = self._marks
        if not marks or marks[0][0] > now:
            return []
        due = []
        while marks and marks[0][0] <= now:
            due.append(marks.popleft()[1])
        return due

    def next_mark_due(self) -> float | None:
        return self._marks[0][0] if self._marks else None

    def clear(self, now: float) -> tuple[list[str], int]:
        """Drop the unplayed audio; returns every pending mark (to echo now) and the bytes dropped."""
        dropped = self._cut(now)
        names = [name for _, name in self._marks]
        self._marks.clear()
        self._in_reply = False
        return names, dropped

    def boundary(self) -> None:
        """The caller started a new utterance: audio from now on is a new reply."""
        self._in_reply = False

    def finish(self, now: float) -> int:
        """The call ended at `now`: audio still queued was never heard. Pending marks stay unechoed."""
        return self._cut(now)

    def played_between(self, a: float, b: float) -> float:
        """Seconds of audio that played within [a, b)."""
        total = 0.0
        for run in self.runs:
            end = run.start + run.nbytes / SAMPLE_RATE
            lo = run.start if run.start > a else a
            hi = end if end < b else b
            if hi > lo:
                total += hi - lo
        return total

    def played(self, start: float, n: int) -> np.ndarray:
        """The `n` samples (int16) the speaker played from `start` on, zeros where it was silent. Needs
        `record`; only past audio is final (a `clear` cuts the queued tail)."""
        out = np.zeros(n, dtype=np.int16)
        end = start + n / SAMPLE_RATE
        offset = len(self.heard)  # where the run below ends in `heard`
        for run in reversed(self.runs):  # recent audio is wanted: walk back from the last run
            offset -= run.nbytes
            run_end = run.start + run.nbytes / SAMPLE_RATE
            if run_end <= start:
                break
            if run.start >= end:
                continue
            lo, hi = max(start, run.start), min(end, run_end)
            i0, i1 = round((lo - run.start) * SAMPLE_RATE), round((hi - run.start) * SAMPLE_RATE)
            o0 = round((lo - start) * SAMPLE_RATE)
            chunk = mulaw.decode(bytes(self.heard[offset + i0 : offset + i1]))[: n - o0]
            out[o0 : o0 + chunk.size] = chunk
        return out

    def _cut(self, now: float) -> int:
        if self.busy_until <= now or not self.runs:
            return 0
        run = self.runs[-1]
        drop = min(round((self.busy_until - now) * SAMPLE_RATE), run.nbytes)
        run.nbytes -= drop
        if run.nbytes <= 0:
            self.runs.pop()
        self.heard_bytes -= drop
        if self.record and drop:
            del self.heard[len(self.heard) - drop :]
        self.busy_until = now
        return drop


# ------------------------------------------------------------------ audio sources


def mulaw_frames(audio: bytes) -> tuple[bytes, ...]:
    """Mu-law audio as 160-byte frame payloads in base64 (ASCII bytes), the last padded with silence."""
    if not audio:
        return ()
    pad = -len(audio) % FRAME_BYTES
    data = bytes(audio) + SILENCE_FRAME[:pad] if pad else bytes(audio)
    view = memoryview(data)
    return tuple(b64encode(view[i : i + FRAME_BYTES]) for i in range(0, len(data), FRAME_BYTES))


def load_wav_mulaw(path: str) -> bytes:
    """A 16-bit PCM WAV (any rate, mono or stereo) as 8 kHz mu-law."""
    with wave.open(path, "rb") as w:
        channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
        data = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit WAV; only 16-bit PCM is supported")
    samples = np.frombuffer(data, dtype="<i2")
    if channels > 1:
        samples = np.rint(samples.reshape(-1, channels).mean(axis=1)).astype(np.int16)
    else:
        samples = samples.astype(np.int16)
    if rate != SAMPLE_RATE:
        samples = resample(samples, rate, SAMPLE_RATE)
    return mulaw.encode(samples)


def save_wav(path: str, mulaw_audio: bytes) -> None:
    """Decode mu-law and write it as an 8 kHz mono 16-bit PCM WAV."""
    pcm = mulaw.decode(bytes(mulaw_audio)).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


# Piper renders a sentence in 0.1-0.3 s; a benchmark speaks the same few sentences thousands of
# times. One lock serializes synthesis so 100 calls starting together render each text once.
_speech_cache: dict[str, tuple[bytes, ...]] = {}
_speech_lock = threading.Lock()


def _piper_frames(text: str) -> tuple[bytes, ...]:
    frames = _speech_cache.get(text)
    if frames is not None:
        return frames
    with _speech_lock:
        frames = _speech_cache.get(text)
        if frames is None:
            from providers.piper_tts import PiperEngine  # the voice loads on first use only

            frames = mulaw_frames(PiperEngine.shared().synthesize_mulaw(text, steady=True))
            if len(_speech_cache) >= SPEECH_CACHE_SIZE:
                _speech_cache.pop(next(iter(_speech_cache)))
            _speech_cache[text] = frames
    return frames


async def _prepare(turns: Sequence[CallerTurn], speak: Callable[[str], bytes] | None) -> list[tuple[bytes, ...]]:
    """Every turn's frames, rendered before dialing so synthesis never delays a turn."""
    cache: dict[str, tuple[bytes, ...]] = {}
    out: list[tuple[bytes, ...]] = []
    for turn in turns:
        if turn.audio:
            frames = mulaw_frames(turn.audio)
        elif turn.wav:
            frames = mulaw_frames(await asyncio.to_thread(load_wav_mulaw, turn.wav))
        elif turn.text and speak is None:
            frames = _speech_cache.get(turn.text) or await asyncio.to_thread(_piper_frames, turn.text)
        elif turn.text:
            frames = cache.get(turn.text) or mulaw_frames(await asyncio.to_thread(speak, turn.text))
            cache[turn.text] = frames
        else:
            frames = ()
        out.append(frames)
    return out


# ------------------------------------------------------------------ line conditions


class _Line:
    """`LineConditions` applied frame by frame: the caller's payload plus the noise bed and the echo."""

    def __init__(self, conditions: LineConditions, seconds: float) -> None:
        self.echo = conditions.echo
        self.playback: Playback | None = None  # the call's speaker, set by `_Call`
        self.noise: np.ndarray | None = None
        self.pos = 0
        if conditions.noise:
            from loadgen.recordings import loop_to  # only calls with a noise bed need it

            bed = loop_to(mulaw.decode(conditions.noise), seconds, conditions.noise_offset_s)
            self.noise = bed.astype(np.float32) * np.float32(10.0 ** (conditions.noise_gain_db / 20.0))
        self.echo_gain = None if conditions.echo_gain_db is None else 10.0 ** (conditions.echo_gain_db / 20.0)
        self.echo_delay_s = conditions.echo_delay_ms / 1000.0

    def frame(self, payload: bytes, t: float) -> bytes:
        """The base64 payload of the frame sent at `t` (its 20 ms of audio end then), with the line's share."""
        x = mulaw.decode(b64decode(payload)).astype(np.float32)
        noise = self.noise
        if noise is not None:
            idx = np.arange(self.pos, self.pos + FRAME_BYTES) % noise.size
            x += noise[idx]
            self.pos = (self.pos + FRAME_BYTES) % noise.size
        if self.echo_gain is not None and self.playback is not None:
            x += self.playback.played(t - FRAME_S - self.echo_delay_s, FRAME_BYTES) * np.float32(self.echo_gain)
        return b64encode(mulaw.encode(np.clip(np.rint(x), -32768, 32767).astype(np.int16)))


# ------------------------------------------------------------------ one call on the wire


class _Call:
    """The three tasks of a call: a 20 ms sender, a receiver driving `Playback`, and the script."""

    def __init__(
        self,
        ws: ClientConnection,
        *,
        call_sid: str,
        stream_sid: str,
        parameters: Mapping[str, str],
        turns: Sequence[CallerTurn],
        frames: Sequence[tuple[bytes, ...]],
        reports: list[TurnReport],
        reply_quiet_s: float,
        max_reply_wait_s: float,
        wait_for_greeting: bool,
        record: bool,
        line: _Line | None = None,
    ) -> None:
        self.ws = ws
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.parameters = dict(parameters)
        self.turns = turns
        self.frames = frames
        self.reply_quiet_s = reply_quiet_s
        self.max_reply_wait_s = max_reply_wait_s
        self.wait_for_greeting = wait_for_greeting
        self.playback = Playback(reply_quiet_s=reply_quiet_s, record=record or (line is not None and line.echo))
        # None unless the call has line conditions: the sender tests it once per frame.
        self.line = line
        if line is not None:
            line.playback = self.playback
        self.greeting = TurnReport(index=-1, kind="greeting", rule="")
        self.reports = reports
        # `run_call(next_turn=...)`: the next turn and its frames, or None; asked after the script.
        self.improvise: Callable[[], Awaitable[tuple[CallerTurn, tuple[bytes, ...]] | None]] | None = None
        self.reply_turn = self.greeting  # the turn the next arriving audio answers
        self.audio_event = asyncio.Event()
        self.call_start = time.monotonic()  # replaced by the moment `start` is sent
        self.greeting.speech_start = self.greeting.speech_end = self.call_start
        self.seq = 0
        self.chunk = 0
        self.template = _media_template(stream_sid)
        # The utterance being sent: its frames, position, report, and the future the script awaits.
        self._utt: tuple[bytes, ...] = ()
        self._utt_pos = 0
        self._utt_turn: TurnReport | None = None
        self._utt_done: asyncio.Future[None] | None = None
        self._after_end: list[float] | None = None  # the last utterance's sends_after_end, while it fills
        self.marks_sent: list[str] = []
        self.marks_echoed: list[str] = []
        self.mark_echo_times: list[float] = []
        self.clears: list[tuple[float, int]] = []  # (time, bytes dropped)
        self.messages_received = 0
        self.protocol_errors: list[str] = []
        self.protocol_error_count = 0
        self.turns_done = False
        self.clock_slip_s = 0.0
        self.max_lag_s = 0.0
        self.close_code: int | None = None
        # The sender runs from timer callbacks (`_send_due`), not a task: its clock and next wake-up.
        self._clock = 0.0  # call_start, moved on by clock slips
        self._frames = 0  # frames sent on that clock
        self._wake: asyncio.TimerHandle | None = None
        # Messages waiting behind one `send_now` could not take, and the task that sends them.
        self._backlog: deque[bytes | str] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._sending: asyncio.Future[None] | None = None  # `send_loop`'s: done when the socket closes

    # --- outbound

    async def open(self) -> None:
        await self.ws.send(tp.connected_message())
        self.seq = 1
        await self.ws.send(tp.start_message(self.stream_sid, self.call_sid, custom_parameters=self.parameters, sequence=1))
        self.call_start = time.monotonic()
        self.greeting.speech_start = self.greeting.speech_end = self.call_start
        self.greeting.call_start = self.call_start
        for report in self.reports:
            report.call_start = self.call_start

    async def send_stop(self) -> None:
        self.seq += 1
        await self.ws.send(tp.stop_message(self.stream_sid, self.call_sid, self.seq))

    def _send(self, message: bytes | str) -> None:
        """Send now if the socket takes it (`send_now`), else after what already waits, from a task."""
        if not self._backlog:
            try:
                if send_now(self.ws, message):
                    return
            except Exception as exc:  # the socket broke under the write: the sender's end
                self._stop_sending(exc)
                return
        self._backlog.append(message)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._backlog:
                await self.ws.send(self._backlog[0], text=True)
                self._backlog.popleft()
        except Exception as exc:
            self._stop_sending(exc)
            return
        finally:
            self._flusher = None
        self._send_due()  # frames that fell due while it waited

    def _stop_sending(self, exc: Exception) -> None:
        """The socket closed (the sender's normal end) or broke under a send (reported as its failure)."""
        done = self._sending
        if done is not None and not done.done():
            if isinstance(exc, ConnectionClosed):
                done.set_result(None)
            else:
                done.set_exception(exc)

    def _echo(self, names: list[str]) -> None:
        for name in names:
            self.seq += 1
            self.marks_echoed.append(name)
            self.mark_echo_times.append(time.monotonic())
            self._send(tp.mark_echo_message(self.stream_sid, name, self.seq))

    async def send_loop(self) -> None:
        """One frame per 20 ms of the clock `call_start + n * 20 ms`, mark echoes in between, until
        the socket closes. Each wake-up is a timer callback (`_send_due`) rather than a task's:
        5,000 task wake-ups a second at 100 calls cost the load generator more than its sends."""
        self._sending = asyncio.get_running_loop().create_future()
        self._clock, self._frames = self.call_start, 0
        self._send_due()
        try:
            await self._sending
        finally:
            if self._wake is not None:
                self._wake.cancel()
            if self._flusher is not None:
                self._flusher.cancel()

    def _send_due(self) -> None:
        """Send what is due (a late wake-up sends the frames due since back to back, never more than
        `MAX_CATCHUP_S` of them: the clock slips instead), then set the next wake-up."""
        self._wake = None
        done = self._sending
        if done is None or done.done() or self._flusher is not None:
            return  # the socket closed, or a send waits: `_flush` calls again when it is through
        playback, monotonic, line = self.playback, time.monotonic, self.line
        now = monotonic()
        mark_due = playback.next_mark_due()
        if mark_due is not None and mark_due <= now:
            self._echo(playback.advance(now))
        lag = now - (self._clock + self._frames * FRAME_S)
        if lag >= 0:
            if lag > MAX_CATCHUP_S:
                slip = lag - MAX_CATCHUP_S
                self._clock += slip
                self.clock_slip_s += slip
                lag = MAX_CATCHUP_S
            if lag > self.max_lag_s:
                self.max_lag_s = lag
            while self._clock + self._frames * FRAME_S <= now and self._flusher is None and not done.done():
                utt = self._utt
                if utt:
                    pos = self._utt_pos
                    payload = utt[pos]
                    self._utt_pos = pos + 1
                else:
                    payload = SILENCE_B64
                if line is not None:
                    payload = line.frame(payload, self._clock + self._frames * FRAME_S)
                self.seq += 1
                self.chunk += 1
                after_end = self._after_end if not utt else None
                if after_end is not None:
                    # Stamped before the write: a stamp after it would be late by any preemption in
                    # between, and the gateway could pass the frame on before it.
                    after_end.append(monotonic())
                    if len(after_end) >= SENDS_KEPT_AFTER_SPEECH:
                        self._after_end = None
                self._send(self.template % (self.seq, self.chunk, (self.chunk - 1) * FRAME_MS, payload))
                self._frames += 1
                if utt:
                    self._utterance_progress(pos, len(utt), monotonic())
        if self._flusher is not None or done.done():
            return
        wake = self._clock + self._frames * FRAME_S
        mark_due = playback.next_mark_due()
        if mark_due is not None and mark_due < wake:
            wake = mark_due
        self._wake = asyncio.get_running_loop().call_later(max(0.0, wake - monotonic()), self._send_due)

    def _utterance_progress(self, pos: int, length: int, sent: float) -> None:
        turn = self._utt_turn
        assert turn is not None
        if pos == 0:
            turn.speech_start = sent
        if pos + 1 == length:
            turn.speech_end = sent
            self._after_end = turn.sends_after_end
            self.reply_turn = turn  # audio arriving from now on answers this turn
            self._utt = ()
            done = self._utt_done
            if done is not None and not done.done():
                done.set_result(None)

    # --- inbound

    async def receive_loop(self) -> None:
        playback, monotonic = self.playback, time.monotonic
        try:
            arrival = self.ws.arrival if isinstance(self.ws, ArrivalStampedConnection) else monotonic
            async for raw in self.ws:
                now = arrival()
                self.messages_received += 1
                try:
                    message = tp.parse(raw, max_payload_bytes=MAX_MESSAGE_BYTES)
                except ProtocolError as exc:
                    self._protocol_error(str(exc))
                    continue
                if isinstance(message, (Media, Mark, Clear)) and message.stream_sid != self.stream_sid:
                    # Twilio does not act on another stream's messages; for us it is a gateway bug.
                    self._protocol_error(f"wrong_stream: {type(message).__name__.lower()} for {message.stream_sid[:40]!r}")
                    continue
                match message:
                    case Media(payload=payload):
                        start = playback.push(now, payload)
                        turn = self.reply_turn
                        if turn.reply_start is None and payload:
                            turn.reply_start = start
                            turn.reply_arrival = now
                        self.audio_event.set()
                    case Mark(name=name):
                        self.marks_sent.append(name)
                        due = playback.mark(now, name)
                        if due:
                            self._echo(due)
                    case Clear():
                        names, dropped = playback.clear(now)
                        self.clears.append((now, dropped))
                        self._echo(names)
                    case _:
                        pass  # nothing else is meant for the Twilio side; ignore like Twilio
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code

    def _protocol_error(self, detail: str) -> None:
        self.protocol_error_count += 1
        if len(self.protocol_errors) < 20:  # a broken gateway could send thousands
            self.protocol_errors.append(detail)

    # --- the person

    async def script(self) -> None:
        ref = self.greeting
        for i, (turn, frames) in enumerate(zip(self.turns, self.frames)):
            ref = await self._act(i, turn, frames, self.reports[i], ref)
        while self.improvise is not None:
            if ref is not self.greeting or self.wait_for_greeting:
                await self._await_reply_done(ref)
            chosen = await self.improvise()
            if chosen is None:
                break
            turn, frames = chosen
            report = TurnReport(index=len(self.reports), text=turn.text or turn.wav or turn.dtmf, kind=turn.kind,
                                rule=turn.rule, call_start=self.call_start)
            self.reports.append(report)
            ref = await self._act(report.index, turn, frames, report, ref)
        self.turns_done = True
        await self._await_reply_done(ref)

    async def _act(self, i: int, turn: CallerTurn, frames: tuple[bytes, ...], report: TurnReport,
                   ref: TurnReport) -> TurnReport:
        """One turn: its start rule, then its speech or digits. Returns the turn the next reply answers."""
        await self._start_rule(i, turn, ref)
        if turn.wait_ms:
            await asyncio.sleep(turn.wait_ms / 1000)
        if frames:
            await self._speak(frames, report)
            return report
        if turn.dtmf:
            await self._dtmf(turn.dtmf, report)
            return report
        return ref

    async def _start_rule(self, index: int, turn: CallerTurn, ref: TurnReport) -> None:
        if turn.at_ms is not None:
            await _sleep_until(self.call_start + turn.at_ms / 1000)
        elif turn.barge_in_ms is not None:
            await self._await_reply_start(ref)
            base = ref.reply_start if ref.reply_start is not None else time.monotonic()
            await _sleep_until(base + turn.barge_in_ms / 1000)
        elif index > 0 or self.wait_for_greeting:
            await self._await_reply_done(ref)
            await asyncio.sleep(turn.gap_ms / 1000)

    async def _speak(self, frames: tuple[bytes, ...], report: TurnReport) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._utt_turn, self._utt_done, self._utt_pos = report, done, 0
        report.speech_ms = len(frames) * FRAME_MS
        self.playback.boundary()
        self._utt = frames  # the sender picks it up on its next frame
        await done

    async def _dtmf(self, digits: str, report: TurnReport) -> None:
        self.playback.boundary()
        for k, digit in enumerate(digits):
            if k:
                await asyncio.sleep(DTMF_GAP_S)
            self.seq += 1
            self._send(tp.dtmf_message(self.stream_sid, digit, self.seq))
            sent = time.monotonic()
            if k == 0:
                report.speech_start = sent
        report.speech_end = sent
        self.reply_turn = report

    async def _await_reply_start(self, ref: TurnReport) -> bool:
        assert ref.speech_end is not None
        deadline = ref.speech_end + self.max_reply_wait_s
        event = self.audio_event
        while ref.reply_start is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                ref.reply_timeout = True
                return False
            event.clear()
            try:
                async with asyncio.timeout(remaining):
                    await event.wait()
            except TimeoutError:
                pass
        return True

    async def _await_reply_done(self, ref: TurnReport) -> None:
        """Until the reply has played out and no audio came for `reply_quiet_s`."""
        if not await self._await_reply_start(ref):
            return
        playback = self.playback
        deadline = time.monotonic() + self.max_reply_wait_s
        while True:
            now = time.monotonic()
            # Idle for reply_quiet_s: the person heard that much silence (which implies no audio
            # arrived for that long either, since audio plays no earlier than it arrives).
            ready = playback.busy_until + self.reply_quiet_s
            if now >= ready:
                return
            if now >= deadline:
                ref.reply_timeout = True
                return
            await asyncio.sleep(min(ready, deadline) - now)

    # --- the result

    def report(self, report: CallReport, end: float) -> CallReport:
        playback = self.playback
        playback.finish(end)
        spoken = [self.greeting] + [r for r in self.reports if r.speech_end is not None]
        for k, r in enumerate(spoken):
            nxt = spoken[k + 1] if k + 1 < len(spoken) else None
            next_onset = nxt.speech_start if nxt is not None and nxt.speech_start is not None else end
            next_reply = nxt.reply_arrival if nxt is not None and nxt.reply_arrival is not None else end
            assert r.speech_start is not None and r.speech_end is not None
            if r.reply_start is not None and r.reply_arrival is not None:
                r.latency_ms = (r.reply_start - r.speech_end) * 1000
                r.reply_ms = playback.played_between(r.reply_start, next_onset) * 1000
                r.interrupted = any(d > 0 and r.reply_arrival <= c < next_reply for c, d in self.clears)
            if r is not self.greeting:
                limit = r.reply_arrival if r.reply_arrival is not None else next_onset
                r.clear_ms = next(((c - r.speech_start) * 1000 for c, _ in self.clears if r.speech_start <= c < limit), None)
                r.barged_in = r.clear_ms is not None
            gaps = [(t, g) for t, g in playback.underruns if r.speech_start <= t < next_onset]
            r.underrun_gaps_ms = [g * 1000 for _, g in gaps]
            base = r.reply_start if r.reply_start is not None else r.speech_start
            r.underrun_at_ms = [(t - base) * 1000 for t, _ in gaps]
            r.underruns = len(gaps)
        report.turns = self.reports
        report.greeting_latency_ms = self.greeting.latency_ms
        report.greeting_ms = self.greeting.reply_ms
        report.heard = bytes(playback.heard)
        report.received = bytes(playback.received)
        report.heard_segments = [(run.start, run.nbytes) for run in playback.runs]
        report.marks_sent = self.marks_sent
        report.marks_echoed = self.marks_echoed
        report.mark_echo_times = self.mark_echo_times
        report.clears = len(self.clears)
        report.clear_times = [c for c, _ in self.clears]
        report.underruns = len(playback.underruns)
        report.underrun_gaps_ms = [g * 1000 for _, g in playback.underruns]
        report.duration_s = end - self.call_start
        report.messages_received = self.messages_received
        report.protocol_errors = self.protocol_error_count
        report.frames_sent = self.chunk
        report.clock_slip_ms = self.clock_slip_s * 1000
        report.max_send_lag_ms = self.max_lag_s * 1000
        report.close_code = self.close_code
        report.call_start = self.call_start
        report.completed = self.turns_done
        if report.error is None and self.protocol_errors:
            report.error = f"gateway sent {self.protocol_error_count} malformed message(s); first: {self.protocol_errors[0]}"
        return report


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


# The reacting caller's hook: the call so far -> the next turn, or None to end the call.
NextTurn = Callable[["CallReport"], Awaitable["CallerTurn | None"]]


async def run_call(
    url: str,
    turns: Sequence[CallerTurn],
    *,
    headers: Mapping[str, str] | None = None,
    parameters: Mapping[str, str] | None = None,
    call_sid: str | None = None,
    stream_sid: str | None = None,
    reply_quiet_ms: int = 700,
    max_reply_wait_s: float = 20.0,
    max_call_s: float = 120.0,
    wait_for_greeting: bool = True,
    speak: Callable[[str], bytes] | None = None,
    record_audio: bool = True,
    line: LineConditions | None = None,
    next_turn: NextTurn | None = None,
) -> CallReport:
    """Place one simulated call and return what happened. Never raises for a failed call (only
    `CancelledError` passes through): a refused connection, a gateway error, a call that outlives
    `max_call_s` all come back as `CallReport.error`. `record_audio=False` keeps `heard` and
    `received` empty (timings are still measured) for large benchmarks. `line` adds a noise bed
    and the phone's echo to what the caller sends (`LineConditions`). `next_turn` makes the caller
    react: after `turns`, it is awaited once each reply has played out, for the next turn (None ends the
    call); its turns are reported after the script's, in order.
    """
    call_sid = call_sid or "CA" + secrets.token_hex(16)
    stream_sid = stream_sid or "MZ" + secrets.token_hex(16)
    report = CallReport(call_sid=call_sid, stream_sid=stream_sid)
    # One report per turn from the start, so indexes line up even when the call fails early.
    report.turns = [
        TurnReport(index=i, text=t.text or t.wav or t.dtmf, kind=t.kind, rule=t.rule) for i, t in enumerate(turns)
    ]
    deadline = time.monotonic() + max_call_s
    try:
        async with asyncio.timeout(max_call_s):
            frames = await _prepare(turns, speak)
            # The noise bed is looped for the whole call before dialing, off the loop other calls share.
            line_state = await asyncio.to_thread(_Line, line, max_call_s + 1.0) if line is not None else None
    except Exception as exc:  # a missing WAV, a failing voice: the caller cannot dial
        report.error = f"could not prepare the caller's audio: {type(exc).__name__}: {exc}"
        return report
    try:
        ws = await connect(
            url,
            additional_headers=dict(headers or {}),
            compression=None,  # Twilio does not negotiate permessage-deflate
            max_size=MAX_MESSAGE_BYTES,
            open_timeout=max(0.1, min(CONNECT_TIMEOUT_S, deadline - time.monotonic())),
            close_timeout=CLOSE_TIMEOUT_S,
            ping_interval=None,  # Twilio does not ping; the gateway may, and pongs are automatic
            create_connection=ArrivalStampedConnection,
        )
    except Exception as exc:  # refused, 403 on a bad signature, timeout, bad URL
        report.error = f"connect failed: {type(exc).__name__}: {exc}"
        return report

    call = _Call(
        ws,
        call_sid=call_sid,
        stream_sid=stream_sid,
        parameters=parameters or {},
        turns=turns,
        frames=frames,
        reports=report.turns,
        reply_quiet_s=reply_quiet_ms / 1000,
        max_reply_wait_s=max_reply_wait_s,
        wait_for_greeting=wait_for_greeting,
        record=record_audio,
        line=line_state,
    )
    if next_turn is not None:
        hook = next_turn

        async def improvise() -> tuple[CallerTurn, tuple[bytes, ...]] | None:
            turn = await hook(report)
            if turn is None:
                return None
            return turn, (await _prepare([turn], speak))[0]

        call.improvise = improvise
    tasks: list[asyncio.Task[None]] = []
    end: float | None = None
    try:
        try:
            await call.open()
        except ConnectionClosed:  # the gateway refused the call right after the handshake
            report.hung_up_by_gateway = True
        else:
            sender = asyncio.create_task(call.send_loop(), name=f"simcaller-send-{call_sid}")
            receiver = asyncio.create_task(call.receive_loop(), name=f"simcaller-recv-{call_sid}")
            script = asyncio.create_task(call.script(), name=f"simcaller-script-{call_sid}")
            tasks = [sender, receiver, script]
            done, _ = await asyncio.wait(
                tasks, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
            )
            end = time.monotonic()
            for task in done:
                exc = task.exception()
                if exc is not None:
                    log.error("simulated call %s: %s failed", call_sid, task.get_name(), exc_info=exc)
                    report.error = f"{task.get_name()}: {type(exc).__name__}: {exc}"
            if not done:
                report.error = f"call exceeded max_call_s={max_call_s:g}"
            elif script not in done and report.error is None:  # the socket closed under us
                report.hung_up_by_gateway = True
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            if not report.hung_up_by_gateway:
                try:
                    await call.send_stop()
                except ConnectionClosed:
                    pass
            await ws.close()
        except Exception:  # closing a socket that is already broken: nothing left to do
            log.debug("simulated call %s: close failed", call_sid, exc_info=True)
    if end is None:
        end = time.monotonic()
    if report.hung_up_by_gateway:
        code = call.close_code if call.close_code is not None else ws.close_code
        call.close_code = code
        if report.error is None and code not in NORMAL_CLOSE_CODES:
            report.error = f"gateway closed the connection abnormally (code {code}: {ws.close_reason or 'no reason'})"
    return call.report(report, end)


# ------------------------------------------------------------------ voicegate call


class _Append(argparse.Action):
    """Collects --say/--wav/--dtmf/--wait/--barge-in-ms in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        items = getattr(namespace, self.dest, None) or []
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


def _parser() -> argparse.ArgumentParser:
    port = os.environ.get("PORT", "8000").strip() or "8000"
    p = argparse.ArgumentParser(
        prog="voicegate call",
        description="Call a running gateway as Twilio would: speak text or WAV files, echo marks, "
        "print per-turn timings as JSON lines.",
    )
    p.add_argument("--url", default=f"ws://127.0.0.1:{port}/twilio/media", help="media stream URL (default: %(default)s)")
    p.add_argument("--say", dest="script", action=_Append, const="say", metavar="TEXT", help="speak TEXT (repeatable, in order)")
    p.add_argument("--wav", dest="script", action=_Append, const="wav", metavar="FILE", help="speak a 16-bit WAV file (repeatable)")
    p.add_argument("--dtmf", dest="script", action=_Append, const="dtmf", metavar="DIGITS", help="press DTMF digits")
    p.add_argument("--wait", dest="script", action=_Append, const="wait", type=int, metavar="MS", help="stay silent MS ms after the reply")
    p.add_argument("--barge-in-ms", dest="script", action=_Append, const="barge", type=int, metavar="N",
                   help="the next --say/--wav starts N ms after the reply started playing")
    p.add_argument("--save-reply", metavar="OUT.wav", help="save the audio that played (8 kHz 16-bit WAV)")
    p.add_argument("--from", dest="from_number", metavar="+1555...", help="caller number, sent as customParameters.From")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="extra customParameters (repeatable)")
    p.add_argument("--header", action="append", default=[], metavar="NAME=VALUE", help="extra handshake header (repeatable)")
    p.add_argument("--token", help="softphone token, added to the URL as ?token=...")
    p.add_argument("--no-sign", action="store_true",
                   help="do not add X-Twilio-Signature (by default it is signed when TWILIO_AUTH_TOKEN is set and --token is not)")
    p.add_argument("--no-greeting", action="store_true", help="speak the first turn at once instead of after the greeting")
    p.add_argument("--gap-ms", type=int, default=300, help="pause after a reply before speaking (default: %(default)s)")
    p.add_argument("--reply-quiet-ms", type=int, default=700, help="silence that ends a reply (default: %(default)s)")
    p.add_argument("--max-reply-wait-s", type=float, default=20.0, help="give up waiting for a reply after this (default: %(default)s)")
    p.add_argument("--max-call-s", type=float, default=120.0, help="hang up after this long in any case (default: %(default)s)")
    return p


def _turns_from_args(script: list[tuple[str, object]], gap_ms: int = 300) -> list[CallerTurn]:
    turns: list[CallerTurn] = []
    barge: int | None = None
    for kind, value in script:
        if kind == "barge":
            barge = int(value)  # type: ignore[call-overload]
        elif kind == "say":
            turns.append(CallerTurn(text=str(value), barge_in_ms=barge, gap_ms=gap_ms))
            barge = None
        elif kind == "wav":
            turns.append(CallerTurn(wav=str(value), barge_in_ms=barge, gap_ms=gap_ms))
            barge = None
        elif kind == "dtmf":
            turns.append(CallerTurn(dtmf=str(value), gap_ms=gap_ms))
        elif kind == "wait":
            turns.append(CallerTurn(gap_ms=0, wait_ms=int(value)))  # type: ignore[call-overload]
    return turns


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{what} must look like NAME=VALUE, not {item!r}")
        out[name.strip()] = value
    return out


def _with_token(url: str, token: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + [("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _twilio_signature(url: str) -> str | None:
    """X-Twilio-Signature over the stream URL, when an auth token is set: PUBLIC_URL's when that is set,
    else the URL this caller connects to, which the gateway rebuilds from the request
    (gateway/public_urls.py)."""
    if not os.environ.get("TWILIO_AUTH_TOKEN", "").strip():
        return None
    from twilio.request_validator import RequestValidator

    from providers.settings import Settings

    settings = Settings.from_env()
    return RequestValidator(settings.twilio_auth_token).compute_signature(settings.media_stream_url or url, {})


def main(argv: list[str] | None = None) -> int:
    """`voicegate call`: prints one JSON line per turn, then a summary line. 0 if the call ended
    without error (either side hanging up normally counts), 1 otherwise."""
    args = _parser().parse_args(argv)
    try:
        turns = _turns_from_args(args.script or [], args.gap_ms)
        headers = _pairs(args.header, "--header")
        parameters = _pairs(args.param, "--param")
        if args.from_number:
            parameters["From"] = args.from_number
        url = _with_token(args.url, args.token) if args.token else args.url
        if not args.token and not args.no_sign and "X-Twilio-Signature" not in headers:
            signature = _twilio_signature(url)
            if signature:
                headers["X-Twilio-Signature"] = signature
    except Exception as exc:  # bad arguments or environment: say which, no traceback
        print(f"voicegate call: {exc}", file=sys.stderr)
        return 1
    report = asyncio.run(
        run_call(
            url,
            turns,
            headers=headers,
            parameters=parameters,
            reply_quiet_ms=args.reply_quiet_ms,
            max_reply_wait_s=args.max_reply_wait_s,
            max_call_s=args.max_call_s,
            wait_for_greeting=not args.no_greeting,
        )
    )
    out = sys.stdout
    for turn in report.turns:
        out.write(orjson.dumps(turn.to_json()).decode() + "\n")
    out.write(orjson.dumps(report.to_json()).decode() + "\n")
    out.flush()
    if args.save_reply:
        save_wav(args.save_reply, report.heard)
    if report.error:
        print(f"voicegate call: {report.error}", file=sys.stderr)
    return 0 if report.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
