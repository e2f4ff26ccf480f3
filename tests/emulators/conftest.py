"""Fixtures for the emulator tests: a running emulator server with test-sized latencies."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from emulators.config import EmulatorConfig
from emulators.server import EmulatorServer, running_emulators


def fast_config() -> EmulatorConfig:
    # Small but non-zero latencies: the tests check the order and the gaps, not absolute speed.
    return EmulatorConfig(stt_final_delay=0.05, llm_first_token=0.05, llm_token_rate=400.0,
                          tts_first_byte=0.05, tts_realtime_factor=20.0)


@pytest.fixture
async def emu() -> AsyncIterator[EmulatorServer]:
    async with running_emulators(fast_config()) as server:
        yield server
