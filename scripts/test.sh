#!/usr/bin/env bash
# The README's second command (and what CI runs): set up .venv, lint, then run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup-venv.sh"
venv="${MEDTUNE_VENV:-$root/.venv}"
cd "$root"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$venv/bin/ruff" check src tests benchmarks
# Tests run in as many worker processes as there are cores (pytest-xdist), one torch thread each
# (tests/conftest.py); MEDTUNE_TEST_WORKERS=0 runs them in this process, and a -n given here wins.
exec "$venv/bin/python" -m pytest -n "${MEDTUNE_TEST_WORKERS:-auto}" "$@"
