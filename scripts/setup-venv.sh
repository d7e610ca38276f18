#!/usr/bin/env bash
# Create (or reuse) .venv and install medtune with the tested pins for this CPU machine.
# Idempotent: a stamp keyed on the dependency files skips work when nothing changed. The stamp is written
# only after every install step succeeded and the core imports work, so a failed install is never taken
# for a finished one: the script stops at the failing step, prints pip's own output, and exits non-zero.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${MEDTUNE_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
stamp="$venv/.medtune-install-stamp"

fail() {
  echo "[setup] FAILED: $1" >&2
  echo "[setup] nothing was stamped; fix the cause above and run this script again." >&2
  rm -f "$stamp"
  exit 1
}

# Run one pip step quietly; on failure show its whole log and stop.
pip_step() {
  local what="$1"; shift
  local log
  log="$(mktemp)"
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2 || true
    rm -f "$log"
    fail "pip could not install $what"
  fi
  rm -f "$log"
}

[ -x "$venv/bin/python" ] || "$py" -m venv "$venv" || fail "could not create the virtual environment $venv with $py"
want="$(cat pyproject.toml requirements/constraints-cpu.txt requirements/no-deps.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -f "$stamp"
  echo "[setup] installing medtune and its tested dependencies into $venv (first run: ~3 min)" >&2
  pip_step "pip itself" --upgrade pip
  # torch first, pinned to the CPU build this machine keeps on disk (a plain `torch` pulls CUDA).
  pip_step "torch (CPU build)" -c requirements/constraints-cpu.txt torch
  pip_step "medtune and its dependencies" -c requirements/constraints-cpu.txt -e ".[quant,galore,ray,embeddings,bench,dev]"
  # Packages whose declared dependencies must not be installed (see requirements/no-deps.txt).
  pip_step "the no-deps packages (requirements/no-deps.txt)" --no-deps -r requirements/no-deps.txt
  "$venv/bin/python" -c "import medtune, torch, transformers, peft, trl" || fail "the installed packages do not import"
  echo "$want" > "$stamp"
fi
