"""Pure helpers that build test signals out of recordings: levels, mixing at an SNR, pauses, echo.

Every function takes 8 kHz audio as either mu-law bytes (what Twilio carries) or an int16 numpy
array, and returns the same kind it was given, so a benchmark can stay in bytes end to end while a
test that measures can stay in samples. Nothing here reads files, keeps state or draws random
numbers unseeded: the same arguments give the same samples.

Levels are dBFS with 0 dBFS = a full-scale square wave, as in `audio.mulaw.rms_dbfs`. Speech is
measured by its *active* level, the power of the 20 ms frames that carry the talker, in the spirit
of ITU-T P.56: a sentence with a second of silence after it is as loud as the same sentence alone,
so an SNR asked of `mix_at_snr` means the same thing whatever pauses the speech holds.
"""

from __future__ import annotations

import math
from typing import Sequence, TypeVar

import numpy as np
import numpy.typing as npt

from audio import mulaw

__all__ = [
    "SAMPLE_RATE",
    "active_level_dbfs",
    "active_span",
    "concat_with_pauses",
    "delayed_echo",
    "fade",
    "loop_to",
    "mix_at_snr",
    "overlay",
    "peak_dbfs",
    "rms_dbfs",
    "scale_db",
    "to_pcm",
]

Audio = TypeVar("Audio", bytes, npt.NDArray[np.int16])

SAMPLE_RATE = 8000  # the phone line: every helper here works on 8 kHz mono

# Frames for the active level: 20 ms, the unit Twilio and the gateway's VAD work in.
ACTIVE_FRAME_MS = 20
# A frame is active when it is within this many dB of the loud frames (their 95th percentile).
# 30 dB keeps every syllable of a talker and drops the line noise in pauses; P.56 uses a similar
# margin (15.9 dB under its envelope, whose floor sits ~15 dB under the peaks).
ACTIVE_RANGE_DB = 30.0
ACTIVE_REFERENCE_PERCENTILE = 95.0  # the loud frames' level: a lone click cannot move it
# When a loop wraps around, the end fades into the start over this long (equal power, which keeps
# the level of uncorrelated noise). A hard seam would be a click every loop: an onset to a VAD.
LOOP_CROSSFADE_MS = 50.0
# The handset path a speakerphone's echo goes through: a gentle low-pass this far up (the voice band
# ends at 3.4 kHz), a windowed-sinc FIR of this many taps (odd, so it is zero-phase and leaves
# the echo's delay exactly where it was asked).
HANDSET_LOWPASS_HZ = 3000.0
HANDSET_FIR_TAPS = 31

_FULL_SCALE = 32768.0


def to_pcm(audio: bytes | npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """The int16 samples of mu-law bytes or of an int16 array (a copy either way)."""
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return mulaw.decode(bytes(audio))
    arr = np.asarray(audio)
    if arr.dtype != np.int16:
        raise TypeError(f"audio must be mu-law bytes or int16 samples, got {arr.dtype}")
    return arr.reshape(-1).copy()


def _like(template: bytes | npt.NDArray[np.int16], samples: npt.NDArray[np.floating] | npt.NDArray[np.int16]):
    """`samples` rounded and clipped to int16, then given back as the kind `template` was."""
    pcm = np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
    if isinstance(template, (bytes, bytearray, memoryview)):
        return mulaw.encode(pcm)
    return pcm


def _samples(ms: float) -> int:
    return int(round(ms * SAMPLE_RATE / 1000.0))


def _frame_levels(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    """Mean square of each whole 20 ms frame (a short tail is left out)."""
    n = _samples(ACTIVE_FRAME_MS)
    usable = pcm.size // n * n
    frames = pcm[:usable].astype(np.float64).reshape(-1, n)
    return np.mean(frames * frames, axis=1)


def _active_mask(power: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    if power.size == 0 or not np.any(power > 0):
        return np.zeros(power.shape, dtype=bool)
    reference = float(np.percentile(power, ACTIVE_REFERENCE_PERCENTILE))
    return power >= reference * 10.0 ** (-ACTIVE_RANGE_DB / 10.0)


def active_level_dbfs(audio: bytes | npt.NDArray[np.int16]) -> float:
    """The level of the active 20 ms frames (the talker, not the pauses), in dBFS.

    Audio shorter than one frame is measured whole. Silence gives `mulaw.SILENCE_DBFS`.
    """
    pcm = to_pcm(audio)
    power = _frame_levels(pcm)
    if power.size == 0:
        return rms_dbfs(pcm)
    mask = _active_mask(power)
    if not mask.any():
        return mulaw.SILENCE_DBFS
    mean_square = float(np.mean(power[mask]))
    return max(mulaw.SILENCE_DBFS, 10.0 * math.log10(mean_square / _FULL_SCALE**2))


def active_span(audio: bytes | npt.NDArray[np.int16]) -> tuple[float, float]:
    """(start, end) in seconds of the active part: first active frame's start, last one's end.

    Where a benchmark times a barge-in from: the clip's speech onset, not the file's start.
    """
    pcm = to_pcm(audio)
    mask = _active_mask(_frame_levels(pcm))
    if not mask.any():
        return (0.0, 0.0)
    idx = np.flatnonzero(mask)
    frame_s = ACTIVE_FRAME_MS / 1000.0
    return (float(idx[0]) * frame_s, float(idx[-1] + 1) * frame_s)


def rms_dbfs(audio: bytes | npt.NDArray[np.int16]) -> float:
    """RMS level of the whole signal, pauses included, in dBFS."""
    return mulaw.rms_dbfs(to_pcm(audio))


def peak_dbfs(audio: bytes | npt.NDArray[np.int16]) -> float:
    """Level of the largest sample in dBFS (a full-scale sample is 0 dBFS)."""
    pcm = to_pcm(audio)
    if pcm.size == 0:
        return mulaw.SILENCE_DBFS
    peak = float(np.max(np.abs(pcm.astype(np.int32))))
    if peak == 0.0:
        return mulaw.SILENCE_DBFS
    return max(mulaw.SILENCE_DBFS, 20.0 * math.log10(peak / _FULL_SCALE))


def scale_db(audio: Audio, gain_db: float) -> Audio:
    """`audio` made `gain_db` louder (negative: quieter), clipped at full scale."""
    pcm = to_pcm(audio).astype(np.float64)
    return _like(audio, pcm * 10.0 ** (gain_db / 20.0))


def fade(audio: Audio, fade_in_ms: float = 0.0, fade_out_ms: float = 0.0) -> Audio:
    """Raised-cosine fade in and out, so a cut in the middle of a sound does not click."""
    pcm = to_pcm(audio).astype(np.float64)
    for ms, at_start in ((fade_in_ms, True), (fade_out_ms, False)):
        n = min(_samples(ms), pcm.size)
        if n <= 0:
            continue
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
        if at_start:
            pcm[:n] *= ramp
        else:
            pcm[-n:] *= ramp[::-1]
    return _like(audio, pcm)


def loop_to(noise: Audio, seconds: float, offset_s: float = 0.0,
            crossfade_ms: float = LOOP_CROSSFADE_MS) -> Audio:
    """`noise` repeated (or cut) to exactly `seconds`, starting `offset_s` into it.

    Each wrap-around crossfades the end into the start with equal power, so the loop has no seam
    a VAD could take for an onset. Different offsets give different stretches of the same bed.
    """
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    pcm = to_pcm(noise).astype(np.float64)
    want = _samples(seconds * 1000.0)
    if pcm.size == 0:
        if want:
            raise ValueError("cannot loop empty audio")
        return _like(noise, pcm)
    overlap = min(_samples(crossfade_ms), pcm.size // 2)
    if overlap > 0:
        # One period of the loop: the body with its last `overlap` samples blended into its first.
        t = (np.arange(overlap) + 0.5) / overlap
        fade_in, fade_out = np.sin(0.5 * np.pi * t), np.cos(0.5 * np.pi * t)
        period = pcm[: pcm.size - overlap].copy()
        period[:overlap] = period[:overlap] * fade_in + pcm[pcm.size - overlap:] * fade_out
    else:
        period = pcm
    start = _samples(offset_s * 1000.0) % period.size
    reps = -(-(start + want) // period.size)
    out = np.tile(period, max(reps, 1))[start:start + want]
    return _like(noise, out)


def mix_at_snr(speech: Audio, noise: bytes | npt.NDArray[np.int16], snr_db: float,
               noise_offset_s: float = 0.0) -> Audio:
    """`speech` with `noise` under it at `snr_db`: speech's active level minus the noise's RMS.

    The noise is looped (crossfaded) or cut to the speech's length, from `noise_offset_s` into it.
    The result has the speech's length and the speech's kind (bytes or int16).
    """
    pcm = to_pcm(speech)
    s = pcm.astype(np.float64)
    if s.size == 0:
        return _like(speech, s)
    speech_db = active_level_dbfs(pcm)
    if speech_db <= mulaw.SILENCE_DBFS:
        raise ValueError("speech is silent: no SNR can be set against it")
    bed = loop_to(to_pcm(noise), s.size / SAMPLE_RATE, noise_offset_s).astype(np.float64)
    bed_rms = math.sqrt(float(np.mean(bed * bed)))
    if bed_rms == 0.0:
        raise ValueError("noise is silent: no SNR can be set with it")
    target_rms = _FULL_SCALE * 10.0 ** ((speech_db - snr_db) / 20.0)
    return _like(speech, s + bed * (target_rms / bed_rms))


def overlay(base: Audio, other: bytes | npt.NDArray[np.int16], at_s: float = 0.0,
            gain_db: float = 0.0) -> Audio:
    """`other` added onto `base` starting `at_s` into it (a cough during a reply, a "yeah" over it).

    The result is as long as both need: `base` is extended with silence if `other` runs past its end.
    """
    b = to_pcm(base).astype(np.float64)
    o = to_pcm(other).astype(np.float64) * 10.0 ** (gain_db / 20.0)
    if at_s < 0:
        raise ValueError(f"at_s must be >= 0, got {at_s}")
    start = _samples(at_s * 1000.0)
    out = np.zeros(max(b.size, start + o.size))
    out[: b.size] = b
    out[start:start + o.size] += o
    return _like(base, out)


def concat_with_pauses(parts: Sequence[Audio], pause_ms: float | Sequence[float] = 300.0,
                       lead_ms: float = 0.0, tail_ms: float = 0.0) -> Audio:
    """The parts one after another with digital silence between them (and before/after if asked).

    `pause_ms` is one gap for every join, or one per join (`len(parts) - 1` of them). The result is of
    the first part's kind.
    """
    if not parts:
        raise ValueError("concat_with_pauses needs at least one part")
    joins = len(parts) - 1
    gaps = [float(pause_ms)] * joins if isinstance(pause_ms, (int, float)) else [float(g) for g in pause_ms]
    if len(gaps) != joins:
        raise ValueError(f"{len(parts)} parts need {joins} pauses, got {len(gaps)}")
    if any(g < 0 for g in gaps) or lead_ms < 0 or tail_ms < 0:
        raise ValueError("pauses must be >= 0 ms")
    pieces = [np.zeros(_samples(lead_ms), dtype=np.int16)]
    for i, part in enumerate(parts):
        pieces.append(to_pcm(part))
        if i < joins:
            pieces.append(np.zeros(_samples(gaps[i]), dtype=np.int16))
    pieces.append(np.zeros(_samples(tail_ms), dtype=np.int16))
    return _like(parts[0], np.concatenate(pieces))


def _handset_lowpass(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Zero-phase FIR low-pass at HANDSET_LOWPASS_HZ with unity gain at DC."""
    half = HANDSET_FIR_TAPS // 2
    n = np.arange(-half, half + 1)
    cutoff = HANDSET_LOWPASS_HZ / SAMPLE_RATE
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(HANDSET_FIR_TAPS)
    taps /= taps.sum()
    return np.convolve(x, taps, mode="same")


def delayed_echo(audio: Audio, delay_ms: float, gain_db: float, handset: bool = False) -> Audio:
    """What a speakerphone without echo cancellation sends back while `audio` plays on it.

    The caller's microphone hears the agent's audio `delay_ms` later (loudspeaker, room, the network
    both ways) and `gain_db` quieter (usually -10 to -30 dB). The result is that echo alone, as long
    as `audio` plus the delay; `overlay` it on the caller's own audio. `handset=True` adds the gentle
    low-pass of a handset path (HANDSET_LOWPASS_HZ).
    """
    if delay_ms < 0:
        raise ValueError(f"delay_ms must be >= 0, got {delay_ms}")
    x = to_pcm(audio).astype(np.float64) * 10.0 ** (gain_db / 20.0)
    if handset and x.size:
        x = _handset_lowpass(x)
    return _like(audio, np.concatenate([np.zeros(_samples(delay_ms)), x]))
