"""CI's rule that no test may skip, and the device markers, on a throw-away test file run by pytest itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SAMPLE = '''
import pytest

def test_runs():
    assert True

def test_needs_data():
    pytest.skip("real data not available: /nowhere/medqa")

@pytest.mark.gpu
def test_on_a_gpu():
    raise AssertionError("left out on a machine without CUDA")

@pytest.mark.xfail(reason="a known failure is not a skip")
def test_known_failure():
    raise AssertionError
'''


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(SAMPLE, encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if k not in ("MEDTUNE_NO_SKIPS", "MEDTUNE_ALLOWED_SKIPS")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "skip_policy",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, env={**clean, "PYTHONPATH": str(TESTS), **env})


@pytest.fixture(scope="module")
def no_cuda() -> None:
    import torch

    if torch.cuda.is_available():  # the sample's gpu test would run (and fail on purpose)
        pytest.fail("this test's sample assumes a machine without CUDA; run it on one")


def test_a_skip_fails_the_run_in_ci(tmp_path: Path, no_cuda: None) -> None:
    done = _pytest(tmp_path, MEDTUNE_NO_SKIPS="1")
    assert done.returncode == 1, done.stdout
    assert "1 test(s) skipped that CI must run" in done.stdout
    assert "test_sample.py::test_needs_data: real data not available: /nowhere/medqa" in done.stdout
    assert "1 passed, 1 skipped, 1 deselected, 1 xfailed in" in done.stdout


def test_outside_ci_a_skip_is_reported_and_the_run_passes(tmp_path: Path, no_cuda: None) -> None:
    done = _pytest(tmp_path)
    assert done.returncode == 0, done.stdout
    assert "skipped that CI must run" not in done.stdout
    assert "tests marked gpu are left out of this run: no CUDA device here" in done.stdout


def test_an_allowed_skip_passes_in_ci(tmp_path: Path, no_cuda: None) -> None:
    done = _pytest(tmp_path, MEDTUNE_NO_SKIPS="1", MEDTUNE_ALLOWED_SKIPS="other_test, test_needs_data")
    assert done.returncode == 0, done.stdout
