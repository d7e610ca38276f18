"""Shared fixtures: where the real data lies, and temporary run folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared_data import SHARED_DATA

# Which tests this machine leaves out, and CI's rule that no test may skip (tests/skip_policy.py).
pytest_plugins = ["skip_policy"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Tests spread over worker processes (pytest -n N): one thread each, and subprocesses the tests start inherit
    # it, so N workers use N cores instead of fighting over them.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real data folder not available: {SHARED_DATA} (set MEDTUNE_SHARED_DATA)")
    return SHARED_DATA
