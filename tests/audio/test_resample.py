"""audio.resample: soxr-backed rate conversion, streaming, and sample-format conversion."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from audio.resample import StreamResampler, float32_to_int16, int16_to_float32, resample


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return float32_to_int16(amplitude * np.sin(2 * np.pi * freq * t))


def peak_hz(x: npt.NDArray[np.int16], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


def rms(x: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.mark.parametrize(
    ("src", "dst"), [(22050, 8000), (8000, 16000), (16000, 8000), (24000, 8000), (8000, 22050)]
)
def test_length_ratio(src: int, dst: int) -> None:
    x = tone(440, src, 1.0)
    y = resample(x, src, dst)
    assert y.dtype == np.int16
    assert abs(y.size - dst) <= 1


def test_identity_when_rates_are_equal() -> None:
    x = tone(440, 8000, 0.1)
    y = resample(x, 8000, 8000)
    assert np.array_equal(x, y)
    assert y is not x


def test_empty_input() -> None:
    assert resample(np.zeros(0, dtype=np.int16), 22050, 8000).shape == (0,)
    s = StreamResampler(22050, 8000)
    assert s.process(np.zeros(0, dtype=np.int16)).shape == (0,)
    assert s.flush().dtype == np.int16


def test_bad_rates() -> None:
    with pytest.raises(ValueError):
        resample(np.zeros(4, dtype=np.int16), 0, 8000)
    with pytest.raises(ValueError):
        StreamResampler(8000, -1)


def test_tone_frequency_survives_22050_to_8000() -> None:
    y = resample(tone(1000, 22050, 1.0), 22050, 8000)
    assert peak_hz(y, 8000) == pytest.approx(1000, abs=2)
    # Passband: the level is kept (0.5 amplitude sine -> RMS 0.354 of full scale).
    assert rms(y[200:-200]) == pytest.approx(0.5 / np.sqrt(2) * 32768, rel=0.02)


def test_upsampling_for_whisper_keeps_the_tone() -> None:
    y = resample(tone(300, 8000, 1.0), 8000, 16000)
    assert peak_hz(y, 16000) == pytest.approx(300, abs=2)


def test_aliasing_of_6khz_is_strongly_attenuated() -> None:
    # 6 kHz is above the 4 kHz Nyquist of the phone line: naive decimation would fold it to 2 kHz.
    x = tone(6000, 22050, 1.0)
    y = resample(x, 22050, 8000)
    # At least 60 dB down (away from the edges, where the abrupt start of the tone is broadband).
    assert rms(y[200:-200]) < rms(x) * 10 ** (-60 / 20)
    naive = x[np.round(np.arange(8000) * 22050 / 8000).astype(int)]
    assert rms(naive) > rms(x) * 0.5  # ...whereas picking samples keeps it, as an alias


@pytest.mark.parametrize("chunk", [1, 160, 441, 1000, 4410])
def test_stream_matches_one_shot(chunk: int) -> None:
    rng = np.random.default_rng(chunk)
    x = float32_to_int16(0.1 * rng.standard_normal(22050))
    one_shot = resample(x, 22050, 8000)
    s = StreamResampler(22050, 8000)
    parts = [s.process(x[i : i + chunk]) for i in range(0, x.size, chunk)]
    parts.append(s.flush())
    streamed = np.concatenate(parts)
    assert streamed.size == one_shot.size
    assert np.abs(streamed.astype(np.int32) - one_shot).max() <= 1


def test_stream_is_reusable_after_flush() -> None:
    x = tone(500, 22050, 0.3)
    s = StreamResampler(22050, 8000)
    first = np.concatenate([s.process(x), s.flush()])
    second = np.concatenate([s.process(x), s.flush()])
    assert np.array_equal(first, second)


def test_stream_identity_when_rates_are_equal() -> None:
    s = StreamResampler(8000, 8000)
    x = tone(440, 8000, 0.05)
    assert np.array_equal(s.process(x), x)
    assert s.flush().size == 0


def test_stream_of_tts_chunks_from_real_speech(speech_22k: npt.NDArray[np.int16]) -> None:
    s = StreamResampler(22050, 8000)
    parts = [s.process(speech_22k[i : i + 1024]) for i in range(0, speech_22k.size, 1024)]
    parts.append(s.flush())
    streamed = np.concatenate(parts)
    one_shot = resample(speech_22k, 22050, 8000)
    assert streamed.size == one_shot.size
    assert np.abs(streamed.astype(np.int32) - one_shot).max() <= 1


def test_float_int_conversions() -> None:
    x = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    f = int16_to_float32(x)
    assert f.dtype == np.float32
    assert f[0] == -1.0 and f[2] == 0.0
    assert np.array_equal(float32_to_int16(f), x)  # exact round trip
    clipped = float32_to_int16(np.array([-2.0, -1.0, 1.0, 1.5, 0.49 / 32768], dtype=np.float32))
    assert clipped.tolist() == [-32768, -32768, 32767, 32767, 0]  # clipped, never wrapped


def test_all_int16_round_trip_through_float() -> None:
    x = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    assert np.array_equal(float32_to_int16(int16_to_float32(x)), x)


def test_rejects_non_int16_samples() -> None:
    floats = np.zeros(100, dtype=np.float32)
    with pytest.raises(TypeError):
        resample(floats, 22050, 8000)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        StreamResampler(22050, 8000).process(floats)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        int16_to_float32(floats)  # type: ignore[arg-type]
