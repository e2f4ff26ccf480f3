"""Energy voice-activity detection with an adaptive noise floor and hysteresis.

The call needs two things from a VAD, fast and cheaply: "the caller started talking" (barge-in,
start of an utterance for the STT engine) and "the caller stopped" (end of turn). On an 8 kHz
phone line, frame energy relative to the line's own noise does both well enough, at a cost of one
vectorised RMS per 20 ms frame, with a model-based VAD or the STT's endpointing to refine.

How a frame is judged. The signal is cut into `frame_ms` windows; each gets a level in dBFS. The
noise floor is an estimate of the level of the line when nobody talks. Two thresholds hang off it:

    start threshold = floor + start_margin_db     (to begin speech)
    stop threshold  = floor + stop_margin_db      (to stay in speech; lower: hysteresis)

The floor never goes below `min_level_dbfs`, so nothing quieter than that is ever speech and
digital silence (mu-law 0xFF decodes to exactly 0, -100 dBFS) cannot drag the floor so low that
ordinary line hiss looks like speech when it resumes.

The state machine, one step per frame:

    state     frame level            ->  action
    --------  ---------------------  ---------------------------------------------------------
    IDLE      > start threshold          ONSET; the onset starts at this frame
    IDLE      otherwise                  stay; the floor moves toward the level
    ONSET     > start threshold          count it; at min_speech_ms: SPEAKING, emit SpeechStarted
    ONSET     otherwise                  IDLE (a click or a burst: too short to be speech)
    SPEAKING  > stop threshold           voiced: remember where speech last was
    SPEAKING  otherwise, end_silence     IDLE, emit SpeechEnded(reason="silence")
              reached since last voiced
    SPEAKING  utterance max_utterance    emit SpeechEnded(reason="max_length"); if this frame
              long                       is voiced, a new utterance starts here at once
    SPEAKING  level steady for           IDLE, floor := that level, emit SpeechEnded("noise")
              steady_noise_ms

Noise floor. It follows the level down quickly (`floor_fall_ms`), so it settles on the quiet
gaps between words and on a quiet line within a fraction of a second, and up slowly
(`floor_rise_ms`), so it tracks noise that creeps up. Frames above the start threshold (speech
candidates: onsets, clicks, coughs) never raise it, and while speaking it only ever moves down:
a long utterance must not raise the floor into its own level and cut itself off.

That last rule has a cost: noise that appears suddenly and stays (a TV, a car, a fan) looks
exactly like speech onset, and a floor that cannot rise while "speaking" would never learn it.
Speech is never steady, though: within any couple of seconds it dips between words and in stop
consonants by 15 dB or more, while steady noise stays within a few dB. So if, while speaking,
the middle 80% of frame levels over the last `steady_noise_ms` lie within
`steady_noise_spread_db`, the utterance is ended with reason "noise" (the consumer may discard
it) and the floor jumps to the quiet end of that noise (its 10th percentile level).

Positions are absolute sample counts since the start (or last `reset()`), the same coordinates as
`audio.ring_buffer.RingBuffer.total` when both see the whole call (1 mu-law byte = 1 sample).
Input of any length is accepted; a trailing partial frame waits for the next call, so the
events do not depend on how the audio was chunked.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from enum import Enum
from typing import Literal

import numpy as np
import numpy.typing as npt

from audio import mulaw

with warnings.catch_warnings():  # the stdlib module on 3.11-3.12 warns of 3.13; audioop-lts serves 3.13+
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "EnergyVad",
    "SpeechEnded",
    "SpeechStarted",
    "VadConfig",
    "VadEvent",
]

_LEVEL_FLOOR_DBFS = -100.0  # level reported for an all-zero frame (as audio.mulaw.SILENCE_DBFS)
_NO_SAMPLES = np.zeros(0, dtype=np.int16)
_NO_SAMPLES.flags.writeable = False


def _level(rms: int) -> float:
    """A frame's level in dBFS from its integer RMS (what audioop.rms gives): one formula for both paths."""
    return max(20.0 * math.log10(rms / 32768.0), _LEVEL_FLOOR_DBFS) if rms > 0 else _LEVEL_FLOOR_DBFS


@dataclass(frozen=True, slots=True)
class VadConfig:
    """Tunables of `EnergyVad`. Durations are in ms and rounded to whole frames."""

    # Twilio Media Streams audio rate.
    sample_rate: int = 8000
    # 20 ms: short enough to place onsets and ends within a frame, long enough (160 samples) for a
    # stable energy estimate, and the size of the frames Twilio sends, so most chunks are whole.
    frame_ms: int = 20
    # A frame this far above the floor can start speech. 9 dB: a level 8x the noise power. Line
    # and room noise measured in 20 ms frames fluctuates by 1-3 dB, so it does not get there;
    # speech sits 15-40 dB above the floor on any usable call.
    start_margin_db: float = 9.0
    # Once speaking, frames this far above the floor keep speech going. Lower than the start
    # margin (hysteresis) so soft word endings and unstressed syllables do not end the utterance;
    # still clear of the noise's own fluctuation.
    stop_margin_db: float = 4.0
    # Above-start frames, in a row, needed to confirm an onset. A syllable's vowel lasts 100 ms+;
    # clicks, pops and line glitches last a frame or two. It is also the VAD's onset latency.
    min_speech_ms: int = 120
    # Silence that ends an utterance. Pauses between words and at commas are 100-400 ms; 500 ms
    # keeps a sentence whole while still ending the caller's turn promptly. The STT's own
    # endpointing may end the turn sooner.
    end_silence_ms: int = 500
    # Longest utterance before it is cut (and a new one started if the caller is still talking):
    # STT engines and the turn logic want bounded segments, and it caps the damage of a stuck VAD.
    max_utterance_ms: int = 30000
    # Absolute floor: the noise floor never goes below this, so nothing quieter can be speech.
    # Phone speech runs at about -35 to -15 dBFS; line hiss and comfort noise at -70 to -55 dBFS.
    min_level_dbfs: float = -50.0
    # Time constant of the floor falling toward a quieter level. 100 ms: it reaches the noise
    # level within a word gap, and a quiet line's level within a fraction of a second.
    floor_fall_ms: float = 100.0
    # Time constant of the floor rising toward a louder level (never while speaking, never
    # toward a speech candidate). 2 s: it tracks noise that creeps up by a few dB per second
    # with a lag (rate x 2 s) inside the start margin, while a soft syllable or breath that
    # stays just under the start threshold for a moment barely moves it.
    floor_rise_ms: float = 2000.0
    # Time constant of the ambient level: the line's average level while nobody speaks (frames under
    # the start threshold), where the floor follows its quiet troughs. A babble or a TV sits about its
    # ambient level; a caller's voice stands above it. 2 s, like the floor's rise.
    ambient_ms: float = 2000.0
    # The call's first frames count toward the ambient level whatever their level: a caller in a café
    # or beside a loud TV has the noise from the first frame, where every frame stands out from the
    # starting floor and none would ever count as quiet, so the line's level stayed unknown (the
    # starting floor) and the babble's first seconds were taken for the caller, cutting the greeting.
    # Callers listen at pick-up; one who says "hello?" then only raises the level their next onset must
    # clear until the first quiet frames bring it down (a plain mean: 0.3 s of them halve the excess).
    ambient_bootstrap_ms: int = 300
    # Starting floor. A little above min_level_dbfs: the first frames of a call are usually line
    # noise, so starting high avoids a false onset on a noisy line, the fast fall reaches a
    # quiet line's level within ~0.3 s, and normal speech clears it even before that.
    initial_floor_dbfs: float = -45.0
    # Steady-noise guard (see module docstring): how long "speech" must stay within
    # steady_noise_spread_db to be judged noise. 2 s: real speech always dips within that time.
    steady_noise_ms: int = 2000
    # Spread of frame levels (10th to 90th percentile, dB) below which the guard calls it noise.
    # Percentiles, not max - min, so a door slam or a click in the noise does not hide it. White
    # noise in 20 ms frames spreads ~1 dB, traffic or a TV a few dB; speech 20-70 dB (measured
    # on the test sentence: 25 dB even in -38 dBFS noise).
    steady_noise_spread_db: float = 6.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.frame_ms <= 0:
            raise ValueError("sample_rate and frame_ms must be > 0")
        if self.sample_rate * self.frame_ms % 1000:
            raise ValueError("frame_ms must be a whole number of samples")
        if self.stop_margin_db > self.start_margin_db:
            raise ValueError("stop_margin_db must not exceed start_margin_db (hysteresis)")
        if self.floor_fall_ms <= 0 or self.floor_rise_ms <= 0:
            raise ValueError("floor time constants must be > 0")
        if self.ambient_ms <= 0:
            raise ValueError("ambient_ms must be > 0")
        if self.ambient_bootstrap_ms < 0:
            raise ValueError("ambient_bootstrap_ms must be >= 0")
        for name in ("min_speech_ms", "end_silence_ms", "max_utterance_ms", "steady_noise_ms"):
            if getattr(self, name) < self.frame_ms:
                raise ValueError(f"{name} must be at least one frame")

    @property
    def frame_samples(self) -> int:
        return self.sample_rate * self.frame_ms // 1000

    def frames(self, ms: float) -> int:
        """A duration in whole frames (at least one)."""
        return max(1, round(ms / self.frame_ms))


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech began at sample `start` (first frame of the onset); it was confirmed, and this
    event emitted, at sample `confirmed` (start + min_speech, or the cut of a max-length
    utterance, where start == confirmed)."""

    start: int
    confirmed: int


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """Speech last was at sample `end` (end of the last voiced frame).

    `reason`: "silence" (end_silence_ms of silence followed), "max_length" (cut at
    max_utterance_ms), or "noise" (the steady-noise guard found the "speech" to be a steady
    noise; the utterance is most likely not speech).
    """

    end: int
    reason: Literal["silence", "max_length", "noise"]


VadEvent = SpeechStarted | SpeechEnded


class _State(Enum):
    IDLE = 0
    ONSET = 1
    SPEAKING = 2


class EnergyVad:
    """Energy VAD over int16 samples; see the module docstring for how it decides."""

    def __init__(self, config: VadConfig = VadConfig()) -> None:
        self._config = config
        self._frame = config.frame_samples
        self._min_speech_frames = config.frames(config.min_speech_ms)
        self._end_silence = config.frames(config.end_silence_ms) * self._frame
        self._max_utterance = config.frames(config.max_utterance_ms) * self._frame
        self._steady_frames = config.frames(config.steady_noise_ms)
        # Guard checks run every 100 ms rather than every frame: a few more frames of a noise
        # burst do not matter, and it keeps the per-frame cost to plain comparisons.
        self._steady_check_every = max(1, 100 // config.frame_ms)
        frame_s = config.frame_ms / 1000.0
        # Per-frame smoothing coefficients of the exponential floor trackers.
        self._fall = 1.0 - math.exp(-frame_s * 1000.0 / config.floor_fall_ms)
        self._rise = 1.0 - math.exp(-frame_s * 1000.0 / config.floor_rise_ms)
        self._ambient_coeff = 1.0 - math.exp(-frame_s * 1000.0 / config.ambient_ms)
        bootstrap_ms = config.ambient_bootstrap_ms
        self._ambient_bootstrap = config.frames(bootstrap_ms) * self._frame if bootstrap_ms else 0
        self._levels = np.empty(self._steady_frames, dtype=np.float64)  # guard's ring of levels
        # Ranks of the 10th and 90th percentile frame in the guard's window.
        decile = self._steady_frames // 10
        self._spread_ranks = [decile, self._steady_frames - 1 - decile]
        self.reset()

    def reset(self) -> None:
        """Forget everything: positions restart at 0, the floor at its initial value."""
        cfg = self._config
        self._state = _State.IDLE
        self._floor = max(cfg.initial_floor_dbfs, cfg.min_level_dbfs)
        self._ambient = self._floor
        self._ambient_frames = 0  # frames averaged so far (the first ones, then quiet ones): a plain mean at first
        self._pending = _NO_SAMPLES  # partial frame awaiting more samples
        self._position = 0  # samples received
        self._analysed = 0  # samples analysed (whole frames)
        self._onset_start = 0
        self._onset_frames = 0
        self._utt_start = 0
        self._last_voiced = 0
        self._last_unvoiced = 0
        self._last_strong = 0
        self._utt_frames = 0

    @property
    def config(self) -> VadConfig:
        return self._config

    @property
    def speaking(self) -> bool:
        """An utterance is in progress (confirmed, not yet ended)."""
        return self._state is _State.SPEAKING

    @property
    def onset_pending(self) -> bool:
        """A sound stands out from the floor but is not yet long enough to be speech (or a click)."""
        return self._state is _State.ONSET

    @property
    def noise_floor_dbfs(self) -> float:
        return self._floor

    @property
    def ambient_dbfs(self) -> float:
        """The line's average level (dBFS, averaged in dB) over the recent frames nobody spoke in."""
        return self._ambient

    @property
    def position(self) -> int:
        """Samples received so far (including a partial frame not yet analysed)."""
        return self._position

    @property
    def last_voiced(self) -> int:
        """Absolute sample position of the end of the last voiced frame of the current or last
        utterance (0 before any speech). `position - last_voiced` is how long the caller has been
        quiet, without waiting for end_silence_ms to pass."""
        return self._last_voiced

    @property
    def voiced_run(self) -> int:
        """Samples since the current utterance last had a frame under the stop threshold. Speech dips
        between words every few hundred ms; a long run means something else holds the line above the
        threshold (a noise bed, music, echo), and the end of speech must be found another way."""
        if self._state is not _State.SPEAKING:
            return 0
        return self._analysed - max(self._last_unvoiced, self._utt_start)

    @property
    def last_strong(self) -> int:
        """Absolute sample position of the end of the last frame of the current utterance that stood out
        from the floor by the start margin."""
        return self._last_strong

    @property
    def weak_run(self) -> int:
        """Samples since the current utterance last had a frame above the *start* threshold. Once the
        caller stops, a noise that hovers about the stop threshold (distant babble) can keep the
        utterance open indefinitely; a long weak run is the sign to ask another detector."""
        if self._state is not _State.SPEAKING:
            return 0
        return self._analysed - self._last_strong

    def end_utterance(self) -> None:
        """End the utterance in progress now, on another detector's word (a speech model heard the
        caller stop under a noise the energy alone cannot see past). The floor stays where it was: a
        noise that starts the next onset is judged by that detector again, and a caller who was only
        speaking softly is not put under a raised floor."""
        if self._state is _State.SPEAKING:
            self._state = _State.IDLE

    def process(self, samples: npt.NDArray[np.int16]) -> list[VadEvent]:
        """Feed int16 samples (any length); returns the events they completed, in order."""
        x = np.asarray(samples)
        if x.dtype != np.int16:
            # A cast would turn float audio in [-1, 1] into zeros: silence, never speech.
            raise TypeError(f"EnergyVad.process needs int16 samples, got {x.dtype}")
        x = x.reshape(-1)
        self._position += x.size
        if self._pending.size:
            x = np.concatenate((self._pending, x))
        frame = self._frame
        n_frames = x.size // frame
        cut = n_frames * frame
        self._pending = x[cut:].copy() if cut < x.size else _NO_SAMPLES
        if n_frames == 0:
            return []
        frames = x[:cut].reshape(n_frames, frame).astype(np.float64)
        # Sum of squares per frame in one vectorised pass; the per-frame loop below is then
        # only a log and a few comparisons (numpy calls on 1-element arrays would cost more).
        sums = np.einsum("ij,ij->i", frames, frames).tolist()
        events: list[VadEvent] = []
        for total in sums:
            self._step(_level(int(math.sqrt(total / frame))), events)
        return events

    def process_mulaw(self, data: bytes) -> list[VadEvent]:
        """Feed 8 kHz mu-law (any length). The per-frame path of every call: whole frames are measured
        in C (audioop), with no decode to an array and no numpy call per 20 ms. Both paths measure a
        frame by its integer RMS (audioop's), so the events are exactly those of `process`."""
        frame = self._frame
        if self._pending.size or len(data) % frame or self._config.sample_rate != 8000:
            return self.process(mulaw.decode(data))
        self._position += len(data)
        events: list[VadEvent] = []
        for i in range(0, len(data), frame):
            self._step(_level(audioop.rms(audioop.ulaw2lin(data[i:i + frame], 2), 2)), events)
        return events

    def _step(self, level: float, events: list[VadEvent]) -> None:
        """Advance the state machine by one frame of the given level (dBFS)."""
        cfg = self._config
        frame_start = self._analysed
        frame_end = frame_start + self._frame
        self._analysed = frame_end
        floor = self._floor
        state = self._state
        bootstrap = frame_end <= self._ambient_bootstrap
        if bootstrap:
            self._learn_ambient(level)

        if state is _State.SPEAKING:
            voiced = level > floor + cfg.stop_margin_db
            if voiced:
                self._last_voiced = frame_end
                if level > floor + cfg.start_margin_db:
                    self._last_strong = frame_end
            else:
                self._last_unvoiced = frame_end
            if level < floor:  # while speaking the floor may only fall
                self._floor = max(cfg.min_level_dbfs, floor + (level - floor) * self._fall)
            self._levels[self._utt_frames % self._steady_frames] = level
            self._utt_frames += 1
            if not voiced and frame_end - self._last_voiced >= self._end_silence:
                self._state = _State.IDLE
                events.append(SpeechEnded(self._last_voiced, "silence"))
            elif frame_end - self._utt_start >= self._max_utterance:
                events.append(SpeechEnded(self._last_voiced, "max_length"))
                if voiced:
                    self._begin_utterance(frame_end)
                    events.append(SpeechStarted(frame_end, frame_end))
                else:
                    self._state = _State.IDLE
            elif (
                self._utt_frames >= self._steady_frames
                and self._utt_frames % self._steady_check_every == 0
            ):
                low, high = np.partition(self._levels, self._spread_ranks)[self._spread_ranks]
                if high - low < cfg.steady_noise_spread_db:
                    self._state = _State.IDLE
                    self._floor = max(cfg.min_level_dbfs, float(low))
                    events.append(SpeechEnded(frame_end, "noise"))
            return

        # IDLE or ONSET.
        if level > floor + cfg.start_margin_db:
            # A speech candidate: it must not drag the floor up (it is what the floor is there
            # to stand out from), whether or not it is confirmed.
            if state is _State.IDLE:
                self._state = _State.ONSET
                self._onset_start = frame_start
                self._onset_frames = 0
            self._onset_frames += 1
            if self._onset_frames >= self._min_speech_frames:
                self._begin_utterance(self._onset_start)
                self._last_voiced = frame_end
                events.append(SpeechStarted(self._onset_start, frame_end))
            return
        self._state = _State.IDLE  # an unconfirmed onset that dipped was a click or a burst
        if not bootstrap:
            self._learn_ambient(level)
        coeff = self._fall if level < floor else self._rise
        self._floor = max(cfg.min_level_dbfs, floor + (level - floor) * coeff)

    def _learn_ambient(self, level: float) -> None:
        # A plain running mean over the first frames, so the ambient level is the line's own within a
        # fraction of a second, then the slow average.
        self._ambient_frames += 1
        coeff = max(self._ambient_coeff, 1.0 / self._ambient_frames)
        self._ambient += (max(level, self._config.min_level_dbfs) - self._ambient) * coeff

    def _begin_utterance(self, start: int) -> None:
        self._state = _State.SPEAKING
        self._utt_start = start
        self._last_strong = self._analysed
        self._utt_frames = 0
