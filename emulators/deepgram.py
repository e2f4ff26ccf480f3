"""Deepgram live speech-to-text emulator: `WS /v1/listen` (PROTOCOLS.md §1, §6.1).

It cannot recognize speech, so it detects it and answers from a script. The work splits in three:

- `EnergyDetector` (pure): audio bytes in, `Onset` / `Interim` / `End` events out, all in audio
  time (seconds of audio received), so the same audio gives the same events however fast it is sent.
  20 ms frames louder than `speech_threshold_dbfs` are speech; `onset_ms` of continuous speech
  starts an utterance; `endpointing` ms of silence ends it.
- `ListenSession` (pure): the Deepgram protocol on top. Detector events and the client's text
  messages in, `Send` / `Close` / `Drop` actions out, each with a delay. At onset it takes the
  next scripted text; interims carry a growing prefix of it; the end of speech schedules the final
  `Results` (is_final and speech_final) `stt_final_delay` later, then `UtteranceEnd`. `Finalize`
  finalizes the open utterance at once (from_finalize) and never twice.
- `ListenSocket` (I/O): the WebSocket glue, a FIFO sender that honours each action's delay while
  keeping message order, the NET-0001 idle timer, the faults and the log record.

Transcripts by the audio (`DeepgramConfig.voiceprints`). A script is taken per connection, so after a
reconnect the script starts again, which a real engine never does: it transcribes what it hears. With
voiceprints (text -> the hashes of its audio's voiced 20 ms frames, `voiceprint`), every frame the
session receives is looked up, and an utterance is transcribed as the words of the frames heard, each
timed where its share of the audio lies on this connection's clock. So a client's replay after a
reconnect gets the same words again, and a replay of the tail of an answered utterance gets the
words of that tail, as a real engine would give them, which is what a client must not answer twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
import uuid
import warnings
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import orjson
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from emulators.arrival import received_at
from emulators.common import (
    EmulatorState,
    IdleTimer,
    abort_connection,
    deny_websocket,
    loop_time_at,
    now,
    recorded_headers,
    state_of,
)
from emulators.config import DeepgramConfig

with warnings.catch_warnings():  # stdlib audioop warns of its removal in 3.13 (audioop-lts there)
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FRAME_SECONDS = 0.02
MODEL_INFO = {"name": "2-general-nova", "version": "2024-01-09.29447", "arch": "nova-3"}
MODEL_UUID = "00000000-0000-0000-0000-000000000002"
NET_0001 = ("NET-0001: Deepgram did not receive audio data or a text message within the timeout window. "
            "See https://dpgr.am/net0001")

# Byte -> linear sample tables: one numpy take per message instead of an audioop call per frame.
_ULAW = np.frombuffer(audioop.ulaw2lin(bytes(range(256)), 2), dtype="<i2").astype(np.float32)
_ALAW = np.frombuffer(audioop.alaw2lin(bytes(range(256)), 2), dtype="<i2").astype(np.float32)


# ---------------------------------------------------------------- options from the query string


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None:
        return default
    return value.strip().lower() == "true"


@dataclass(frozen=True)
class ListenOptions:
    encoding: str = "linear16"
    sample_rate: int = 16000
    channels: int = 1
    interim_results: bool = False
    endpointing_ms: int | None = 300  # None: endpointing=false (no speech_final from silence)
    utterance_end_ms: int | None = None
    vad_events: bool = False
    punctuate: bool = False
    model: str = "nova-3"
    # "multi": nova-3's multilingual mode, whose results label each word's language (`_results`).
    language: str = "en"
    language_hint: tuple[str, ...] = ()

    @classmethod
    def from_query(cls, q: dict[str, str], cfg: DeepgramConfig, hints: tuple[str, ...] = ()) -> "ListenOptions":
        encoding = q.get("encoding", "linear16").lower()
        default_rate = 8000 if encoding in ("mulaw", "alaw") else 16000
        endpointing: int | None = cfg.default_endpointing_ms
        raw_ep = q.get("endpointing")
        if raw_ep is not None:
            if raw_ep.lower() == "false":
                endpointing = None
            elif raw_ep.lower() != "true":
                endpointing = int(float(raw_ep))
        ue = q.get("utterance_end_ms")
        return cls(
            encoding=encoding,
            sample_rate=int(q.get("sample_rate") or default_rate),
            channels=int(q.get("channels") or 1),
            interim_results=_bool(q.get("interim_results")),
            endpointing_ms=endpointing,
            utterance_end_ms=int(float(ue)) if ue else None,
            vad_events=_bool(q.get("vad_events")),
            punctuate=_bool(q.get("punctuate")) or _bool(q.get("smart_format")),
            model=q.get("model", "nova-3"),
            language=q.get("language", "en"),
            language_hint=tuple(hints),
        )


# ---------------------------------------------------------------- speech detection


@dataclass(frozen=True, slots=True)
class Onset:
    at: float  # audio seconds where the speech run began


@dataclass(frozen=True, slots=True)
class Interim:
    at: float  # audio seconds now


@dataclass(frozen=True, slots=True)
class End:
    start: float
    end: float  # end of the last speech frame


class EnergyDetector:
    def __init__(self, options: ListenOptions, threshold_dbfs: float, onset_ms: int, interim_interval: float,
                 default_end_ms: int) -> None:
        width = 2 if options.encoding not in ("mulaw", "alaw") else 1
        self._table = {"mulaw": _ULAW, "alaw": _ALAW}.get(options.encoding)
        self._frame_samples = max(1, int(options.sample_rate * FRAME_SECONDS)) * max(1, options.channels)
        self._frame_bytes = self._frame_samples * width
        self._pending = b""
        self._threshold = (32768.0 * 10 ** (threshold_dbfs / 20)) ** 2  # mean square, no log per frame
        self._onset_frames = max(1, math.ceil(onset_ms / 20))
        end_ms = options.endpointing_ms if options.endpointing_ms is not None else (
            options.utterance_end_ms or default_end_ms)
        self._end_frames = max(1, math.ceil(end_ms / 20))
        self._interim_frames = max(1, round(interim_interval / FRAME_SECONDS))
        self.frames = 0  # frames analysed so far: audio time = frames * 20 ms
        self.in_speech = False
        self._run = 0  # voiced frames in a row (before onset) / silent frames in a row (in speech)
        self._start = 0
        self._last_voiced = 0
        self._next_interim = 0

    @property
    def audio_time(self) -> float:
        return self.frames * FRAME_SECONDS

    def feed(self, data: bytes) -> list[Onset | Interim | End]:
        buf = self._pending + data if self._pending else data
        n = len(buf) // self._frame_bytes
        self._pending = buf[n * self._frame_bytes:]
        if n == 0:
            return []
        raw = buf[: n * self._frame_bytes]
        if self._table is not None:
            samples = self._table[np.frombuffer(raw, dtype=np.uint8)]
        else:
            samples = np.frombuffer(raw, dtype="<i2").astype(np.float32)
        energy = np.square(samples).reshape(n, self._frame_samples).mean(axis=1)
        voiced = (energy > self._threshold).tolist()
        events: list[Onset | Interim | End] = []
        for v in voiced:
            i = self.frames
            self.frames += 1
            if not self.in_speech:
                if v:
                    if self._run == 0:
                        self._start = i
                    self._run += 1
                    if self._run >= self._onset_frames:
                        self.in_speech = True
                        self._run = 0
                        self._last_voiced = i
                        self._next_interim = self._start + self._interim_frames
                        events.append(Onset(self._start * FRAME_SECONDS))
                else:
                    self._run = 0
            elif v:
                self._run = 0
                self._last_voiced = i
                if self.frames >= self._next_interim:
                    self._next_interim = self.frames + self._interim_frames
                    events.append(Interim(self.frames * FRAME_SECONDS))
            else:
                self._run += 1
                if self._run >= self._end_frames:
                    self.in_speech = False
                    self._run = 0
                    events.append(End(self._start * FRAME_SECONDS, (self._last_voiced + 1) * FRAME_SECONDS))
        return events


# ---------------------------------------------------------------- the protocol core


@dataclass(frozen=True, slots=True)
class Send:
    message: dict[str, Any]
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str = ""
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Drop:
    delay: float = 0.0


Action = Send | Close | Drop


@dataclass
class _Utterance:
    text: str | None  # None: decided when first needed (by the voiceprints, else the script)
    start: float
    finalized: bool = False


def voiceprint(audio: bytes, threshold_dbfs: float = -40.0) -> list[str]:
    """The hashes of `audio`'s 20 ms mu-law frames, "" for a frame too quiet to be speech (silence
    is the same bytes in every utterance). The last frame is padded with silence, as a caller sends it."""
    pad = -len(audio) % 160
    data = bytes(audio) + b"\xff" * pad
    n = len(data) // 160
    if n == 0:
        return []
    energy = np.square(_ULAW[np.frombuffer(data, dtype=np.uint8)]).reshape(n, 160).mean(axis=1)
    threshold = (32768.0 * 10 ** (threshold_dbfs / 20)) ** 2
    return [_frame_hash(data[i * 160:(i + 1) * 160]) if energy[i] > threshold else "" for i in range(n)]


def _frame_hash(frame: bytes) -> str:
    return hashlib.blake2b(frame, digest_size=8).hexdigest()


class _Voiceprints:
    """The reverse of `DeepgramConfig.voiceprints`: frame hash -> (text, frame position in its audio),
    and per text the span of its voiced frames, over which its words are spread evenly."""

    HEARD_FRAMES = 3000  # 60 s of recognized frames kept per connection: longer than any utterance

    def __init__(self, prints: dict[str, list[str]]) -> None:
        self.where: dict[str, tuple[str, int]] = {}
        self.span: dict[str, tuple[int, int]] = {}
        for text, hashes in prints.items():
            voiced = [i for i, h in enumerate(hashes) if h]
            if not voiced:
                continue
            self.span[text] = (voiced[0], voiced[-1] + 1)
            for i in voiced:
                self.where.setdefault(hashes[i], (text, i))
        self.heard: deque[tuple[int, str, int]] = deque(maxlen=self.HEARD_FRAMES)  # (frame here, text, position)
        self._pending = b""
        self._frames = 0

    def feed(self, data: bytes) -> None:
        buf = self._pending + data if self._pending else data
        n = len(buf) // 160
        self._pending = buf[n * 160:]
        for i in range(n):
            hit = self.where.get(_frame_hash(buf[i * 160:(i + 1) * 160]))
            if hit is not None:
                self.heard.append((self._frames + i, *hit))
        self._frames += n

    def words(self, start: float, end: float) -> list[tuple[str, float, float]] | None:
        """The words of the known audio heard between `start` and `end` (seconds of this connection's
        audio), each with its start and end there; None if none of it is known."""
        first, last = round(start / FRAME_SECONDS), round(end / FRAME_SECONDS)
        hits = [h for h in self.heard if first <= h[0] < last]
        if not hits:
            return None
        runs: list[tuple[str, list[tuple[int, int]]]] = []  # consecutive frames of one text
        for frame, text, position in hits:
            if runs and runs[-1][0] == text and position > runs[-1][1][-1][1]:
                runs[-1][1].append((frame, position))
            else:
                runs.append((text, [(frame, position)]))
        words: list[tuple[str, float, float]] = []
        for text, frames in runs:
            tokens, languages = _languages(text.split(), "")  # language tags take no audio
            lo, hi = self.span[text]
            share = (hi - lo) / max(1, len(tokens))
            (f0, p0), (_, p1) = frames[0], frames[-1]
            for k, token in enumerate(tokens):
                at = lo + (k + 0.5) * share  # where the word's middle lies in the text's audio
                if p0 - 0.5 <= at <= p1 + 0.5:  # heard on this connection
                    begin = max(p0, lo + k * share)
                    finish = min(p1 + 1, lo + (k + 1) * share)
                    t0 = (f0 + begin - p0) * FRAME_SECONDS
                    if languages[k]:  # each heard word keeps its language, however little of the text is heard
                        words.append((f"[{languages[k]}]", t0, t0))
                    words.append((token, t0, (f0 + finish - p0) * FRAME_SECONDS))
        return words


# Speech that resumes within this of an endpointing decision continues the same scripted utterance: a
# comma pause runs a little past the 300 ms endpointing; a caller's next turn comes seconds later.
SAME_UTTERANCE_RESUME_MS = 250


class ListenSession:
    def __init__(self, options: ListenOptions, cfg: DeepgramConfig, script: list[str], final_delay: float,
                 request_id: str, drop_after: float | None = None) -> None:
        self.options = options
        self.request_id = request_id
        self.final_delay = final_delay
        self.drop_after = drop_after
        self._script = list(script)
        self._default = cfg.default_transcript
        self._repeat_last = cfg.repeat_last
        self._words_per_second = cfg.interim_words_per_second
        self._finalize_empty = cfg.finalize_empty_reply
        self._prints = _Voiceprints(cfg.voiceprints) if cfg.voiceprints else None
        # The language of words no tag names, in multilingual mode (a script of plain English stays English).
        self._default_language = "en" if options.language == "multi" else options.language.split("-")[0]
        self.detector = EnergyDetector(options, cfg.speech_threshold_dbfs, cfg.onset_ms, cfg.interim_interval,
                                       cfg.default_endpointing_ms)
        self._sha = hashlib.sha256()
        self._utterance: _Utterance | None = None
        self._last_final_end = 0.0
        self._last_end: tuple[float, float] | None = None  # (wall, audio) time the last segment's end was decided
        self.closed = False
        self.created = datetime.now(timezone.utc)
        self.events: list[Onset | Interim | End] = []  # what the detector saw in the last on_audio

    def on_audio(self, data: bytes) -> list[Action]:
        self.events = []
        if self.closed:
            return []
        self._sha.update(data)
        actions: list[Action] = []
        if self._prints is not None:
            self._prints.feed(data)
        self.events = self.detector.feed(data)
        for event in self.events:
            match event:
                case Onset(at=at):
                    # Speech resuming right after the endpointing decision is a pause inside one utterance
                    # ("Hello, [pause] I'd like to book"): it splits the finals, not the script entry.
                    # The entry's text went with the first part; later parts are transcribed as "".
                    # Wall-clock time, not audio time: a client that sends only speech (and KeepAlives
                    # between turns) leaves no silence in the audio between two turns.
                    # Both clocks must agree: a client faster than real time has short wall gaps, and a
                    # client that sends only speech has short audio gaps, between real turns.
                    resume_s = SAME_UTTERANCE_RESUME_MS / 1000.0
                    same = (self._last_end is not None and time.monotonic() - self._last_end[0] < resume_s
                            and at - self._last_end[1] < resume_s)
                    if self._prints is not None:
                        self._utterance = _Utterance(None, at)  # its words come from its frames
                    else:
                        self._utterance = _Utterance("" if same else self._next_text(), at)
                    if self.options.vad_events:
                        actions.append(Send({"type": "SpeechStarted", "channel": [0], "timestamp": round(at, 3)}))
                    if self.drop_after is not None:
                        actions.append(Drop(self.drop_after))
                case Interim(at=at):
                    u = self._utterance
                    if u is not None and not u.finalized and self.options.interim_results:
                        text, timed = self._spoken(u, at)
                        if timed is None:
                            words = text.split()
                            n = min(len(words), max(1, round((at - u.start) * self._words_per_second)))
                            text = " ".join(words[:n])
                        actions.append(Send(self._results(text, u.start, at, is_final=False, timed=timed)))
                case End(start=start, end=end):
                    u = self._utterance
                    self._utterance = None
                    self._last_end = (time.monotonic(), self.detector.audio_time)
                    if u is not None and not u.finalized:
                        final = self.options.endpointing_ms is not None
                        text, timed = self._spoken(u, end)
                        actions.append(Send(self._results(text, u.start, end, is_final=True, speech_final=final,
                                                          timed=timed), self.final_delay))
                    if self.options.utterance_end_ms:
                        actions.append(Send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(end, 3)},
                                            self.final_delay))
        return actions

    def on_finalize(self) -> list[Action]:
        if self.closed:
            return []
        u = self._utterance
        at = self.detector.audio_time
        if u is not None and not u.finalized:
            u.finalized = True
            text, timed = self._spoken(u, at)
            return [Send(self._results(text, u.start, at, is_final=True, from_finalize=True, timed=timed),
                         self.final_delay)]
        if u is None and self._finalize_empty:
            return [Send(self._results("", self._last_final_end, at, is_final=True, from_finalize=True),
                         self.final_delay)]
        return []

    def on_close_stream(self) -> list[Action]:
        if self.closed:
            return []
        self.closed = True
        actions: list[Action] = []
        u = self._utterance
        if u is not None and not u.finalized:
            u.finalized = True
            text, timed = self._spoken(u, self.detector.audio_time)
            actions.append(Send(self._results(text, u.start, self.detector.audio_time, is_final=True, timed=timed)))
        actions.append(Send({
            "type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
            "sha256": self._sha.hexdigest(),
            "created": self.created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "duration": round(self.detector.audio_time, 3), "channels": self.options.channels,
            "models": [MODEL_UUID], "model_info": {MODEL_UUID: MODEL_INFO},
        }))
        actions.append(Close(1000))
        return actions

    def _spoken(self, u: _Utterance, upto: float) -> tuple[str, list[tuple[str, float, float]] | None]:
        """What the utterance said up to `upto`: the words of its known frames (timed), else its script text."""
        if self._prints is not None:
            timed = self._prints.words(u.start, upto + FRAME_SECONDS)
            if timed is not None:
                return " ".join(w for w, _, _ in timed), timed
        if u.text is None:
            u.text = self._next_text()  # audio no voiceprint knows: the script, as without them
        return u.text, None

    def _next_text(self) -> str:
        if self._script:
            text = self._script.pop(0)
            if not self._script and self._repeat_last:
                self._script.append(text)
            return text
        return self._default

    def _results(self, text: str, start: float, end: float, *, is_final: bool, speech_final: bool = False,
                 from_finalize: bool = False, timed: list[tuple[str, float, float]] | None = None) -> dict[str, Any]:
        # Language tags in a script or voiceprint text ("[es] Quiero una cita") say what language the
        # words after them are in; they are not words (`_languages`).
        tokens, tags = _languages(text.split(), self._default_language)
        if timed is not None:
            timed, timed_tags = _languages_timed(timed, self._default_language)
        words = []
        if timed is not None:
            for token, begin, finish in timed:
                bare = "".join(c for c in token if c.isalnum() or c in "'-").lower() or token.lower()
                words.append({"word": bare, "start": round(begin, 3), "end": round(finish, 3), "confidence": 0.98,
                              "punctuated_word": token if self.options.punctuate else bare})
        elif tokens:
            span = max(end - start, 0.02) / len(tokens)
            for i, token in enumerate(tokens):
                bare = "".join(c for c in token if c.isalnum() or c in "'-").lower() or token.lower()
                words.append({"word": bare, "start": round(start + i * span, 3),
                              "end": round(start + (i + 1) * span, 3), "confidence": 0.98,
                              "punctuated_word": token if self.options.punctuate else bare})
        transcript = (" ".join(w["punctuated_word"] for w in words) if timed is not None else " ".join(tokens)) \
            if self.options.punctuate else " ".join(w["word"] for w in words)
        alternative: dict[str, Any] = {"transcript": transcript, "confidence": 0.98 if tokens or timed else 0.0,
                                       "words": words}
        if self.options.language == "multi":
            # As nova-3 multilingual sends them: each word's language, the alternative's languages by
            # word count (most first), and the hints it was given, normalized to base codes.
            for word, tag in zip(words, timed_tags if timed is not None else tags):
                word["language"] = tag
            counts: dict[str, int] = {}
            for word in words:
                counts[word["language"]] = counts.get(word["language"], 0) + 1
            alternative["languages"] = sorted(counts, key=lambda t: -counts[t])
            alternative["languages_hinted"] = [h.split("-")[0].lower() for h in self.options.language_hint]
        if is_final:
            self._last_final_end = end
        return {
            "type": "Results", "channel_index": [0, 1], "duration": round(end - start, 3), "start": round(start, 3),
            "is_final": is_final, "speech_final": speech_final, "from_finalize": from_finalize,
            "channel": {"alternatives": [alternative]},
            "metadata": {"request_id": self.request_id, "model_info": MODEL_INFO, "model_uuid": MODEL_UUID},
        }


_TAG = re.compile(r"^\[([a-z]{2}(?:-[A-Za-z0-9]+)?)\]$")


def _languages(tokens: list[str], default: str) -> tuple[list[str], list[str]]:
    """(the words, each word's language) from tokens where "[es]" sets the language of what follows."""
    words, tags = [], []
    current = default
    for token in tokens:
        tag = _TAG.match(token)
        if tag:
            current = tag.group(1)
        else:
            words.append(token)
            tags.append(current)
    return words, tags


def _languages_timed(timed: list[tuple[str, float, float]], default: str):
    kept, tags = [], []
    current = default
    for token, begin, finish in timed:
        tag = _TAG.match(token)
        if tag:
            current = tag.group(1)
        else:
            kept.append((token, begin, finish))
            tags.append(current)
    return kept, tags


# ---------------------------------------------------------------- the WebSocket


def _api_key(ws: WebSocket) -> tuple[str | None, str | None]:
    """(key, accepted subprotocol): `Authorization: Token|Bearer <key>`, or the browser form
    `Sec-WebSocket-Protocol: token, <key>`."""
    auth = ws.headers.get("authorization")
    if auth:
        scheme, _, key = auth.partition(" ")
        if scheme.lower() in ("token", "bearer") and key.strip():
            return key.strip(), None
        return None, None
    protocols = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    if len(protocols) >= 2 and protocols[0].lower() == "token":
        return protocols[1], protocols[0]
    return None, None


def _denial(status: int, code: str, message: str, request_id: str) -> Response:
    body = {"err_code": code, "err_msg": message, "request_id": request_id}
    return Response(orjson.dumps(body), status, media_type="application/json", headers={"dg-request-id": request_id})


class ListenSocket:
    def __init__(self, ws: WebSocket, state: EmulatorState) -> None:
        self.ws = ws
        self.state = state
        self.cfg = state.config
        self.request_id = str(uuid.uuid4())
        self.query = dict(parse_qsl(ws.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        self.record = state.log.add("deepgram", {
            "path": ws.scope["path"], "request_id": self.request_id, "query": self.query,
            "headers": recorded_headers(ws.scope, (b"authorization",)), "opened_at": now(), "closed_at": None,
            "status": None, "close_code": None, "closed_by": None, "fault": None,
            "audio_bytes": 0, "audio_messages": 0, "first_audio_at": None, "last_audio_at": None,
            "keepalives": [], "finalizes": [], "close_streams": [], "other_messages": [],
            "speech": [], "transcripts": [], "sent": [],
        })
        self.queue: asyncio.Queue[tuple[float, Action]] = asyncio.Queue()
        self.fault: str | None = None

    async def run(self) -> None:
        dg = self.cfg.deepgram
        key, subprotocol = _api_key(self.ws)
        if not dg.key_accepted(key, dg.api_key, dg.bad_keys):
            return await self._deny(401, "INVALID_AUTH", "Invalid credentials.")
        self.fault = self.record["fault"] = dg.take_fault()
        if self.fault == "refuse":
            return await self._deny(401, "INVALID_AUTH", "Invalid credentials.")
        if self.fault == "error5xx":
            return await self._deny(500, "INTERNAL_SERVER_ERROR", "Internal server error.")
        try:
            hints = tuple(v for k, v in parse_qsl(self.ws.scope.get("query_string", b"").decode("latin-1"))
                          if k == "language_hint")  # the SDK sends one parameter per hint
            self.record["language_hint"] = list(hints)
            options = ListenOptions.from_query(self.query, dg, hints)
        except ValueError as exc:
            return await self._deny(400, "Bad Request", f"invalid query parameter: {exc}")
        script = dg.script
        override = self.query.get("emulator_script")  # per connection, via additional_query_parameters
        if override:
            try:
                parsed = orjson.loads(override)
                script = parsed if isinstance(parsed, list) else [str(parsed)]
            except orjson.JSONDecodeError:
                script = [override]
        session = ListenSession(options, dg, [str(s) for s in script], self.cfg.stt_final_delay, self.request_id,
                                drop_after=dg.drop_after if self.fault == "drop" else None)
        await self.ws.accept(subprotocol=subprotocol, headers=[(b"dg-request-id", self.request_id.encode())])
        self.record["status"] = 101
        loop = asyncio.get_running_loop()
        stall = self.fault == "stall"
        timer = IdleTimer(0 if stall else dg.idle_timeout,
                          lambda: self.queue.put_nowait((loop.time(), Close(1011, NET_0001))))
        sender = asyncio.create_task(self._send_loop())
        record = self.record
        flap: asyncio.TimerHandle | None = None
        if self.fault == "flap":
            # Cut whatever the connection is doing: mid-utterance, mid-reply, between turns.
            record["flap_after"] = after = dg.next_flap_after()
            flap = loop.call_later(after, self.queue.put_nowait, (0.0, Drop()))
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    record["close_code"] = message.get("code")
                    break
                timer.touch()
                data = message.get("bytes")
                t = received_at(message)
                if data is not None:
                    record["audio_bytes"] += len(data)
                    record["audio_messages"] += 1
                    record["last_audio_at"] = t
                    if record["first_audio_at"] is None:
                        record["first_audio_at"] = t
                    actions = session.on_audio(data)
                    for event in session.events:
                        self._note_speech(event, t)
                else:
                    actions = self._on_text(session, message.get("text") or "", t)
                # Delays count from the message's arrival: a handler a loop turn late must not make
                # the emulated endpointing and final that much later.
                base = loop_time_at(t)
                for action in actions:
                    if isinstance(action, Drop):
                        # Its own timer: in the FIFO it would hold back the interims due before it.
                        loop.call_later(action.delay, self.queue.put_nowait, (0.0, action))
                    else:
                        self.queue.put_nowait((base + action.delay, action))
        except WebSocketDisconnect as exc:
            record["close_code"] = exc.code
        finally:
            timer.cancel()
            sender.cancel()
            if flap is not None:
                flap.cancel()
            record["closed_at"] = now()
            if record["closed_by"] is None:
                record["closed_by"] = "client"

    def _note_speech(self, event: Onset | Interim | End, t: float) -> None:
        """Speech as detected: wall times of onset/end detection and the audio times they refer to."""
        speech = self.record["speech"]
        match event:
            case Onset(at=at):
                speech.append({"onset_at": t, "end_at": None, "audio_start": at, "audio_end": None})
            case End(end=end) if speech:
                speech[-1]["end_at"] = t
                speech[-1]["audio_end"] = end

    def _on_text(self, session: ListenSession, text: str, t: float) -> list[Action]:
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            data = None
        kind = data.get("type") if isinstance(data, dict) else None
        match kind:
            case "KeepAlive":
                self.record["keepalives"].append(t)
                return []
            case "Finalize":
                self.record["finalizes"].append(t)
                return session.on_finalize()
            case "CloseStream":
                self.record["close_streams"].append(t)
                return session.on_close_stream()
            case _:
                self.record["other_messages"].append({"t": t, "text": text[:500]})
                return []

    async def _deny(self, status: int, code: str, message: str) -> None:
        self.record["status"] = status
        self.record["closed_at"] = now()
        await deny_websocket(self.ws, _denial(status, code, message, self.request_id))

    async def _send_loop(self) -> None:
        """Send in FIFO order, each action no earlier than its due time."""
        record = self.record
        try:
            while True:
                due, action = await self.queue.get()
                if self.fault == "stall":
                    continue
                delay = due - asyncio.get_running_loop().time()
                if delay > 0:
                    await asyncio.sleep(delay)
                match action:
                    case Send(message=message):
                        t = now()  # stamped as it goes out: benchmarks time the client's reaction from here
                        await self.ws.send_text(orjson.dumps(message).decode())
                        kind = message["type"]
                        entry: dict[str, Any] = {"t": t, "type": kind}
                        if kind == "Results":
                            alt = message["channel"]["alternatives"][0]
                            entry.update(transcript=alt["transcript"], languages=alt.get("languages"),
                                         is_final=message["is_final"],
                                         speech_final=message["speech_final"], from_finalize=message["from_finalize"],
                                         start=message["start"], duration=message["duration"])
                            record["transcripts"].append(entry)
                        elif kind == "Metadata":
                            entry["sha256"] = message["sha256"]  # of the audio, in the order it came
                        record["sent"].append(entry)
                    case Close(code=code, reason=reason):
                        record["closed_by"] = "server"
                        await self.ws.close(code, reason)
                        return
                    case Drop():
                        record["closed_by"] = "server-drop"
                        if not await abort_connection(self.ws.scope):
                            await self.ws.close(1011, "emulated drop")
                        return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return


async def listen(ws: WebSocket) -> None:
    await ListenSocket(ws, state_of(ws.scope)).run()
