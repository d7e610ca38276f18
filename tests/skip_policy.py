"""A pytest plugin: tests left out where the machine cannot run them, and no silent skips in CI.

Loaded by tests/conftest.py (``pytest_plugins``); a plugin module of its own so that its own test can load it into a
pytest run over a throw-away test file (``-p skip_policy``).
"""

from __future__ import annotations

import os

import pytest

# ------------------------------------------------------------------------------------------------ tests by device
# A test that can only mean something on a GPU (or only without one) is marked so and left out of the run, with a
# line in the summary, where the machine cannot run it: a skip is kept for something missing that should be there.


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device; left out of the run (not skipped) on a machine "
                                       "without one")
    config.addinivalue_line("markers", "cpu_only: checks behaviour without CUDA; left out of the run on a machine "
                                       "with a GPU")


def _left_out_marker() -> tuple[str, str]:
    """The marker whose tests this machine cannot run, and why."""
    import torch

    return ("gpu", "no CUDA device here") if not torch.cuda.is_available() else ("cpu_only", "this machine has CUDA")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marker, _ = _left_out_marker()
    left_out = [item for item in items if item.get_closest_marker(marker) is not None]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item.get_closest_marker(marker) is None]


# ------------------------------------------------------------------------------------------------ skips in CI
# CI sets MEDTUNE_NO_SKIPS=1: every skip then fails the run unless its test id contains one of the comma-separated
# parts of MEDTUNE_ALLOWED_SKIPS (.ci/run allows the browser test when chromium could not be installed). A skip is
# how a missing data folder or package hides: on a developer's machine it is reported, in CI it is an error.

_SKIPPED: list[tuple[str, str]] = []  # (test id, reason), as reported to this process


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append((report.nodeid, _skip_reason(report)))


def _unexpected_skips() -> list[tuple[str, str]]:
    if os.environ.get("MEDTUNE_NO_SKIPS") != "1":
        return []
    allowed = [part.strip() for part in os.environ.get("MEDTUNE_ALLOWED_SKIPS", "").split(",") if part.strip()]
    return [(node, why) for node, why in _SKIPPED if not any(part in node for part in allowed)]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    marker, why = _left_out_marker()
    terminalreporter.write_line(f"tests marked {marker} are left out of this run: {why}")
    unexpected = _unexpected_skips()
    if unexpected:
        terminalreporter.write_sep("=", f"{len(unexpected)} test(s) skipped that CI must run", red=True)
        for node, why in unexpected:
            terminalreporter.write_line(f"{node}: {why}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller sees every report
        return
    if _unexpected_skips() and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
