"""The call core: one `CallSession` per call, sans-I/O. `handle(event) -> list[action]`.

It owns the call's turn-taking and nothing else: caller audio goes into a ring buffer and the energy
VAD; the reply streams in as text deltas, is cut into sentences, each sentence is synthesized and its
audio is paced out in 20 ms frames with a mark after it. Marks come back when the caller has heard the
sentence, and the pacer's playout clock says where in the reply the caller's ear is at any moment.

Signals, cheapest first. The energy VAD runs on every frame; it hears every sound that stands out from
the line (speech, a cough, a door, traffic, music, the agent's own echo). Where it would change what the
call does, and only there, the core asks a speech model (`AnalyzeSpeech`, answered by `SpeechAnalyzed`:
Silero VAD on the inbound audio with the agent's echo taken out, `providers.speech_model`):

- an onset: while the agent is audible, its frames are held (the few hundred ms already at the caller
  play on) until the model answers; speech stops the agent (`clear`), anything else lets it go on as if
  nothing happened. When nobody is talking, an onset the model calls noise starts no turn and no
  transcription, and nothing of it goes to a streaming STT engine;
- re-checks while an utterance lasts: one judged noise may turn into speech (a caller starting to talk
  over music or their own echo), and one held open by a noise bed (no dip under the VAD's threshold for
  `stuck_voiced_ms`) ends where the model heard the caller stop.

An interruption is a hypothesis until the caller's words confirm it. A stopped reply keeps its text and
audio (`gateway.reply_audio`) and its LLM and TTS streams go on. Words (an interim or final transcript)
that are more than an acknowledgement confirm it: the reply is cancelled, and the history keeps what was
heard (whole sentences, plus the words of the sentence in flight that had played by the `clear`, from
the playout clock). An acknowledgement ("uh-huh", `dialog.turn_cues.is_backchannel`) or a few words that trail
off ("I have to...", `is_fragment`: a start the caller did not go on with, or talk nearby half caught) is
recorded and the reply resumes; so does one followed by no words at all (a cough, an empty transcript, or nothing within
`false_interruption_timeout_ms` of the caller going quiet). It resumes from the last pause before the
words the caller talked over, so nothing they did not hear is lost. Marks of a stopped reply that Twilio
echoes after the `clear` are stale and ignored: Twilio echoes every pending mark on `clear`.

End of turn: the VAD's end of speech or the STT engine's own endpointing, whichever is first, while the
caller is quiet. If the words so far end mid-thought ("...on", "and", "um": `sounds_unfinished`) the
reply waits for more, up to `unfinished_max_silence_ms` of silence. If the caller resumes speaking after
a turn ended but before any reply audio played, the reply is cancelled (rolled back in the dialog) and
the two utterances are answered together, so a pause in mid-thought does not get two answers.

Time enters only as `event.now`. Nothing here awaits, logs, or touches a socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

from audio.echo import PlayoutHistory
from audio.framing import OutboundPacer, Mark as PacerMark
from audio.ring_buffer import RingBuffer
from audio.vad import EnergyVad, SpeechEnded, SpeechStarted, VadConfig
from dialog.chunker import SentenceChunker
from dialog.events import (
    Action, AnalyzeSpeech, AudioReceived, CallEnded, CallStarted, CancelReply, DtmfReceived, Event, ForwardAudio,
    HangUp, Interruption, MarkEchoed, ProviderFailed, ReplyDelta, ReplyDone, SendClear, SendMark, SendMedia,
    SpeechAnalyzed, SpeechAudio, SpeechDone, StartReply, Synthesize, Tick, TranscribeUtterance, TranscriptReceived,
    TurnTimings,
)
from dialog.text_clean import clean_caller_text, clean_for_speech
from dialog.turn_cues import is_backchannel, is_fragment, sounds_unfinished
from gateway.reply_audio import Position, ReplyAudio, heard_words, speech_share

SAMPLE_RATE = 8000
MODEL_WINDOW = 256  # samples of 8 kHz audio per speech-model window (32 ms)
# A line whose noise floor sits this far above the VAD's lowest is noisy (babble, traffic, a TV): its
# troughs can keep the energy VAD from ever seeing the caller stop, so the model judges the end there.
NOISY_LINE_DB = 6.0
# The model found the agent's echo in the inbound audio when its reference explained this much of the
# energy; an onset rejected with less was noise (for the metrics' outcome only).
ECHO_EVIDENCE_DB = 6.0


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

    # --- turn-taking with a speech model (see the module docstring) ---
    # Ask the model VAD at decisions. Off, every energy onset counts as speech (and an interruption is
    # still only a hypothesis until words confirm it).
    model_vad: bool = False
    # A 32 ms window is speech at this Silero probability. 0.5 is Silero's own default; phone audio
    # (8 kHz, upsampled) scores lower than wideband, so nothing stricter.
    speech_threshold: float = 0.5
    # Speech windows an onset needs: ~100 ms of speech. A cough or a door scores one or two at most; a
    # syllable of real speech scores several.
    onset_speech_windows: int = 3
    # An onset with fewer speech windows but some (or any window above `uncertain_probability`) is
    # looked at again this soon, with the audio since: 60 ms more settles 94 % of real-speech onsets
    # that the first look left open (measured on the recordings' 49 speech clips), while noise, tones
    # and music score no speech window at all. Past `onset_decide_ms` after the onset it is not speech.
    uncertain_probability: float = 0.3
    onset_recheck_ms: int = 60
    onset_decide_ms: int = 400
    # Once the caller is speaking, speech windows this far under their own level do not keep their turn
    # open: talkers in the background (a babble the model rightly hears as speech) sit about 10 dB
    # under a caller at 10 dB SNR, their loudest windows nearer. Soft syllables of the caller's own fall that far too, so the end of
    # speech under babble can come a syllable early; the STT still gets the tail (`tail_ms`).
    caller_level_drop_db: float = 12.0
    # An utterance the model keeps hearing speech in ends after this long, and the next one starts at
    # once if the talk goes on: callers pause within a few seconds; three talkers close by never do, and
    # must not hold the caller's turn open for good. (The STT gets each stretch; its guards judge it.)
    held_open_max_ms: int = 8000
    # An onset's speech windows must stand this far above the line's ambient level. A 6-talker babble's
    # own peaks reach 5-6 dB over its average (at 5 dB, 30 s of it started a turn); a caller at 5 dB SNR
    # has many windows past 6 dB (6 of 6 recordings detected at 5, 10 and 20 dB over that babble).
    over_ambient_db: float = 6.0
    # Audio before an onset the model also sees: its recurrent state settles on the line's noise first.
    analysis_context_ms: int = 300
    # No answer from the model in this long (a stuck worker): the onset counts as speech, as without it.
    verdict_timeout_ms: int = 300
    # While an utterance the model called noise goes on, or one a noise bed holds open, it is asked
    # again this often, about the last `recheck_window_ms`.
    recheck_ms: int = 200
    recheck_window_ms: int = 600
    # The VAD has not dipped under its threshold for this long: not speech alone (speech dips between
    # words every few hundred ms): something holds it open, and the model decides where speech ended.
    stuck_voiced_ms: int = 800
    # How far behind the playout clock the agent's echo may come back (network + phone + acoustics).
    echo_max_lag_ms: int = 400
    # A stopped reply resumes when no words came this long after the caller went quiet (LiveKit's
    # false-interruption timeout is 2 s; a transcript normally arrives well within this).
    false_interruption_timeout_ms: int = 1500
    # Acknowledgements while the agent talks ("uh-huh", "yeah") do not cancel its reply.
    backchannels: bool = True
    # Words that end mid-thought wait for more, up to this much silence after the caller's last word.
    unfinished_max_silence_ms: int = 2000

    def vad_config(self) -> VadConfig:
        return replace(VadConfig(), end_silence_ms=self.end_of_speech_ms,
                       max_utterance_ms=int(self.max_utterance_seconds * 1000))


class Phase(Enum):
    NEW = "new"  # no `start` yet
    ACTIVE = "active"
    ENDED = "ended"


class Playback(Enum):
    PLAYING = "playing"
    HELD = "held"  # an onset is being judged: no new frames go out; those at the caller play on
    STOPPED = "stopped"  # cleared for an interruption that words have not confirmed yet


@dataclass
class _Reply:
    """The agent's reply to one turn, from StartReply until it has played or was cut off."""

    timings: TurnTimings
    chunker: SentenceChunker = field(default_factory=SentenceChunker)
    sentences: list[str] = field(default_factory=list)
    audio: ReplyAudio = field(default_factory=ReplyAudio)
    synthesized: int = 0  # sentences whose audio is complete
    heard: int = 0  # sentences whose marks came back
    text_done: bool = False
    hang_up: bool = False
    transfer_to: str = ""
    audible: bool = False  # a frame of it has gone out
    reprompt: str = ""  # why this reply was not asked for by the caller ("apology")
    playback: Playback = Playback.PLAYING
    held_since: float | None = None
    stopped_at: float | None = None
    heard_to: Position | None = None  # the furthest point the caller's ear reached before a stop
    resume_at: Position | None = None  # where a stopped reply starts again
    resume_due: float | None = None  # a stopped reply resumes then, unless words come first
    stopped_by: int | None = None  # the utterance that stopped it
    question_heard: bool = False  # the interruption came during a question the caller had mostly heard
    resumes: int = 0  # each resume sends fresh mark names: the old ones' echoes are stale

    @property
    def turn_id(self) -> int:
        return self.timings.turn_id

    @property
    def finished_sending(self) -> bool:
        return self.text_done and self.synthesized == len(self.sentences)


@dataclass
class _Utterance:
    """One energy-VAD utterance while the model judges it."""

    id: int
    start: int  # ring position of its audio, pre-roll included
    onset: int  # where the energy VAD heard it start
    onset_time: float
    speech: bool | None = None  # None until the model answered
    speech_from: int = 0  # ring position its transcription starts at
    last_speech: int = 0  # where the model last heard speech in it
    speech_level: float | None = None  # the caller's level in it (dBFS, median of its speech windows)
    request: int | None = None  # the AnalyzeSpeech in flight
    request_start: int = 0
    grid: int = -1  # ring position of its first analysis, whose 32 ms windows later ones keep to
    analysed_to: int = 0
    verdict_due: float | None = None
    next_check: float | None = None
    ended: SpeechEnded | None = None  # the VAD ended it while the model's answer was pending


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
        self._played = PlayoutHistory()  # what the caller's phone played, for taking its echo out
        self._next_turn = 0
        self._reply: _Reply | None = None
        self._pending_text: list[str] = []  # final transcripts not yet answered
        self.caller_language = ""  # what the STT engine last heard the caller speak, when it says (dialog.languages)
        self._utt: _Utterance | None = None
        self._next_utterance = 0
        self._next_request = 0
        self._speech_ended_at: float | None = None
        self._vad_end_at: float | None = None
        self._awaiting_transcripts = 0  # utterances handed to a batch STT engine, not yet answered
        self._hold_until: float | None = None  # an unfinished thought waits for more until then
        self._mark_names: dict[str, tuple[int, int]] = {}
        self._finish_deadline: float | None = None
        self._hangup_sent = False
        self._now = 0.0  # the time of the event being handled
        ms = SAMPLE_RATE // 1000
        self._context = settings.analysis_context_ms * ms
        self._recheck_window = settings.recheck_window_ms * ms
        self._stuck = settings.stuck_voiced_ms * ms
        self._end_silence = settings.end_of_speech_ms * ms
        self._max_lag = settings.echo_max_lag_ms * ms

    # ------------------------------------------------------------------ public

    @property
    def agent_speaking(self) -> bool:
        return self._reply is not None and self._reply.audible and self._reply.playback is not Playback.STOPPED

    @property
    def reply_turn(self) -> int | None:
        return None if self._reply is None else self._reply.turn_id

    @property
    def at_rest(self) -> bool:
        """Nobody is talking and nothing is owed: no reply under way or playing, the caller not
        speaking, no utterance waiting for its transcript or its answer. A call handed over now (a
        drain) cuts nobody off."""
        return (self.phase is Phase.ACTIVE and self._reply is None and not self._vad.speaking and self._utt is None
                and self._awaiting_transcripts == 0 and not self._pending_text and self._hold_until is None)

    @property
    def frames_sent(self) -> int:
        return self._pacer.frames_sent

    @property
    def underruns(self) -> int:
        return self._pacer.underruns

    def next_deadline(self) -> float | None:
        """When the core next needs a `Tick`, if nothing else happens before."""
        # Called after every event (50 a second per call): plain comparisons, no temporary lists.
        reply = self._reply
        due = None
        if reply is None or (reply.playback is Playback.PLAYING and not self._first_frames_held(reply)):
            # (While a new reply's first frames wait for a sound to be judged, the caller's next frame or
            # the model's answer lets them go: no wake-up of their own, so no busy wake-ups meanwhile.)
            due = self._pacer.next_deadline()
        for t in (self._finish_deadline, self._watchdog_deadline(), self._hold_until):
            if t is not None and (due is None or t < due):
                due = t
        if reply is not None and reply.resume_due is not None and (due is None or reply.resume_due < due):
            due = reply.resume_due
        utt = self._utt
        if utt is not None:
            for t in (utt.verdict_due, utt.next_check):
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
        self._now = event.now
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
            case SpeechAnalyzed():
                return self._on_analyzed(event)
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
        previous = self._utt
        utt = _Utterance(self._next_utterance, max(ev.start - preroll, self._ring.oldest), ev.start,
                         self._position_time(ev.start, now))
        self._next_utterance += 1
        self._utt = utt
        self._speech_ended_at = self._vad_end_at = None
        if ev.start == ev.confirmed and previous is not None and previous.speech:
            # The VAD cut a max-length utterance and the caller talks on: still speech, no new onset.
            utt.last_speech = ev.start
            return self._speech_confirmed(utt, now, ev.start)
        if not self.settings.model_vad:
            return self._speech_confirmed(utt, now, utt.start)
        reply = self._reply
        if reply is not None and reply.audible and reply.playback is Playback.PLAYING:
            reply.playback, reply.held_since = Playback.HELD, now  # judge before stopping the agent
        return [self._analyze(utt, now, max(ev.start - self._context, self._ring.oldest))]

    def _analyze(self, utt: _Utterance, now: float, start: int) -> AnalyzeSpeech:
        end = self._ring.total
        audio = self._ring.read_range(start, end)
        reference, max_lag = b"", 0
        t0 = self._position_time(start, now) - self._max_lag / SAMPLE_RATE
        if self._played.playing_until() > t0:
            max_lag = self._max_lag
            reference = self._played.segment(t0, len(audio) + max_lag)
        utt.request = self._next_request
        self._next_request += 1
        utt.request_start, utt.next_check = start, None
        if utt.grid < 0:
            utt.grid = start
        if utt.speech is None:
            utt.verdict_due = now + self.settings.verdict_timeout_ms / 1000.0
        utt.analysed_to = max(utt.analysed_to, end)
        return AnalyzeSpeech(utt.request, audio, reference, max_lag, start)

    def _on_analyzed(self, ev: SpeechAnalyzed) -> list[Action]:
        utt = self._utt
        if utt is None or ev.request_id != utt.request:
            return []  # an answer about an utterance that is over
        utt.request = None
        speech = self._speech_windows(utt, ev)
        if speech and ev.levels_dbfs:
            # The caller's level: the median of the speech windows, averaged over the looks at them (a
            # running maximum would follow the loudest syllables and cut the soft ones).
            level = sorted(ev.levels_dbfs[i] for i in speech)[len(speech) // 2]
            utt.speech_level = level if utt.speech_level is None else (utt.speech_level + level) / 2.0
        if speech:
            utt.last_speech = max(utt.last_speech, utt.request_start + (speech[-1] + 1) * MODEL_WINDOW)
        actions: list[Action] = []
        utt.verdict_due = None
        if not utt.speech:
            if len(speech) >= self.settings.onset_speech_windows:
                first = utt.request_start + speech[0] * MODEL_WINDOW
                preroll = self.settings.preroll_ms * SAMPLE_RATE // 1000
                start = utt.start if utt.speech is None else max(first - preroll, utt.start, self._ring.oldest)
                actions += self._speech_confirmed(utt, ev.now, start)
            elif utt.speech is None and utt.ended is None and self._undecided(utt, speech, ev.probabilities):
                # Some sign of speech, not enough yet: hold on, and look again with a little more audio.
                utt.next_check = ev.now + self.settings.onset_recheck_ms / 1000.0
                return actions
            elif utt.speech is None:
                utt.speech = False
                actions += self._not_speech(ev.now, "echo" if ev.echo_erle_db >= ECHO_EVIDENCE_DB else "noise")
                actions += self._answer_if_quiet(ev.now)
        if utt.ended is not None:
            ended, utt.ended = utt.ended, None
            return actions + self._on_speech_ended(ended, ev.now)
        held_too_long = self._vad.speaking and self._too_long(utt)
        if utt.speech and self._vad.speaking and (
                self._ring.total - utt.last_speech >= self._end_silence or held_too_long):
            # Something holds the VAD open, and the model has heard no speech for a whole end-of-speech
            # silence: the caller has finished. Or it has heard "speech" the whole time for longer than a
            # caller talks without a pause: talkers nearby, which must not keep the caller's turn from
            # ever ending (it ends, and the STT's guards judge what is in it).
            # Where the caller stopped: the model's last speech window, or later, where the energy last
            # stood out (the model is asked only when the VAD is held open, so its mark can be old), but
            # not inside the silence the model just found.
            end = max(utt.last_speech, min(self._vad.last_strong, self._ring.total - self._end_silence))
            self._vad.end_utterance()
            return actions + self._on_speech_ended(SpeechEnded(end, "silence"), ev.now)
        if self._vad.speaking and self._utt is utt:
            utt.next_check = ev.now + self.settings.recheck_ms / 1000.0
        return actions

    def _speech_windows(self, utt: _Utterance, ev: SpeechAnalyzed) -> list[int]:
        """The analysed windows that are the caller speaking: the model hears speech there, and the window
        stands out from the line as a caller's voice does. Before an utterance is speech, that is the
        energy VAD's start margin over the floor, and `over_ambient_db` over the line's ambient level (the
        line's own murmur, a distant babble, sits about it); once it is, the window must also be within `caller_level_drop_db` of the caller's own
        level, so talkers in the background are not taken for the caller going on."""
        vad = self._vad
        floor = vad.noise_floor_dbfs
        if utt.speech:
            least = floor + vad.config.stop_margin_db
            if utt.speech_level is not None:
                least = max(least, utt.speech_level - self.settings.caller_level_drop_db)
        else:
            least = max(floor + vad.config.start_margin_db, vad.ambient_dbfs + self.settings.over_ambient_db)
        levels = ev.levels_dbfs
        return [i for i, p in enumerate(ev.probabilities)
                if p >= self.settings.speech_threshold and (not levels or levels[i] > least)]

    def _undecided(self, utt: _Utterance, speech: list[int], probabilities: tuple[float, ...]) -> bool:
        if self._ring.total - utt.onset >= self.settings.onset_decide_ms * SAMPLE_RATE // 1000:
            return False
        return bool(speech) or any(p >= self.settings.uncertain_probability for p in probabilities)

    def _recheck(self, now: float) -> list[Action]:
        utt = self._utt
        if utt is None or utt.request is not None:
            return []
        utt.next_check = None
        if utt.speech is None:
            # An onset the model could not settle: the same audio from before the onset, and what came since.
            return [self._analyze(utt, now, max(utt.onset - self._context, self._ring.oldest))]
        if not self._vad.speaking:
            return []
        if utt.speech and not self._vad_held_open(utt) and not self._too_long(utt):
            # Speech the VAD follows on its own (it dips between words): nothing to ask yet.
            utt.next_check = now + self.settings.recheck_ms / 1000.0
            return []
        # The recent audio, with the context an onset gets before it: the model's recurrent state, started
        # cold in the middle of a sound, scores its tail as speech (a burp's did, at 0.94).
        start = max(self._ring.total - self._recheck_window - self._context, utt.start, self._ring.oldest)
        return [self._analyze(utt, now, self._on_grid(utt, start))]

    def _on_grid(self, utt: _Utterance, start: int) -> int:
        """`start` moved back onto the 32 ms windows of the utterance's first analysis (forward if the ring
        no longer holds the audio), so the model can go on from its earlier windows (SpeechStream)."""
        origin = utt.grid
        if start <= origin:
            return start
        start -= (start - origin) % MODEL_WINDOW
        return start if start >= self._ring.oldest else start + MODEL_WINDOW

    def _too_long(self, utt: _Utterance) -> bool:
        return self._ring.total - utt.onset >= self.settings.held_open_max_ms * SAMPLE_RATE // 1000

    def _vad_held_open(self, utt: _Utterance) -> bool:
        """The energy VAD may not see this utterance end by itself: it has stayed above its threshold for
        `stuck_voiced_ms`; or nothing has stood out from the floor for an end-of-speech silence while
        something still hovers about the threshold (a distant babble after the caller stopped); or the
        line is noisy and the utterance has lasted `stuck_voiced_ms`."""
        if self._vad.voiced_run >= self._stuck or self._vad.weak_run >= self._end_silence:
            return True
        noisy = self._vad.noise_floor_dbfs > self._vad.config.min_level_dbfs + NOISY_LINE_DB
        return noisy and self._ring.total - utt.onset >= self._stuck

    def _speech_confirmed(self, utt: _Utterance, now: float, start: int) -> list[Action]:
        utt.speech, utt.speech_from, utt.verdict_due = True, start, None
        utt.last_speech = max(utt.last_speech, utt.onset)
        if self.forward_audio and self._forwarded_to is None:
            self._forwarded_to = start  # the pre-roll goes first, then the speech as it comes
        self._hold_until = None  # a thought held open goes on: answered with what follows
        return self._caller_speaks(now, utt)

    def _not_speech(self, now: float, outcome: str) -> list[Action]:
        """The model heard no caller speech in an onset: a held reply goes on as if nothing happened."""
        reply = self._reply
        if reply is None or reply.playback is not Playback.HELD:
            return []
        reply.playback, reply.held_since = Playback.PLAYING, None
        return [Interruption(outcome, reply.turn_id)] + self._poll(now)

    def _on_speech_ended(self, ev: SpeechEnded, now: float) -> list[Action]:
        utt = self._utt
        if utt is not None and utt.speech is None:
            utt.ended = ev  # decided when the model answers
            return []
        self._utt = None
        if utt is None or not utt.speech:
            return self._answer_if_quiet(now)  # noise or the agent's echo: nothing to transcribe
        if ev.reason == "noise" and not utt.analysed_to:
            # The energy VAD found its "speech" to be a steady noise and no model heard it otherwise: as
            # before there was a model, nothing to transcribe (a streaming engine's own end of turn stands).
            return []
        end_at = utt.last_speech if ev.reason == "noise" else ev.end
        start = utt.speech_from
        end = min(end_at + self.settings.tail_ms * SAMPLE_RATE // 1000, self._ring.total)
        self._speech_ended_at = self._position_time(end_at, now)
        self._vad_end_at = now
        self._awaiting_transcripts += 1
        actions: list[Action] = []
        if self._forwarded_to is not None:
            actions += self._forward()  # the engine gets all the audio before the Finalize
            self._forwarded_to = None
        if ev.reason == "max_length" and self._vad.speaking and self.forward_audio:
            self._forwarded_to = self._ring.total  # the caller talks on: the next utterance follows at once
        reply = self._reply
        if reply is not None and reply.playback is Playback.STOPPED and reply.stopped_by == utt.id:
            reply.resume_due = now + self.settings.false_interruption_timeout_ms / 1000.0
        actions.append(TranscribeUtterance(turn_id=self._next_turn, audio=self._ring.read_range(start, end)))
        return actions

    def _caller_active(self) -> bool:
        """The caller is talking now (not just trailing silence before the end-of-speech timeout, nor a
        noise that holds the VAD open)."""
        if not self._vad.speaking:
            return False
        utt = self._utt
        if utt is not None and utt.speech is False:
            return False
        last = self._vad.last_voiced
        if utt is not None and utt.speech and utt.analysed_to and self._vad_held_open(utt):
            last = utt.last_speech  # the VAD is held open: where the model last heard the caller
        return self._vad.position - last < self.settings.stt_turn_min_silence_ms * SAMPLE_RATE // 1000

    def _on_transcript(self, ev: TranscriptReceived) -> list[Action]:
        text = clean_caller_text(ev.text, self.settings.max_caller_text_chars)
        if not ev.is_final:
            # An interim transcript is the STT engine hearing words: more than an acknowledgement confirms
            # an interruption (or is one, when the VAD missed a quiet voice); an acknowledgement waits for
            # the final.
            if not text or self._acknowledges(text):
                return []
            return self._words_during_reply(ev.now)
        actions: list[Action] = []
        if text and self._acknowledges(text):
            actions.append(self._backchannel(text))  # in the transcript; the reply goes on
            reply = self._reply
            if reply is not None and reply.playback is Playback.STOPPED:
                actions += self._resume(reply, ev.now, "backchannel")
        elif text:
            actions += self._words_during_reply(ev.now)
            self._pending_text.append(text)
            self.caller_language = ev.language or self.caller_language
        if not ev.end_of_turn:
            return actions
        self._awaiting_transcripts = max(0, self._awaiting_transcripts - 1)
        reply = self._reply
        if reply is not None and reply.playback is Playback.STOPPED and not self._pending_text:
            return actions + self._resume(reply, ev.now, "resumed")  # the caller said nothing after all
        if self._caller_active() or not self._pending_text:
            if ev.unclear and reply is None and not self._pending_text and not self._caller_active():
                # Speech the engine could not make out: the dialog re-asks ("Sorry, I didn't catch
                # that") with an empty turn, instead of the silence that follows noise.
                return actions + self._start_reply(ev.now, user_text="", transcript_at=ev.now)
            return actions  # they are still talking, or it was noise: answer with the next end of turn
        if self._speech_ended_at is None:
            self._speech_ended_at = self._position_time(self._vad.last_voiced, ev.now)
        if self._hold_until is None and sounds_unfinished(" ".join(self._pending_text)):
            hold = self._speech_ended_at + self.settings.unfinished_max_silence_ms / 1000.0
            if hold > ev.now:
                self._hold_until = hold  # mid-thought: wait for the rest
                return actions
        return actions + self._answer_pending(ev.now)

    def _answer_if_quiet(self, now: float) -> list[Action]:
        """Words whose answer waited because the caller seemed to talk on, when what followed them turned
        out to be noise: answered now. Under a babble the next sound after the caller's words held the
        line "busy" until it was judged, and nothing answered the words after that (only the end of a
        later turn would have), so the caller waited in silence."""
        if (self._pending_text and self._reply is None and self._hold_until is None
                and self._awaiting_transcripts == 0 and not self._caller_active()):
            return self._answer_pending(now)
        return []

    def _answer_pending(self, now: float) -> list[Action]:
        self._hold_until = None
        user_text = " ".join(self._pending_text)
        self._pending_text.clear()
        actions = self._cancel_reply(now, rollback=True)
        actions += self._start_reply(now, user_text=user_text, transcript_at=now)
        return actions

    def _acknowledges(self, text: str) -> bool:
        """Words that only tell the agent to go on: an acknowledgement or a fragment while it is audible,
        unless it is asking a question the caller has mostly heard (then "yeah" answers it)."""
        reply = self._reply
        if not self.settings.backchannels or reply is None or not reply.audible:
            return False
        if not (is_backchannel(text) or is_fragment(text)):
            return False
        if reply.playback is not Playback.STOPPED:
            reply.question_heard = self._question_heard(reply, reply.audio.position_at(self._now))
        return not reply.question_heard

    def _question_heard(self, reply: _Reply, pos: Position | None) -> bool:
        if pos is None:
            return False
        k = min(pos.sentence, len(reply.sentences) - 1) if reply.sentences else -1
        if k < 0 or not reply.sentences[k].rstrip().endswith("?"):
            return False
        offset = pos.offset if pos.sentence == k else len(reply.audio.sentences[k])
        return speech_share(bytes(reply.audio.sentences[k]), offset) >= 0.5

    def _words_during_reply(self, now: float) -> list[Action]:
        """The caller's words (more than an acknowledgement) while a reply is under way: it stops for good."""
        reply = self._reply
        if reply is None or not reply.audible:
            return []
        actions = self._stop(reply, now, onset=now) if reply.playback is not Playback.STOPPED else []
        return actions + self._confirm(reply, now)

    def _backchannel(self, text: str) -> TurnTimings:
        """An acknowledgement the caller said while the agent talked: in the transcript, not answered."""
        timings = TurnTimings(turn_id=self._next_turn, user_text=text, agent_text="", heard_text="",
                              interrupted=False, backchannel=True)
        self._next_turn += 1
        self.turns.append(timings)
        return timings

    def _on_dtmf(self, ev: DtmfReceived) -> list[Action]:
        actions: list[Action] = []
        reply = self._reply
        if reply is not None and reply.audible:
            actions += self._abandon(reply, ev.now)
        actions += self._cancel_reply(ev.now, rollback=True)
        actions += self._start_reply(ev.now, user_text=None, dtmf=ev.digit, transcript_at=ev.now)
        return actions

    def _caller_speaks(self, now: float, utt: _Utterance) -> list[Action]:
        """The caller is talking. Stop the agent if it is audible (a hypothesis: their words decide); drop a
        reply not yet heard."""
        reply = self._reply
        if reply is None:
            return []
        if not reply.audible:
            if reply.timings.user_text is None and not reply.timings.dtmf:
                return []  # the greeting or an apology: let it play; the caller's words are answered next
            # Still thinking: the caller is not done. Answer everything they said together.
            if reply.timings.user_text:
                self._pending_text.insert(0, reply.timings.user_text)
            return self._drop_unheard(reply, rollback=True)
        if reply.playback is Playback.STOPPED:
            return []
        reply.stopped_by = utt.id
        return self._stop(reply, now, onset=utt.onset_time)

    # ------------------------------------------------------------------ interruptions

    def _stop(self, reply: _Reply, now: float, onset: float) -> list[Action]:
        """Stop the agent's audio now (`clear`), keeping the reply to resume or to cut for good."""
        at_onset = reply.audio.position_at(min(onset, now))
        reply.heard_to = _later(reply.heard_to, reply.audio.position_at(now))
        # A question on the table: a "yes" said now answers it rather than acknowledging.
        reply.question_heard = self._question_heard(reply, at_onset)
        reply.resume_at = reply.audio.resume_point(at_onset)
        reply.playback, reply.stopped_at, reply.held_since = Playback.STOPPED, now, None
        reply.resume_due = None
        self._pacer.clear()
        self._played.truncate(now)
        self._mark_names.clear()
        self._finish_deadline = None
        return [SendClear()]

    def _confirm(self, reply: _Reply, now: float) -> list[Action]:
        """The caller's words make the interruption real: the rest of the reply is dropped."""
        paused = (now - reply.stopped_at) * 1000.0 if reply.stopped_at is not None else 0.0
        self._reply = None
        self._finish_deadline = None
        return [CancelReply(reply.turn_id, rollback=False), Interruption("confirmed", reply.turn_id, round(paused, 1)),
                self._complete(reply, now, heard=self._heard_text(reply), interrupted=True)]

    def _resume(self, reply: _Reply, now: float, outcome: str) -> list[Action]:
        """No words followed the interruption: the reply goes on from where the caller stopped hearing."""
        paused = (now - reply.stopped_at) * 1000.0 if reply.stopped_at is not None else 0.0
        reply.playback, reply.stopped_at, reply.resume_due, reply.stopped_by = Playback.PLAYING, None, None, None
        reply.question_heard = False
        reply.resumes += 1
        reply.audio.restart(reply.resume_at or Position(0, 0))
        # Sentences before the resume point were heard whole (their marks' echoes after the clear were
        # ignored as stale); those from it on are marked again.
        reply.heard = reply.audio.feed.sentence
        actions: list[Action] = [Interruption(outcome, reply.turn_id, round(paused, 1))]
        self._feed_pacer(reply)
        actions += self._poll(now)
        return actions

    def _abandon(self, reply: _Reply, now: float) -> list[Action]:
        """The reply ends here for a reason of the call's own (a key press, a failure): keep what was heard."""
        actions = self._stop(reply, now, onset=now) if reply.playback is not Playback.STOPPED else []
        self._reply = None
        self._finish_deadline = None
        actions += [CancelReply(reply.turn_id, rollback=False),
                    self._complete(reply, now, heard=self._heard_text(reply), interrupted=True)]
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
        return [StartReply(turn_id, user_text, tuple(self.history), dtmf=dtmf, reprompt=reprompt,
                           language=self.caller_language)]

    def _cancel_reply(self, now: float, rollback: bool) -> list[Action]:
        reply = self._reply
        if reply is None:
            return []
        if reply.audible:
            return self._abandon(reply, now)
        return self._drop_unheard(reply, rollback)

    def _drop_unheard(self, reply: _Reply, rollback: bool) -> list[Action]:
        """Drop a reply the caller has not heard a frame of. Its first frames may already wait in the pacer
        (held while an onset was judged): they go too, or they would play with no reply to stop them."""
        self._reply = None
        self._finish_deadline = None
        self._pacer.drop_queued()
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
        if reply is None or not ev.audio or not 0 <= ev.sentence < len(reply.sentences):
            return []  # nothing asked for this audio
        if reply.timings.first_audio_at is None:
            reply.timings = replace(reply.timings, first_audio_at=ev.now)
        reply.audio.add(ev.sentence, ev.audio)
        if reply.playback is Playback.STOPPED:
            return []  # kept for a resume
        self._feed_pacer(reply)
        return self._poll(ev.now)

    def _on_speech_done(self, ev: SpeechDone) -> list[Action]:
        reply = self._current(ev.turn_id)
        if reply is None or not 0 <= ev.sentence < len(reply.sentences):
            return []
        reply.audio.finish(ev.sentence)
        reply.synthesized = max(reply.synthesized, ev.sentence + 1)
        if reply.playback is Playback.STOPPED:
            return []
        self._feed_pacer(reply)
        return self._poll(ev.now)

    def _feed_pacer(self, reply: _Reply) -> None:
        """Hand the pacer the reply's audio from where it is up to, with a mark after each sentence."""
        for sentence, audio, complete in reply.audio.take_feed():
            if audio:
                self._pacer.push_audio(audio)
            if complete:
                name = f"t{reply.turn_id}s{sentence}" + (f"r{reply.resumes}" if reply.resumes else "")
                self._mark_names[name] = (reply.turn_id, sentence)
                self._pacer.push_mark(name)

    def _first_frames_held(self, reply: _Reply) -> bool:
        """A new reply's first frames wait while a sound the caller has just started is being judged (the
        energy VAD's onset, then the model's verdict). If it is speech the caller is going on after a
        pause, and the reply is dropped before they hear any of it, the two parts answered together;
        released a moment early, it would be a reply spoken over them."""
        if reply.audible:
            return False
        utt = self._utt
        return self._vad.onset_pending or (utt is not None and utt.speech is None)

    def _poll(self, now: float) -> list[Action]:
        reply = self._reply
        if reply is not None and (reply.playback is not Playback.PLAYING or self._first_frames_held(reply)):
            return []  # held or stopped: nothing more goes out until it is decided
        actions: list[Action] = []
        plays_from = max(self._pacer.playout_end, now)
        released: list[bytes] = []
        for item in self._pacer.poll(now):
            if isinstance(item, PacerMark):
                actions.append(SendMark(item.name))
            else:
                actions.append(SendMedia(item))
                released.append(item)
                if reply is not None and not reply.audible:
                    reply.audible = True
                    reply.timings = replace(reply.timings, first_frame_at=now)
        if released:
            self._played.add(plays_from, b"".join(released))
            if reply is not None:
                reply.audio.released(plays_from, len(released))
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
            actions += self._answer_pending(now)
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

    def _heard_text(self, reply: _Reply) -> str:
        """Whole sentences the caller heard (by their marks or the playout clock), plus the played share
        of the sentence in flight when the reply stopped."""
        pos = reply.heard_to
        whole = max(reply.heard, pos.sentence if pos is not None else 0)
        words = " ".join(reply.sentences[:whole]).split()
        if pos is not None and pos.sentence == whole and whole < len(reply.sentences):
            share = speech_share(bytes(reply.audio.sentences[whole]), pos.offset)
            words += heard_words(reply.sentences[whole], share).split()
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
            actions += self._abandon(reply, ev.now)
        elif reply is not None:
            if reply.timings.user_text:
                self._pending_text.insert(0, reply.timings.user_text)  # the caller's words stay on record
            actions += self._cancel_reply(ev.now, rollback=False)
        user_text = " ".join(self._pending_text) if self._pending_text else None
        self._pending_text.clear()
        self._hold_until = None
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
        utt = self._utt
        if utt is not None:
            if utt.verdict_due is not None and now >= utt.verdict_due and utt.speech is None:
                utt.request = None  # the model is too slow: the energy VAD's word stands
                actions += self._speech_confirmed(utt, now, utt.start)
                utt.next_check = now + self.settings.recheck_ms / 1000.0
                if utt.ended is not None:
                    ended, utt.ended = utt.ended, None
                    actions += self._on_speech_ended(ended, now)
            elif utt.next_check is not None and now >= utt.next_check:
                actions += self._recheck(now)
        reply = self._reply
        if reply is not None and reply.resume_due is not None and now >= reply.resume_due:
            actions += self._resume(reply, now, "resumed")  # no words came: it was not an interruption
        if self._hold_until is not None and now >= self._hold_until and self._reply is None:
            if self._pending_text and not self._caller_active():
                actions += self._answer_pending(now)  # they did not go on: answer what they said
            else:
                self._hold_until = None
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
            if reply.audible and reply.playback is not Playback.STOPPED:
                reply.heard_to = _later(reply.heard_to, reply.audio.position_at(ev.now))
            heard = self._heard_text(reply) if reply.audible else ""
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


def _later(a: Position | None, b: Position | None) -> Position | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if (b.sentence, b.offset) > (a.sentence, a.offset) else a
