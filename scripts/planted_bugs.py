"""Plant known bugs, one at a time, in a copy of the checkout and check that the test suite catches each.

    .venv/bin/python scripts/planted_bugs.py              # every bug (about 3 minutes on 2 cores)
    .venv/bin/python scripts/planted_bugs.py -k resume    # the bugs whose name contains "resume"
    .venv/bin/python scripts/planted_bugs.py --list       # what each bug breaks, and the tests that should see it

Why: a suite that passes says nothing until one knows it fails when the code is wrong. Each bug below breaks one
claim medtune makes (an item scored by a model that trained on it, a resume that forgets its learning-rate
schedule, an A/A check that calls noise a gain...). For each, the script copies the checkout (tracked and new
files) to a temporary folder, makes the one edit there, runs the named tests against the copy (``PYTHONPATH``
puts the copy's ``src`` first, subprocesses included) and expects at least one to fail. The real checkout is never
edited. An edit whose text is no longer found in the code is reported as stale, so the list cannot rot silently.

Exit status: 0 when every bug was caught, 1 when one was missed or is stale.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PlantedBug:
    name: str
    claim: str  # what the bug breaks, in the words a user would use
    file: str  # relative to the checkout
    old: str  # found exactly once in ``file``
    new: str
    tests: tuple[str, ...]  # pytest node ids or files; at least one must fail


BUGS: tuple[PlantedBug, ...] = (
    # -------------------------------------------------------------------------------------------- difficulty
    PlantedBug(
        "crossfit-trains-on-held-out", "each item's cross-fitted difficulty comes from a model that never saw it",
        "src/medtune/difficulty_crossfit.py",
        "train_items = [it for it, k in zip(items, folds, strict=True) if k != f]",
        "train_items = list(items)",
        ("tests/test_difficulty_stage.py::test_crossfit_never_scores_an_item_with_a_model_that_trained_on_it",)),
    PlantedBug(
        "ensemble-median", "difficulty is 1 − the mean expected accuracy over the ensemble's models",
        "src/medtune/difficulty.py",
        "return 1.0 - p_correct.mean(axis=1, skipna=True)",
        "return 1.0 - p_correct.median(axis=1, skipna=True)",
        ("tests/test_difficulty.py",)),
    PlantedBug(
        "bucket-edge-open", "an item exactly at a threshold belongs to the easier bucket (easy ≤ t1 < medium ≤ t2)",
        "src/medtune/bucketing.py",
        "out.append(EASY if v <= t1 else MEDIUM if v <= t2 else HARD)",
        "out.append(EASY if v < t1 else MEDIUM if v <= t2 else HARD)",
        ("tests/test_bucketing_rule.py", "tests/test_difficulty.py", "tests/test_human_difficulty.py")),
    # ------------------------------------------------------------------------------------------------ orders
    PlantedBug(
        "curriculum-reversed", "curriculum goes easy → medium → hard",
        "src/medtune/orders/strategies.py",
        'return _bucketed(items, seed, epoch, BUCKETS, "curriculum")',
        'return _bucketed(items, seed, epoch, BUCKETS[::-1], "curriculum")',
        ("tests/test_orders.py",)),
    PlantedBug(
        "strict-ties-by-id", "equal difficulties are ordered by the seed, never by the ids' spelling",
        "src/medtune/orders/strategies.py",
        "key=lambda p: (sign * p[0].difficulty, p[1])",
        "key=lambda p: (sign * p[0].difficulty, p[0].id)",
        ("tests/test_orders.py", "tests/test_orders_plan.py")),
    PlantedBug(
        "interleave-group-by-group", "interleaving takes chunk r of every category before chunk r + 1",
        "src/medtune/orders/strategies.py",
        "return [x for r in range(int(k)) for chunks in chunked for x in chunks[r]]",
        "return [x for chunks in chunked for r in range(int(k)) for x in chunks[r]]",
        ("tests/test_orders.py", "tests/orders/test_yang2024_orders.py")),
    PlantedBug(
        "same-shuffle-every-epoch", "each epoch of a random order is shuffled afresh",
        "src/medtune/orders/strategies.py",
        'return _shuffled(_ids(_canonical(items)), _rng(seed, "shuffle", epoch))',
        'return _shuffled(_ids(_canonical(items)), _rng(seed, "shuffle", 0))',
        ("tests/test_orders_plan.py",)),
    PlantedBug(
        "pacing-ramp-ignored", "a pacing schedule opens the pool gradually until the ramp's end",
        "src/medtune/orders/strategies.py",
        "x = min(1.0, t / ramp) if ramp > 0 else 1.0",
        "x = 1.0",
        ("tests/test_orders.py", "tests/test_orders_plan.py")),
    # ------------------------------------------------------------------------------------- training data plan
    PlantedBug(
        "trainer-sorts-ids", "the trainer trains in exactly the planned order",
        "src/medtune/training/data.py",
        "steps.append(PlannedStep(len(steps) + 1, e, start, tuple(ids[start : start + global_batch])))",
        "steps.append(PlannedStep(len(steps) + 1, e, start, tuple(sorted(ids)[start : start + global_batch])))",
        ("tests/training/test_order_weights.py",)),
    PlantedBug(
        "max-steps-gives-nothing", "max_steps cuts the plan to its first steps",
        "src/medtune/training/data.py",
        "            if max_steps is not None and len(steps) >= max_steps:\n                return steps",
        "            if max_steps is not None:\n                return []",
        ("tests/training/test_data.py",)),
    PlantedBug(
        "repeat-policy-first-epoch", "with epoch_policy repeat, missing epochs repeat the order file's last one",
        "src/medtune/training/data.py",
        "epochs = epochs + [epochs[-1]] * (n_epochs - len(epochs))",
        "epochs = epochs + [epochs[0]] * (n_epochs - len(epochs))",
        ("tests/training/test_data.py", "tests/training/test_data_plan_edges.py")),
    PlantedBug(
        "rank-slices-overlap", "data-parallel ranks split each global batch without overlap",
        "src/medtune/training/data.py",
        "lo = rank * base + min(rank, extra)",
        "lo = rank * base",
        ("tests/training/test_data.py",)),
    PlantedBug(
        "packing-reorders", "packing keeps the planned order inside a step",
        "src/medtune/training/data.py",
        "bins = pack_next_fit([e.n_tokens for e in encoded], pack_tokens)",
        "bins = pack_next_fit([e.n_tokens for e in encoded], pack_tokens)[::-1]",
        ("tests/training/test_data.py", "tests/training/test_packing.py")),
    # ------------------------------------------------------------------------------------------------ resume
    PlantedBug(
        "resume-without-scheduler", "a checkpoint holds the learning-rate schedule, and a resume restores it",
        "src/medtune/training/checkpoint.py",
        '    scheduler.load_state_dict(blob["scheduler"])\n',
        "",
        ("tests/training/test_resume.py::test_resume_restores_the_learning_rate_schedule",)),
    PlantedBug(
        "resume-without-rng", "a resumed run draws the same dropout masks as an uninterrupted one",
        "src/medtune/training/placement.py",
        '        torch.set_rng_state(states["torch"])\n',
        "",
        ("tests/training/test_resume.py::test_resume_restores_the_learning_rate_schedule",)),
    # ---------------------------------------------------------------------------------------------- statistics
    PlantedBug(
        "no-multiple-comparisons", "gains are reported with Holm's correction over the family of comparisons",
        "src/medtune/stats.py",
        'out[ok] = multipletests(p[ok], method="holm")[1]',
        "out[ok] = p[ok]",
        ("tests/test_stats.py", "tests/experiments/test_report_stats.py")),
    PlantedBug(
        "t-test-df-n", "the seed-level t-test has n − 1 degrees of freedom",
        "src/medtune/stats.py",
        "    df = n - 1\n",
        "    df = n\n",
        ("tests/test_stats.py",)),
    PlantedBug(
        "seed-sd-ddof0", "the spread between seeds is the sample standard deviation (ddof 1)",
        "src/medtune/stats.py",
        "sd = g.std(axis=-1, ddof=1)",
        "sd = g.std(axis=-1, ddof=0)",
        ("tests/test_stats.py",)),
    PlantedBug(
        "aa-verdict-flipped", "an A/A comparison is called null when its seed-aware p is above 0.05",
        "src/medtune/report/inference.py",
        'verdict = "null, as it must be" if r["p_holm"] > 0.05 else',
        'verdict = "null, as it must be" if r["p_holm"] <= 0.05 else',
        ("tests/experiments/test_aa_check.py",)),
    PlantedBug(
        "aa-shows-within-run-p", "the A/A line reports the seed-aware p, not the within-run one",
        "src/medtune/report/inference.py",
        "seed-aware p_holm {r['p_holm']:.3g}",
        "seed-aware p_holm {r['p_bootstrap']:.3g}",
        ("tests/experiments/test_aa_check.py",)),
    PlantedBug(
        "heatmap-transposed", "the heatmap's cells are the gains table's, row by row",
        "src/medtune/report/figures.py",
        'im = ax.imshow(pivot.to_numpy(dtype=float), cmap="RdBu"',
        'im = ax.imshow(pivot.to_numpy(dtype=float)[::-1], cmap="RdBu"',
        ("tests/experiments/test_store.py::test_heatmap_rows_name_method_and_dataset_when_they_vary",)),
    # ------------------------------------------------------------------------------------- anchors, hardware
    PlantedBug(
        "ability-se-too-wide", "an examinee's ability interval covers the true ability 95 % of the time",
        "src/medtune/anchors/ability.py",
        "return theta, 1.0 / np.sqrt(info)",
        "return theta, 1.5 / np.sqrt(info)",
        ("tests/test_anchors.py",)),
    PlantedBug(
        "bf16-flags-ignored", "a CPU with AVX-512 BF16 but no AMX computes bf16 natively",
        "src/medtune/hardware.py",
        'return "AMX" in cpu_capability().upper() or bool(NATIVE_BF16_FLAGS & _cpu_flags())',
        'return "AMX" in cpu_capability().upper()',
        ("tests/test_hardware.py",)),
    # ------------------------------------------------------------------------------------- sweeps
    PlantedBug(
        "sweep-chosen-on-test", "a sweep chooses each arm's setting on validation items, never on the test set",
        "src/medtune/experiments/selection.py",
        'g = cells.groupby([*ARM, "setting", "setting_index"], sort=False, dropna=False)["val_accuracy"]',
        'g = cells.groupby([*ARM, "setting", "setting_index"], sort=False, dropna=False)["accuracy"]',
        ("tests/experiments/test_sweep.py::test_the_choice_reads_validation_only",)),
    PlantedBug(
        "sweep-ties-to-last", "a tie between settings goes to the first in sweep order",
        "src/medtune/experiments/selection.py",
        'rows.append(g[g["val_accuracy"] >= best - TIE].sort_values("setting_index", kind="stable").iloc[0])',
        'rows.append(g[g["val_accuracy"] >= best - TIE].sort_values("setting_index", kind="stable").iloc[-1])',
        ("tests/experiments/test_sweep.py::test_ties_go_to_the_first_setting_in_sweep_order",)),
    PlantedBug(
        "sweep-trains-on-validation", "a sweep's held-out validation items are never trained on",
        "src/medtune/experiments/validation.py",
        "train = [it for it in items if not held_out(it.id, share, seed)]",
        "train = list(items)",
        ("tests/experiments/test_sweep.py::test_the_held_out_share_is_stable_and_disjoint",)),
)


def _copy_checkout(dest: Path) -> None:
    """The checkout's tracked and new (not ignored) files, as they are now."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _run_tests(copy: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(copy / "src"), "MEDTUNE_NO_SKIPS": "0"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    done = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True)
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return done.returncode, failed[0] if failed else done.stdout.strip().splitlines()[-1:][0] if done.stdout else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="select", default="", help="only bugs whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the bugs and exit")
    args = parser.parse_args(argv)
    bugs = [b for b in BUGS if args.select in b.name]
    if args.list:
        for b in bugs:
            print(f"{b.name:28} {b.file}: {b.claim}\n{'':28} tests: {' '.join(b.tests)}")
        return 0
    missed = []
    with tempfile.TemporaryDirectory(prefix="medtune-planted-") as tmp:
        copy = Path(tmp)
        _copy_checkout(copy)
        for bug in bugs:
            path = copy / bug.file
            original = path.read_text(encoding="utf-8")
            if original.count(bug.old) != 1:
                print(f"STALE   {bug.name}: the text to replace occurs {original.count(bug.old)} times in {bug.file}")
                missed.append(bug.name)
                continue
            path.write_text(original.replace(bug.old, bug.new), encoding="utf-8")
            start = time.perf_counter()
            try:
                code, first = _run_tests(copy, bug.tests)
            finally:
                path.write_text(original, encoding="utf-8")
            took = time.perf_counter() - start
            if code == 1:
                print(f"caught  {bug.name:28} {took:5.0f} s  {first}")
            else:
                print(f"MISSED  {bug.name:28} {took:5.0f} s  pytest exit {code}: {first}")
                missed.append(bug.name)
    print(f"{len(bugs) - len(missed)} of {len(bugs)} planted bugs caught" + (f"; not: {', '.join(missed)}"
                                                                             if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
