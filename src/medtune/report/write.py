"""The report of a grid run: which strategy beats random shuffle, by how much, with what confidence.

``medtune report RUN_DIR`` reads the run's results table and each cell's predictions and writes
``RUN_DIR/report/``: ``report.html`` (self-contained: figures embedded as base64 PNG, inline CSS, no
external asset), ``report.md`` and ``tables/*.csv``. Every number comes from the run's files.

Statistics (all from :mod:`medtune.stats` and :mod:`medtune.evaluation`, nothing re-implemented here):

- accuracy per model × training set × method × difficulty source × strategy × test set: the mean over
  seeds, with a 95% percentile-bootstrap CI over *items* of the seed-averaged per-item correctness, and
  the calibration of the option probabilities (ECE, Brier score; mean over seeds);
- gain over random shuffle, with the training run as the unit (runs of one strategy differ with the seed
  about as much as strategies do): per seed, the strategy's cell against the random cell of the same seed,
  on the same items; a paired t-test on the per-seed gains gives the p-value and the 95% interval, and Holm's
  adjustment runs across the strategies of one model × training set × method × test set (the heatmap stars
  and the headline use the adjusted p); a two-stage (seeds, then items) bootstrap is shown beside it;
- within-run tests, labelled as such: McNemar and the item bootstrap on the pooled (seed, item) pairs,
  which treat each run as a fixed system and so ignore run-to-run variance; with one seed they are all
  there is, and the report says so;
- power: the minimum detectable gain of the grid as run and the seeds a 1 pp gain would need;
- a forest plot of each strategy's gain, its seed-aware interval and the per-seed gains;
- human vs LLM (or IRT, file) difficulty: the same paired comparison between difficulty sources;
- accuracy per human difficulty level and for held-out items (synthetic ``meta.heldout``), where order
  effects are expected: hard and held-out items need inference and transfer rather than recall.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtune.errors import InputError
from medtune.experiments.grid import BASE_STRATEGY, NO_DIFFICULTY
from medtune.experiments.store import ResultStore
from medtune.io import atomic_path, write_text_atomic
from medtune.orders.orderfile import OrderFile
from medtune.schema import DIFFICULTY_LEVELS
from medtune.stats import DEFAULT_ALPHA, DEFAULT_GAIN, DEFAULT_POWER, holm

GROUP = ["model", "dataset", "method", "difficulty", "strategy", "test_set"]
# The comparisons with the baseline that form one family for Holm's adjustment.
FAMILY = ["model", "dataset", "method", "test_set"]
SECTIONS = {
    "overview": "Overview",
    "failed": "Failed cells",
    "summary": "Accuracy per cell (mean over seeds, 95% CI)",
    "methods": "Methods compared with the baseline method",
    "gains": "Gain over random shuffle",
    "forest": "Gains with seed-aware intervals",
    "heatmap": "Heatmap of gains",
    "power": "Power of the grid",
    "variance": "Order seed vs initialisation seed",
    "best": "Best strategy per model and test set",
    "difficulty-sources": "Human vs LLM difficulty",
    "levels": "Accuracy per difficulty level and on held-out items",
    "steps": "Accuracy per USMLE step",
    "loss": "Loss curves",
    "orders": "Learning orders",
}


HEADLINE_PCT = ("accuracy", "ci_low", "ci_high", "gain", "gain_ci_low", "gain_ci_high", "mdg", "item_ci_low",
                "item_ci_high")
HEADLINE_P = ("p_holm", "p_within_run")


@dataclass
class Report:
    out_dir: Path
    html: Path
    markdown: Path
    tables: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    headline: pd.DataFrame = field(default_factory=pd.DataFrame)
    # What the headline needs beside it: the A/A check and what the grid can detect (plain sentences).
    headline_notes: list[str] = field(default_factory=list)
    # A grid with several methods: each against the baseline method, per metric (:mod:`report_methods`).
    methods: pd.DataFrame = field(default_factory=pd.DataFrame)

    def methods_text(self) -> str:
        """The methods comparison on its main metrics as plain text (empty when the grid trains one method; the
        report's table and ``tables/methods.csv`` have every metric)."""
        if self.methods.empty:
            return ""
        from medtune.report.methods import HEADLINE_METRICS

        cols = ["test_set", "method", "metric", "seeds", "value", "value_baseline", "gain", "gain_ci_low",
                "gain_ci_high", "p_holm"]
        main = self.methods[self.methods["metric"].isin(HEADLINE_METRICS)]
        shown = (main if not main.empty else self.methods)[cols]
        return _fmt_table(shown, pct=("value", "value_baseline", "gain", "gain_ci_low", "gain_ci_high"),
                          pvals=("p_holm",)).to_string(index=False)

    def headline_text(self) -> str:
        """The headline table as plain text (for a closing console message)."""
        if self.headline.empty:
            return "(no finished cell)"
        return _fmt_table(self.headline, pct=HEADLINE_PCT, pvals=HEADLINE_P).to_string(index=False)


# ----------------------------------------------------------------------------------------------------------
# Loading


class RunData:
    """The results table, cell records and per-item correctness of a run directory."""

    def __init__(self, run_dir: Path, n_boot: int | None = None) -> None:
        self.run_dir = run_dir
        if not (run_dir / "cells").is_dir():
            raise InputError("not a run directory of `medtune run` (no cells/ folder)", file=run_dir)
        store = ResultStore(run_dir)
        results = run_dir / "results.parquet"
        self.records = {r["cell_id"]: r for r in store.all(strict=True)}
        if not results.exists():
            store.build_tables()
        try:
            self.results = pd.read_parquet(results)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(f"not a readable Parquet table ({exc}); delete it and it is rebuilt from cells/",
                             file=results) from None
        self.config = _read_config(run_dir)
        ev = self.config.get("evaluation") or {}
        self.n_boot = int(n_boot or ev.get("bootstrap") or 1000)
        self.baseline = self.config.get("baseline_strategy") or "random"
        self._correct: dict[tuple[str, str], pd.Series] = {}
        self._calibration: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._items: dict[str, pd.DataFrame] = {}
        done = self.results[self.results["status"] == "done"].copy()
        done["seed"] = done["seed"].astype(int)
        # Tables written before order seeds existed: a cell's order seed was its seed.
        order = done["order_seed"] if "order_seed" in done else pd.Series(pd.NA, index=done.index)
        done["order_seed"] = order.fillna(done["seed"]).astype(int)
        # Cross-validation: the fold cells of one run are one run on the pooled held-out folds.
        self._pooled: dict[tuple[str, str], list[str]] = {}
        if "fold" in done and done["fold"].notna().any():
            done = self._pool_folds(done)
        self.done = done

    def _pool_folds(self, done: pd.DataFrame) -> pd.DataFrame:
        """One row per (run, test set) for fold cells: every item scored once, by the fold that held it out.

        The pooled row takes the id the cell would have without a fold; its accuracy is over all folds' items
        (the intervals are recomputed from the pooled items where the report needs them).
        """
        folded, rest = done[done["fold"].notna()], done[done["fold"].isna()]
        rows = []
        for (cell_id, test_set), g in folded.groupby(
                [folded.apply(lambda r: r["cell_id"].replace(f"__{r['dataset']}-f{int(r['fold'])}__",
                                                             f"__{r['dataset']}__"), axis=1), "test_set"], sort=False):
            self._pooled[(cell_id, test_set)] = list(g["cell_id"])
            row = g.iloc[0].copy()
            n = g["n_items"].astype(float)
            row["cell_id"], row["fold"] = cell_id, pd.NA
            row["n_items"], row["n_correct"] = int(n.sum()), int(g["n_correct"].fillna(0).sum())
            row["accuracy"] = float((g["accuracy"].astype(float) * n).sum() / n.sum())
            row["ci_low"] = row["ci_high"] = float("nan")
            for col in ("final_loss", "train_steps", "train_seconds"):
                if col in g:
                    row[col] = pd.to_numeric(g[col], errors="coerce").mean()
            rows.append(row)
        return pd.concat([rest, pd.DataFrame(rows)], ignore_index=True) if rows else rest

    def correct(self, cell_id: str, test_set: str) -> pd.Series:
        """Per-item correctness (0/1, or token F1 for free text), indexed by item id."""
        key = (cell_id, test_set)
        if key not in self._correct:
            self._read(cell_id, test_set)
        return self._correct[key]

    def calibration(self, cell_id: str, test_set: str) -> dict[str, Any] | None:
        """ECE and Brier score of the cell's option probabilities (None without them: generate mode)."""
        key = (cell_id, test_set)
        if key not in self._calibration:
            self._read(cell_id, test_set)
        return self._calibration[key]

    def parts(self, cell_id: str, test_set: str) -> list[str]:
        return self._pooled.get((cell_id, test_set), [cell_id])

    def _read(self, cell_id: str, test_set: str) -> None:
        from medtune.evaluation import calibration_metrics, per_item_scores, read_predictions

        paths = [self.records[c]["tests"][test_set]["predictions"] for c in self.parts(cell_id, test_set)]
        frame = pd.concat([read_predictions(p) for p in paths], ignore_index=True)
        path = paths[0]
        self._correct[(cell_id, test_set)] = pd.Series(per_item_scores(frame), index=frame["id"].astype(str))
        cal = None
        modes = set(frame["mode"].astype(str)) if "mode" in frame.columns else set()
        if "probs" in frame.columns and modes <= {"letter", "option"} and frame["probs"].notna().all():
            try:
                cal = calibration_metrics([list(p) for p in frame["probs"]], frame["answer"].astype(int).tolist())
            except InputError as exc:
                raise exc.located(file=path) from None
        self._calibration[(cell_id, test_set)] = cal

    def item_table(self, cell_id: str, test_set: str) -> pd.DataFrame:
        """Test items' level and held-out flag, indexed by id."""
        parts = self.parts(cell_id, test_set)
        if len(parts) > 1:
            return pd.concat([self.item_table(c, test_set) for c in parts])
        path = self.records[cell_id]["tests"][test_set]["items"]
        if path not in self._items:
            from medtune.schema import read_items

            rows = []
            for it in read_items(path):
                hd = getattr(it, "human_difficulty", None)
                rows.append({"id": it.id, "level": hd if hd in DIFFICULTY_LEVELS else None,
                             "heldout": it.meta.get("heldout") if isinstance(it.meta.get("heldout"), bool) else None})
            self._items[path] = pd.DataFrame(rows).set_index("id")
        return self._items[path]


def _read_config(run_dir: Path) -> dict[str, Any]:
    p = run_dir / "config.yaml"
    if not p.exists():
        return {}
    import yaml

    return yaml.safe_load(p.read_text(encoding="utf-8")) or {}


def _label(strategy: str, difficulty: str) -> str:
    return strategy if difficulty == NO_DIFFICULTY else f"{strategy} [{difficulty}]"


# ----------------------------------------------------------------------------------------------------------
# Tables


def summary_table(run: RunData) -> pd.DataFrame:
    """Mean accuracy over seeds per group, with the item-bootstrap CI of the seed-averaged correctness.

    ``ece`` and ``brier``: calibration of the option probabilities, mean over the group's seeds (NaN where the
    cells were scored in generate mode).
    """
    from medtune.evaluation import accuracy_with_ci

    rows = []
    for key, g in run.done.groupby(GROUP, sort=False, dropna=False):
        per_seed = [run.correct(c, key[-1]) for c in g["cell_id"]]
        common = _common_index(per_seed)
        mean_item = np.mean([s.loc[common].to_numpy() for s in per_seed], axis=0)
        ci = accuracy_with_ci(mean_item, n_boot=run.n_boot, seed=0)
        accs = g["accuracy"].astype(float).to_numpy()
        cals = [c for c in (run.calibration(cid, key[-1]) for cid in g["cell_id"]) if c is not None]
        rows.append({**dict(zip(GROUP, key, strict=True)), "label": _label(key[4], key[3]),
                     "metric": g["metric"].iloc[0] if "metric" in g else "accuracy",
                     "seeds": len(g), "accuracy": float(accs.mean()),
                     "sd": float(accs.std(ddof=1)) if len(accs) > 1 else float("nan"),
                     "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "n_items": len(common),
                     "ece": float(np.mean([c["ece"] for c in cals])) if cals else float("nan"),
                     "brier": float(np.mean([c["brier"] for c in cals])) if cals else float("nan"),
                     "final_loss": float(np.nanmean(g["final_loss"].astype(float))) if g["final_loss"].notna().any()
                     else float("nan")})
    return pd.DataFrame(rows)


def _common_index(series: Sequence[pd.Series]) -> pd.Index:
    idx = series[0].index
    for s in series[1:]:
        idx = idx.intersection(s.index, sort=False)
    return idx


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
    common = _common_index([*sa.values(), *sb.values()])
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
        rows.append({**k, "label": _label(k["strategy"], k["difficulty"]), **res})
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
        row = {**dict(zip(GROUP, key, strict=True)), "label": _label(key[4], key[3]), "seeds": len(per_seed)}
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
        rows.append({**k, "label": _label(k["strategy"], k["difficulty"]), "seeds": pw["n_seeds"],
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


def _seed_design(run: RunData) -> str:
    d = run.done[run.done["strategy"] != BASE_STRATEGY] if not run.done.empty else run.done
    if d.empty:
        return "Seeds: -"
    seeds = ", ".join(str(x) for x in sorted(d["seed"].unique()))
    if not bool((d["order_seed"] != d["seed"]).any()):
        return f"Seeds (each sets initialisation and order): {seeds}"
    orders = ", ".join(str(x) for x in sorted(d["order_seed"].unique()))
    return f"Seeds, crossed: initialisation {seeds} × order {orders}"


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
            rows.append(row({**fk, "strategy": strategy, "difficulty": difficulty}, _label(strategy, difficulty),
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


# ----------------------------------------------------------------------------------------------------------
# Figures


def _fig_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def heatmap_cells(gains: pd.DataFrame, value: str = "gain", p_column: str = "p_holm"
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The heatmap's values (pp) and cell texts ("+1.2*"): rows model / test set (/ method, training set)."""
    g = gains.copy()
    multi = [c for c in ("method", "dataset") if g[c].nunique() > 1]
    row = g["model"].astype(str) + " / " + g["test_set"].astype(str)
    for c in multi:
        row = row + " / " + g[c].astype(str)
    g["row"] = row
    pivot = g.pivot_table(index="row", columns="label", values=value, aggfunc="mean", sort=False) * 100
    if p_column in g.columns and g[p_column].notna().any():
        pvals = g.pivot_table(index="row", columns="label", values=p_column, aggfunc="min", sort=False,
                              dropna=False).reindex(index=pivot.index, columns=pivot.columns)
    else:
        pvals = pd.DataFrame(np.nan, index=pivot.index, columns=pivot.columns)
    text = pd.DataFrame("", index=pivot.index, columns=pivot.columns)
    for i in range(pivot.shape[0]):
        for j in range(pivot.shape[1]):
            v, p = pivot.iat[i, j], pvals.iat[i, j]
            if not math.isnan(v):
                text.iat[i, j] = f"{v:+.1f}" + ("*" if p == p and p < 0.05 else "")
    return pivot, text


def heatmap_figure(gains: pd.DataFrame, value: str = "gain", title: str = "gain over random shuffle (pp)",
                   p_column: str = "p_holm") -> bytes:
    """Rows: model / test set (/ method, training set when several); columns: strategies; cells: gain in pp.

    A star marks ``p_column`` < 0.05: by default the Holm-adjusted seed-aware p-value, so a star means the
    strategy beats the baseline over training runs, corrected for the strategies compared. Without that
    column (or with one seed, where it is NaN) nothing is starred.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pivot, cells = heatmap_cells(gains, value, p_column)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * pivot.shape[1], 1.2 + 0.55 * pivot.shape[0]))
    lim = max(1.0, float(np.nanmax(np.abs(pivot.to_numpy())))) if pivot.size else 1.0
    im = ax.imshow(pivot.to_numpy(dtype=float), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(pivot.shape[1]), pivot.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(pivot.shape[0]), pivot.index, fontsize=8)
    for i in range(pivot.shape[0]):
        for j in range(pivot.shape[1]):
            v = pivot.iat[i, j]
            if not math.isnan(v):
                ax.text(j, i, cells.iat[i, j], ha="center", va="center", fontsize=8,
                        color="white" if abs(v) > 0.6 * lim else "black")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="pp")
    note = "  (* Holm-adjusted seed-aware p < 0.05)" if p_column == "p_holm" else f"  (* {p_column} < 0.05)"
    ax.set_title(title + note, fontsize=9)
    return _fig_png(fig)


def forest_figure(gains: pd.DataFrame) -> bytes:
    """Each strategy's gain over the baseline: the mean, its seed-aware interval and the per-seed gains.

    One panel per model / training set / method / test set. The thick bar is the 95% t interval over seeds;
    the dots are the seeds' own gains, so the reader sees how far apart runs are. Where the interval cannot be
    estimated (one seed), the item-level interval is drawn thin and dashed and the row is labelled so.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(gains.groupby(FAMILY, sort=False, dropna=False))[:6]
    height = sum(1.1 + 0.42 * len(g) for _, g in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, height), squeeze=False)
    for ax, (key, g) in zip(axes[:, 0], panels, strict=True):
        g = g.iloc[::-1]
        y = np.arange(len(g))
        labels = []
        for yi, (_, r) in zip(y, g.iterrows(), strict=True):
            seedy = r["gain_ci_low"] == r["gain_ci_low"]  # not NaN
            if seedy:
                ax.hlines(yi, 100 * r["gain_ci_low"], 100 * r["gain_ci_high"], color="#1f4e99", lw=3.2)
            elif r.get("item_ci_low") is not None and r["item_ci_low"] == r["item_ci_low"]:
                ax.hlines(yi, 100 * r["item_ci_low"], 100 * r["item_ci_high"], color="#888", lw=1.2, ls="--")
            ax.plot(100 * r["gain"], yi, "D", color="black", ms=6, zorder=3)
            seeds = r.get("per_seed_gains")
            if isinstance(seeds, list | tuple | np.ndarray) and len(seeds):
                ax.plot(100 * np.asarray(seeds, dtype=float), np.full(len(seeds), yi + 0.18), "o", ms=4,
                        color="#d95f02", alpha=0.8, zorder=2)
            p = r.get("p_holm")
            extra = f"  p_holm={p:.2g}" if p is not None and p == p else ("" if seedy else "  (item-level CI)")
            labels.append(f"{r['label']}{extra}")
        ax.axvline(0, color="#444", lw=0.8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_ylim(-0.6, len(g) - 0.4)
        ax.set_xlabel("gain over the baseline (pp): ◆ mean, bar 95% seed-aware CI, ● per seed", fontsize=8)
        ax.set_title(" / ".join(str(k) for k in key), fontsize=9, loc="left")
    fig.tight_layout()
    return _fig_png(fig)


def levels_figure(levels: pd.DataFrame) -> bytes:
    """Grouped bars: accuracy per level (and held-out/seen) for each strategy, one panel per model/test set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in (*DIFFICULTY_LEVELS, "seen", "heldout") if c in levels.columns]
    panels = list(levels.groupby(["model", "dataset", "method", "test_set"], sort=False))[:6]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 1.1 * levels["label"].nunique() + 2),
                                                       2.8 * len(panels)), squeeze=False)
    for ax, (key, g) in zip(axes[:, 0], panels, strict=True):
        x = np.arange(len(g))
        w = 0.8 / len(cols)
        for j, c in enumerate(cols):
            ax.bar(x + j * w - 0.4 + w / 2, 100 * g[c].to_numpy(dtype=float), width=w, label=c)
        ax.set_xticks(x, g["label"], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(" / ".join(str(k) for k in key), fontsize=9, loc="left")
        ax.legend(fontsize=7, ncol=len(cols))
    fig.tight_layout()
    return _fig_png(fig)


def loss_figure(run: RunData) -> bytes | None:
    """Training loss per step, mean over seeds, one line per strategy; one panel per model/data/method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple[str, str, str], dict[str, list[pd.Series]]] = {}
    for rec in run.records.values():
        train = rec.get("train") or {}
        if rec.get("status") != "done" or not train.get("dir"):
            continue
        log = Path(train["dir"]) / "train_log.jsonl"
        if not log.exists():
            continue
        steps, losses = [], []
        for line in log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                steps.append(r["step"])
                losses.append(r["loss"])
        key = (rec["model"], rec["dataset"], rec["method"])
        curves.setdefault(key, {}).setdefault(_label(rec["strategy"], rec["difficulty"]), []).append(
            pd.Series(losses, index=steps))
    if not curves:
        return None
    panels = list(curves.items())[:6]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.0 * len(panels)), squeeze=False)
    for ax, (key, by_label) in zip(axes[:, 0], panels, strict=True):
        for label, series in sorted(by_label.items()):
            mean = pd.concat(series, axis=1).mean(axis=1)
            k = max(1, len(mean) // 20)
            ax.plot(mean.index, mean.rolling(k, min_periods=1).mean(), lw=1.4,
                    label=f"{label} (n={len(series)})")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (answer tokens)")
        ax.set_title(" / ".join(key) + f" — mean over seeds, running mean of {k}", fontsize=9, loc="left")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _fig_png(fig)


def order_figures(run: RunData, out_dir: Path) -> dict[str, Path]:
    """medtune.order_plot's Figure-1 strips of each strategy's order (first seed), per difficulty source."""
    from medtune.order_plot import plot_orders
    from medtune.orders.strategies import OrderItem

    by_source: dict[str, dict[str, tuple[dict, list]]] = {}
    seed0 = run.done["seed"].min() if not run.done.empty else 0
    for rec in run.records.values():
        if rec.get("status") != "done" or not rec.get("order") or int(rec["seed"]) != int(seed0):
            continue
        src = rec["difficulty"] if rec["difficulty"] != NO_DIFFICULTY else None
        by_source.setdefault(src or "", {})[_label(rec["strategy"], rec["difficulty"])] = (
            OrderFile.read(rec["order"]).to_dict(), json.loads(Path(rec["order_items"]).read_text()))
    out: dict[str, Path] = {}
    free = by_source.pop("", {})
    groups = {s: {**free, **g} for s, g in by_source.items()} if by_source else ({"": free} if free else {})
    if "human" not in groups and free and by_source:
        groups["human"] = free  # difficulty-free strategies alone (their items carry human difficulty)
    for src, entries in groups.items():
        labels = sorted(entries)
        # Each order is drawn against the items as its own strategy saw them.
        items_by_id: dict[str, OrderItem] = {}
        for label in labels:
            for row in entries[label][1]:
                items_by_id.setdefault(row["id"], OrderItem(row["id"], row["category"], row["difficulty"],
                                                            row["bucket"]))
        if src:
            for row in next(iter(entries[la][1] for la in labels if f"[{src}]" in la), []):
                items_by_id[row["id"]] = OrderItem(row["id"], row["category"], row["difficulty"], row["bucket"])
        name = f"orders-{src or 'all'}"
        paths = plot_orders([entries[la][0] for la in labels], list(items_by_id.values()), out_dir / f"{name}.png",
                            titles=[f"{la} (seed {seed0})" for la in labels])
        out[name] = Path(paths[0])
    return out


# ----------------------------------------------------------------------------------------------------------
# Rendering

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.9em}.fail{color:#b00}
img{max-width:100%;height:auto;border:1px solid #eee}
nav a{margin-right:1em}
"""


def _fmt_table(df: pd.DataFrame, pct: Sequence[str] = (), pvals: Sequence[str] = ()) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        if c in pct:
            out[c] = out[c].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v))
                                else f"{100 * float(v):.1f}")
        elif c in pvals:
            out[c] = out[c].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v))
                                else f"{float(v):.3g}")
        elif out[c].dtype.kind == "f":
            out[c] = out[c].map(lambda v: "" if math.isnan(v) else f"{v:.4g}")
    return out


@dataclass
class _Section:
    id: str
    title: str
    html: list[str] = field(default_factory=list)
    md: list[str] = field(default_factory=list)

    def text(self, text: str) -> None:
        self.html.append(f"<p class='note'>{html.escape(text)}</p>")
        self.md.append(text + "\n")

    def table(self, df: pd.DataFrame, pct: Sequence[str] = (), pvals: Sequence[str] = ()) -> None:
        f = _fmt_table(df, pct, pvals)
        self.html.append(f.to_html(index=False, escape=True, border=0, na_rep=""))
        self.md.append(f.to_markdown(index=False) + "\n")

    def image(self, png: bytes, path: Path, alt: str) -> None:
        b64 = base64.b64encode(png).decode("ascii")
        self.html.append(f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{b64}'></p>")
        self.md.append(f"![{alt}](figures/{path.name})\n")


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, *, n_boot: int | None = None) -> Report:
    """Write ``report.html`` (self-contained), ``report.md`` and ``tables/*.csv`` for a run directory."""
    run_dir = Path(run_dir)
    run = RunData(run_dir, n_boot)
    out = Path(out_dir) if out_dir else run_dir / "report"
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    rep = Report(out, out / "report.html", out / "report.md")
    sections: list[_Section] = []

    def section(sid: str) -> _Section:
        s = _Section(sid, SECTIONS[sid])
        sections.append(s)
        return s

    def save_table(name: str, df: pd.DataFrame) -> None:
        path = out / "tables" / f"{name}.csv"
        with atomic_path(path, suffix=".csv") as tmp:
            df.to_csv(tmp, index=False)
        rep.tables[name] = path

    def save_fig(name: str, png: bytes) -> Path:
        path = out / "figures" / f"{name}.png"
        with atomic_path(path, suffix=".png") as tmp:
            tmp.write_bytes(png)
        rep.figures[name] = path
        return path

    res = run.results
    n_cells = res["cell_id"].nunique() if not res.empty else 0
    cell_status = res.drop_duplicates("cell_id")["status"].value_counts().to_dict() if not res.empty else {}
    s = section("overview")
    s.text(f"Run directory: {run_dir.resolve()}. Experiment: {run.config.get('name', '?')}. "
           f"{n_cells} cells: " + ", ".join(f"{v} {k}" for k, v in sorted(cell_status.items())) + ". "
           f"Test sets: {', '.join(sorted(res['test_set'].dropna().unique())) if not res.empty else '-'}. "
           + _seed_design(run) + ".")
    s.text(f"Baseline strategy: {run.baseline}. Accuracy intervals: 95% percentile bootstrap over items "
           f"({run.n_boot} resamples). Gains are tested with the training run as the unit: two runs of one "
           "strategy that differ only in the seed (initialisation, data order) differ by about as much as "
           "strategies do, so a test over items alone would call seed noise an effect. The seed-aware test is "
           "a paired t-test on the per-seed gains (the same seed's two runs form a pair), Holm-adjusted across "
           "the strategies compared with the baseline in each model × training set × method × test set. "
           "McNemar and the item bootstrap, which treat each run as a fixed system, are shown as within-run "
           "tests. Accuracies in %, gains in percentage points (pp).")
    n_seeds = run.done[run.done["strategy"] != BASE_STRATEGY]["seed"].nunique() if not run.done.empty else 0
    if n_seeds == 1:
        s.text("This grid has one seed: no variance between training runs can be estimated, so no seed-aware "
               "test or interval exists. The intervals and p-values shown for gains are item-level (within-run) "
               "ones: they say whether these two runs differ on these items, not whether the strategies do. "
               "Run two or more seeds to compare strategies.")

    failed = res[res["status"] != "done"].drop_duplicates("cell_id")[["cell_id", "status", "error"]] \
        if not res.empty else pd.DataFrame(columns=["cell_id", "status", "error"])
    s = section("failed")
    if failed.empty:
        s.text("No cell failed.")
    else:
        s.text(f"{len(failed)} cell(s) did not finish; their errors are below (the other cells are unaffected).")
        s.table(failed)
    save_table("failed", failed)

    summary = summary_table(run) if not run.done.empty else pd.DataFrame()
    s = section("summary")
    if summary.empty:
        s.text("No finished cell yet.")
    else:
        cols = ["model", "dataset", "method", "test_set", "label", "seeds", "accuracy", "ci_low", "ci_high", "sd",
                "ece", "brier", "n_items", "final_loss"]
        s.text("label = strategy [difficulty source]; 'base' is the model before fine-tuning. sd: across seeds. "
               "ece: expected calibration error of the option probabilities (10 equal-width confidence bins, "
               "in %); brier: multi-class Brier score (0 = certain and right, 2 = certain and wrong); both the "
               "mean over seeds, empty where answers were generated.")
        s.table(summary[cols], pct=("accuracy", "ci_low", "ci_high", "sd", "ece"))
    save_table("summary", summary)

    from medtune.report.methods import methods_paragraphs, methods_table

    methods = methods_table(run) if not run.done.empty else pd.DataFrame()
    if not methods.empty:
        s = section("methods")
        base = methods["baseline"].iloc[0]
        s.text(f"gain = method − {base}, per metric, the mean of the per-seed differences (same seed, strategy and "
               "test items); values and gains in % / pp of the metric's 0–1 scale. Seed-aware: gain_ci_low/high, "
               "the 95% t interval over seeds, p_seed the paired t-test on the per-seed differences, p_holm "
               "adjusted across the methods of one model × training set × strategy × test set × metric; per_seed in "
               "pp; mdg, the smallest difference these seeds detect with 80% power. item_ci_low/high and "
               "p_bootstrap: within-run (items resampled, blind to run-to-run variance).")
        for text in methods_paragraphs(methods):
            s.text(text)
        cols = ["model", "dataset", "strategy", "test_set", "method", "metric", "seeds", "value", "value_baseline",
                "gain", "gain_ci_low", "gain_ci_high", "p_seed", "p_holm", "per_seed", "mdg", "item_ci_low",
                "item_ci_high", "p_bootstrap"]
        s.table(methods[cols], pct=("value", "value_baseline", "gain", "gain_ci_low", "gain_ci_high", "mdg",
                                    "item_ci_low", "item_ci_high"), pvals=("p_seed", "p_holm", "p_bootstrap"))
    save_table("methods", methods)
    rep.methods = methods

    gains = gains_table(run) if not run.done.empty else pd.DataFrame()
    s = section("gains")
    if gains.empty:
        s.text(f"No strategy could be paired with a finished '{run.baseline}' cell.")
    else:
        cols = ["model", "dataset", "method", "test_set", "label", "seeds", "gain", "gain_ci_low", "gain_ci_high",
                "p_seed", "p_holm", "hb_ci_low", "hb_ci_high", "p_hier", "per_seed", "item_ci_low", "item_ci_high",
                "p_bootstrap", "p_mcnemar"]
        cols = [c for c in cols if c in gains.columns]
        s.text(f"gain = strategy − {run.baseline}, mean of the per-seed gains (same seed, same items); per_seed "
               "in pp. Seed-aware (training run as the unit): gain_ci_low/high, the 95% t interval over seeds; "
               "p_seed, the paired t-test on the per-seed gains (Welch's t on per-run accuracies where seeds are "
               "not shared); p_holm, p_seed Holm-adjusted across the strategies of one model × training set × "
               "method × test set; hb_ci_low/high and p_hier, a two-stage bootstrap (seeds, then items within "
               "each seed). Within-run (each run a fixed system, items resampled; blind to run-to-run variance): "
               "item_ci_low/high and p_bootstrap, the paired item bootstrap, and p_mcnemar, exact McNemar, on "
               "the pooled (seed, item) pairs.")
        if gains["p_seed"].isna().all():
            s.text("No comparison has two seeds in common: the variance between training runs cannot be estimated "
                   "and the seed-aware columns are empty; only the item-level (within-run) intervals and tests "
                   "are available, and they do not show whether the strategies differ.")
        s.table(gains[cols], pct=("gain", "gain_ci_low", "gain_ci_high", "hb_ci_low", "hb_ci_high", "item_ci_low",
                                  "item_ci_high"), pvals=("p_seed", "p_holm", "p_hier", "p_bootstrap", "p_mcnemar"))
        for text in aa_check_lines(gains, run.baseline):
            s.text(text)
    save_table("gains", gains)

    def figure_section(name: str, draw: Any, alt: str, intro: str | None = None) -> None:
        sec = section(name)
        if gains.empty:
            sec.text("Nothing to draw.")
            return
        if intro:
            sec.text(intro)
        png = draw(gains)
        sec.image(png, save_fig(f"gains_{name}", png), alt)

    figure_section("forest", forest_figure, "forest plot of gains over the baseline",
                   "Each strategy's gain over the baseline (◆), its 95% seed-aware interval (bar) and the gain of "
                   "each seed (●). An interval that crosses 0 is no evidence of an effect; dots far apart mean "
                   "runs vary more than the strategies differ.")
    figure_section("heatmap", heatmap_figure, "heatmap of gains over random shuffle")

    s = section("power")
    if gains.empty:
        s.text("No comparison to assess.")
    else:
        for text in power_paragraphs(gains):
            s.text(text)
        cols = ["model", "dataset", "method", "test_set", "label", "seeds", "n_items", "sd_gain_power", "between_sd",
                "item_sd", "mdg", "seeds_needed", "mdg_items"]
        s.text("sd_gain_power: sd of one per-seed gain (the larger of the observed spread and the item-level "
               "floor); between_sd: its run-to-run part; item_sd: the part the test items alone contribute; "
               "mdg: minimum detectable gain with these seeds (two-sided α = 0.05, 80% power, paired t, "
               "noncentral t); seeds_needed: seeds for 80% power at a 1 pp gain; mdg_items: the gain these seeds' "
               "test items alone would resolve if training runs did not vary (normal approximation), the "
               "lower bound of mdg.")
        s.table(gains[[c for c in cols if c in gains.columns]],
                pct=("sd_gain_power", "between_sd", "item_sd", "mdg", "mdg_items"))
        save_table("power", gains[[c for c in cols if c in gains.columns]])

    var = variance_table(run) if not run.done.empty else pd.DataFrame()
    s = section("variance")
    if var.empty:
        s.text("Order and initialisation seeds are tied in this grid (`seeds`: one seed sets both), so their "
               "shares of the run-to-run variance cannot be told apart. Give `order_seeds` and `init_seeds` "
               "instead to train every order seed from every initialisation seed.")
    else:
        for text in variance_paragraphs(var):
            s.text(text)
        s.text("Two-way random-effects ANOVA without replication per arm (method of moments, negative estimates "
               "set to 0): sd_order, sd_init: the spread of accuracy that changing only that seed causes; "
               "sd_residual: their interaction and everything else; share_*: the parts of the total variance; "
               "p_order/p_init: F-tests of no effect. With few seeds these are rough: read the pooled row.")
        s.table(var[["model", "dataset", "method", "test_set", "label", "order_seeds", "init_seeds", "sd_order",
                     "sd_init", "sd_residual", "share_order", "share_init", "share_residual", "p_order",
                     "p_init"]],
                pct=("sd_order", "sd_init", "sd_residual", "share_order", "share_init", "share_residual"),
                pvals=("p_order", "p_init"))
    save_table("variance", var)

    best = best_table(summary, gains)
    s = section("best")
    if best.empty:
        s.text("Nothing to rank.")
    else:
        s.table(best, pct=[c for c in ("accuracy", "margin", "gain_over_random") if c in best.columns],
                pvals=("p_holm",))
    save_table("best", best)

    diffs = difficulty_sources_table(run) if not run.done.empty else pd.DataFrame()
    s = section("difficulty-sources")
    if diffs.empty:
        s.text("Only one difficulty source in this grid (add e.g. `llm` to difficulty.sources to compare).")
    else:
        s.text("The same strategy under two difficulty sources, paired per seed and item. ci_low/high and p_seed: "
               "seed-aware (paired t on the per-seed differences, not adjusted); p_bootstrap and p_mcnemar: "
               "within-run tests on the pooled (seed, item) pairs.")
        cols = ["model", "dataset", "method", "test_set", "strategy", "comparison", "accuracy_source",
                "accuracy_versus", "difference", "ci_low", "ci_high", "p_seed", "p_bootstrap", "p_mcnemar", "seeds"]
        s.table(diffs[cols], pct=("accuracy_source", "accuracy_versus", "difference", "ci_low", "ci_high"),
                pvals=("p_seed", "p_bootstrap", "p_mcnemar"))
    save_table("difficulty_sources", diffs)

    levels = levels_table(run) if not run.done.empty else pd.DataFrame()
    s = section("levels")
    if levels.empty:
        s.text("The test items carry no difficulty levels or held-out flags.")
    else:
        s.text("Accuracy per human difficulty level of the test items, and on items about held-out facts "
               "(synthetic data: diseases that appear only in test questions), mean over seeds.")
        lv = [c for c in (*DIFFICULTY_LEVELS, "seen", "heldout") if c in levels.columns]
        s.table(levels[["model", "dataset", "method", "test_set", "label", "seeds", *lv]], pct=lv)
        png = levels_figure(levels)
        s.image(png, save_fig("levels", png), "accuracy per difficulty level")
        level_gains = level_gains_table(levels, run.baseline)
        if not level_gains.empty:
            s.text(f"Gain over {run.baseline} per level (pp, mean over seeds): an order can help one level and "
                   "hurt another while the total moves little.")
            s.table(level_gains, pct=lv)
            save_table("level_gains", level_gains)
    save_table("levels", levels)

    from medtune.report.steps import meta_groups_table

    steps = meta_groups_table(run, "step")
    if not steps.empty:
        s = section("steps")
        s.text("Accuracy per USMLE step of the test items (meta.step), mean over seeds, with the 95% item "
               "bootstrap interval of the seed-averaged correctness.")
        s.table(steps[["model", "dataset", "method", "test_set", "label", "value", "seeds", "n_items", "accuracy",
                       "ci_low", "ci_high"]].rename(columns={"value": "step"}), pct=("accuracy", "ci_low", "ci_high"))
        save_table("steps", steps)

    s = section("loss")
    png = loss_figure(run)
    if png is None:
        s.text("No training log found.")
    else:
        s.image(png, save_fig("loss_curves", png), "training loss curves")

    s = section("orders")
    try:
        figs = order_figures(run, out / "figures")
    except Exception as exc:  # a plot never sinks the report; say why it is missing
        figs = {}
        s.text(f"Order plots could not be drawn: {type(exc).__name__}: {exc}")
    for name, path in figs.items():
        s.image(path.read_bytes(), path, f"learning orders ({name})")
        rep.figures[name] = path
    if not figs and not s.html:
        s.text("No order to draw.")

    rep.sections = [x.id for x in sections]
    rep.headline = headline_table(summary, gains)
    if not gains.empty:
        rep.headline_notes = [*aa_check_lines(gains, run.baseline), *power_paragraphs(gains)]
    rep.headline_notes += methods_paragraphs(methods)
    title = f"medtune report — {run.config.get('name', run_dir.name)}"
    nav = " ".join(f"<a href='#{x.id}'>{html.escape(x.title)}</a>" for x in sections)
    body = "\n".join(f"<section id='{x.id}'><h2>{html.escape(x.title)}</h2>\n" + "\n".join(x.html) + "</section>"
                     for x in sections)
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>\n{body}\n</body></html>\n")
    write_text_atomic(rep.html, page)
    md = f"# {title}\n\n" + "\n".join(f"## {x.title}\n\n" + "\n".join(x.md) for x in sections)
    write_text_atomic(rep.markdown, md)
    return rep
