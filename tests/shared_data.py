"""Where the real data lies (the shared data folder beside the checkout, or MEDTUNE_SHARED_DATA).

A module of its own, not conftest.py: several folders have a conftest.py, and ``from conftest import ...`` binds to
whichever was loaded last, so a subset such as ``pytest tests/data tests/training`` would not collect.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDTUNE_SHARED", REPO.parent / "shared"))
SHARED_DATA = Path(os.environ.get("MEDTUNE_SHARED_DATA", SHARED / "data"))


def shared_path(*parts: str) -> Path:
    """A path under the shared data folder; skip the test with a clear reason if it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (set MEDTUNE_SHARED_DATA to the real data folder)")
    return path
