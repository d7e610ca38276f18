"""scripts/setup-venv.sh stops at a failed install step, says which, and writes no stamp."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fake_venv(tmp_path: Path, fail_on: str) -> Path:
    """A venv whose python runs pip steps as a log and fails the one that mentions ``fail_on``."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f"""#!/usr/bin/env bash
echo "$*" >> "{venv}/calls.log"
if [[ "$*" == *"{fail_on}"* ]]; then echo "ERROR: No matching distribution found for {fail_on}" >&2; exit 1; fi
exit 0
""")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return venv


def _run(venv: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO / "scripts" / "setup-venv.sh")], capture_output=True, text=True,
                          env={**os.environ, "MEDTUNE_VENV": str(venv)}, timeout=60)


def test_a_failed_install_step_stops_the_script_with_its_message_and_no_stamp(tmp_path: Path) -> None:
    venv = _fake_venv(tmp_path, fail_on="no-deps.txt")
    (venv / ".medtune-install-stamp").write_text("stale\n")  # an earlier, different install
    proc = _run(venv)
    assert proc.returncode != 0
    assert "FAILED: pip could not install the no-deps packages" in proc.stderr
    assert "No matching distribution found" in proc.stderr  # pip's own words are shown
    assert not (venv / ".medtune-install-stamp").exists()
    calls = (venv / "calls.log").read_text()
    assert "torch" in calls and "import medtune" not in calls  # it stopped at the failing step


def test_a_successful_setup_writes_the_stamp_and_skips_next_time(tmp_path: Path) -> None:
    venv = _fake_venv(tmp_path, fail_on="never-matches-anything")
    assert _run(venv).returncode == 0
    assert (venv / ".medtune-install-stamp").exists()
    n_calls = len((venv / "calls.log").read_text().splitlines())
    assert _run(venv).returncode == 0
    assert len((venv / "calls.log").read_text().splitlines()) == n_calls  # nothing installed again
