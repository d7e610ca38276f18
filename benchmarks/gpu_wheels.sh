#!/usr/bin/env bash
# Download the wheels the GPU machine lacks, for benchmarks/gpu_check.py, into DIR (default gpu-wheels/).
#
#   benchmarks/gpu_wheels.sh [DIR]
#
# Why: the lent GPU machine has no network and already has torch, transformers, accelerate, peft, pandas,
# pyarrow, typer, rich, statsmodels, scikit-learn, pytest, hypothesis, safetensors and sentence-transformers
# (Python 3.12). What medtune and the check's baselines import beyond that has to travel with the working tree,
# at most 64 MiB per call: pydantic (medtune's settings), trl + datasets (the SFTTrainer baseline), lm-eval (the
# scoring baseline), bitsandbytes (qlora, 4-bit evaluation, 8-bit optimizers), galore-torch, and medtune itself.
#
# Only import-time dependencies are fetched, each found by importing the package here and subtracting what the
# GPU machine has (datasets: dill, xxhash, multiprocess; lm_eval.models.huggingface: requests and its urllib3,
# certifi, charset-normalizer; pandas on the machine may want pytz). Everything is --no-deps: a package that
# would pull more is not pulled, so the list below is the whole set. Versions are the ones installed in this
# checkout's virtual environment (PYTHON, default .venv/bin/python) when it has them — the versions the check's
# CPU mode ran with here — else the newest on PyPI.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$REPO/gpu-wheels}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
LIMIT_MIB=64
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

PACKAGES=(
  pydantic pydantic-core annotated-types typing-inspection
  trl datasets dill xxhash multiprocess pytz
  lm-eval requests urllib3 certifi charset-normalizer
  bitsandbytes galore-torch
)

pinned() {  # "name==version" when the local environment has the package, else "name"
  "$PYTHON" - "$1" <<'EOF'
import importlib.metadata as md, sys
name = sys.argv[1]
try:
    print(f"{name}=={md.version(name)}")
except md.PackageNotFoundError:
    print(name)
EOF
}

SPECS=()
for p in "${PACKAGES[@]}"; do SPECS+=("$(pinned "$p")"); done
# --isolated: PyPI only, whatever extra indexes, find-links or constraints a pip configuration names here
# (the CA bundle a configuration names is kept, for a proxy that re-signs TLS).
CERT=()
if [ -n "${PIP_CERT:-}" ]; then CERT=(--cert "$PIP_CERT"); fi
echo "downloading for CPython 3.12, manylinux x86_64: ${SPECS[*]}"
"$PYTHON" -m pip download --isolated "${CERT[@]}" --quiet --no-deps --only-binary=:all: --dest "$DIR" \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_24_x86_64 --platform any \
  --index-url https://pypi.org/simple \
  "${SPECS[@]}"

# medtune itself, from this working tree (pure Python). setuptools builds in REPO/build: removed afterwards
# unless it was there before (it is not ignored by git).
rm -f "$DIR"/medtune-*.whl
had_build=0; [ -e "$REPO/build" ] && had_build=1
"$PYTHON" -m pip wheel --quiet --no-index --no-deps --no-build-isolation --wheel-dir "$DIR" "$REPO"
[ "$had_build" = 1 ] || rm -rf "$REPO/build"

echo
echo "wheels in $DIR:"
ls -l "$DIR"/*.whl | awk '{printf "  %8.1f MiB  %s\n", $5 / 1048576, $NF}' | sed "s#$DIR/##"
total=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
total_mib=$(awk -v b="$total" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "total: $total_mib MiB (limit $LIMIT_MIB MiB per device call)"
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "ERROR: the wheels are over $LIMIT_MIB MiB, too big to carry in one device call. The biggest:" >&2
  ls -S "$DIR"/*.whl | head -5 | while read -r f; do
    printf "  %8.1f MiB  %s\n" "$(awk -v b="$(stat -c %s "$f")" 'BEGIN { print b / 1048576 }')" "$(basename "$f")" >&2
  done
  echo "Drop bitsandbytes-*.whl first: gpu_check.py then records qlora, the 4-bit evaluation and TRL's QLoRA" \
       "as skipped (bitsandbytes missing) and runs everything else." >&2
  exit 1
fi

REL="${DIR#"$REPO"/}"
echo
echo "on the GPU machine (carry $REL), from the repository root:"
echo "  pip install --no-index --no-deps --target /tmp/py $REL/*.whl && PYTHONPATH=src:/tmp/py python benchmarks/gpu_check.py --out \$OUT/gpu_check.json"
echo "(src first, so the working tree's medtune wins over the wheel's copy if the two differ)"
