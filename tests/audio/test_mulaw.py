"""audio.mulaw: bit-exact G.711 mu-law against the stdlib audioop oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from audio import mulaw

audioop = pytest.importorskip("audioop")  # stdlib on 3.11/3.12, audioop-lts from 3.13

ALL_CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


def test_decode_all_256_codes_matches_audioop() -> None:
    assert mulaw.decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)


def test_encode_all_65536_values_matches_audioop() -> None:
    assert mulaw.encode(ALL_INT16) == audioop.lin2ulaw(ALL_INT16.tobytes(), 2)


def test_decode_returns_int16_array() -> None:
    out = mulaw.decode(b"\x00\x7f\x80\xff")
    assert out.dtype == np.int16
    assert out.shape == (4,)
    out[0] = 1  # a fresh, writable array, not a view of a module table


def test_every_code_survives_decode_encode() -> None:
    # 0x7F is "negative zero": it decodes to 0, which encodes as the canonical 0xFF.
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF
    assert mulaw.encode(mulaw.decode(ALL_CODES)) == bytes(expected)


def test_round_trip_error_is_bounded_by_the_segment_step() -> None:
    back = mulaw.decode(mulaw.encode(ALL_INT16)).astype(np.int32)
    err = np.abs(back - ALL_INT16.astype(np.int32))
    # Mu-law steps double per segment; the largest (top segment) is 1024, so error <= 512, plus
    # < 4 from audioop dropping the 2 low bits, plus the clip at the very top of the range
    # (+32767 decodes to 32124).
    assert err[np.abs(ALL_INT16.astype(np.int32)) < 32000].max() <= 512 + 3
    assert err.max() <= 32768 - 32124


def test_empty_input() -> None:
    assert mulaw.decode(b"").shape == (0,)
    assert mulaw.decode(b"").dtype == np.int16
    assert mulaw.encode(np.zeros(0, dtype=np.int16)) == b""


def test_encode_rejects_non_int16() -> None:
    with pytest.raises(TypeError):
        mulaw.encode(np.zeros(4, dtype=np.float32))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        mulaw.encode(np.zeros(4, dtype=np.int32))  # type: ignore[arg-type]


def test_encode_accepts_strided_and_2d_views() -> None:
    x = ALL_INT16[::7]
    assert mulaw.encode(x) == audioop.lin2ulaw(np.ascontiguousarray(x).tobytes(), 2)
    assert mulaw.encode(ALL_INT16[:320].reshape(2, 160)) == mulaw.encode(ALL_INT16[:320])


def test_silence_decodes_to_zero() -> None:
    assert mulaw.SILENCE_BYTE == 0xFF
    assert mulaw.silence(160) == b"\xff" * 160
    assert mulaw.silence(0) == b""
    assert not mulaw.decode(mulaw.silence(160)).any()
    assert mulaw.encode(np.zeros(3, dtype=np.int16)) == b"\xff\xff\xff"
    with pytest.raises(ValueError):
        mulaw.silence(-1)


def test_rms_dbfs() -> None:
    assert mulaw.rms_dbfs(np.zeros(0, dtype=np.int16)) == -100.0
    assert mulaw.rms_dbfs(np.zeros(160, dtype=np.int16)) == -100.0
    assert math.isclose(mulaw.rms_dbfs(np.array([1], dtype=np.int16)), 20 * math.log10(1 / 32768))
    square = np.tile(np.array([-32768, 32767], dtype=np.int16), 80)
    assert mulaw.rms_dbfs(square) == pytest.approx(0.0, abs=1e-3)
    t = np.arange(8000) / 8000
    sine = np.rint(np.sin(2 * np.pi * 440 * t) * 32767 * 0.1).astype(np.int16)
    assert mulaw.rms_dbfs(sine) == pytest.approx(-20 - 3.0103, abs=0.01)


@given(st.binary(max_size=2000))
def test_property_code_round_trip(data: bytes) -> None:
    assert mulaw.encode(mulaw.decode(data)) == data.replace(b"\x7f", b"\xff")
    assert mulaw.decode(data).tobytes() == audioop.ulaw2lin(data, 2)


@given(st.lists(st.integers(-32768, 32767), max_size=500))
def test_property_encode_matches_audioop_and_is_idempotent(values: list[int]) -> None:
    x = np.array(values, dtype=np.int16)
    coded = mulaw.encode(x)
    assert coded == audioop.lin2ulaw(x.tobytes(), 2)
    # Quantising an already-quantised signal changes nothing.
    assert mulaw.encode(mulaw.decode(coded)) == coded
