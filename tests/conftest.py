"""Test-session checks and shared fixtures (helpers to import are in _helpers.py)."""

from __future__ import annotations

import os

import pytest
import torch

from _paths import SHARED_DATA


def pytest_sessionstart(session: pytest.Session) -> None:
    # CI has the shared samples; without them a third of the data tests would quietly skip.
    if os.environ.get("CI") and not SHARED_DATA.is_dir():
        raise pytest.UsageError(
            f"CI run without the shared data samples at {SHARED_DATA} "
            "(set DENSEFEAT_SHARED_DATA to their location)"
        )


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from two intra-op threads on a shared 2-core machine, and lose
    a lot when the other core is busy: modules that train use one (``pytestmark``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
