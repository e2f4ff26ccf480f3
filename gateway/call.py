"""One phone call's I/O: the Media Streams socket, the provider streams, and the core between them.

`MediaCall.run` reads Twilio's messages (once the call is up, the server hands each one over as it
comes off the socket: `gateway.direct_receive`), turns them into events for the `CallSession`, and
carries out the actions it returns: frames and marks go to the socket, utterances to the STT stream,
reply requests to a reply task, sentences to TTS one after another. Provider tasks feed their results
back as events. What a core step asks for happens in the same loop turn, once all its actions are carried
out: its frames are written (a task only carries on a send that has to wait) and the tasks it starts
take their first step (`eager_tasks`), so nothing waits behind the rest of the loop between a
provider's event and what it causes. Every task of the call is cancelled when the call ends,
whatever ended it, and one call's failure never reaches another.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from dialog.responder import ReplyEnd, Responder
from gateway import eager_tasks, metrics, tracing
from gateway.direct_receive import DIRECT_RECEIVE
from dialog.events import (
    Action, AnalyzeSpeech, CallEnded, CallStarted, CancelReply, DtmfReceived, Event, ForwardAudio, HangUp,
    Interruption, MarkEchoed, ProviderFailed, ReplyDelta, ReplyDone, SendClear, SendMark, SendMedia, SpeechAnalyzed,
    SpeechAudio, SpeechDone, StartReply, Synthesize, Tick, TranscribeUtterance, TranscriptReceived, TurnTimings,
)
from gateway.logs import call_sid_var, event as log_event, mask_number, stream_sid_var
from gateway.session import CallSession, SessionSettings
from gateway import twilio_protocol as tp
from providers.base import CallInfo, ProviderError, SttResult, SttStream, TtsStream

log = logging.getLogger("voicegate.call")

# Outbound messages queued but not yet written: 10 s of audio or more. A peer that stops reading
# for that long is gone or hostile; closing it frees the memory instead of buffering a whole reply.
MAX_OUTBOUND_BACKLOG = 500
# The 20 ms frames a core step sends together go in one `media` message (Twilio: a payload "can be of
# any size", played in order): one JSON message, one WebSocket frame and one socket write instead of
# five for the pacer's 100 ms batch. Up to this many frames a message (1 s of audio).
MEDIA_FRAMES_PER_MESSAGE = 50
# Close codes (RFC 6455 private range 4000-4999 for ours).
CLOSE_NORMAL = 1000
CLOSE_FORBIDDEN = 1008  # policy violation: a handshake refused before accept is answered 403
CLOSE_TOO_BIG = 1009
CLOSE_SLOW_CONSUMER = 4002
CLOSE_BAD_PROTOCOL = 4003
CLOSE_BUSY = 4029  # over MAX_CONCURRENT_CALLS
CLOSE_NOT_READY = 1013  # "try again later": engines still loading
CLOSE_FLOOD = 4008
# 1012 "service restart" (IANA): this instance is going away. A media stream refused while draining,
# or handed over at the drain deadline; Twilio then runs the <Redirect> after <Connect>, which brings
# the caller to another instance.
CLOSE_RESTARTING = 1012
# A hand-over's context must be in Redis before the stream closes (the next instance reads it at once).
HANDOVER_SAVE_TIMEOUT_SECONDS = 2.0
CLOSE_TIMEOUT_SECONDS = 2.0
STREAM_CLOSE_TIMEOUT_SECONDS = 2.0  # a provider slow to close must not hold the call's resources
REST_HANGUP_GRACE_SECONDS = 3.0  # Twilio stops the stream within a second or two of a REST hang-up
METRIC_BATCH_FRAMES = 50  # one second of inbound audio
LOGGED_PROTOCOL_ERRORS = 5  # per call; the metric counts them all
# Inbound audio: a phone sends 8000 bytes/s. Network jitter bunches frames, so a burst of a few
# seconds is normal; audio sustained at several times real time is a broken or hostile client, and
# each frame costs VAD time that other calls need.
INBOUND_RATE_FACTOR = 3.0
INBOUND_BURST_SECONDS = 5.0
FLOOD_DROPS_BEFORE_CLOSE = 250  # 5 s worth of 20 ms frames dropped


class InboundAudioBudget:
    """A token bucket over inbound audio bytes."""

    def __init__(self, rate: float = 8000 * INBOUND_RATE_FACTOR, burst: float = 8000 * INBOUND_BURST_SECONDS) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last: float | None = None
        self.dropped = 0

    def allow(self, nbytes: int, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if nbytes <= self._tokens:
            self._tokens -= nbytes
            return True
        self.dropped += 1
        return False


@dataclass
class CallServices:
    """What a call needs from its process: passed in, never imported as globals."""

    settings: object  # providers.settings.Settings
    engines: object  # providers.engines.Engines
    make_responder: Callable[[CallInfo, dict | None], Responder]  # (call, dialog snapshot to resume)
    store: object | None = None  # dialog.store.Store (sync; used through `run_store`)
    run_store: Callable[..., Awaitable[object]] | None = None  # runs a store call off the event loop
    hang_up: Callable[[str, str], Awaitable[bool]] | None = None  # (call_sid, transfer_to) via Twilio REST
    on_call_event: Callable[[str, dict], None] | None = None  # live feed for the dashboard
    calls: dict[str, "MediaCall"] = field(default_factory=dict)
    shared: object | None = None  # gateway.shared_state.LocalState | RedisState
    tracer: object | None = None  # gateway.tracing.CallTracer when tracing is on (OTEL_*); None costs nothing


class MediaCall:
    def __init__(self, ws: WebSocket, services: CallServices, session_settings: SessionSettings,
                 direction: str = "inbound") -> None:
        self.ws = ws
        self.services = services
        detector = getattr(services.engines, "speech", None)  # the model VAD, if it loaded
        # This call's own run of it, which goes on from its last analysis (providers.speech_model).
        self._speech = None
        if detector is not None:
            from providers.speech_model import SpeechStream  # the `local` extra, loaded with the detector

            self._speech = SpeechStream(detector)
        if self._speech is None and session_settings.model_vad:
            session_settings = replace(session_settings, model_vad=False)
        self.session = CallSession(session_settings)
        self._audio = self.session.audio  # the per-frame step, bound once
        self.direction = direction
        self.loop = asyncio.get_running_loop()
        self.info: CallInfo | None = None
        self.caller = ""
        self.started_wall = time.time()
        self.end_reason = "closed"
        self._out: deque[str] = deque()
        self._writing: asyncio.Task | None = None  # a send that had to wait, while it waits (`_write_out`)
        self._tasks: set[asyncio.Task] = set()
        self._core_depth = 0  # core steps under way (one nests in another when an action feeds back)
        self._first_steps: list[Callable[[], None]] = []  # of eager tasks (`_spawn`), run after the core step
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._stt: SttStream | None = None
        self._tts: TtsStream | None = None
        self._responder: Responder | None = None
        self._reply_task: asyncio.Task | None = None
        self._sentences: deque[Synthesize] = deque()  # waiting for the sentence before them
        self._live_turn: int | None = None  # the reply turn whose sentences are still wanted
        self._synth_task: asyncio.Task | None = None
        self._synth_turn: int | None = None
        self._pending_start: tp.Start | None = None
        self._closing = False  # the call is ending: no new timers, no new sends
        self._closed = False  # the close frame has been sent
        self._close_with = (CLOSE_NORMAL, "call ended")  # the code `run` closes with when the call ends
        self._direct_done: asyncio.Future | None = None  # the direct handler's last message (`_receive_directly`)
        self._inbound = InboundAudioBudget()
        self._at_rest: asyncio.Future | None = None  # a hand-over waiting for a quiet moment (`hand_over`)
        self._handover = ""  # "planned" once handed over at a quiet moment: every later context save says so
        self._context_saving: asyncio.Task | None = None  # the latest context save, which a hand-over follows
        self._protocol_errors = 0
        self._frames_in = self._frames_out = 0  # counted here, added to the metrics in batches
        self.turns: list[dict] = []
        self._trace: tracing.CallTrace | None = None  # the call's spans, when tracing is on
        # turn -> what its first audio waited for (`ReplyEnd.kind`: quick, cache, llm, llm_tool, rules),
        # kept until the turn is recorded, for latency per turn kind.
        self._reply_kinds: dict[int, str] = {}

    # ------------------------------------------------------------------ socket loop

    async def run(self) -> None:
        try:
            while True:
                result = self._take(await self.ws.receive())
                if result is None:  # a `start`: it loads the conversation to resume, if any
                    result = await self._on_start(self._pending_start)
                    if result and self._receive_directly():
                        await self._direct_done  # until the handler's last message
                        break
                if not result:
                    break
        except WebSocketDisconnect:
            pass
        except Exception:  # a bug here must end this call cleanly, never the process
            self._loop_failed()
        finally:
            await self._end()
            await self._close(*self._close_with)
            # The streams call back into this call (bound methods of it): with them dropped, the
            # call and its buffers are freed when the server lets go of it, not by a full collection.
            self._stt = self._tts = None

    def _receive_directly(self) -> bool:
        """Once the call is up, take the socket's messages as they arrive (`gateway.direct_receive`),
        not a loop turn later through `receive()`. False when the server cannot (another server)."""
        install = self.ws.scope.get("extensions", {}).get(DIRECT_RECEIVE)
        if install is None:
            return False
        self._direct_done = self.loop.create_future()
        context = contextvars.copy_context()  # the call's log ids, for what the handler logs or starts
        install(lambda message: context.run(self._take_directly, message))
        return True

    def _take_directly(self, message: dict) -> bool:
        try:
            result = self._take(message)
        except Exception:  # as in `run`: this call ends, the protocol and the process go on
            self._loop_failed()
            result = False
        if result:
            return True
        if not self._direct_done.done():
            self._direct_done.set_result(None)
        return False

    def _loop_failed(self) -> None:
        log.exception("call loop failed")
        metrics.ERRORS.labels("call_loop", "gateway").inc()
        self.end_reason = "error"

    def _take(self, message: dict) -> bool | None:
        """One message from the socket. False ends the call; None means a `start` to handle (async)."""
        if message["type"] == "websocket.disconnect":
            return False
        raw = message.get("text")
        if raw is None:
            metrics.PROTOCOL_ERRORS.labels("binary_frame").inc()
            return True  # Twilio sends text only; a binary frame is noise, not a reason to drop the call
        if len(raw) > self.services.settings.max_message_bytes:
            metrics.PROTOCOL_ERRORS.labels("message_too_large").inc()
            log_event(log, "message too large: closing", logging.WARNING, size=len(raw))
            self.end_reason = "protocol"
            self._close_with = (CLOSE_TOO_BIG, "message too large")
            return False
        return self._on_message(raw)

    def _on_message(self, raw: str) -> bool | None:
        """Handle one inbound frame. False ends the call; None means a `start` to handle (async)."""
        limit = self.services.settings.max_media_payload_bytes
        try:
            data = tp.load(raw)
            if data.get("event") == "media":  # 50 a second per call: no message or event objects
                sid, payload = tp.media_payload(data, limit)
                return self._on_media(sid, payload)
            msg = tp.message(data, max_payload_bytes=limit)
        except tp.ProtocolError as exc:
            metrics.PROTOCOL_ERRORS.labels(exc.reason).inc()
            self._protocol_errors += 1
            if self._protocol_errors <= LOGGED_PROTOCOL_ERRORS:  # a hostile peer must not flood the logs too
                log_event(log, "ignored malformed message", logging.WARNING, reason=exc.reason,
                          count=self._protocol_errors)
            return True
        info = self.info
        match msg:
            case tp.Mark():
                if info is not None:
                    self._feed(MarkEchoed(self.loop.time(), msg.name))
            case tp.Dtmf():
                if info is not None:
                    self._feed(DtmfReceived(self.loop.time(), msg.digit))
            case tp.Start():
                if info is not None or self._pending_start is not None:
                    metrics.PROTOCOL_ERRORS.labels("second_start").inc()
                    return True
                self._pending_start = msg
                return None
            case tp.Stop():
                self.end_reason = "stop"
                return False
            case tp.Connected():
                pass
            case _:
                metrics.PROTOCOL_ERRORS.labels("unexpected_event").inc()
        return True

    def _on_media(self, stream_sid: str, payload: bytes) -> bool:
        info = self.info
        if info is None:
            metrics.PROTOCOL_ERRORS.labels("media_before_start").inc()
            return True
        if stream_sid and stream_sid != info.stream_sid:
            metrics.PROTOCOL_ERRORS.labels("wrong_stream_sid").inc()
            return True
        self._frames_in += 1
        if self._frames_in >= METRIC_BATCH_FRAMES:
            self._flush_frame_counts()
        now = self.loop.time()
        if not self._inbound.allow(len(payload), now):
            return self._on_flood()
        self._core(self._audio, now, payload)
        return True

    async def _on_start(self, msg: tp.Start) -> bool:
        services = self.services
        params = dict(msg.custom_parameters)
        call_sid = msg.call_sid or params.get("callSid", "") or msg.stream_sid
        self.info = CallInfo(call_sid=call_sid, stream_sid=msg.stream_sid, parameters=params)
        self.caller = params.get("caller", params.get("From", ""))
        self.direction = params.get("direction", self.direction)
        call_sid_var.set(call_sid)
        stream_sid_var.set(msg.stream_sid)
        if call_sid in services.calls:
            # A second stream for a live call: a replay or a forgery. The first one keeps the call.
            metrics.PROTOCOL_ERRORS.labels("duplicate_call").inc()
            self.info = None
            return False
        services.calls[call_sid] = self
        # A stream for a call that was cut off (its worker died, or the network dropped): carry on
        # where it was. Twilio's <Redirect> after <Connect> brings the caller back here.
        context = await services.shared.load_context(call_sid) if services.shared is not None else None
        if self.info is None or services.calls.get(call_sid) is not self:
            return False
        if services.tracer is not None:  # the call's span, current from here on in its tasks and log lines
            self._trace = services.tracer.start_call(self.loop, call_sid, msg.stream_sid, self.direction,
                                                     self.started_wall, context is not None, services.engines)
        metrics.ACTIVE_CALLS.inc()
        metrics.CALLS.labels(self.direction).inc()
        log_event(log, "call resumed" if context else "call started", caller=mask_number(self.caller),
                  direction=self.direction, attempt=params.get("attempt"))
        if context is None:
            self._store("start_call", call_sid, msg.stream_sid, self.caller, self.direction, self.started_wall)
        self._register()
        self._notify("call_started", {"caller": mask_number(self.caller), "direction": self.direction,
                                      "resumed": context is not None})
        engines = services.engines
        self._responder = services.make_responder(self.info, (context or {}).get("dialog"))
        self._stt = engines.stt.open_stream(self.info, self._on_stt_result)
        self._tts = engines.tts.open_stream(self.info)
        self._spawn(self._start_stt())
        history = tuple(context["history"]) if context else ()
        self._feed(CallStarted(self.loop.time(), call_sid, msg.stream_sid, params, history=history,
                               resume=context is not None))
        return True

    def _register(self) -> None:
        if self.services.shared is not None and self.info is not None:
            self._spawn_detached(self.services.shared.register_call(self.info.call_sid, {
                "caller": mask_number(self.caller), "direction": self.direction, "started_at": self.started_wall}))

    def _save_context(self) -> None:
        """After every turn: what a new stream needs to carry on this conversation."""
        if self.services.shared is None or self.info is None or self._responder is None:
            return
        self._context_saving = self._spawn_detached(
            self.services.shared.save_context(self.info.call_sid, self._context()))

    def _context(self) -> dict:
        dialog = self._responder.snapshot()
        if self._handover:
            dialog = {**dialog, "handover": self._handover}  # the next instance resumes without an apology
        return {"history": list(self.session.history), "dialog": dialog, "caller": self.caller}

    def _spawn_detached(self, coro) -> asyncio.Task:
        """Shared-state writes outlive the call's tasks (the last one happens as the call ends)."""
        task = self.loop.create_task(coro)
        _DETACHED.add(task)
        task.add_done_callback(_DETACHED.discard)
        return task

    # ------------------------------------------------------------------ hand-over (a drain)

    async def hand_over(self, wait: float) -> str:
        """Hand this call to another instance: at its next quiet moment (`CallSession.at_rest`: the
        reply played, the caller silent, nothing owed), or after `wait` seconds regardless, save its
        context and close the stream (1012). Twilio's <Redirect> brings the caller to another
        instance, which resumes the conversation; after a quiet hand-over it only asks the pending
        question again, with no apology (nothing was cut off), after a forced one it apologises as
        for any cut-off call. Returns "quiet" or "forced", or "" if the call ended meanwhile."""
        if self.info is None or self._closing:
            return ""
        moment = "quiet"
        if not self.session.at_rest:
            self._at_rest = self.loop.create_future()
            try:
                async with asyncio.timeout(wait):
                    await self._at_rest
            except TimeoutError:
                moment = "forced"
            finally:
                self._at_rest = None
        if self.info is None or self._closing:
            return ""
        self.end_reason = "handover"
        if moment == "quiet":
            self._handover = "planned"
        shared = self.services.shared
        if shared is not None and self._responder is not None:
            try:
                async with asyncio.timeout(HANDOVER_SAVE_TIMEOUT_SECONDS):
                    if self._context_saving is not None:
                        await asyncio.wait({self._context_saving})  # the last turn's save must not land after this one
                    await shared.save_context(self.info.call_sid, self._context())
            except TimeoutError:
                log_event(log, "hand-over context not saved in time", logging.WARNING)
        metrics.HANDOVERS.labels(moment).inc()
        log_event(log, "call handed over", moment=moment, turns=len(self.turns))
        await self._close(CLOSE_RESTARTING, "handed over to another instance")
        return moment

    async def _start_stt(self) -> None:
        try:
            await self._stt.start()
            # A streaming engine (Deepgram) gets the caller's speech as it comes; a batch engine
            # (whisper) gets each utterance whole. Known once the chain has picked its engine.
            self.session.forward_audio = bool(getattr(self._stt, "streaming", False))
        except ProviderError as exc:
            log_event(log, "speech-to-text failed to start", logging.ERROR, provider=exc.provider, error=str(exc))
            metrics.ERRORS.labels("stt_start", exc.provider).inc()
            self._feed(ProviderFailed(self.loop.time(), "stt", -1, str(exc)))

    # ------------------------------------------------------------------ core glue

    def _feed(self, event: Event) -> None:
        self._core(self.session.handle, event)

    def _core(self, step: Callable[..., list[Action]], *args: object) -> None:
        """One step of the core (`handle`, or `audio` for an inbound frame), then its actions; then,
        in the same loop turn, the frames they queued go out and the tasks they started take their
        first step (`_spawn(eager=True)`)."""
        self._core_depth += 1
        try:
            self._core_step(step, *args)
        finally:
            self._core_depth -= 1
        if not self._core_depth:
            if self._out and self._writing is None:
                self._write_out()
            if self._first_steps:
                self._run_first_steps()
            if self._at_rest is not None and not self._at_rest.done() and self.session.at_rest:
                self._at_rest.set_result(None)  # a hand-over was waiting for this moment

    def _core_step(self, step: Callable[..., list[Action]], *args: object) -> None:
        try:
            actions = step(*args)
        except Exception:  # a core bug: log it with the call's ids and keep the call's other parts going
            log.exception("call core failed in %s(%s)", step.__name__, type(args[-1]).__name__)
            metrics.ERRORS.labels("core", "gateway").inc()
            return
        if actions:
            self._execute(actions)
        elif step is self._audio and self._timer is not None:
            return  # a frame that asked for nothing never brings the core's deadline forward (CallSession.audio)
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.session.next_deadline()
        if deadline is None or self._closing:
            return
        if self._timer is not None:
            if self._timer_when <= deadline + 0.001:
                return  # an earlier wake-up is already set; it re-arms for this one
            self._timer.cancel()
        self._timer_when = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._feed(Tick(self.loop.time()))

    def _execute(self, actions: list[Action]) -> None:
        stream_sid = self.info.stream_sid if self.info else ""
        frames: list[bytes] = []  # consecutive SendMedia, sent as one message
        for action in actions:
            if type(action) is SendMedia:
                frames.append(action.payload)
                if len(frames) < MEDIA_FRAMES_PER_MESSAGE:
                    continue
            if frames:
                self._send_media(stream_sid, frames)
                frames = []
            match action:
                case SendMark():
                    self._send(tp.mark_message(stream_sid, action.name))
                case SendClear():
                    # Frames still in our queue must not follow the clear to the caller.
                    self._out.clear()
                    self._send(tp.clear_message(stream_sid))
                    metrics.BARGE_INS.inc()
                case ForwardAudio():
                    if self._stt is not None:
                        self._stt.send_audio(action.audio)
                case TranscribeUtterance():
                    if self._stt is not None:
                        self._stt.end_of_speech(action.audio)
                case Synthesize():
                    self._sentences.append(action)
                    if self._synth_task is None:
                        self._next_sentence()
                case StartReply():
                    self._start_reply(action)
                case CancelReply():
                    self._cancel_reply(action)
                case TurnTimings():
                    self._record_turn(action)
                case AnalyzeSpeech():
                    self._analyze_speech(action)
                case Interruption():
                    metrics.INTERRUPTIONS.labels(action.outcome).inc()
                    log_event(log, "interruption", outcome=action.outcome, turn_id=action.turn_id,
                              paused_ms=action.paused_ms)
                case HangUp():
                    self._spawn(self._hang_up(action))
        if frames:
            self._send_media(stream_sid, frames)

    def _send_media(self, stream_sid: str, frames: list[bytes]) -> None:
        self._send(tp.media_message(stream_sid, b"".join(frames)))
        self._frames_out += len(frames)

    def _send(self, message: str) -> None:
        if len(self._out) >= MAX_OUTBOUND_BACKLOG:
            metrics.FRAMES_DROPPED.inc()
            if not self._closing:
                log_event(log, "peer is not reading: closing", logging.WARNING, backlog=len(self._out))
                self.end_reason = "slow_consumer"
                self._spawn(self._close(CLOSE_SLOW_CONSUMER, "not reading"))
            return
        self._out.append(message)
        if not self._core_depth and self._writing is None:
            self._write_out()  # else when the core step is done, with the rest of its frames

    def _write_out(self) -> None:
        """Write the queued frames now, in this loop turn: a writer task woken for them would first
        wait behind everything else ready in the loop. A send that must wait (the socket's buffer is
        full) is carried on by a task; the frames behind it go when it is done."""
        out, send = self._out, self.ws.send_text
        while out and self._writing is None and not self._closing:
            sending = send(out.popleft())
            try:
                waits_on = sending.send(None)
            except StopIteration:
                continue
            except Exception as exc:  # the socket is gone: the receive loop ends the call
                sending.close()
                self._report_failure(exc)
                return
            self._writing = task = eager_tasks.adopt(sending, waits_on, loop=self.loop)
            self._tasks.add(task)
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task) -> None:
        self._task_done(task)
        self._writing = None
        if not task.cancelled() and task.exception() is None:
            self._write_out()

    def _analyze_speech(self, action: AnalyzeSpeech) -> None:
        """Run the model VAD in its worker thread; its answer comes back as an event. A failure is logged
        and left unanswered: the core's verdict timeout lets the energy VAD decide."""
        metrics.SPEECH_ANALYSES.inc()
        future = self.loop.run_in_executor(self.services.engines.speech_pool, self._speech.analyze,
                                           action.audio, action.reference, action.max_lag, action.start)
        request = action.request_id
        context = contextvars.copy_context()

        def done(f: asyncio.Future) -> None:
            if f.cancelled() or self._closing:
                return
            if f.exception() is not None:
                context.run(log_event, log, "speech analysis failed", logging.WARNING,
                            error=type(f.exception()).__name__)
                metrics.ERRORS.labels("speech_model", "silero").inc()
                return
            result = f.result()
            context.run(self._feed, SpeechAnalyzed(self.loop.time(), request, result.probabilities,
                                                   result.levels_dbfs, result.echo_erle_db))

        future.add_done_callback(done)

    # ------------------------------------------------------------------ replies

    def _start_reply(self, action: StartReply) -> None:
        if self._reply_task is not None:
            self._reply_task.cancel()
        self._live_turn = action.turn_id
        with tracing.reply_context(self._trace, action.turn_id):  # its requests' spans go under the turn's
            self._reply_task = self._spawn(self._run_reply(action), eager=True)  # the LLM request goes out now

    async def _run_reply(self, action: StartReply) -> None:
        turn = action.turn_id
        end = ReplyEnd()
        try:
            async for piece in self._responder.reply(action):
                if isinstance(piece, ReplyEnd):
                    end = piece
                    break
                self._feed(ReplyDelta(self.loop.time(), turn, piece))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._provider_failed("llm", turn, exc, default_provider="dialog")
            return
        if end.kind:
            self._reply_kinds[turn] = end.kind
        self._feed(ReplyDone(self.loop.time(), turn, hang_up=end.hang_up, transfer_to=end.transfer_to))

    def _cancel_reply(self, action: CancelReply) -> None:
        if self._live_turn == action.turn_id:
            self._live_turn = None
            if self._reply_task is not None:
                self._reply_task.cancel()
                self._reply_task = None
        if self._synth_turn == action.turn_id and self._synth_task is not None:
            self._synth_task.cancel()
        if action.rollback and self._responder is not None:
            self._responder.rollback(action.turn_id)

    def _next_sentence(self) -> None:
        """Synthesize the next waiting sentence of the live reply. One at a time, so their audio
        reaches the pacer in order; each starts at once, not a loop turn later."""
        while self._sentences:
            item = self._sentences.popleft()
            if item.turn_id == self._live_turn:  # else the reply was cancelled while it waited
                break
        else:
            return
        self._synth_turn = item.turn_id
        self._synth_task = self._spawn(self._synthesize(item), eager=True)
        self._synth_task.add_done_callback(self._sentence_done)

    def _sentence_done(self, task: asyncio.Task) -> None:
        if task is not self._synth_task:
            return
        self._synth_task = self._synth_turn = None
        if not self._closing:
            self._next_sentence()
            self._run_first_steps()

    async def _synthesize(self, item: Synthesize) -> None:
        try:
            async for chunk in self._tts.synthesize(item.text):
                self._feed(SpeechAudio(self.loop.time(), item.turn_id, item.sentence, chunk))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._provider_failed("tts", item.turn_id, exc, default_provider="tts")
            return
        self._feed(SpeechDone(self.loop.time(), item.turn_id, item.sentence))

    def _provider_failed(self, role: str, turn: int, exc: Exception, default_provider: str) -> None:
        """A role gave up on a turn after its own fallbacks: log it, count it, and let the core apologise."""
        provider = getattr(exc, "provider", default_provider)
        log_event(log, f"{role} failed for the turn", logging.ERROR, provider=provider, error=type(exc).__name__)
        metrics.ERRORS.labels(role, provider).inc()
        self._feed(ProviderFailed(self.loop.time(), role, turn, type(exc).__name__))

    def _on_stt_result(self, result: SttResult) -> None:
        if self.session.phase.value != "active":
            return
        self._feed(TranscriptReceived(self.loop.time(), result.text, result.is_final, result.end_of_turn,
                                      unclear=result.unclear, language=result.language))

    # ------------------------------------------------------------------ turn records, hang-up, end

    def _record_turn(self, timings: TurnTimings) -> None:
        split = timings.split()
        kind = self._reply_kinds.pop(timings.turn_id, "")
        turn = {
            "turn_id": timings.turn_id,
            "user_text": timings.user_text,
            "agent_text": timings.agent_text,
            "heard_text": timings.heard_text,
            "interrupted": timings.interrupted,
            "dtmf": timings.dtmf,
            "backchannel": timings.backchannel,
            # The kind goes with the timings, which the store keeps whole: latency per turn kind.
            "timings": {**split, "reply_kind": kind} if kind else split,
            "at": time.time(),
        }
        self.turns.append(turn)
        if (timings.user_text is not None or timings.dtmf) and not timings.backchannel:
            metrics.TURNS.labels(str(timings.interrupted).lower()).inc()
        metrics.observe_turn(split)
        if self._trace is not None:
            self._trace.turn(timings)
        log_event(log, "turn", turn_id=timings.turn_id, interrupted=timings.interrupted, dtmf=timings.dtmf or None,
                  user_chars=len(timings.user_text or ""), **{k: v for k, v in split.items() if v is not None})
        if self.info is not None:
            self._store("add_turn", self.info.call_sid, turn)
            self._notify("turn", turn)
            self._save_context()

    async def _hang_up(self, action: HangUp) -> None:
        info = self.info
        if info is None:
            return
        self.end_reason = f"hangup:{action.reason}"
        how = f"transfer:{action.transfer_to}" if action.transfer_to else "hangup"
        if self.services.shared is not None:
            await self.services.shared.mark_ended(info.call_sid, how)
        hung_up = False
        if self.services.hang_up is not None:
            try:
                hung_up = await self.services.hang_up(info.call_sid, action.transfer_to)
            except Exception as exc:
                log_event(log, "REST hang-up failed; closing the stream instead", logging.WARNING,
                          error=type(exc).__name__)
        if hung_up:
            # Twilio ends the stream itself (with `stop`) once the REST update takes effect; if it has
            # not after a grace period, close our side so nothing is held open.
            await asyncio.sleep(REST_HANGUP_GRACE_SECONDS)
        else:
            # Closing the stream makes Twilio run the TwiML after <Connect>, which asks /twilio/voice
            # again; it finds this call ended and answers <Hangup/> (or <Dial> for a transfer).
            await self._drain(1.0)
        await self._close(CLOSE_NORMAL, "call ended")

    async def _drain(self, timeout: float) -> None:
        deadline = self.loop.time() + timeout
        while self._out and self.loop.time() < deadline:
            await asyncio.sleep(0.02)

    def _flush_frame_counts(self) -> None:
        """Prometheus counters take a lock per increment: one per 50 frames, not one per frame."""
        metrics.FRAMES_IN.inc(self._frames_in)
        metrics.FRAMES_OUT.inc(self._frames_out)
        self._frames_in = self._frames_out = 0

    def _on_flood(self) -> bool:
        """Audio arrives much faster than a phone can speak: drop it; if it goes on, end the call."""
        metrics.PROTOCOL_ERRORS.labels("media_flood").inc()
        if self._inbound.dropped >= FLOOD_DROPS_BEFORE_CLOSE:
            log_event(log, "media flood: closing", logging.WARNING, dropped=self._inbound.dropped)
            self.end_reason = "flood"
            self._close_with = (CLOSE_FLOOD, "media faster than real time")
            return False
        return True

    async def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        if self.ws.application_state == WebSocketState.CONNECTED:
            try:
                # A peer that does not read cannot take a close frame either: do not wait on it forever.
                # (asyncio.timeout, not wait_for: wait_for's inner task and the exception it raises
                # here, a peer gone already, would hold each other and this call in a cycle.)
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await self.ws.close(code, reason)
            except Exception:  # already gone, or not reading
                pass

    def _spawn(self, coro, *, eager: bool = False) -> asyncio.Task:
        """A task of the call. An eager one runs its first step in this loop turn, not the next, once
        the core step under way has carried out all its actions (outside a core step: when the
        caller runs `_run_first_steps`). A first step can feed the core again (a cached reply is
        there at once) and must not do so in the middle of them, nor before its task is recorded."""
        if eager:
            task, first_step = eager_tasks.prepare(coro, loop=self.loop)
            self._first_steps.append(first_step)
        else:
            task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _run_first_steps(self) -> None:
        while self._first_steps:
            self._first_steps.pop(0)()

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._report_failure(task.exception())

    def _report_failure(self, exc: BaseException) -> None:
        log.error("call task failed", exc_info=exc)
        metrics.ERRORS.labels("task", "gateway").inc()

    async def _end(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        info = self.info
        # The STT stream closes first: its last words (a streaming engine flushes on close) still
        # reach the core, so the stored transcript has everything the caller said.
        await self._close_stream(self._stt)
        self._feed(CallEnded(self.loop.time(), self.end_reason))
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await self._close_stream(self._tts)
        if self._tasks:
            await asyncio.wait(self._tasks - {current}, timeout=2.0)
        if info is None:
            return
        if self.services.calls.get(info.call_sid) is self:
            del self.services.calls[info.call_sid]
            metrics.ACTIVE_CALLS.dec()
            if self.services.shared is not None:
                self._spawn_detached(self.services.shared.unregister_call(info.call_sid))
                if self.end_reason == "stop":  # Twilio ended the call: there is nothing to resume
                    self._spawn_detached(self.services.shared.drop_context(info.call_sid))
        self._flush_frame_counts()
        metrics.CALLS_ENDED.labels(self.end_reason.split(":")[0]).inc()
        if self.session.underruns:
            metrics.UNDERRUNS.inc(self.session.underruns)
        log_event(log, "call ended", reason=self.end_reason, turns=len(self.turns),
                  duration_s=round(time.time() - self.started_wall, 2))
        if self._trace is not None:
            self._trace.end(self.end_reason, len(self.turns))
        self._store("end_call", info.call_sid, time.time(), self.end_reason)
        self._notify("call_ended", {"reason": self.end_reason})

    async def _close_stream(self, stream) -> None:
        if stream is None:
            return
        try:
            async with asyncio.timeout(STREAM_CLOSE_TIMEOUT_SECONDS):  # as in `_close`: no wait_for cycle
                await stream.close()
        except Exception:
            log.warning("provider stream did not close cleanly", exc_info=True)

    def _store(self, method: str, *args: object) -> None:
        services = self.services
        if services.store is None or services.run_store is None:
            return
        task = self.loop.create_task(services.run_store(getattr(services.store, method), *args))
        task.add_done_callback(_log_store_failure)

    def _notify(self, kind: str, data: dict) -> None:
        if self.services.on_call_event is not None and self.info is not None:
            try:
                self.services.on_call_event(kind, {"call_sid": self.info.call_sid, **data})
            except Exception:
                log.exception("dashboard feed failed")


_DETACHED: set[asyncio.Task] = set()  # strong references, so a pending write is not collected mid-flight


def _log_store_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("transcript store write failed", exc_info=task.exception())
        metrics.ERRORS.labels("store", "sqlite").inc()
