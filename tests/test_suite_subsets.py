"""Any subset of the suite collects: a folder pair, one file, a -k selection.

Several folders have a conftest.py; pytest gives each its own module, but ``from conftest import ...`` in a test
binds to whichever was loaded last, and ``from tests.conftest import ...`` loads a second copy. Shared helpers live
in modules with names of their own (tests/shared_data.py, tests/bpe_helpers.py), on pytest's path.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def test_no_test_imports_a_conftest() -> None:
    pattern = re.compile(r"^\s*(from\s+(tests\.)?conftest\s+import|import\s+(tests\.)?conftest\b)", re.M)
    offenders = [str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py") if pattern.search(p.read_text("utf-8"))]
    assert offenders == []


@pytest.mark.parametrize("selection", [
    ["tests/data/test_load_medqa.py", "tests/training/test_data.py"],  # a folder whose conftest loads between
    ["tests/data", "-k", "medqa and not usmle"],
])
def test_a_subset_collects(selection: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           *selection], cwd=TESTS.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"\d+ tests? collected", done.stdout), done.stdout[-500:]
