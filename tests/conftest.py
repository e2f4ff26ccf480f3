"""Shared fixtures: the real gateway on 127.0.0.1, and the local engines for checking audio."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.support import RunningGateway, free_port, run_gateway, stop_process  # noqa: F401  (re-exported)


@pytest.fixture(scope="session")
def offline_gateway() -> Iterator[RunningGateway]:
    """The gateway on its embedded offline default (whisper + rules + piper), shared by a session's tests."""
    with run_gateway() as gateway:
        yield gateway


@pytest.fixture(scope="session")
def piper():
    from providers.piper_tts import PiperEngine

    return PiperEngine.shared()


@pytest.fixture(scope="session")
def whisper():
    from providers.whisper_stt import WhisperEngine

    return WhisperEngine.shared()


@pytest.fixture(scope="session")
def recordings():
    """Real speech and noise recordings (pinned Debian packages, sha256-checked), fetched once a session."""
    from loadgen.recordings import fetch

    return fetch()
