"""The agent's own voice coming back on the caller's line: what was playing, and how much of the inbound
audio it explains.

A speakerphone, or a handset with no echo cancellation, sends part of what it plays back into its
microphone: the agent hears itself 60-300 ms later, 10-30 dB down, through the phone's speaker and
microphone responses. To an energy VAD that is speech, and to a speech model too (it *is* speech), so
neither can tell "the caller talks over the agent" from "the agent hears itself". What can tell is
the agent's own audio: the gateway knows what the phone is playing and when (the outbound pacer's
playout clock), so at a decision it can take the inbound audio, find the agent's audio in it, take it
out, and look at what is left.

`PlayoutHistory` keeps the last few seconds of what was sent to the caller, stamped with when it plays
there. `cancel_echo` fits the reference to the inbound audio (a delay found by cross-correlation, then a
short least-squares filter around it, which absorbs the speaker/microphone colouring and the codec)
and returns the residual: the caller, if they are talking, plus noise. This runs at decisions only
(an onset while the agent is audible, and re-checks while such an onset lasts), never per frame: a
full adaptive echo canceller on every frame of every call would cost more than the rest of the call.

Everything here is pure and synchronous; time is whatever clock the caller passes in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from audio import mulaw

__all__ = ["EchoEstimate", "PlayoutHistory", "cancel_echo"]

SAMPLE_RATE = 8000
# What the history keeps: an onset is judged within a second of its start, against audio that played
# up to `max_lag` before it; 4 s covers a slow re-check too.
HISTORY_SECONDS = 4.0
# Taps of the least-squares echo path around the best delay: 4 ms of impulse response is enough for a
# handset's speaker-to-microphone colouring at 8 kHz; longer paths (a room) leave more residual, which
# errs toward treating it as the caller (a barge-in), the safe side.
ECHO_TAPS = 32
# Below this correlation the reference does not explain the inbound audio at all: nothing to cancel.
# Low on purpose: while the caller talks over the echo (double talk) the correlation with the whole
# inbound audio drops to 0.1-0.3, and the echo must still come out; a fit to an unrelated reference
# finds near-zero weights and leaves the inbound audio as it was.
MIN_CORRELATION = 0.1
_SILENCE = mulaw.SILENCE_BYTE
_FRAME = 160  # 20 ms: the unit in which the residual replaces the inbound audio
_FRAME_REDUCTION = 0.1  # ...where it holds at most this share of the frame's energy (10 dB down)


@dataclass(frozen=True, slots=True)
class EchoEstimate:
    residual: np.ndarray  # int16: the inbound audio with the agent's echo taken out
    delay_ms: float  # the echo path's main delay (playout clock -> inbound audio)
    erle_db: float  # how much of the inbound energy the echo explained (echo return loss enhancement)
    correlation: float  # normalised cross-correlation at that delay, 0..1


class PlayoutHistory:
    """What the caller's phone played, by the playout clock: contiguous runs of mu-law audio, each with
    the time its first sample plays. Nothing here is stored beyond `seconds` (no raw audio is kept)."""

    __slots__ = ("_runs", "_seconds")

    def __init__(self, seconds: float = HISTORY_SECONDS) -> None:
        self._runs: deque[tuple[float, bytearray]] = deque()
        self._seconds = seconds

    def add(self, plays_at: float, audio: bytes) -> None:
        """`audio` starts playing at `plays_at` (the same clock as `segment`'s times)."""
        if not audio:
            return
        if self._runs:
            start, run = self._runs[-1]
            if abs(start + len(run) / SAMPLE_RATE - plays_at) < 0.5 / SAMPLE_RATE:
                run.extend(audio)  # continues the last run: the common case, one run per reply
                self._trim(plays_at)
                return
        self._runs.append((plays_at, bytearray(audio)))
        self._trim(plays_at)

    def truncate(self, at: float) -> None:
        """A `clear`: what was scheduled to play after `at` never played."""
        while self._runs:
            start, run = self._runs[-1]
            if start >= at:
                self._runs.pop()
                continue
            keep = int(round((at - start) * SAMPLE_RATE))
            del run[keep:]
            break

    def playing_until(self) -> float:
        """When the last audio sent finishes playing (0.0 if nothing is kept)."""
        if not self._runs:
            return 0.0
        start, run = self._runs[-1]
        return start + len(run) / SAMPLE_RATE

    def segment(self, t0: float, n: int) -> bytes:
        """The `n` samples of mu-law that played from `t0` on, digital silence where nothing did."""
        n = max(0, n)
        out = bytearray([_SILENCE]) * n
        for start, run in self._runs:
            a = int(round((start - t0) * SAMPLE_RATE))
            lo, hi = max(a, 0), min(a + len(run), n)
            if lo < hi:
                out[lo:hi] = run[lo - a:hi - a]
        return bytes(out)

    def _trim(self, now: float) -> None:
        horizon = now - self._seconds
        while len(self._runs) > 1 and self._runs[0][0] + len(self._runs[0][1]) / SAMPLE_RATE < horizon:
            self._runs.popleft()


def cancel_echo(inbound: np.ndarray, reference: np.ndarray, max_lag: int, taps: int = ECHO_TAPS) -> EchoEstimate:
    """Take the agent's echo out of `inbound`.

    `reference` is what played at the caller, starting `max_lag` samples before `inbound` starts and
    ending where it ends (so `len(reference) == len(inbound) + max_lag`); an echo delayed by d samples
    lines up with `reference[max_lag - d:]`. Both are int16 at 8 kHz.
    """
    x = np.asarray(inbound, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    n = x.size
    if n == 0 or r.size != n + max_lag or not np.any(r):
        return EchoEstimate(np.asarray(inbound, dtype=np.int16), 0.0, 0.0, 0.0)
    # Cross-correlation by FFT: corr[k] = sum_i x[i] * r[i + k], k = 0..max_lag (k = max_lag - delay).
    size = 1 << int(np.ceil(np.log2(n + r.size)))
    corr = np.fft.irfft(np.fft.rfft(r, size) * np.conj(np.fft.rfft(x, size)), size)[: max_lag + 1]
    # Normalise by the reference energy in each window, so loud passages do not win by loudness alone.
    csum = np.concatenate(([0.0], np.cumsum(r * r)))
    window_energy = csum[n:n + max_lag + 1] - csum[:max_lag + 1]
    x_energy = float(np.dot(x, x))
    norm = np.sqrt(np.maximum(window_energy, 1e-9) * max(x_energy, 1e-9))
    score = np.abs(corr) / norm
    k = int(np.argmax(score))
    correlation = float(score[k])
    if correlation < MIN_CORRELATION or x_energy <= 0.0:
        return EchoEstimate(np.asarray(inbound, dtype=np.int16), (max_lag - k) / SAMPLE_RATE * 1000.0, 0.0,
                            correlation)
    # A short filter around the delay, by least squares: the echo path's colouring, not just a gain.
    half = taps // 2
    lo = max(0, k - half)
    hi = min(max_lag, lo + taps - 1)
    lags = range(lo, hi + 1)
    basis = np.stack([r[j:j + n] for j in lags], axis=1)
    # Normal equations (a 32x32 solve) rather than lstsq's SVD of the whole basis: the same filter for
    # a well-conditioned speech reference, at a fraction of the cost; the ridge keeps it solvable when
    # the reference is nearly silent in part of the window.
    gram = basis.T @ basis
    gram[np.diag_indices_from(gram)] += 1e-6 * (np.trace(gram) / len(lags) + 1.0)
    weights = np.linalg.solve(gram, basis.T @ x)
    echo = basis @ weights
    residual = x - echo
    # Frame by frame, keep the residual only where taking the estimate out removed 90 % of the energy (10 dB):
    # there the agent's echo was most of what came in (an echo alone loses 25-37 dB). A fit to a caller's
    # voice on a line with no echo at all (a correlation of 0.1-0.4 by chance) takes 3 dB out of 2 % of its
    # frames and 6 dB out of a quiet few, 10 dB out of none; at 3 dB those frames had the caller's onset
    # thinned enough to delay a barge-in by 400 ms. Where the inbound audio is quiet or is something else (a
    # door, a tone), a least-squares fit over the whole window still puts a little of the reference there, and
    # subtracting it would add the agent's voice to a frame that had none: a speech model would then hear
    # speech in a cough. Where the caller talks over the echo, their voice is most of the energy and stays as
    # it came (the model hears them either way).
    frames = n // _FRAME
    if frames:
        xs = x[: frames * _FRAME].reshape(frames, _FRAME)
        rs = residual[: frames * _FRAME].reshape(frames, _FRAME)
        kept = np.einsum("ij,ij->i", rs, rs) > _FRAME_REDUCTION * np.einsum("ij,ij->i", xs, xs)
        rs[kept] = xs[kept]
    if n % _FRAME:
        tail = slice(frames * _FRAME, n)
        if np.dot(residual[tail], residual[tail]) > _FRAME_REDUCTION * np.dot(x[tail], x[tail]):
            residual[tail] = x[tail]
    r_energy = float(np.dot(residual, residual))
    erle = 10.0 * np.log10(x_energy / max(r_energy, 1e-9))
    out = np.clip(np.round(residual), -32768, 32767).astype(np.int16)
    return EchoEstimate(out, (max_lag - k) / SAMPLE_RATE * 1000.0, float(erle), correlation)
