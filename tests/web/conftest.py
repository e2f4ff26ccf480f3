"""Fixtures for the dashboard, softphone and monitoring tests: a gateway with DASHBOARD_TOKEN set."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.support import RunningGateway, run_gateway
from tests.web.web_helpers import DASHBOARD_TOKEN


@pytest.fixture(scope="session")
def dashboard_gateway() -> Iterator[RunningGateway]:
    """A gateway on the offline engines with the dashboard locked by DASHBOARD_TOKEN."""
    with run_gateway(env={"DASHBOARD_TOKEN": DASHBOARD_TOKEN}) as gateway:
        yield gateway
