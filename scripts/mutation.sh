#!/usr/bin/env bash
# Mutation testing (mutmut) of the modules that carry the study's claims; docs/TESTING.md says what and why.
#
#   scripts/mutation.sh [--fresh] [--rest] [module ...]          run, then print the score per module
#   scripts/mutation.sh --score [module ...]                      print the scores of the last run only
#
# Modules: strategies options orderfile data checkpoint stats report difficulty bucketing crossfit (default: all).
# Each module is scoped to the functions listed below; [tool.mutmut] in pyproject.toml picks the files and the
# tests. --fresh deletes mutants/ first (needed after a change to src/: mutmut keeps its first copy of each file);
# --rest runs only the mutants the last run did not kill (survivors, and those it did not reach): after adding tests.
# Not part of CI: a full run takes about an hour on two cores. MUTMUT_CHILDREN (default 2) sets --max-children.
set -euo pipefail
{ # read whole before running: a checkout that rewrites this file during a long run must not change what runs
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${MEDTUNE_VENV:-$root/.venv}"

# module -> the functions mutated (mutmut mutant-name globs, relative to the module)
declare -A SCOPE=(
  [strategies]="medtune.orders.strategies:xǁOrderItemǁ__post_init__ x__rng x__check_seed x__canonical x_require
    x__shuffled x__category_order x__by_category x__by_bucket x_interleave x_random_order x_blocked x_interleaved
    x_interleaved_items x__bucketed x_curriculum x_anti_curriculum x__by_difficulty x__strict x_curriculum_strict
    x_anti_curriculum_strict x_blocked_curriculum x_interleaved_curriculum x__categories_by_difficulty
    x_blocked_curriculum_strict x_interleaved_curriculum_strict x_difficulty_ranking x_competence x_pool_sizes
    x_pacing x_review_gaps x_spaced_repetition x__strategy_name xǁStrategySpecǁresolve_options
    xǁStrategySpecǁreads_difficulty xǁStrategySpecǁ__call__ x_register_strategy x_get_strategy"
  [options]="medtune.orders.options:*"
  [orderfile]="medtune.orders.orderfile:*"
  [data]="medtune.training.data:x_check_order x_planned_epochs x_plan_steps x_check_ids_known
    x_rank_slice x_pack_next_fit x_micro_batches"
  [checkpoint]="medtune.training.checkpoint:x__flatten_state x__restore_state x_trainable_state x_checkpoint_dir
    x__sharded x__inner_optimizer x__weights_to_save x__optimizer_to_save x__rng_file x_save_checkpoint
    x_list_checkpoints x_latest_checkpoint x_load_checkpoint x__projectors_to_their_parameters"
  [stats]="medtune.stats:x_paired_t_test x__welch x_run_level_test x__as_runs x_hierarchical_bootstrap x_holm
    x__aligned"
  [report]="medtune.report.inference:x__paired x_gains_table x_aa_check_lines"
  [difficulty]="medtune.difficulty:x_ensemble_difficulty x_build_difficulty x_rebucket"
  [bucketing]="medtune.bucketing:*"
  [crossfit]="medtune.difficulty_crossfit:x_fold_of x__crossfit_repeat"
)
ORDER=(report stats data orderfile bucketing difficulty crossfit checkpoint strategies options)

fresh=0 rest=0 score_only=0 modules=()
for arg in "$@"; do
  case "$arg" in
    --fresh) fresh=1 ;;
    --rest) rest=1 ;;
    --score) score_only=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) [ -n "${SCOPE[$arg]+x}" ] || { echo "unknown module '$arg' (known: ${ORDER[*]})" >&2; exit 2; }
       modules+=("$arg") ;;
  esac
done
[ ${#modules[@]} -gt 0 ] || modules=("${ORDER[@]}")

# module=glob glob ... lines for the scorer and the run
specs=()
for m in "${modules[@]}"; do
  prefix="${SCOPE[$m]%%:*}"
  set -f; funcs=(${SCOPE[$m]#*:}); set +f  # words, never file names
  globs=()
  if [ "${funcs[*]}" = "*" ]; then globs=("$prefix.*"); else
    for f in "${funcs[@]}"; do globs+=("$prefix.${f}__mutmut_*"); done
  fi
  specs+=("$m=${globs[*]}")
done

score() {  # print killed / total per module and list the survivors; with "names", the names not killed yet
  "$venv/bin/python" - "$1" "${specs[@]}" <<'EOF'
import fnmatch, json, sys
from pathlib import Path

mode, specs = sys.argv[1], [s.split("=", 1) for s in sys.argv[2:]]
codes = {}
for meta in Path("mutants").rglob("*.py.meta"):
    codes.update(json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"])
status = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", 37: "type check", None: "not checked"}
for module, globs in specs:
    names = sorted(k for k in codes if any(fnmatch.fnmatchcase(k, g) for g in globs.split()))
    by = {}
    for k in names:
        by.setdefault(status.get(codes[k], "suspicious"), []).append(k)
    if mode == "names":
        print("\n".join(k for s in ("survived", "not checked", "no tests", "suspicious") for k in by.get(s, [])))
        continue
    done = len(names) - len(by.get("not checked", []))
    killed = len(by.get("killed", [])) + len(by.get("timeout", []))
    extra = ", ".join(f"{len(v)} {s}" for s, v in sorted(by.items()) if s not in ("killed", "timeout"))
    print(f"{module:17s} killed {killed} / {done} run of {len(names)} mutants" + (f" ({extra})" if extra else ""))
    for s in ("survived", "no tests", "suspicious"):
        for k in by.get(s, []):
            print(f"    {s}: {k}")
EOF
}

if [ "$score_only" = 0 ]; then
  [ -x "$venv/bin/python" ] || scripts/setup-venv.sh
  if ! "$venv/bin/python" -c "import mutmut" 2>/dev/null; then
    echo "[mutation] installing mutmut (the 'mutation' extra) with the tested pins" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -c requirements/constraints-cpu.txt mutmut
  fi
  [ "$fresh" = 0 ] || rm -rf mutants
  # The copy under mutants/ is where the tests run: point them at the shared data folder beside this checkout.
  export MEDTUNE_SHARED="${MEDTUNE_SHARED:-$(dirname "$root")/shared}"
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
  export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
  if [ "$rest" = 1 ]; then
    mapfile -t names < <(score names)
    if [ ${#names[@]} -eq 0 ]; then echo "[mutation] every mutant is killed already" >&2; else
      "$venv/bin/mutmut" run --max-children "${MUTMUT_CHILDREN:-2}" "${names[@]}" || true
    fi
  else
    globs=()
    for s in "${specs[@]}"; do read -ra g <<< "${s#*=}"; globs+=("${g[@]}"); done
    "$venv/bin/mutmut" run --max-children "${MUTMUT_CHILDREN:-2}" "${globs[@]}" || true
  fi
fi
echo
echo "mutation score per module ($(date -u +%Y-%m-%d), mutmut $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mutmut"))'))"
score summary
exit 0
}
