"""Band-limited sample-rate conversion (soxr) and int16 <-> float32 conversion.

Where rates change in a call:
- TTS output (Piper: 22050 Hz, others 16/24 kHz) -> 8000 Hz for the phone line, streamed;
- caller audio 8000 Hz -> 16000 Hz for whisper, one-shot per utterance.

Decimating to 8 kHz must low-pass below 4 kHz first, or everything between 4 and 11 kHz in the
TTS voice (sibilants) folds back into the band as hiss. soxr does this properly and in C, far
faster than anything we would write, so this module is a thin typed wrapper.

soxr is always driven in float32 here, with our own rounding and clipping back to int16: soxr's
own int16 output path adds TPDF dither, which makes its output non-deterministic in the last bit
and makes a stream and a one-shot conversion of the same audio disagree.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

__all__ = ["QUALITY", "StreamResampler", "float32_to_int16", "int16_to_float32", "resample"]

# soxr "HQ": 20-bit precision, passband to ~91% of Nyquist. Far beyond what mu-law (about 13 bits
# of precision, 300-3400 Hz telephone band) can carry, yet still costs only a few microseconds
# per 20 ms frame; "VHQ" would buy nothing audible on a phone line.
QUALITY = "HQ"

_INT16_SCALE = 32768.0  # float 1.0 == int16 32768, so int16 -> float -> int16 is exact


def int16_to_float32(x: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
    """int16 samples -> float32 in [-1.0, 1.0), same shape."""
    arr = np.asarray(x)
    if arr.dtype != np.int16:
        raise TypeError(f"int16_to_float32 needs int16 samples, got {arr.dtype}")
    return arr.astype(np.float32) * np.float32(1.0 / _INT16_SCALE)


def float32_to_int16(x: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Float samples in [-1.0, 1.0] -> int16, rounded to nearest and clipped (not wrapped).

    Clipping matters: resampling can overshoot full scale slightly (Gibbs ringing on loud TTS),
    and a plain cast would turn +1.0001 into -32768, a full-scale click.
    """
    scaled = np.asarray(x, dtype=np.float32) * np.float32(_INT16_SCALE)
    return np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)


def _int16(x: npt.NDArray[np.int16], who: str) -> npt.NDArray[np.int16]:
    """`x` as a 1-D int16 array; other dtypes are a caller's mistake, not something to cast
    (float audio in [-1, 1] would become zeros, int32 would wrap)."""
    arr = np.asarray(x)
    if arr.dtype != np.int16:
        raise TypeError(f"{who} needs int16 samples, got {arr.dtype}")
    return arr.reshape(-1)


def _check_rates(src_rate: int, dst_rate: int) -> None:
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be > 0, got {src_rate} -> {dst_rate}")


def resample(samples: npt.NDArray[np.int16], src_rate: int, dst_rate: int) -> npt.NDArray[np.int16]:
    """Resample a whole int16 signal (e.g. one utterance for a batch STT engine).

    Returns a new array; identity (a copy) when the rates are equal.
    """
    _check_rates(src_rate, dst_rate)
    x = _int16(samples, "resample")
    if src_rate == dst_rate:
        return x.copy()
    if x.size == 0:
        return np.zeros(0, dtype=np.int16)
    y = soxr.resample(int16_to_float32(x), src_rate, dst_rate, quality=QUALITY)
    return float32_to_int16(y)


class StreamResampler:
    """Chunk-by-chunk resampling of one continuous signal (e.g. one TTS stream).

    The filter state carries across chunks, so chunk boundaries leave no clicks and the output
    equals (to rounding) a one-shot conversion of the concatenated input. Output lags input by
    the filter's delay; `flush()` at the end of the signal releases the tail. After `flush()`
    the resampler is ready for a new, unrelated signal.
    """

    __slots__ = ("_src_rate", "_dst_rate", "_stream")

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        _check_rates(src_rate, dst_rate)
        self._src_rate = src_rate
        self._dst_rate = dst_rate
        self._stream: soxr.ResampleStream | None = None
        if src_rate != dst_rate:
            self._stream = soxr.ResampleStream(
                src_rate, dst_rate, 1, dtype="float32", quality=QUALITY
            )

    @property
    def src_rate(self) -> int:
        return self._src_rate

    @property
    def dst_rate(self) -> int:
        return self._dst_rate

    def process(self, chunk: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Feed int16 samples (any length); returns the output that is ready (may be empty)."""
        x = _int16(chunk, "StreamResampler.process")
        if self._stream is None:
            return x.copy()
        if x.size == 0:
            return np.zeros(0, dtype=np.int16)
        return float32_to_int16(self._stream.resample_chunk(int16_to_float32(x)))

    def flush(self) -> npt.NDArray[np.int16]:
        """End of signal: the remaining output. Resets the resampler for reuse."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream.clear()
        return float32_to_int16(tail)
