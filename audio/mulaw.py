"""G.711 mu-law codec for Twilio Media Streams (8 kHz, 1 byte per sample).

Both directions are table lookups built once at import from the G.711 algorithm itself, in the
exact form CPython's `audioop` implements it (`st_14linear2ulaw` / `st_ulaw2linear16` in
Modules/audioop.c). `audioop` is only the test oracle: it is deprecated, gone from the stdlib in
3.13, and converting through it costs a bytes round trip per call. A 64 KiB encode table indexed
by the int16 bit pattern and a 256-entry decode table turn a 20 ms frame into one numpy gather.

Bit-exactness with `audioop.lin2ulaw(data, 2)` / `audioop.ulaw2lin(data, 2)` matters: the same
bytes come out whether audio went through this module or through a peer that uses audioop, so
recorded calls and test fixtures compare byte for byte.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["SILENCE_BYTE", "SILENCE_DBFS", "decode", "encode", "rms_dbfs", "silence"]

# Mu-law inverts all bits, so linear 0 encodes as 0xFF (0x7F would be "negative zero", also 0).
# Twilio and most carriers fill gaps with 0xFF, so it is what we pad and idle with.
SILENCE_BYTE = 0xFF

# What `rms_dbfs` reports for empty or all-zero input. -100 dBFS is far below the quietest
# non-zero mu-law signal (codes 0x7E/0xFE decode to +-8, about -72 dBFS), so it reads as
# "nothing" without being -inf, which would poison averages, JSON and Prometheus gauges.
SILENCE_DBFS = -100.0

# 0 dBFS is the RMS of a full-scale square wave: 32768. A full-scale sine is then -3.01 dBFS.
_FULL_SCALE = 32768.0

# --- G.711 constants, named as in the reference C code --------------------------------------
_BIAS = 0x84  # added to the magnitude so every segment's breakpoints are powers of two
_CLIP = 32635  # magnitude clip in the reference code; never binds on 14-bit input but kept
# Upper bound (inclusive) of each of the 8 segments, on the 14-bit magnitude + BIAS/4 scale.
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _build_encode_table() -> npt.NDArray[np.uint8]:
    """Mu-law code for every int16 value, indexed by the value's uint16 bit pattern."""
    linear = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)
    # audioop works on 14-bit samples: the top 14 bits of the 16-bit value (arithmetic shift).
    pcm = linear >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), _CLIP) + (_BIAS >> 2)
    # `search()` in the C code: the first segment whose upper end is >= the magnitude.
    seg = np.searchsorted(_SEG_UEND, magnitude, side="left")
    mantissa = (magnitude >> np.minimum(seg + 1, 8)) & 0x0F
    uval = np.where(seg >= 8, 0x7F, (seg << 4) | mantissa)
    return (uval ^ mask).astype(np.uint8)


def _build_decode_table() -> npt.NDArray[np.int16]:
    """Linear int16 value for each of the 256 mu-law codes."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + _BIAS
    t = t << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


_ENCODE = _build_encode_table()
_DECODE = _build_decode_table()
_ENCODE.flags.writeable = False
_DECODE.flags.writeable = False


def decode(data: bytes) -> npt.NDArray[np.int16]:
    """Mu-law bytes -> int16 samples (a new, writable array)."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def encode(samples: npt.NDArray[np.int16]) -> bytes:
    """int16 samples -> mu-law bytes.

    Only int16 is accepted: silently casting floats or int32 would wrap loud samples around
    instead of clipping them. Convert with `audio.resample.float32_to_int16` first.
    """
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        raise TypeError(f"mulaw.encode needs int16 samples, got {arr.dtype}")
    return _ENCODE[arr.reshape(-1).view(np.uint16)].tobytes()


def silence(n_bytes: int) -> bytes:
    """`n_bytes` of mu-law digital silence (n_bytes samples at 8 kHz)."""
    if n_bytes < 0:
        raise ValueError(f"n_bytes must be >= 0, got {n_bytes}")
    return bytes((SILENCE_BYTE,)) * n_bytes


def rms_dbfs(samples: npt.NDArray[np.int16]) -> float:
    """RMS level of int16 samples in dBFS (full-scale square wave = 0 dBFS).

    Returns SILENCE_DBFS (-100.0) for empty or all-zero input, and never less than that.
    """
    arr = np.asarray(samples).reshape(-1)
    if arr.size == 0:
        return SILENCE_DBFS
    x = arr.astype(np.float64)
    mean_square = float(np.dot(x, x)) / arr.size
    if mean_square <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(mean_square / (_FULL_SCALE * _FULL_SCALE)))
