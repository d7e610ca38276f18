"""The seed-aware comparisons of the report: each strategy against the baseline with the training run as the unit.

Runs of one strategy differ with the seed about as much as strategies do, so a gain is tested over seeds: per seed,
the strategy's cell against the baseline cell of the same seed, on the same items; a paired t-test on the per-seed
gains gives ``p_seed`` and the 95% interval, and Holm's adjustment across the strategies of one model × training set
× method × test set gives ``p_holm`` (what the heatmap's stars and the headline use). The within-run tests (McNemar,
the item bootstrap) sit beside them, labelled as such. Also here: the A/A lines (the baseline against itself must
come out null), the difficulty sources compared, the power of the grid and the variance of crossed seeds. The
statistics themselves are :mod:`medtune.stats`; nothing is re-implemented here.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from medtune.experiments.grid import BASE_STRATEGY, NO_DIFFICULTY
from medtune.report.results import FAMILY, GROUP, RunData, cell_label, common_index
from medtune.stats import DEFAULT_ALPHA, DEFAULT_GAIN, DEFAULT_POWER, holm


def _arms(run: RunData, a: pd.DataFrame, b: pd.DataFrame, test_set: str) -> tuple[dict, dict]:
    """Run → per-item scores of two groups' cells, on the items every one of their cells was scored on.

    A run is keyed by its seed where seeds are tied and by (initialisation seed, order seed) where they are
    crossed, so two arms pair on the same run of the seed design.
    """
    crossed = bool((run.done["order_seed"] != run.done["seed"]).any())

    def key(r: Any) -> Any:
        return (int(r.seed), int(r.order_seed)) if crossed else int(r.seed)

    sa = {key(r): run.correct(r.cell_id, test_set) for r in a.itertuples()}
    sb = {key(r): run.correct(r.cell_id, test_set) for r in b.itertuples()}
    common = common_index([*sa.values(), *sb.values()])
    return ({k: v.loc[common].to_numpy() for k, v in sa.items()},
            {k: v.loc[common].to_numpy() for k, v in sb.items()})


def _paired(run: RunData, a: pd.DataFrame, b: pd.DataFrame, test_set: str, *, gain: float = DEFAULT_GAIN,
            alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER) -> dict[str, Any] | None:
    """Group a against group b (:func:`medtune.stats.compare_runs`): seed-aware test, within-run tests, power.

    ``gain_ci_low``/``gain_ci_high``/``p_seed`` are the seed-aware (run-level t) answers; ``item_ci_*``,
    ``p_bootstrap`` and ``p_mcnemar`` the within-run tests on the pooled (seed, item) pairs.
    """
    from medtune.stats import compare_runs

    if a.empty or b.empty:
        return None
    ra, rb = _arms(run, a, b, test_set)
    if not next(iter(ra.values())).size:
        return None
    res = compare_runs(ra, rb, n_boot=run.n_boot, seed=0, gain=gain, alpha=alpha, power=power)
    per_seed = [res["per_seed"][s] for s in sorted(res["per_seed"])]
    out = {"seeds": res["seeds"], "test": res["test"], "gain": res["gain"], "gain_ci_low": res["ci_low"],
           "gain_ci_high": res["ci_high"], "p_seed": res["p_value"], "df": res["df"], "sd_gain": res["sd_gain"],
           "hb_ci_low": res["hb_ci_low"], "hb_ci_high": res["hb_ci_high"], "p_hier": res["p_hier"],
           "item_ci_low": res.get("item_ci_low"), "item_ci_high": res.get("item_ci_high"),
           "p_bootstrap": res.get("p_item_bootstrap"),
           "per_seed": ", ".join(f"{100 * g:+.1f}" for g in per_seed), "per_seed_gains": per_seed,
           "n_items": res["n_items"], "n_pairs": res.get("n_pairs"), "mdg": res["mdg"],
           "seeds_needed": res["seeds_needed"], "power_gain": res["power_gain"], "power_seeds": res["power_seeds"],
           "sd_gain_power": res["sd_gain_power"], "between_sd": _sqrt(res["between_var"]),
           "item_sd": _sqrt(res["item_var"]), "mdg_items": res["mdg_items"], "reason": res["reason"]}
    if "p_mcnemar" in res:
        out.update({"p_mcnemar": res["p_mcnemar"], "p_mcnemar_midp": res["p_mcnemar_midp"],
                    "only_strategy": res["only_a"], "only_random": res["only_b"]})
    return out


def _sqrt(v: float) -> float:
    return math.sqrt(v) if v == v and v >= 0 else float("nan")


def _baseline_pairs(run: RunData) -> list[tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]]:
    """(axes, the group's cells, the baseline's cells) for every strategy that has a finished baseline."""
    d = run.done
    out = []
    for key, g in d.groupby(GROUP, sort=False, dropna=False):
        k = dict(zip(GROUP, key, strict=True))
        if k["strategy"] in (run.baseline, BASE_STRATEGY):
            continue
        mask = (d["strategy"] == run.baseline) & (d["difficulty"] == NO_DIFFICULTY)
        for col in FAMILY:
            mask &= d[col] == k[col]
        if mask.any():
            out.append((k, g, d[mask]))
    return out


def gains_table(run: RunData, *, gain: float = DEFAULT_GAIN, alpha: float = DEFAULT_ALPHA,
                power: float = DEFAULT_POWER) -> pd.DataFrame:
    """Each strategy against random shuffle (same model, training set, method, test set and seeds).

    ``p_holm`` is the seed-aware p-value Holm-adjusted across the strategies compared with the baseline in one
    model × training set × method × test set; ``gain``/``alpha``/``power`` set the power columns.
    """
    rows = []
    for k, g, ref in _baseline_pairs(run):
        res = _paired(run, g, ref, k["test_set"], gain=gain, alpha=alpha, power=power)
        if res is None:
            continue
        rows.append({**k, "label": cell_label(k["strategy"], k["difficulty"]), **res})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["p_holm"] = np.nan
        for _, fam in out.groupby(FAMILY, sort=False, dropna=False):
            out.loc[fam.index, "p_holm"] = holm(fam["p_seed"].to_numpy(dtype=float))
    return out


def aa_check_lines(gains: pd.DataFrame, baseline: str) -> list[str]:
    """One line per A/A comparison (the baseline against itself with other order seeds): it must come out null.

    A significant A/A "gain" means the comparison calls seed noise an effect; an A/A arm whose within-run p-values
    are small while its seed-aware p is not shows why the training run must be the unit.
    """
    from medtune.experiments.config import AA_SUFFIX

    out = []
    for _, r in gains[gains["strategy"] == f"{baseline}{AA_SUFFIX}"].iterrows():
        if pd.isna(r["p_holm"]):
            verdict = "not testable without two seeds"
        else:
            verdict = "null, as it must be" if r["p_holm"] > 0.05 else "SIGNIFICANT: the comparison is miscalibrated"
        out.append(f"A/A check ({r['model']} / {r['test_set']}): {baseline}{AA_SUFFIX} − {baseline} = "
                   f"{100 * r['gain']:+.1f} pp, seed-aware p_holm {r['p_holm']:.3g} ({verdict}); within-run "
                   f"p_bootstrap {r['p_bootstrap']:.3g}.")
    return out


def difficulty_sources_table(run: RunData) -> pd.DataFrame:
    """For strategies that use difficulty: each pair of difficulty sources compared, paired per seed/item.

    ``ci_low``/``ci_high``/``p_seed``: seed-aware (per-seed differences, paired t; not adjusted);
    ``p_bootstrap``/``p_mcnemar``: within-run tests on the pooled (seed, item) pairs.
    """
    d = run.done[run.done["difficulty"] != NO_DIFFICULTY]
    rows = []
    for key, g in d.groupby(["model", "dataset", "method", "strategy", "test_set"], sort=False):
        sources = sorted(g["difficulty"].unique(), key=lambda s: (s != "human", s))
        for a, b in combinations(sources, 2):  # human first: the comparison reads "b − human"
            ga, gb = g[g["difficulty"] == b], g[g["difficulty"] == a]
            res = _paired(run, ga, gb, key[4])
            if res is None:
                continue
            rows.append({"model": key[0], "dataset": key[1], "method": key[2], "strategy": key[3],
                         "test_set": key[4], "comparison": f"{b} − {a}", "source": b, "versus": a,
                         "accuracy_source": float(ga["accuracy"].mean()),
                         "accuracy_versus": float(gb["accuracy"].mean()), "difference": res["gain"],
                         "ci_low": res["gain_ci_low"], "ci_high": res["gain_ci_high"], "p_seed": res["p_seed"],
                         "p_bootstrap": res["p_bootstrap"], "p_mcnemar": res.get("p_mcnemar"), "seeds": res["seeds"]})
    return pd.DataFrame(rows)


def power_table(run: RunData, *, gain: float = DEFAULT_GAIN, alpha: float = DEFAULT_ALPHA,
                power: float = DEFAULT_POWER) -> pd.DataFrame:
    """Per comparison with the baseline: the minimum detectable gain of the grid as run, and the seeds needed.

    What ``medtune evaluate power`` prints: the power columns of :func:`gains_table` for a named ``gain``,
    two-sided ``alpha`` and ``power`` (paired t on the seeds, noncentral t; :func:`medtune.stats.power_of_runs`),
    without the bootstraps.
    """
    from medtune.stats import power_of_runs

    rows = []
    for k, g, ref in _baseline_pairs(run):
        ra, rb = _arms(run, g, ref, k["test_set"])
        if not next(iter(ra.values())).size:
            continue
        pw = power_of_runs(ra, rb, gain=gain, alpha=alpha, power=power)
        rows.append({**k, "label": cell_label(k["strategy"], k["difficulty"]), "seeds": pw["n_seeds"],
                     "n_items": len(next(iter(ra.values()))), "sd_gain_power": pw["sd_gain"],
                     "between_sd": _sqrt(pw["between_var"]), "item_sd": _sqrt(pw["item_var"]), "mdg": pw["mdg"],
                     "power_gain": gain, "seeds_needed": pw["seeds_needed"], "mdg_items": pw["mdg_items"],
                     "alpha": alpha, "power": power, "reason": pw["reason"]})
    return pd.DataFrame(rows)


def power_paragraphs(gains: pd.DataFrame) -> list[str]:
    """One sentence or two per model × training set × method × test set on what the grid can detect."""
    out = []
    for key, fam in gains.groupby(FAMILY, sort=False, dropna=False):
        where = " / ".join(str(k) for k in key)
        seeds, items = int(fam["power_seeds"].max()), int(fam["n_items"].max())
        gain_pp = 100 * float(fam["power_gain"].iloc[0]) if "power_gain" in fam else 1.0
        if fam["mdg"].isna().all():
            floor = 100 * float(fam["mdg_items"].median())
            out.append(f"{where}: with {seeds} seed(s) the variance between training runs cannot be estimated, so "
                       "neither the minimum detectable gain nor the seeds needed can be. Even if runs did not "
                       f"vary, the {items} test items alone would resolve gains of about {floor:.1f} pp "
                       "(80% power, α = 0.05).")
            continue
        mdg = 100 * fam["mdg"].astype(float)
        need = pd.to_numeric(fam["seeds_needed"], errors="coerce")
        span = f" (from {mdg.min():.1f} to {mdg.max():.1f} pp over {len(fam)} strategies)" if len(fam) > 1 else ""
        text = (f"{where}: with {seeds} seeds and {items} test items, the smallest gain over the baseline this "
                f"grid detects with 80% power (two-sided α = 0.05, paired t on the seeds) is {mdg.median():.1f} "
                f"pp{span}, at the run-to-run variance observed.")
        if need.notna().any():
            text += (f" Detecting a {gain_pp:g} pp gain would need about {int(need.median())} seeds (median over "
                     "strategies)" + (f", {int(need.min())} to {int(need.max())}" if need.nunique() > 1 else "")
                     + ".")
        else:
            text += f" A {gain_pp:g} pp gain is out of reach at any practical number of seeds."
        out.append(text)
    return out


def variance_table(run: RunData) -> pd.DataFrame:
    """Where order seeds are crossed with initialisation seeds: how much of the run-to-run spread each explains.

    One row per arm (strategy × difficulty source, per model / training set / method / test set) and one
    ``all arms (pooled)`` row per model / training set / method / test set that pools the arms' sums of squares
    (more degrees of freedom; each arm's own mean removed). :func:`medtune.stats.variance_components`. Empty
    where seeds are tied.
    """
    from medtune.stats import variance_components

    d = run.done[run.done["strategy"] != BASE_STRATEGY]
    if d.empty or not bool((d["order_seed"] != d["seed"]).any()):
        return pd.DataFrame()
    rows = []
    cols = ["order_seeds", "init_seeds", "sd_order", "sd_init", "sd_residual", "share_order", "share_init",
            "share_residual", "p_order", "p_init"]

    def row(k: dict[str, Any], label: str, tables: list[np.ndarray]) -> dict[str, Any]:
        vc = variance_components(tables)
        return {**k, "label": label, **{c: vc[c] for c in cols}}

    for fkey, fam in d.groupby(FAMILY, sort=False, dropna=False):
        fk = dict(zip(FAMILY, fkey, strict=True))
        tables = []
        for (strategy, difficulty), g in fam.groupby(["strategy", "difficulty"], sort=False):
            t = g.pivot_table(index="order_seed", columns="seed", values="accuracy", aggfunc="mean")
            if t.shape[0] < 2 or t.shape[1] < 2 or t.isna().to_numpy().any():
                continue  # an incomplete table (a failed cell): no balanced decomposition
            tables.append(t.to_numpy())
            rows.append(row({**fk, "strategy": strategy, "difficulty": difficulty}, cell_label(strategy, difficulty),
                            [t.to_numpy()]))
        if len(tables) > 1:
            rows.append(row({**fk, "strategy": "", "difficulty": ""}, "all arms (pooled)", tables))
    return pd.DataFrame(rows)


def variance_paragraphs(var: pd.DataFrame) -> list[str]:
    """One sentence per model / training set / method / test set on which seed moves accuracy more."""
    out = []
    for key, fam in var.groupby(FAMILY, sort=False, dropna=False):
        pooled = fam[fam["label"] == "all arms (pooled)"]
        r = (pooled if not pooled.empty else fam).iloc[0]
        where = " / ".join(str(k) for k in key)
        scope = "pooled over its arms" if not pooled.empty else str(r["label"])
        out.append(f"{where} ({scope}, {int(r['order_seeds'])} order × {int(r['init_seeds'])} initialisation "
                   f"seeds): the order seed accounts for {100 * r['share_order']:.0f}% of the run-to-run variance "
                   f"of accuracy (sd {100 * r['sd_order']:.1f} pp, F-test p {r['p_order']:.2g}), the "
                   f"initialisation seed for {100 * r['share_init']:.0f}% (sd {100 * r['sd_init']:.1f} pp, p "
                   f"{r['p_init']:.2g}), and their interaction with the rest for {100 * r['share_residual']:.0f}% "
                   f"(sd {100 * r['sd_residual']:.1f} pp).")
    return out
