"""Where the tests find the shared real-data samples (never needed at run time).

``../shared/data`` beside the checkout, or ``$DENSEFEAT_SHARED_DATA``. Tests that need a
sample skip when it is absent on a developer's machine; under CI (``CI`` set) its absence is
an error instead (see conftest.py), so a missing sample can never turn tests into skips there.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(
    os.environ.get("DENSEFEAT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
