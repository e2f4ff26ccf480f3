"""Fixtures the dialog's store tests share."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A fresh SQLite database file for the test."""
    return str(tmp_path / "voicegate.db")
