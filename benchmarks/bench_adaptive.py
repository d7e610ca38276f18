"""Adaptive curricula against random shuffle and the best fixed curriculum, at the same number of steps.

Runs the grid ``configs/adaptive-cpu.yaml`` (``medtune run`` would do the same; finished cells are reused),
then reads the run:

- final accuracy on the test set: each arm's gain over random shuffle and over the best fixed curriculum
  (the fixed order with the highest mean accuracy), with the seed-aware 95 % interval of
  :func:`medtune.stats.compare_runs` (the training run as the unit, paired by seed);
- steps to reach random's final accuracy: the test set is scored at every checkpoint (``save_every`` steps)
  and at the end; the first step at which the arm's mean accuracy over seeds reaches random shuffle's final mean
  accuracy, as a share of random's steps (``—``: not reached);
- scoring overhead: the seconds spent scoring at decision points (``decisions.jsonl`` timings) as a share of
  scoring plus training-step seconds (:func:`medtune.adaptive.stage.scoring_overhead`), at the config's
  ``every`` and ``rescore``: in all, and periodic (without the first decision, which scores the whole pool once
  on the base model).

Prints the table and writes it to ``benchmarks/results/adaptive.md`` (and ``adaptive.json``).

    python benchmarks/bench_adaptive.py [--config configs/adaptive-cpu.yaml] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _cached_curve(run_dir: Path, items: list[Any], eval_settings: Any, cache: Path) -> dict[int, np.ndarray]:
    """:func:`_curve`, kept in ``cache`` under the run's store key and the test items (a rerun scores only new runs)."""
    from medtune.io import stable_hash

    key = stable_hash({"run": run_dir.parent.name, "items": [it.id for it in items],
                       "eval": eval_settings.to_dict()})
    path = cache / f"{key}.npz"
    if path.exists():
        with np.load(path) as data:
            return {int(k): data[k] for k in sorted(data.files, key=int)}
    curve = _curve(run_dir, items, eval_settings)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{str(k): v for k, v in curve.items()})
    tmp.replace(path)
    return curve


def _curve(run_dir: Path, items: list[Any], eval_settings: Any) -> dict[int, np.ndarray]:
    """Step → per-item correctness on ``items`` for every checkpoint of a full fine-tuning run and its end."""
    from safetensors.torch import load_file

    from medtune.evaluation_stage import ModelRef, load_model
    from medtune.scoring import score_items
    from medtune.training.checkpoint import list_checkpoints
    from medtune.training.runlog import read_log

    backend = load_model(ModelRef.from_run(run_dir), eval_settings)
    mode, template = eval_settings.mode, eval_settings.template
    out = {}
    final_steps = len(read_log(run_dir))
    out[final_steps] = score_items(backend, items, mode=mode, template=template)["correct"].to_numpy(dtype=float)
    final_state = {k: v.clone() for k, v in backend.model.state_dict().items()}
    for ckpt in list_checkpoints(run_dir):
        step = int(ckpt.name.split("-", 1)[1])
        if step >= final_steps:
            continue
        state = load_file(str(ckpt / "weights.safetensors"))
        result = backend.model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise RuntimeError(f"{ckpt}: weights the model lacks: {result.unexpected_keys[:3]}")
        out[step] = score_items(backend, items, mode=mode, template=template)["correct"].to_numpy(dtype=float)
    backend.model.load_state_dict(final_state)
    return dict(sorted(out.items()))


def _score_share(run_dir: Path) -> dict[str, float] | None:
    from medtune.adaptive.decisions import read_decisions
    from medtune.adaptive.stage import scoring_overhead
    from medtune.training.runlog import read_log

    if not (run_dir / "decisions.jsonl").exists():
        return None
    return scoring_overhead(read_decisions(run_dir), read_log(run_dir))


def _compare(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> dict[str, Any]:
    from medtune.stats import compare_runs

    res = compare_runs(a, b, n_boot=200, seed=0)
    return {"gain": res["gain"], "lo": res["ci_low"], "hi": res["ci_high"], "p": res["p_value"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "adaptive-cpu.yaml"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from medtune.experiments import load_config, run_experiment
    from medtune.experiments.pipeline import eval_settings
    from medtune.schema import read_items

    cfg = load_config(args.config)
    t0 = time.perf_counter()
    run_experiment(cfg, progress=False, log=lambda s: print(s, flush=True))
    grid_s = time.perf_counter() - t0
    torch.set_num_threads(1)
    settings = eval_settings(cfg)
    records = [json.loads(p.read_text()) for p in sorted((cfg.run_dir / "cells").glob("*.json"))]
    records = [r for r in records if r.get("status") == "done" and r["strategy"] != "base"]
    test = next(iter(cfg.test_sets)).label
    items = list(read_items(Path(records[0]["tests"][test]["items"])))
    adaptive = {s.id for s in cfg.strategies if s.is_adaptive}
    arms: dict[str, dict[int, dict[int, np.ndarray]]] = {}
    shares: dict[str, list[dict[str, float]]] = {}
    t1 = time.perf_counter()
    for r in records:
        run_dir = Path(r["train"]["dir"])
        arms.setdefault(r["strategy"], {})[int(r["seed"])] = _cached_curve(run_dir, items, settings,
                                                                           Path(args.out) / "curves")
        share = _score_share(run_dir)
        if share is not None:
            shares.setdefault(r["strategy"], []).append(share)
    curve_s = time.perf_counter() - t1

    final = {a: {s: c[max(c)] for s, c in runs.items()} for a, runs in arms.items()}
    mean_final = {a: float(np.mean([v.mean() for v in f.values()])) for a, f in final.items()}
    baseline = cfg.baseline_strategy
    fixed = [a for a in arms if a not in adaptive and a != baseline and not a.endswith("-aa")]
    best_fixed = max(fixed, key=lambda a: mean_final[a]) if fixed else None
    random_steps = max(next(iter(arms[baseline].values())))
    target = mean_final[baseline]

    def reach(arm: str, seeds: list[int] | None = None) -> float | None:
        """First step (share of random's) whose mean accuracy over ``seeds`` reaches random's final mean there."""
        runs = arms[arm]
        seeds = sorted(runs) if seeds is None else seeds
        goal = target if seeds == sorted(runs) else float(np.mean([final[baseline][s].mean() for s in seeds]))
        steps = sorted(set.intersection(*(set(c) for c in runs.values())))
        for step in steps:
            if float(np.mean([runs[s][step].mean() for s in seeds])) >= goal:
                return step / random_steps
        return None

    def reach_interval(arm: str, n_boot: int = 1000) -> tuple[float, float | None]:
        """95 % interval of ``reach`` over seeds resampled with replacement (the same seeds for random's target);
        the upper end is None when more than 2.5 % of the resamples never reach it."""
        rng = np.random.default_rng(0)
        seeds = sorted(set(arms[arm]) & set(final[baseline]))
        draws = [reach(arm, sorted(rng.choice(seeds, size=len(seeds)).tolist())) for _ in range(n_boot)]
        values = np.array([np.inf if d is None else d for d in draws])
        lo, hi = np.quantile(values, [0.025, 0.975], method="inverted_cdf")  # no interpolation with inf
        return float(lo), None if not np.isfinite(hi) else float(hi)

    rows = []
    for arm in [baseline, *fixed, *sorted(adaptive & set(arms))]:
        vs_random = _compare(final[arm], final[baseline]) if arm != baseline else None
        vs_best = _compare(final[arm], final[best_fixed]) if best_fixed and arm in adaptive else None
        sh = shares.get(arm)
        rows.append({
            "arm": arm, "kind": "adaptive" if arm in adaptive else "fixed", "seeds": len(final[arm]),
            "accuracy": mean_final[arm], "vs_random": vs_random, "vs_best_fixed": vs_best,
            "reach_share": reach(arm), "reach_interval": reach_interval(arm),
            "score_share": float(np.mean([x["score_share"] for x in sh])) if sh else None,
            "periodic_share": float(np.mean([x["periodic_share"] for x in sh])) if sh else None,
            "score_s": float(np.mean([x["score_seconds"] for x in sh])) if sh else None,
            "first_s": float(np.mean([x["first_score_seconds"] for x in sh])) if sh else None,
            "step_s": float(np.mean([x["step_seconds"] for x in sh])) if sh else None})

    def ci(c: dict[str, Any] | None) -> str:
        if c is None:
            return "—"
        return f"{100 * c['gain']:+.1f} pp [{100 * c['lo']:+.1f}, {100 * c['hi']:+.1f}]"

    lines = [
        f"# bench_adaptive — {cfg.name}: {len(next(iter(final.values())))} seeds, {len(items)} test items, "
        f"{random_steps} steps per run",
        "",
        f"machine: torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{os.cpu_count()} CPUs; grid {grid_s:.0f} s, checkpoint curves {curve_s:.0f} s",
        f"baseline: {baseline} (final accuracy {100 * target:.1f} %); best fixed curriculum: {best_fixed}"
        f" ({100 * mean_final[best_fixed]:.1f} %)" if best_fixed else "",
        "",
        "| arm | kind | seeds | final accuracy | gain vs random [95 % seed-aware CI] | gain vs best fixed | "
        "steps to random's final acc. (share of random's) | scoring share: periodic | in all (s of s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["reach_interval"]
        bounds = f" [{100 * lo:.0f}, {'—' if hi is None else f'{100 * hi:.0f}'}]" if np.isfinite(lo) else ""
        reach_txt = ("not reached" if r["reach_share"] is None else f"{100 * r['reach_share']:.0f} %") + bounds
        periodic_txt = "—" if r["periodic_share"] is None else f"{100 * r['periodic_share']:.1f} %"
        share_txt = "—" if r["score_share"] is None else (
            f"{100 * r['score_share']:.1f} % ({r['score_s']:.1f} s of {r['score_s'] + r['step_s']:.1f} s)")
        lines.append(f"| {r['arm']} | {r['kind']} | {r['seeds']} | {100 * r['accuracy']:.1f} % | {ci(r['vs_random'])} "
                     f"| {ci(r['vs_best_fixed'])} | {reach_txt} | {periodic_txt} | {share_txt} |")
    lines += ["", "Accuracy: the test set, scored at every checkpoint and at the end (no anchor estimate). "
              "Steps to reach: first step whose mean accuracy over seeds reaches random's final mean; random itself "
              "reaches it at 100 % by definition, or earlier if its curve peaks before the end; in brackets a 95 % "
              "interval over seeds resampled with replacement (— : over 2.5 % of the resamples never reach it)."]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adaptive.md").write_text(text + "\n", encoding="utf-8")
    (out / "adaptive.json").write_text(json.dumps({"rows": rows, "best_fixed": best_fixed, "baseline": baseline},
                                                  indent=1, default=float) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
