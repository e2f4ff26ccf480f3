"""The call core: one `CallSession` per call, sans-I/O. `handle(event) -> list[action]`.

It owns the call's turn-taking and nothing else: caller audio goes into a ring buffer and the energy
VAD; the VAD's end of speech (or the STT engine's own endpointing, whichever is first) ends a caller
turn; the reply streams in as text deltas, is cut into sentences, each sentence is synthesized and
its audio is paced out in 20 ms frames with a mark after it. Marks come back when the caller has
heard the sentence, so at any moment the core knows what was heard.

Barge-in: caller speech while the agent is audible sends `clear`, cancels the reply, and the
history keeps only the sentences whose marks came back, plus the words of the sentence in flight
that had played by the time the caller started speaking (estimated from the pacer's playout clock).
Marks of a cancelled reply that Twilio echoes after a `clear` are stale and ignored: Twilio echoes
every pending mark on `clear`, so an echo then proves nothing.

If the caller resumes speaking after a turn ended but before any reply audio was sent, the reply is
cancelled (rolled back in the dialog) and the two utterances are answered together, so a pause in
mid-thought does not get two answers.

Time enters only as `event.now`. Nothing here awaits, logs, or touches a socket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum

from audio.framing import OutboundPacer, Mark as PacerMark
from audio.ring_buffer import RingBuffer
from audio.vad import EnergyVad, SpeechEnded, SpeechStarted, VadConfig
from dialog.chunker import SentenceChunker
from dialog.text_clean import clean_caller_text, clean_for_speech
from dialog.events import (
    Action, AudioReceived, CallEnded, CallStarted, CancelReply, DtmfReceived, Event, ForwardAudio, HangUp, MarkEchoed,
    ProviderFailed, ReplyDelta, ReplyDone, SendClear, SendMark, SendMedia, SpeechAudio, SpeechDone, StartReply,
    Synthesize, Tick, TranscribeUtterance, TranscriptReceived, TurnTimings,
)

SAMPLE_RATE = 8000


@dataclass(frozen=True)
class SessionSettings:
    end_of_speech_ms: int = 500  # VAD silence that ends a caller turn
    max_utterance_seconds: float = 30.0  # then the utterance is cut and processed
    preroll_ms: int = 300  # audio kept before the VAD onset, so the first syllable is not clipped
    tail_ms: int = 120  # audio kept after the last voiced frame: trailing consonants are quiet
    outbound_lead_ms: int = 300  # audio buffered ahead at the carrier
    outbound_batch_ms: int = 100  # frames go out in batches of about this much audio
    # Deepgram's endpointing (300 ms) usually beats the VAD's 500 ms; its end-of-turn is trusted only if
    # the caller has been quiet this long by our own VAD, so a mid-word pause does not end the turn.
    stt_turn_min_silence_ms: int = 200
    # Voiced audio goes to a streaming STT engine this much at a time (Deepgram asks for 20-250 ms
    # per message): one socket write per 100 ms of speech instead of five.
    stt_forward_batch_ms: int = 100
    # If marks stop coming back (a broken client), a reply counts as played this long after its audio.
    mark_grace_seconds: float = 2.0
    # A committed turn with no reply audio after this long gets an apology instead of silence.
    silence_watchdog_seconds: float = 6.0
    max_call_seconds: float = 1800.0
    idle_timeout_seconds: float = 15.0  # no inbound audio at all: the peer is gone
    max_caller_text_chars: int = 2000
    max_consecutive_failures: int = 3  # apologies in a row before a polite goodbye

    def vad_config(self) -> VadConfig:
        return replace(VadConfig(), end_silence_ms=self.end_of_speech_ms,
                       max_utterance_ms=int(self.max_utterance_seconds * 1000))


class Phase(Enum):
    NEW = "new"  # no `start` yet
    ACTIVE = "active"
    ENDED = "ended"


@dataclass
class _Reply:
    """The agent's reply to one turn, from StartReply until it has played or was cut off."""

    timings: TurnTimings
    chunker: SentenceChunker = field(default_factory=SentenceChunker)
    sentences: list[str] = field(default_factory=list)
    synthesized: int = 0  # sentences whose audio is complete
    heard: int = 0  # sentences whose marks came back
    mark_release: dict[int, tuple[float, float]] = field(default_factory=dict)  # sentence -> (starts, ends) at caller
    text_done: bool = False
    hang_up: bool = False
    transfer_to: str = ""
    audible: bool = False  # a frame of it has gone out
    reprompt: str = ""  # why this reply was not asked for by the caller ("apology")

    @property
    def turn_id(self) -> int:
        return self.timings.turn_id

    @property
    def finished_sending(self) -> bool:
        return self.text_done and self.synthesized == len(self.sentences)


class CallSession:
    def __init__(self, settings: SessionSettings = SessionSettings()) -> None:
        self.settings = settings
        self.phase = Phase.NEW
        self.call_sid = ""
        self.stream_sid = ""
        self.started_at = 0.0
        self.last_audio_at = 0.0
        self.history: list[dict[str, str]] = []
        self.turns: list[TurnTimings] = []  # completed turns, for the transcript store
        self.failures = 0  # consecutive provider failures
        self.forward_audio = False  # set by the driver when the STT engine streams (Deepgram)
        self._forwarded_to: int | None = None  # ring position forwarded so far while the caller speaks
        self._forward_batch = settings.stt_forward_batch_ms * SAMPLE_RATE // 1000  # mu-law: a byte per sample
        self._vad = EnergyVad(settings.vad_config())
        # The utterance limit plus pre-roll, so a maximal utterance is still whole when it is cut.
        self._ring = RingBuffer(int((settings.max_utterance_seconds + 1.0) * SAMPLE_RATE))
        self._pacer = OutboundPacer(lead=settings.outbound_lead_ms / 1000.0, batch=settings.outbound_batch_ms / 1000.0)
        self._next_turn = 0
        self._reply: _Reply | None = None
        self._pending_text: list[str] = []  # final transcripts not yet answered
        self._pending_dtmf = ""
        self._utterance_start: int | None = None  # ring position of the current utterance (with pre-roll)
        self._speech_ended_at: float | None = None
        self._vad_end_at: float | None = None
        self._awaiting_transcripts = 0  # utterances handed to a batch STT engine, not yet answered
        self._mark_names: dict[str, tuple[int, int]] = {}
        self._finish_deadline: float | None = None
        self._hangup_sent = False

    # ------------------------------------------------------------------ public

    @property
    def agent_speaking(self) -> bool:
        return self._reply is not None and self._reply.audible

    @property
    def reply_turn(self) -> int | None:
        return None if self._reply is None else self._reply.turn_id

    @property
    def frames_sent(self) -> int:
        return self._pacer.frames_sent

    @property
    def underruns(self) -> int:
        return self._pacer.underruns

    def next_deadline(self) -> float | None:
        """When the core next needs a `Tick`, if nothing else happens before."""
        # Called after every event (50 a second per call): plain comparisons, no temporary lists.
        due = self._pacer.next_deadline()
        for t in (self._finish_deadline, self._watchdog_deadline()):
            if t is not None and (due is None or t < due):
                due = t
        if self.phase is Phase.ACTIVE:
            settings = self.settings
            t = min(self.started_at + settings.max_call_seconds, self.last_audio_at + settings.idle_timeout_seconds)
            if due is None or t < due:
                due = t
        return due

    def handle(self, event: Event) -> list[Action]:
        if self.phase is Phase.ENDED:
            return []
        match event:
            case AudioReceived():
                return self._on_audio(event.now, event.payload)
            case Tick():
                return self._on_tick(event.now)
            case MarkEchoed():
                return self._on_mark(event)
            case SpeechAudio():
                return self._on_speech_audio(event)
            case SpeechDone():
                return self._on_speech_done(event)
            case ReplyDelta():
                return self._on_reply_delta(event)
            case ReplyDone():
                return self._on_reply_done(event)
            case TranscriptReceived():
                return self._on_transcript(event)
            case DtmfReceived():
                return self._on_dtmf(event)
            case ProviderFailed():
                return self._on_failure(event)
            case CallStarted():
                return self._on_start(event)
            case CallEnded():
                return self._on_end(event)
        raise TypeError(f"not an event: {event!r}")  # a programming error, not a peer's

    # ------------------------------------------------------------------ caller side

    def _on_start(self, ev: CallStarted) -> list[Action]:
        if self.phase is not Phase.NEW:
            return []
        self.phase = Phase.ACTIVE
        self.call_sid, self.stream_sid = ev.call_sid, ev.stream_sid
        self.started_at = self.last_audio_at = ev.now
        if ev.resume:
            self.history = [dict(m) for m in ev.history]
            return self._start_reply(ev.now, user_text=None, reprompt="resume")
        return self._start_reply(ev.now, user_text=None)

    def audio(self, now: float, payload: bytes) -> list[Action]:
        """`handle(AudioReceived(now, payload))` without the event object: a driver's per-frame path.

        A frame that returns no actions never brings `next_deadline` forward (it only moves the idle
        deadline later), so a driver with a wake-up already set need not ask again."""
        if self.phase is Phase.ENDED:
            return []
        return self._on_audio(now, payload)

    def _on_audio(self, now: float, payload: bytes) -> list[Action]:
        if self.phase is not Phase.ACTIVE or not payload:
            return self._on_tick(now) if self.phase is Phase.ACTIVE else []
        self.last_audio_at = now
        self._ring.write(payload)
        actions: list[Action] = []
        for vad_event in self._vad.process_mulaw(payload):
            if isinstance(vad_event, SpeechStarted):
                actions += self._on_speech_started(vad_event, now)
            elif isinstance(vad_event, SpeechEnded):
                actions += self._on_speech_ended(vad_event, now)
        if self._forwarded_to is not None and (
                self._ring.total - self._forwarded_to >= self._forward_batch
                or self._vad.position != self._vad.last_voiced):
            # Speech goes to a streaming STT engine in batches, one socket write per
            # `stt_forward_batch_ms`; a quiet frame goes at once, so the engine's own endpointing
            # hears the caller stop as it happens (its end of turn is what the caller waits for).
            actions += self._forward()
        # Inbound audio doubles as a clock, but only for what is due: polling the pacer on every
        # frame would release reply audio one frame per inbound frame instead of in batches.
        due = self.next_deadline()
        if due is not None and now >= due:
            actions += self._on_tick(now)
        return actions

    def _forward(self) -> list[Action]:
        start, self._forwarded_to = self._forwarded_to, self._ring.total
        return [ForwardAudio(self._ring.read_since(start))] if start < self._ring.total else []

    def _position_time(self, position: int, now: float) -> float:
        """Wall time at which the caller produced the sample at `position` (audio arrives in real time)."""
        return now - (self._ring.total - position) / SAMPLE_RATE

    def _on_speech_started(self, ev: SpeechStarted, now: float) -> list[Action]:
        preroll = self.settings.preroll_ms * SAMPLE_RATE // 1000
        self._utterance_start = max(ev.start - preroll, self._ring.oldest)
        self._speech_ended_at = self._vad_end_at = None
        if self.forward_audio and self._forwarded_to is None:
            self._forwarded_to = self._utterance_start  # the pre-roll goes first, then the speech as it comes
        return self._interrupt(now, onset=self._position_time(ev.start, now))

    def _on_speech_ended(self, ev: SpeechEnded, now: float) -> list[Action]:
        if ev.reason == "noise":
            # The VAD learned that what it took for speech is a steady noise: nothing to transcribe.
            self._utterance_start = None
            return []
        start = self._utterance_start if self._utterance_start is not None else max(ev.end - SAMPLE_RATE, self._ring.oldest)
        end = min(ev.end + self.settings.tail_ms * SAMPLE_RATE // 1000, self._ring.total)
        self._utterance_start = None
        self._speech_ended_at = self._position_time(ev.end, now)
        self._vad_end_at = now
        self._awaiting_transcripts += 1
        actions: list[Action] = []
        if self._forwarded_to is not None:
            actions += self._forward()  # the engine gets all the audio before the Finalize
            self._forwarded_to = None
        if ev.reason == "max_length" and self._vad.speaking:
            # The caller talks on past the limit: the next utterance starts right here.
            self._utterance_start = ev.end
            if self.forward_audio:
                self._forwarded_to = self._ring.total
        actions.append(TranscribeUtterance(turn_id=self._next_turn, audio=self._ring.read_range(start, end)))
        return actions

    def _caller_active(self) -> bool:
        """The VAD hears the caller now (not just trailing silence before its end-of-speech timeout)."""
        if not self._vad.speaking:
            return False
        quiet = self._vad.position - self._vad.last_voiced
        return quiet < self.settings.stt_turn_min_silence_ms * SAMPLE_RATE // 1000

    def _on_transcript(self, ev: TranscriptReceived) -> list[Action]:
        actions: list[Action] = []
        text = clean_caller_text(ev.text, self.settings.max_caller_text_chars)
        if not ev.is_final:
            # An interim transcript is the STT engine hearing words: as good as a VAD onset for barge-in.
            return self._interrupt(ev.now, onset=ev.now) if text else []
        if text:
            self._pending_text.append(text)
        if not ev.end_of_turn:
            return actions
        self._awaiting_transcripts = max(0, self._awaiting_transcripts - 1)
        if self._caller_active() or not self._pending_text:
            return actions  # they are still talking, or it was noise: answer with the next end of turn
        if self._speech_ended_at is None:
            self._speech_ended_at = self._position_time(self._vad.last_voiced, ev.now)
        user_text = " ".join(self._pending_text)
        self._pending_text.clear()
        actions += self._cancel_reply(ev.now, rollback=True)
        actions += self._start_reply(ev.now, user_text=user_text, transcript_at=ev.now)
        return actions

    def _on_dtmf(self, ev: DtmfReceived) -> list[Action]:
        actions = self._interrupt(ev.now, onset=ev.now)
        actions += self._cancel_reply(ev.now, rollback=True)
        actions += self._start_reply(ev.now, user_text=None, dtmf=ev.digit, transcript_at=ev.now)
        return actions

    def _interrupt(self, now: float, onset: float) -> list[Action]:
        """The caller spoke (or pressed a key). Stop the agent if it is audible; drop a reply not yet heard."""
        reply = self._reply
        if reply is None:
            return []
        if not reply.audible:
            if reply.timings.user_text is None and not reply.timings.dtmf:
                return []  # the greeting or an apology: let it play; the caller's words are answered next
            # Still thinking: the caller is not done. Answer everything they said together.
            if reply.timings.user_text:
                self._pending_text.insert(0, reply.timings.user_text)
            self._reply = None
            self._finish_deadline = None
            return [CancelReply(reply.turn_id, rollback=True)]
        heard = self._heard_text(reply, onset)
        self._pacer.clear()
        self._mark_names.clear()
        self._reply = None
        self._finish_deadline = None
        actions: list[Action] = [SendClear(), CancelReply(reply.turn_id, rollback=False)]
        actions.append(self._complete(reply, now, heard=heard, interrupted=True))
        return actions

    # ------------------------------------------------------------------ agent side

    def _start_reply(self, now: float, user_text: str | None, dtmf: str = "", reprompt: str = "",
                     transcript_at: float | None = None) -> list[Action]:
        turn_id = self._next_turn
        self._next_turn += 1
        timings = TurnTimings(
            turn_id=turn_id, user_text=user_text, agent_text="", heard_text="", interrupted=False, dtmf=dtmf,
            speech_ended_at=self._speech_ended_at if user_text else None,
            vad_end_at=self._vad_end_at if user_text else None,
            transcript_at=transcript_at, reply_started_at=now,
        )
        self._speech_ended_at = self._vad_end_at = None
        self._reply = _Reply(timings=timings, reprompt=reprompt)
        self._finish_deadline = None
        return [StartReply(turn_id, user_text, tuple(self.history), dtmf=dtmf, reprompt=reprompt)]

    def _cancel_reply(self, now: float, rollback: bool) -> list[Action]:
        reply = self._reply
        if reply is None:
            return []
        if reply.audible:
            return self._interrupt(now, onset=now)
        self._reply = None
        self._finish_deadline = None
        return [CancelReply(reply.turn_id, rollback=rollback)]

    def _current(self, turn_id: int) -> _Reply | None:
        reply = self._reply
        return reply if reply is not None and reply.turn_id == turn_id else None

    def _on_reply_delta(self, ev: ReplyDelta) -> list[Action]:
        reply = self._current(ev.turn_id)
        if reply is None or reply.text_done:
            return []
        if reply.timings.first_token_at is None:
            reply.timings = replace(reply.timings, first_token_at=ev.now)
        return self._add_sentences(reply, reply.chunker.push(ev.text), ev.now)

    def _on_reply_done(self, ev: ReplyDone) -> list[Action]:
        reply = self._current(ev.turn_id)
        if reply is None or reply.text_done:
            return []
        actions = self._add_sentences(reply, reply.chunker.flush(), ev.now)
        reply.text_done = True
        reply.hang_up, reply.transfer_to = ev.hang_up, ev.transfer_to
        if not reply.reprompt:
            self.failures = 0
        if reply.heard >= len(reply.sentences):  # all heard already, or nothing to say (a bare hang-up)
            actions += self._finish(reply, ev.now)
        return actions

    def _add_sentences(self, reply: _Reply, pieces: list[str], now: float) -> list[Action]:
        actions: list[Action] = []
        for piece in pieces:
            text = clean_for_speech(piece)  # no markup or URLs read aloud
            if not text:
                continue
            if not reply.sentences:
                reply.timings = replace(reply.timings, first_sentence_at=now)
            actions.append(Synthesize(reply.turn_id, len(reply.sentences), text))
            reply.sentences.append(text)
        return actions

    def _on_speech_audio(self, ev: SpeechAudio) -> list[Action]:
        reply = self._current(ev.turn_id)
        if reply is None or not ev.audio:
            return []
        if reply.timings.first_audio_at is None:
            reply.timings = replace(reply.timings, first_audio_at=ev.now)
        self._pacer.push_audio(ev.audio)
        return self._poll(ev.now)

    def _on_speech_done(self, ev: SpeechDone) -> list[Action]:
        reply = self._current(ev.turn_id)
        if reply is None:
            return []
        name = f"t{ev.turn_id}s{ev.sentence}"
        self._mark_names[name] = (ev.turn_id, ev.sentence)
        self._pacer.push_mark(name)
        reply.synthesized = max(reply.synthesized, ev.sentence + 1)
        return self._poll(ev.now)

    def _poll(self, now: float) -> list[Action]:
        actions: list[Action] = []
        reply = self._reply
        for item in self._pacer.poll(now):
            if isinstance(item, PacerMark):
                actions.append(SendMark(item.name))
                if reply is not None and item.name in self._mark_names:
                    sentence = self._mark_names[item.name][1]
                    starts = reply.mark_release.get(sentence - 1, (now, now))[1]
                    reply.mark_release[sentence] = (max(starts, now), item.plays_at)
            else:
                actions.append(SendMedia(item))
                if reply is not None and not reply.audible:
                    reply.audible = True
                    reply.timings = replace(reply.timings, first_frame_at=now)
        if reply is not None and reply.finished_sending and self._pacer.queued_bytes == 0 and self._finish_deadline is None:
            self._finish_deadline = self._pacer.playout_end + self.settings.mark_grace_seconds
        return actions

    def _on_mark(self, ev: MarkEchoed) -> list[Action]:
        ids = self._mark_names.pop(ev.name, None)
        reply = self._reply
        if ids is None or reply is None or ids[0] != reply.turn_id:
            return []  # a stale echo (after a clear) or a name we never sent
        reply.heard = max(reply.heard, ids[1] + 1)
        if reply.finished_sending and reply.heard >= len(reply.sentences):
            return self._finish(reply, ev.now)
        return []

    def _finish(self, reply: _Reply, now: float) -> list[Action]:
        """The whole reply has played."""
        self._reply = None
        self._finish_deadline = None
        actions: list[Action] = [self._complete(reply, now, heard=" ".join(reply.sentences), interrupted=False)]
        if reply.hang_up or reply.transfer_to:
            actions += self._hang_up("dialog", transfer_to=reply.transfer_to)
        elif self._pending_text and not self._caller_active() and self._awaiting_transcripts == 0:
            # The caller finished a turn while we were talking without interrupting us (e.g. a short "ok"
            # under the VAD's barge-in threshold was transcribed by a streaming engine): answer it now.
            user_text = " ".join(self._pending_text)
            self._pending_text.clear()
            actions += self._start_reply(now, user_text=user_text, transcript_at=now)
        return actions

    def _complete(self, reply: _Reply, now: float, heard: str, interrupted: bool) -> TurnTimings:
        timings = replace(reply.timings, agent_text=" ".join(reply.sentences), heard_text=heard,
                          interrupted=interrupted, reply_done_at=now)
        if timings.user_text is not None:
            self.history.append({"role": "user", "content": timings.user_text})
        elif timings.dtmf:
            self.history.append({"role": "user", "content": f"[pressed {timings.dtmf}]"})
        if heard:
            self.history.append({"role": "assistant", "content": heard})
        self.turns.append(timings)
        return timings

    def _heard_text(self, reply: _Reply, onset: float) -> str:
        """Whole sentences whose marks came back, plus the played share of the sentence in flight."""
        words = " ".join(reply.sentences[: reply.heard]).split()
        window = reply.mark_release.get(reply.heard)
        if window is not None and reply.heard < len(reply.sentences):
            starts, ends = window
            if ends > starts and onset > starts:
                share = min(1.0, (onset - starts) / (ends - starts))
                partial = reply.sentences[reply.heard].split()
                words += partial[: math.floor(share * len(partial))]
        return " ".join(words)

    # ------------------------------------------------------------------ failures, time, end

    def _on_failure(self, ev: ProviderFailed) -> list[Action]:
        if ev.role != "stt" and self._current(ev.turn_id) is None:
            return []
        self.failures += 1
        actions: list[Action] = []
        reply = self._reply
        if reply is not None and reply.audible:
            # Part of the reply played; the rest cannot be rendered. Keep what was heard, then apologise.
            actions += self._interrupt(ev.now, onset=ev.now)
        elif reply is not None:
            if reply.timings.user_text:
                self._pending_text.insert(0, reply.timings.user_text)  # the caller's words stay on record
            actions += self._cancel_reply(ev.now, rollback=False)
        user_text = " ".join(self._pending_text) if self._pending_text else None
        self._pending_text.clear()
        if self.failures > self.settings.max_consecutive_failures:
            # Even the apologies fail: a silent line is worse than a clean hang-up.
            if user_text:
                actions.append(self._unanswered(user_text))
            return actions + self._hang_up("provider_failure")
        actions += self._start_reply(ev.now, user_text=user_text, reprompt="apology")
        if self.failures >= self.settings.max_consecutive_failures and self._reply is not None:
            self._reply.hang_up = True  # the last apology says goodbye
        return actions

    def _unanswered(self, user_text: str) -> TurnTimings:
        """A turn the caller spoke that got no reply: it still belongs in the transcript."""
        timings = TurnTimings(turn_id=self._next_turn, user_text=user_text, agent_text="", heard_text="",
                              interrupted=False)
        self._next_turn += 1
        self.history.append({"role": "user", "content": user_text})
        self.turns.append(timings)
        return timings

    def _watchdog_deadline(self) -> float | None:
        reply = self._reply
        if reply is None or reply.audible or reply.timings.reply_started_at is None:
            return None
        return reply.timings.reply_started_at + self.settings.silence_watchdog_seconds

    def _on_tick(self, now: float) -> list[Action]:
        if self.phase is not Phase.ACTIVE:
            return []
        actions = self._poll(now)
        reply = self._reply
        if reply is not None and self._finish_deadline is not None and now >= self._finish_deadline:
            actions += self._finish(reply, now)  # marks did not come back: the audio has played anyway
        deadline = self._watchdog_deadline()
        if deadline is not None and now >= deadline and self._reply is not None:
            actions += self._on_failure(ProviderFailed(now, "watchdog", self._reply.turn_id, "no reply audio in time"))
        if now - self.started_at >= self.settings.max_call_seconds:
            actions += self._hang_up("max_duration")
        elif now - self.last_audio_at >= self.settings.idle_timeout_seconds:
            actions += self._hang_up("idle")
        return actions

    def _hang_up(self, reason: str, transfer_to: str = "") -> list[Action]:
        if self._hangup_sent:
            return []
        self._hangup_sent = True
        return [HangUp(reason, transfer_to=transfer_to)]

    def _on_end(self, ev: CallEnded) -> list[Action]:
        actions: list[Action] = []
        reply = self._reply
        if reply is not None:
            heard = self._heard_text(reply, ev.now) if reply.audible else ""
            self._reply = None
            actions.append(CancelReply(reply.turn_id, rollback=False))
            actions.append(self._complete(reply, ev.now, heard=heard, interrupted=reply.audible))
        if self._pending_text:
            # Words the caller said that were never answered are still part of the transcript.
            actions.append(self._unanswered(" ".join(self._pending_text)))
            self._pending_text.clear()
        self._pacer.clear()
        self.phase = Phase.ENDED
        return actions
