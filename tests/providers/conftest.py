"""Fixtures for the cloud-provider clients: the provider emulators on 127.0.0.1, with test latencies."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from emulators.server import EmulatorServer, running_emulators
from provider_helpers import fast_config


@pytest.fixture
async def emu() -> AsyncIterator[EmulatorServer]:
    async with running_emulators(fast_config()) as server:
        yield server
