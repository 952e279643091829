"""Test-session checks."""

from __future__ import annotations

import os

import pytest

from _paths import SHARED_DATA


def pytest_sessionstart(session: pytest.Session) -> None:
    # CI has the shared samples; without them a third of the data tests would quietly skip.
    if os.environ.get("CI") and not SHARED_DATA.is_dir():
        raise pytest.UsageError(
            f"CI run without the shared data samples at {SHARED_DATA} "
            "(set DENSEFEAT_SHARED_DATA to their location)"
        )
