"""The simulated Twilio caller: its speaker model (pure) and whole calls against a tiny fake gateway.

The fake gateway speaks the gateway side of Media Streams on a real socket: a greeting tone and
mark after `start`, a crude end-of-speech detector (speech frames, then 300 ms of 0xFF), a reply
tone and mark per caller turn or DTMF, and optionally `clear` on caller speech while it is talking.
Both ends run on the test's event loop, so their `time.monotonic()` stamps are comparable.
"""

from __future__ import annotations

import asyncio
import time
import wave
from base64 import b64decode

import numpy as np
import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from audio import mulaw
from gateway import twilio_protocol as tp
from loadgen import simcaller
from loadgen.simcaller import CallerTurn, Playback, load_wav_mulaw, mulaw_frames, run_call, save_wav

RATE = 8000
SILENT_FRAMES_FOR_END = 15  # 300 ms of 0xFF ends the caller's utterance in the fake


def tone(ms: int, hz: float = 440.0) -> bytes:
    t = np.arange(RATE * ms // 1000) / RATE
    return mulaw.encode((np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16))


def tone_speak(text: str) -> bytes:
    """Injected `speak`: 400 ms of a tone, whatever the text."""
    return tone(400, 600.0)


class FakeGateway:
    """The gateway side of one or more calls. `replies` are the audio parts of each reply: a list of
    (ms, pause_before_s, mark) so a test can leave a hole in a reply (an underrun)."""

    def __init__(
        self,
        *,
        greeting_ms: int = 400,
        replies: list[list[tuple[int, float, str | None]]] | None = None,
        clear_on_speech: bool = False,
        hangup_after_s: float | None = None,
        idle_mark_after_greeting: bool = False,
        garbage: bool = False,
    ) -> None:
        self.garbage = garbage
        self.greeting_ms = greeting_ms
        self.replies = replies or []
        self.clear_on_speech = clear_on_speech
        self.hangup_after_s = hangup_after_s
        self.idle_mark_after_greeting = idle_mark_after_greeting
        self.events: list[tuple[float, dict]] = []
        self.sent: list[tuple[float, str, object]] = []  # (time, kind, detail) of what the fake sent
        self.request_path = ""
        self.request_headers: dict[str, str] = {}
        self.stream_sid = ""
        self.url = ""
        self._playing_until = 0.0
        self._reply_index = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def events_of(self, kind: str) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in self.events if m["event"] == kind]

    def sent_at(self, kind: str, detail: object = None) -> float:
        return next(t for t, k, d in self.sent if k == kind and (detail is None or d == detail))

    async def _send_audio(self, ws: ServerConnection, audio: bytes, mark: str | None) -> None:
        now = time.monotonic()
        self.sent.append((now, "audio", len(audio)))
        for i in range(0, len(audio), 160):  # one burst, far ahead of real time
            await ws.send(tp.media_message(self.stream_sid, audio[i : i + 160]))
        self._playing_until = max(now, self._playing_until) + len(audio) / RATE
        if mark:
            self.sent.append((time.monotonic(), "mark", mark))
            await ws.send(tp.mark_message(self.stream_sid, mark))

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, ws: ServerConnection) -> None:
        if self._reply_index >= len(self.replies):
            return
        parts = self.replies[self._reply_index]
        self._reply_index += 1
        for ms, pause, mark in parts:
            if pause:
                await asyncio.sleep(pause)
            await self._send_audio(ws, tone(ms), mark)

    async def _greet(self, ws: ServerConnection) -> None:
        if self.greeting_ms:
            await self._send_audio(ws, tone(self.greeting_ms), "greeting")
        if self.idle_mark_after_greeting:
            await asyncio.sleep(self.greeting_ms / 1000 + 0.15)
            self.sent.append((time.monotonic(), "mark", "idle"))
            await ws.send(tp.mark_message(self.stream_sid, "idle"))

    async def _hang_up(self, ws: ServerConnection) -> None:
        assert self.hangup_after_s is not None
        if self.garbage:
            await ws.send("not json")
            await ws.send(tp.media_message("MZ-someone-else", tone(100)))
        await asyncio.sleep(self.hangup_after_s)
        self.sent.append((time.monotonic(), "close", None))
        await ws.close()

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.request_path = ws.request.path
        self.request_headers = dict(ws.request.headers.raw_items())
        speaking, silent = False, 0
        try:
            async for raw in ws:
                now = time.monotonic()
                msg = orjson.loads(raw)
                self.events.append((now, msg))
                match msg["event"]:
                    case "start":
                        self.stream_sid = msg["streamSid"]
                        self._spawn(self._greet(ws))
                        if self.hangup_after_s is not None:
                            self._spawn(self._hang_up(ws))
                    case "media":
                        payload = b64decode(msg["media"]["payload"])
                        if payload.count(0xFF) != len(payload):
                            if not speaking and self.clear_on_speech and now < self._playing_until:
                                self._playing_until = now
                                self.sent.append((now, "clear", None))
                                await ws.send(tp.clear_message(self.stream_sid))
                            speaking, silent = True, 0
                        elif speaking:
                            silent += 1
                            if silent == SILENT_FRAMES_FOR_END:
                                speaking = False
                                self._spawn(self._reply(ws))
                    case "dtmf" if msg["dtmf"]["digit"] == "#":  # '#' ends the caller's entry
                        self._spawn(self._reply(ws))
                    case "stop":
                        break
        except ConnectionClosed:
            pass
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


def near(value: float | None, expected: float, tolerance: float) -> bool:
    return value is not None and abs(value - expected) <= tolerance


# ------------------------------------------------------------------ the speaker model (no sockets)


def test_playback_plays_in_real_time_from_first_arrival() -> None:
    pb = Playback(reply_quiet_s=0.5)
    assert pb.push(10.0, b"\x01" * 8000) == 10.0  # idle: plays on arrival
    assert pb.push(10.2, b"\x02" * 4000) == 11.0  # queued behind the first second
    assert pb.busy_until == pytest.approx(11.5)
    assert not pb.idle(11.4) and pb.idle(11.5)
    assert pb.mark(10.3, "m1") == []  # behind 1.2 s of audio
    assert pb.advance(11.49) == [] and pb.advance(11.5) == ["m1"]
    assert pb.mark(12.0, "m2") == ["m2"]  # nothing buffered: echoed at once
    assert [(r.start, r.nbytes) for r in pb.runs] == [(10.0, 12000)]


def test_playback_clear_drops_unplayed_tail_and_flushes_marks() -> None:
    pb = Playback()
    pb.push(0.0, b"\x01" * 8000)
    pb.mark(0.0, "a")
    pb.push(0.0, b"\x02" * 8000)
    pb.mark(0.0, "b")
    names, dropped = pb.clear(0.25)
    assert names == ["a", "b"] and dropped == 14000
    assert bytes(pb.heard) == b"\x01" * 2000 and len(pb.received) == 16000
    assert pb.idle(0.25) and pb.advance(5.0) == []
    pb.push(1.0, b"\x03" * 800)
    assert pb.finish(1.05) == 400  # call over halfway through: the rest was never heard
    assert pb.heard_bytes == 2400 == len(pb.heard)
    assert pb.played_between(0.0, 2.0) == pytest.approx(0.3)
    assert pb.played_between(0.1, 1.02) == pytest.approx(0.17)


def test_underrun_rule() -> None:
    pb = Playback(reply_quiet_s=0.5)
    pb.push(0.0, b"\x01" * 800)  # plays to 0.1
    pb.push(0.05, b"\x01" * 800)  # queued: no gap
    pb.push(0.3, b"\x01" * 800)  # ran dry at 0.2: a 100 ms underrun
    assert [(t, round(g, 3)) for t, g in pb.underruns] == [(0.3, 0.1)]
    pb.push(1.0, b"\x01" * 800)  # 600 ms >= reply_quiet: a new reply, not an underrun
    pb.boundary()  # the caller speaks
    pb.push(1.3, b"\x01" * 800)  # the answer: not an underrun either
    pb.clear(1.35)
    pb.push(1.4, b"\x01" * 800)  # after a clear: new reply
    assert len(pb.underruns) == 1


def test_media_template_matches_the_protocol_builder() -> None:
    frames = mulaw_frames(bytes(range(256)) * 2)
    assert len(frames) == 4 and all(len(b64decode(f)) == 160 for f in frames)
    assert b64decode(frames[-1]).endswith(b"\xff" * (640 - 512))  # padded with silence
    for sid in ("MZ" + "ab" * 16, "MZ%s%d"):
        message = simcaller._media_template(sid) % (12, 3, 40, frames[1])
        assert message.decode() == tp.inbound_media_message(sid, b64decode(frames[1]), 12, 3, 40)


# ------------------------------------------------------------------ whole calls


async def test_frames_are_paced_counted_and_framed_like_twilio(fake_gateway) -> None:
    gw = await fake_gateway(replies=[[(300, 0.0, "r1")]])
    report = await run_call(
        gw.url, [CallerTurn(text="hello", gap_ms=100)], speak=tone_speak, reply_quiet_ms=200,
        parameters={"From": "+15550001111"}, call_sid="CA" + "1" * 32,
    )
    assert report.error is None and report.completed and not report.hung_up_by_gateway

    kinds = [m["event"] for _, m in gw.events]
    assert kinds[:2] == ["connected", "start"] and kinds[-1] == "stop"
    start = gw.events[1][1]
    assert start["sequenceNumber"] == "1" and start["streamSid"] == report.stream_sid
    assert report.stream_sid.startswith("MZ") and len(report.stream_sid) == 34
    assert start["start"]["callSid"] == "CA" + "1" * 32
    assert start["start"]["customParameters"] == {"From": "+15550001111"}
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    # every message after `connected` carries the next sequence number, as a string
    assert [m["sequenceNumber"] for _, m in gw.events[1:]] == [str(i) for i in range(1, len(gw.events))]

    media = gw.events_of("media")
    assert len(media) == report.frames_sent
    assert [m["media"]["chunk"] for _, m in media] == [str(i) for i in range(1, len(media) + 1)]
    assert [m["media"]["timestamp"] for _, m in media] == [str(20 * i) for i in range(len(media))]
    assert all(m["media"]["track"] == "inbound" and m["streamSid"] == report.stream_sid for _, m in media)
    payloads = [b64decode(m["media"]["payload"]) for _, m in media]
    assert all(len(p) == 160 for p in payloads)
    speech = [p for p in payloads if p != b"\xff" * 160]
    assert b"".join(speech) == tone_speak("")  # 400 ms = exactly 20 frames, nothing else spoken

    # real time: one frame per 20 ms of wall clock. Bounds are loose enough for a busy machine:
    # a stalled loop is caught up (or, past 100 ms, the clock slips and the report says so).
    times = np.array([t for t, _ in media])
    assert np.median(np.diff(times)) == pytest.approx(0.02, abs=0.003)
    expected_span = (len(times) - 1) * 0.02 + report.clock_slip_ms / 1000
    assert abs((times[-1] - times[0]) - expected_span) < 0.06


async def test_marks_echo_after_their_audio_played_or_at_once_when_idle(fake_gateway) -> None:
    gw = await fake_gateway(greeting_ms=1000, idle_mark_after_greeting=True)
    report = await run_call(gw.url, [CallerTurn(gap_ms=300)], speak=tone_speak, reply_quiet_ms=200)
    assert report.error is None
    assert report.marks_sent == ["greeting", "idle"] == report.marks_echoed

    echoes = {m["mark"]["name"]: t for t, m in gw.events_of("mark")}
    greeting_sent = gw.sent_at("audio")
    assert 0.995 <= echoes["greeting"] - greeting_sent <= 1.15  # after 1 s of playback, never before
    assert 0.0 <= echoes["idle"] - gw.sent_at("mark", "idle") < 0.1  # nothing buffered: at once
    assert near(report.greeting_latency_ms, 0.0, 100)
    assert near(report.greeting_ms, 1000, 1)
    assert len(report.heard) == len(report.received) == 8000


async def test_latency_is_speech_end_to_playback_start(fake_gateway) -> None:
    # reply: 400 ms, then (after it played out) a 200 ms hole, then 200 ms more: one underrun
    gw = await fake_gateway(replies=[[(400, 0.0, None), (200, 0.6, "r1")]])
    report = await run_call(gw.url, [CallerTurn(text="book me in", gap_ms=100)], speak=tone_speak)
    assert report.error is None
    turn = report.turns[0]
    assert turn.speech_start is not None and turn.speech_end is not None and turn.reply_start is not None
    # the fake answers after 300 ms of silence; the reply plays the moment it arrives
    assert turn.latency_ms == pytest.approx((turn.reply_start - turn.speech_end) * 1000)
    assert 250 <= turn.latency_ms <= 500  # the fake's 300 ms end-of-speech rule, plus scheduling
    reply_sent = [t for t, kind, _ in gw.sent if kind == "audio"][1]
    assert turn.reply_arrival is not None and turn.reply_arrival >= reply_sent
    assert turn.reply_start == turn.reply_arrival  # the speaker was idle: it plays on arrival
    assert near(turn.reply_ms, 600, 2)
    assert turn.underruns == 1 == report.underruns and 190 <= turn.underrun_gaps_ms[0] < 500
    # the gap ended when the second part arrived: 400 ms of reply plus the hole after reply_start
    assert len(turn.underrun_at_ms) == 1 and near(turn.underrun_at_ms[0], 400 + turn.underrun_gaps_ms[0], 50)
    assert turn.speech_ms == 400 and not turn.interrupted and turn.clear_ms is None
    assert len(report.heard) == len(report.received) == (400 + 400 + 200) * 8
    line = turn.to_json()
    assert set(line) >= {"turn", "text", "speech_end", "reply_start", "latency_ms", "reply_ms", "clear_ms", "interrupted"}
    assert line["turn"] == 0 and line["text"] == "book me in" and line["clear_ms"] is None


async def test_next_turn_is_chosen_after_each_reply_has_played_out(fake_gateway) -> None:
    # a reacting caller (`next_turn`): one scripted turn, then two chosen as the call goes, then None
    gw = await fake_gateway(greeting_ms=300, replies=[[(300, 0.0, "r1")], [(400, 0.0, "r2")], [(200, 0.0, "r3")]])
    asked: list[tuple[float, int, float | None]] = []  # (when, turns so far, the last reply's start)

    async def next_turn(report: simcaller.CallReport) -> CallerTurn | None:
        last = report.turns[-1]
        asked.append((time.monotonic(), len(report.turns), last.reply_start))
        assert report.call_sid.startswith("CA")
        if len(report.turns) == 3:
            return None
        return CallerTurn(text=f"line {len(report.turns)}", gap_ms=100)

    report = await run_call(gw.url, [CallerTurn(text="scripted", gap_ms=100)], speak=tone_speak,
                            reply_quiet_ms=300, next_turn=next_turn)
    assert report.error is None and report.completed
    assert [t.text for t in report.turns] == ["scripted", "line 1", "line 2"]
    assert [t.index for t in report.turns] == [0, 1, 2] and {t.kind for t in report.turns} == {"speech"}
    assert [n for _, n, _ in asked] == [1, 2, 3]  # after each reply, with the turns so far
    for (when, _, reply_start), ms in zip(asked, (300, 400, 200)):
        # asked once the reply had played (from its start) and the speaker was quiet for reply_quiet_ms
        assert reply_start is not None and when >= reply_start + (ms + 300) / 1000 - 0.02
    for turn in report.turns:
        assert turn.speech_start is not None and turn.reply_start is not None and turn.latency_ms is not None
    spoken = [t for t, m in gw.events_of("media") if b64decode(m["media"]["payload"]).count(0xFF) != 160]
    assert spoken and len(gw.events_of("stop")) == 1  # the caller ended the call when the hook said so


async def test_next_turn_without_a_script_starts_after_the_greeting(fake_gateway) -> None:
    gw = await fake_gateway(greeting_ms=300, replies=[[(200, 0.0, "r1")]])
    seen: list[int] = []

    async def next_turn(report: simcaller.CallReport) -> CallerTurn | None:
        seen.append(len(report.turns))
        return None if report.turns else CallerTurn(text="hello", gap_ms=50)

    report = await run_call(gw.url, [], speak=tone_speak, reply_quiet_ms=300, next_turn=next_turn)
    assert report.error is None and seen == [0, 1]
    assert report.greeting_latency_ms is not None and report.turns[0].reply_start is not None
    assert report.turns[0].speech_start > report.turns[0].call_start + 0.3  # after the greeting played


async def test_barge_in_clear_flushes_marks_and_cuts_heard_audio(fake_gateway) -> None:
    long_reply = [(1000, 0.0, "r1-s1"), (1000, 0.0, "r1-s2"), (1000, 0.0, "r1-s3")]
    gw = await fake_gateway(replies=[long_reply, [(300, 0.0, "r2")]], clear_on_speech=True)
    report = await run_call(
        gw.url,
        [CallerTurn(text="what times", gap_ms=100), CallerTurn(text="stop, tomorrow", barge_in_ms=500)],
        speak=tone_speak,
        reply_quiet_ms=200,
    )
    assert report.error is None and report.clears == 1
    first, barge = report.turns
    assert first.reply_start is not None and barge.speech_start is not None
    assert 0.5 <= barge.speech_start - first.reply_start <= 0.6  # N ms into the reply, next frame
    assert barge.barged_in and barge.clear_ms is not None and 0 <= barge.clear_ms < 150
    assert first.interrupted and not barge.interrupted
    assert 495 <= first.reply_ms <= 600  # played until the caller cut in
    assert barge.latency_ms is not None and 250 <= barge.latency_ms <= 500

    # every pending mark is echoed at once on clear, in order
    clear_at = report.clear_times[0]
    assert report.marks_echoed == ["greeting", "r1-s1", "r1-s2", "r1-s3", "r2"]
    assert all(0 <= t - clear_at < 0.05 for t in report.mark_echo_times[1:4])
    gw_echoes = [t for t, m in gw.events_of("mark") if m["mark"]["name"].startswith("r1")]
    assert len(gw_echoes) == 3 and all(0 <= t - gw.sent_at("clear") < 0.15 for t in gw_echoes)
    assert report.mark_echo_times[4] - clear_at > 0.3  # r2's echo waited for r2 to play

    # heard: greeting + the part of reply 1 before the clear + reply 2; received: all of it
    played_r1 = (clear_at - first.reply_start) * RATE
    assert len(report.received) == (400 + 3000 + 300) * 8
    assert abs(len(report.heard) - (3200 + played_r1 + 2400)) <= 2
    r1_start = 3200
    assert report.heard[r1_start : r1_start + 800] == tone(1000)[:800]
    assert report.heard[-2400:] == tone(300)


async def test_dtmf_turn_sends_twilio_dtmf_messages(fake_gateway) -> None:
    gw = await fake_gateway(replies=[[(300, 0.0, "menu")]])
    report = await run_call(gw.url, [CallerTurn(dtmf="1#", gap_ms=50)], reply_quiet_ms=200)
    assert report.error is None
    dtmf = [m for _, m in gw.events_of("dtmf")]
    assert [m["dtmf"] for m in dtmf] == [{"track": "inbound_track", "digit": "1"}, {"track": "inbound_track", "digit": "#"}]
    assert all(m["streamSid"] == report.stream_sid and m["sequenceNumber"].isdigit() for m in dtmf)
    assert tp.parse(orjson.dumps(dtmf[0])) == tp.Dtmf(report.stream_sid, "1")
    turn = report.turns[0]
    assert turn.kind == "dtmf" and turn.latency_ms is not None and turn.latency_ms < 200
    with pytest.raises(ValueError):
        CallerTurn(dtmf="12x")


async def test_call_ends_cleanly_when_the_gateway_hangs_up(fake_gateway) -> None:
    gw = await fake_gateway(hangup_after_s=0.6)
    began = time.monotonic()
    report = await run_call(
        gw.url, [CallerTurn(text="one", at_ms=3000), CallerTurn(text="two")], speak=tone_speak
    )
    assert time.monotonic() - began < 3.0  # long before the first turn's at_ms
    assert report.hung_up_by_gateway and report.error is None and not report.completed
    assert report.close_code == 1000 and 0.55 <= report.duration_s <= 1.5
    assert not gw.events_of("stop")  # the gateway ended the call: no stop from us
    assert report.turns[0].speech_start is None
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("simcaller")]


async def test_malformed_gateway_messages_are_reported_not_fatal(fake_gateway) -> None:
    gw = await fake_gateway(greeting_ms=0, hangup_after_s=0.2, garbage=True)
    report = await run_call(gw.url, [CallerTurn(text="hi")], speak=tone_speak)
    assert report.hung_up_by_gateway and report.protocol_errors == 2
    assert report.error is not None and "invalid_json" in report.error
    assert report.received == b"" and report.turns[0].speech_start is None


async def test_call_is_bounded_by_max_call_s(fake_gateway) -> None:
    gw = await fake_gateway(greeting_ms=0)  # never says anything
    began = time.monotonic()
    report = await run_call(gw.url, [CallerTurn(text="hello?")], speak=tone_speak, max_call_s=0.8)
    assert 0.75 <= time.monotonic() - began < 2.5
    assert report.error is not None and "max_call_s" in report.error
    assert report.turns[0].speech_start is None and gw.events_of("stop")


async def test_unreachable_gateway_is_an_error_not_an_exception() -> None:
    report = await run_call("ws://127.0.0.1:9/twilio/media", [CallerTurn(text="hi")], speak=tone_speak)
    assert report.error is not None and report.error.startswith("connect failed")
    assert [t.index for t in report.turns] == [0] and report.turns[0].speech_start is None


def test_wav_round_trip(tmp_path) -> None:
    src = tmp_path / "in.wav"
    t = np.arange(16000 // 2) / 16000  # 0.5 s at 16 kHz, stereo
    left = (np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16)
    with wave.open(str(src), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.stack([left, left], axis=1).astype("<i2").tobytes())
    audio = load_wav_mulaw(str(src))
    assert len(audio) == 4000
    pcm = mulaw.decode(audio).astype(np.float64)
    assert 6000 < np.sqrt(np.mean(pcm[200:-200] ** 2)) < 8000  # the tone survived, ~10000/sqrt(2)

    out = tmp_path / "out.wav"
    save_wav(str(out), audio)
    with wave.open(str(out), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 8000, 4000)
        back = np.frombuffer(w.readframes(4000), dtype="<i2")
    assert np.array_equal(back, mulaw.decode(audio))
    assert mulaw.encode(back.astype(np.int16)) == audio

    with wave.open(str(tmp_path / "u8.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80" * 100)
    with pytest.raises(ValueError):
        load_wav_mulaw(str(tmp_path / "u8.wav"))


async def test_cli_speaks_with_piper_and_prints_json_lines(fake_gateway, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    gw = await fake_gateway(replies=[[(500, 0.0, "r1")], [(300, 0.0, "r2")]])
    wav = tmp_path / "caller.wav"
    save_wav(str(wav), tone(300, 300.0))
    out = tmp_path / "reply.wav"
    argv = [
        "--url", gw.url, "--token", "s3cret", "--from", "+15550001111",
        "--say", "Book me in, please.", "--wav", str(wav),
        "--save-reply", str(out), "--reply-quiet-ms", "200", "--gap-ms", "100", "--max-call-s", "20",
    ]
    code = await asyncio.to_thread(simcaller.main, argv)
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [line.get("turn") for line in lines[:2]] == [0, 1] and lines[2]["summary"] is True
    said, played = lines[:2]
    assert said["text"] == "Book me in, please." and played["text"] == str(wav)
    for line in (said, played):
        # the fake ends speech at its last non-0xFF frame: Piper's quiet tail makes it early
        assert line["latency_ms"] is not None and 150 <= line["latency_ms"] <= 700
        assert line["clear_ms"] is None and line["interrupted"] is False
    assert lines[2]["error"] is None and lines[2]["turns"] == 2 and lines[2]["marks_echoed"] == 3

    assert gw.request_path == "/twilio/media?token=s3cret"
    assert gw.events_of("start")[0][1]["start"]["customParameters"] == {"From": "+15550001111"}
    media = [b64decode(m["media"]["payload"]) for _, m in gw.events_of("media")]
    spoken = sum(1 for p in media if p != b"\xff" * 160)
    assert spoken >= 50  # Piper's ~1.3 s sentence and the 0.3 s WAV went out
    with wave.open(str(out), "rb") as w:
        assert w.getframerate() == 8000 and w.getnframes() == (400 + 500 + 300) * 8


def test_cli_rejects_a_malformed_header(capsys) -> None:
    assert simcaller.main(["--header", "novalue", "--url", "ws://127.0.0.1:9/twilio/media"]) == 1
    assert "NAME=VALUE" in capsys.readouterr().err


async def test_messages_are_stamped_when_their_bytes_came_off_the_socket():
    """`reply_arrival` must not count the caller's own loop lateness: the stamp is the read, not `recv`."""
    async def burst(ws: ServerConnection) -> None:
        for n in range(3):
            await ws.send(f"message {n}")
        await ws.wait_closed()

    async with serve(burst, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with simcaller.connect(f"ws://127.0.0.1:{port}",
                                     create_connection=simcaller.ArrivalStampedConnection) as ws:
            await asyncio.sleep(0.02)  # all three are read off the socket while nobody is receiving
            while len(ws.arrivals) < 3:
                await asyncio.sleep(0.01)
            time.sleep(0.1)  # this loop is late, as a loaded caller's is
            got = [(await ws.recv(), ws.arrival(), time.monotonic()) for _ in range(3)]
            assert [text for text, _, _ in got] == ["message 0", "message 1", "message 2"]
            for _, arrived, handed_over in got:
                assert handed_over - arrived >= 0.1
            assert not ws.arrivals
            assert ws.arrival() >= got[-1][2]  # nothing left to stamp: now


async def test_a_sender_held_up_by_flow_control_queues_in_order_and_catches_up(fake_gateway) -> None:
    """Frames go out from timer callbacks without a coroutine (`send_now`) while the socket takes them;
    when its buffer is full they wait, in order, behind the first that could not go, and the clock
    catches up (or slips) once it drains, as a late wake-up would."""
    gw = await fake_gateway(greeting_ms=0)
    async with simcaller.connect(gw.url, create_connection=simcaller.ArrivalStampedConnection,
                                 compression=None) as ws:
        call = simcaller._Call(ws, call_sid="CA" + "2" * 32, stream_sid="MZ" + "2" * 32, parameters={},
                               turns=[], frames=[], reports=[], reply_quiet_s=0.2, max_reply_wait_s=1.0,
                               wait_for_greeting=False, record=False)
        await call.open()
        sender = asyncio.create_task(call.send_loop())
        await asyncio.sleep(0.1)
        ws.pause_writing()  # what the transport calls when its buffer passes the high-water mark
        await asyncio.sleep(0.3)
        held = len(call._backlog)
        ws.resume_writing()
        await asyncio.sleep(0.1)
        sent_by_now = call.chunk
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await call.send_stop()
    while not gw.events_of("stop"):
        await asyncio.sleep(0.01)
    assert held == 1  # the first frame that could not go waits; the clock stops until it has gone
    media = gw.events_of("media")
    assert len(media) == sent_by_now
    assert [m["media"]["chunk"] for _, m in media] == [str(i) for i in range(1, len(media) + 1)]
    assert [m["sequenceNumber"] for _, m in gw.events[1:]] == [str(i) for i in range(1, len(gw.events))]
    # 0.5 s of clock: the 0.3 s held back went out on resuming, up to MAX_CATCHUP_S of it; the rest slipped
    assert call.clock_slip_s > 0.1
    assert len(media) >= int((0.5 - call.clock_slip_s) / simcaller.FRAME_S) - 2
