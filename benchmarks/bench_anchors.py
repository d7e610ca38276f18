"""Benchmark: how well k anchor items estimate a model's full-test accuracy, against random anchors.

    python benchmarks/bench_anchors.py                       # simulation: 2PL responses, no run needed
    python benchmarks/bench_anchors.py --quick               # fewer replicates (development only)
    python benchmarks/bench_anchors.py --run RUN_DIR         # a grid run's cells, leave one model out
    python benchmarks/bench_anchors.py --run A --run B       # several runs (each test set measured on its own)
    python benchmarks/bench_anchors.py A.parquet B.parquet … # prediction files of many models on one test set

For every k (default 25, 50, 100), anchor method (irt-clusters, correctness-clusters, random) and estimator
(weighted, pirt, gpirt) it prints the mean absolute error of the estimate against the full evaluation's
accuracy, the mean signed error, the empirical coverage of the 95 % intervals and their mean width, and the MAE
as a ratio to the named baseline measured in the same run: random anchors with the weighted estimator (the
accuracy on k items drawn at random, what one would do without anchors).

Simulation: each replicate draws ``--known + --held-out`` models and ``--items`` items from a 2PL
(:func:`medtune.irt.simulate_responses`); the anchors are chosen from the known models only and every held-out
model is estimated; random anchors are drawn afresh per replicate. Real predictions: leave one model out, the
anchors chosen from the other models; random anchors with ``--random-seeds`` seeds per held-out model. The
models' full-test accuracy spread is printed beside the errors: near-chance models that all score alike make a
weak test of anchors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medtune.anchors import ANCHOR_METHODS, choose_anchors, responses_from_predictions, responses_from_run
from medtune.anchors.estimate import estimate_all
from medtune.irt import fit_irt, simulate_responses

BASELINE = ("random", "weighted")


def _score(anchor_set, ids: list[str], row: np.ndarray, n_boot: int, seed: int) -> list[dict]:
    truth = float(np.nanmean(row))
    res = estimate_all(anchor_set, dict(zip(ids, row, strict=True)), n_boot=n_boot, seed=seed)
    return [{"estimator": m, "error": r["estimate"] - truth,
             "covered": r["ci_low"] <= truth <= r["ci_high"], "width": r["ci_high"] - r["ci_low"]}
            for m, r in res.items()]


def simulate(ks: list[int], *, items: int, known: int, held: int, reps: int, n_boot: int, seed: int) -> pd.DataFrame:
    rows = []
    for rep in range(reps):
        y, _ = simulate_responses(known + held, items, model="2pl", seed=seed + rep)
        train, test = y[:known], y[known:]
        ids = [f"q{j}" for j in range(items)]
        fit = fit_irt(train, model="2pl")
        for k in ks:
            for method in ANCHOR_METHODS:
                anchors = choose_anchors(train, ids, k, seed=seed + rep, method=method, fit=fit)
                for i, row in enumerate(test):
                    for r in _score(anchors, ids, row, n_boot, seed=rep * 10_000 + i):
                        rows.append({"k": k, "method": method, "replicate": rep, **r})
        print(f"  replicate {rep + 1}/{reps} done", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def leave_one_out(y: pd.DataFrame, ks: list[int], *, n_boot: int, seed: int, random_seeds: int) -> pd.DataFrame:
    """Each model held out in turn; anchors from the others (random anchors with several seeds)."""
    ids = [str(c) for c in y.columns]
    rows = []
    values = y.to_numpy(dtype=float)
    for i, name in enumerate(y.index):
        train = np.delete(values, i, axis=0)
        fit = fit_irt(train, model="2pl")
        for k in ks:
            if k > len(ids):
                continue
            for method in ANCHOR_METHODS:
                seeds = range(random_seeds) if method == "random" else [seed]
                for s in seeds:
                    anchors = choose_anchors(train, ids, k, seed=s, method=method, fit=fit)
                    for r in _score(anchors, ids, values[i], n_boot, seed=s):
                        rows.append({"k": k, "method": method, "replicate": str(name), **r})
        print(f"  held out {i + 1}/{len(y)}: {name}", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def population(y: pd.DataFrame) -> dict:
    """Models, items and the spread of the models' full-test accuracies.

    Anchors are only as well tested as the models differ: near-chance models all score alike, so a small MAE on
    them says little. The spread is printed beside the errors for that reason.
    """
    acc = y.mean(axis=1).to_numpy(dtype=float)
    return {"models": int(y.shape[0]), "items": int(y.shape[1]), "acc_min": float(acc.min()),
            "acc_median": float(np.median(acc)), "acc_max": float(acc.max()), "acc_sd": float(acc.std(ddof=1))}


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    g = rows.groupby(["k", "method", "estimator"], sort=False)
    out = g.agg(n=("error", "size"), mae=("error", lambda e: float(np.mean(np.abs(e)))),
                bias=("error", "mean"), coverage=("covered", "mean"), width=("width", "mean")).reset_index()
    base = out[(out["method"] == BASELINE[0]) & (out["estimator"] == BASELINE[1])].set_index("k")["mae"]
    out["mae_vs_baseline"] = out["mae"] / out["k"].map(base)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions", nargs="*", type=Path, help="predictions files of many models on one test set")
    ap.add_argument("--run", type=Path, action="append", default=[],
                    help="a grid run folder (RUN_DIR/cells/*.json); repeat for several runs")
    ap.add_argument("--test-set", help="with --run: only this test set")
    ap.add_argument("--k", type=int, nargs="+", default=[25, 50, 100])
    ap.add_argument("--items", type=int, default=600, help="simulation: items per test set")
    ap.add_argument("--known", type=int, default=100, help="simulation: known models per replicate")
    ap.add_argument("--held-out", type=int, default=50, help="simulation: held-out models per replicate")
    ap.add_argument("--reps", type=int, default=20, help="simulation: replicates")
    ap.add_argument("--n-boot", type=int, default=500, help="bootstrap draws per p-IRT/gp-IRT interval")
    ap.add_argument("--random-seeds", type=int, default=5, help="real data: random anchor sets per held-out model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="simulation with 4 replicates of 25 held-out models")
    ap.add_argument("--json", type=Path,
                    help="write per data set its population (models, items, accuracy spread) and summary rows")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    sets: dict[str, pd.DataFrame] = {}
    for run in args.run:
        for name, y in responses_from_run(run, args.test_set).items():
            sets[f"{run} / {name}"] = y
    if args.predictions:
        sets[f"{len(args.predictions)} prediction files"] = responses_from_predictions(args.predictions)
    summaries = {}
    populations: dict[str, dict] = {}
    if not sets:
        reps, held = (4, 25) if args.quick else (args.reps, args.held_out)
        label = (f"simulation: 2PL, {args.items} items, {args.known} known models, {held} held-out models × "
                 f"{reps} replicates")
        summaries[label] = summarize(simulate(args.k, items=args.items, known=args.known, held=held, reps=reps,
                                              n_boot=args.n_boot, seed=args.seed))
    for label, y in sets.items():
        populations[label] = pop = population(y)
        print(f"{label}: {pop['models']} models × {pop['items']} items, accuracy {pop['acc_min']:.3f}–"
              f"{pop['acc_max']:.3f} (median {pop['acc_median']:.3f}, SD {pop['acc_sd']:.3f}), leave one model out")
        if y.shape[0] < 3:
            print("  needs at least 3 models (2 known + 1 held out); skipped")
            continue
        summaries[label] = summarize(leave_one_out(y, args.k, n_boot=args.n_boot, seed=args.seed,
                                                   random_seeds=args.random_seeds))
    for label, table in summaries.items():
        pop = populations.get(label)
        spread = (f"\n{pop['models']} models × {pop['items']} items, accuracy {pop['acc_min']:.3f}–{pop['acc_max']:.3f}"
                  f" (median {pop['acc_median']:.3f}, SD {pop['acc_sd']:.3f})") if pop else ""
        print(f"\n{label}{spread}\nbaseline: {BASELINE[0]} anchors, {BASELINE[1]} estimator (MAE ratio 1.00)")
        print(f"{'k':>4} {'anchors':<21} {'estimator':<9} {'n':>6} {'MAE':>7} {'bias':>8} {'cover95':>8} "
              f"{'width':>7} {'MAE/base':>8}")
        for r in table.itertuples():
            print(f"{r.k:>4} {r.method:<21} {r.estimator:<9} {r.n:>6} {r.mae:>7.4f} {r.bias:>+8.4f} "
                  f"{r.coverage:>8.3f} {r.width:>7.4f} {r.mae_vs_baseline:>8.2f}")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({k: {"population": populations.get(k), "rows": v.to_dict(orient="records")}
                                         for k, v in summaries.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
