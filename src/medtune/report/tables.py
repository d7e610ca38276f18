"""The report's descriptive tables: accuracy per cell group, per difficulty level, the best strategy, the headline.

Each is a mean over seeds of what the cells scored, with the item-bootstrap interval where one is shown; the
comparisons with the baseline (and their p-values) come from :mod:`medtune.report.inference` and are only merged in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtune.experiments.grid import BASE_STRATEGY, NO_DIFFICULTY
from medtune.report.results import GROUP, RunData, cell_label, common_index
from medtune.schema import DIFFICULTY_LEVELS


def summary_table(run: RunData) -> pd.DataFrame:
    """Mean accuracy over seeds per group, with the item-bootstrap CI of the seed-averaged correctness.

    ``ece`` and ``brier``: calibration of the option probabilities, mean over the group's seeds (NaN where the
    cells were scored in generate mode).
    """
    from medtune.evaluation import accuracy_with_ci

    rows = []
    for key, g in run.done.groupby(GROUP, sort=False, dropna=False):
        per_seed = [run.correct(c, key[-1]) for c in g["cell_id"]]
        common = common_index(per_seed)
        mean_item = np.mean([s.loc[common].to_numpy() for s in per_seed], axis=0)
        ci = accuracy_with_ci(mean_item, n_boot=run.n_boot, seed=0)
        accs = g["accuracy"].astype(float).to_numpy()
        cals = [c for c in (run.calibration(cid, key[-1]) for cid in g["cell_id"]) if c is not None]
        rows.append({**dict(zip(GROUP, key, strict=True)), "label": cell_label(key[4], key[3]),
                     "metric": g["metric"].iloc[0] if "metric" in g else "accuracy",
                     "seeds": len(g), "accuracy": float(accs.mean()),
                     "sd": float(accs.std(ddof=1)) if len(accs) > 1 else float("nan"),
                     "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "n_items": len(common),
                     "ece": float(np.mean([c["ece"] for c in cals])) if cals else float("nan"),
                     "brier": float(np.mean([c["brier"] for c in cals])) if cals else float("nan"),
                     "final_loss": float(np.nanmean(g["final_loss"].astype(float))) if g["final_loss"].notna().any()
                     else float("nan")})
    return pd.DataFrame(rows)


def best_table(summary: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """The strategy with the highest mean accuracy per model × training set × method × test set."""
    if summary.empty:
        return pd.DataFrame()
    s = summary[summary["strategy"] != BASE_STRATEGY]
    rows = []
    for key, g in s.groupby(["model", "dataset", "method", "test_set"], sort=False):
        top = g.sort_values("accuracy", ascending=False, kind="stable").iloc[0]
        row = {"model": key[0], "dataset": key[1], "method": key[2], "test_set": key[3], "best": top["label"],
               "accuracy": top["accuracy"], "runner_up": None, "margin": float("nan")}
        if len(g) > 1:
            second = g.sort_values("accuracy", ascending=False, kind="stable").iloc[1]
            row["runner_up"], row["margin"] = second["label"], top["accuracy"] - second["accuracy"]
        if not gains.empty:
            m = gains[(gains["model"] == key[0]) & (gains["dataset"] == key[1]) & (gains["method"] == key[2])
                      & (gains["test_set"] == key[3]) & (gains["label"] == top["label"])]
            if not m.empty:
                row["gain_over_random"] = m["gain"].iloc[0]
                row["p_holm"] = m["p_holm"].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


def levels_table(run: RunData) -> pd.DataFrame:
    """Accuracy per human difficulty level and held-out/seen, mean over seeds (only where items carry them)."""
    rows = []
    for key, g in run.done.groupby(GROUP, sort=False, dropna=False):
        per_seed: list[dict[str, float]] = []
        for cell_id in g["cell_id"]:
            corr = run.correct(cell_id, key[-1])
            info = run.item_table(cell_id, key[-1]).reindex(corr.index)
            vals: dict[str, float] = {}
            for lvl in DIFFICULTY_LEVELS:
                m = (info["level"] == lvl).to_numpy()
                if m.any():
                    vals[lvl] = float(corr.to_numpy()[m].mean())
            for flag, name in ((True, "heldout"), (False, "seen")):
                m = (info["heldout"] == flag).to_numpy()
                if m.any():
                    vals[name] = float(corr.to_numpy()[m].mean())
            per_seed.append(vals)
        cols = sorted({c for v in per_seed for c in v}, key=lambda c: [*DIFFICULTY_LEVELS, "seen", "heldout"].index(c))
        if not cols:
            continue
        row = {**dict(zip(GROUP, key, strict=True)), "label": cell_label(key[4], key[3]), "seeds": len(per_seed)}
        for c in cols:
            row[c] = float(np.mean([v[c] for v in per_seed if c in v]))
        rows.append(row)
    return pd.DataFrame(rows)


def headline_table(summary: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """Per model × test set × strategy: mean accuracy with CI, and the gain over random with its p-value.

    The gain's interval and p-value are seed-aware (``p_holm``: Holm-adjusted); ``mdg`` is the minimum gain this
    comparison detects with 80% power at the run-to-run variance observed. Where no comparison has two
    seeds, there is no seed-aware answer: the item-level interval and the within-run p-value are shown
    instead, under names that say so.
    """
    if summary.empty:
        return pd.DataFrame()
    keys = ["model", "dataset", "method", "test_set", "label"]
    out = summary[[*keys, "seeds", "accuracy", "ci_low", "ci_high"]].copy()
    if not gains.empty:
        if gains["p_holm"].notna().any() or gains["gain_ci_low"].notna().any():
            cols = ["gain", "gain_ci_low", "gain_ci_high", "p_holm", "mdg"]
            out = out.merge(gains[[*keys, *cols]], on=keys, how="left")
        else:
            within = gains[[*keys, "gain", "item_ci_low", "item_ci_high", "p_bootstrap"]]
            out = out.merge(within.rename(columns={"p_bootstrap": "p_within_run"}), on=keys, how="left")
    for col in ("dataset", "method"):
        if out[col].nunique() == 1:
            out = out.drop(columns=col)
    return out.rename(columns={"label": "strategy"})


def level_gains_table(levels: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per level: each strategy's accuracy minus the baseline strategy's (same model, data, method, test set)."""
    cols = [c for c in (*DIFFICULTY_LEVELS, "seen", "heldout") if c in levels.columns]
    keys = ["model", "dataset", "method", "test_set"]
    rows = []
    for key, g in levels.groupby(keys, sort=False):
        ref = g[(g["strategy"] == baseline) & (g["difficulty"] == NO_DIFFICULTY)]
        if ref.empty:
            continue
        for _, r in g[~g["strategy"].isin([baseline, BASE_STRATEGY])].iterrows():
            rows.append({**dict(zip(keys, key, strict=True)), "label": r["label"],
                         **{c: r[c] - ref[c].iloc[0] for c in cols}})
    return pd.DataFrame(rows)


def seed_design(run: RunData) -> str:
    """The seeds in one sentence for the overview: tied (one seed sets both) or crossed, since the reader must know
    which before reading any seed-aware number."""
    d = run.done[run.done["strategy"] != BASE_STRATEGY] if not run.done.empty else run.done
    if d.empty:
        return "Seeds: -"
    seeds = ", ".join(str(x) for x in sorted(d["seed"].unique()))
    if not bool((d["order_seed"] != d["seed"]).any()):
        return f"Seeds (each sets initialisation and order): {seeds}"
    orders = ", ".join(str(x) for x in sorted(d["order_seed"].unique()))
    return f"Seeds, crossed: initialisation {seeds} × order {orders}"
