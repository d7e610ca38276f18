"""Fine-tuning methods compared with a baseline method, metric by metric, with the training run as the unit.

The strategy comparison of the report asks "does this order beat random shuffle?"; a methods grid asks "does
this method beat plain supervised fine-tuning?" — for every metric the test set has. The statistics are the same
(:func:`medtune.stats.compare_runs`): per seed, the method's cell against the baseline method's cell of the same
seed, model, training set, strategy and test set, on the same items; a paired t-test on the per-seed differences
gives the interval and the p-value, and Holm's adjustment runs across the methods compared with the baseline in
one model × training set × strategy × test set × metric. With several metrics, each is its own family: a reader
who looks at factual precision and at completeness asks two questions, and each answer controls its own error.

Per-item scores: 0/1 correctness for multiple-choice test sets (metric ``accuracy``); for free text the columns of
the evaluation's ``item_metrics.parquet`` (token F1, ROUGE-L, BERTScore, factual precision, completeness...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtune.experiments.grid import BASE_STRATEGY
from medtune.report.results import RunData
from medtune.stats import holm

ITEM_METRICS = "item_metrics.parquet"
# The order metrics are listed in (the most specific to knowledge first); others follow alphabetically.
METRIC_ORDER = ("accuracy", "fact_precision", "fact_completeness", "bertscore_f1", "token_f1", "rougeL",
                "bertscore_precision", "bertscore_recall", "token_precision", "token_recall", "exact_match")
# What a console summary shows (the report's table has every metric).
HEADLINE_METRICS = ("accuracy", "fact_precision", "fact_completeness", "bertscore_f1", "token_f1")
# Per-item columns that are counts or flags, not scores to compare.
NOT_SCORES = {"id", "fact_stated", "no_fact"}
METHOD_GROUP = ["model", "dataset", "difficulty", "strategy", "test_set"]


def baseline_method(run: RunData) -> str | None:
    """The method others are compared with: the config's ``baseline_method``, else ``full`` when the grid has it,
    else the first method listed; None when the grid has one method."""
    methods = [m for m in (run.config.get("training") or {}).get("methods") or [] if isinstance(m, str)]
    done = [m for m in run.done["method"].dropna().unique().tolist()]
    if len(set(done)) < 2:
        return None
    chosen = run.config.get("baseline_method")
    if chosen:
        return str(chosen)
    if "full" in done:
        return "full"
    return next((m for m in methods if m in done), sorted(done)[0])


def item_metric_frame(run: RunData, cell_id: str, test_set: str) -> pd.DataFrame:
    """Per-item scores of one cell on one test set, indexed by item id (fold cells pooled).

    Free text: the evaluation's ``item_metrics.parquet`` beside the predictions; multiple choice (or an older run
    without that file): the report's per-item score under the name of the cell's metric.
    """
    frames = []
    for part in run.parts(cell_id, test_set):
        path = Path(run.records[part]["tests"][test_set]["predictions"]).with_name(ITEM_METRICS)
        if path.exists():
            frames.append(pd.read_parquet(path))
    if frames:
        frame = pd.concat(frames, ignore_index=True)
        frame["id"] = frame["id"].astype(str)
        return frame.set_index("id")
    row = run.done[(run.done["cell_id"] == cell_id) & (run.done["test_set"] == test_set)]
    metric = str(row["metric"].iloc[0]) if not row.empty and "metric" in row and pd.notna(row["metric"].iloc[0]) \
        else "accuracy"
    return run.correct(cell_id, test_set).rename(metric).to_frame()


def _ordered_metrics(columns: set[str]) -> list[str]:
    known = [m for m in METRIC_ORDER if m in columns]
    return known + sorted(columns - set(known) - NOT_SCORES)


def methods_table(run: RunData, *, metrics: list[str] | None = None) -> pd.DataFrame:
    """Each method against the baseline method, per metric (same model, training set, strategy, test set, seeds).

    Columns: the group, ``method``, ``baseline``, ``metric``, ``value`` / ``value_baseline`` (means over seeds),
    ``gain`` and its seed-aware ``gain_ci_low``/``gain_ci_high``, ``p_seed``, ``p_holm`` (across the methods of
    one group and metric), ``per_seed`` and ``mdg``; ``item_ci_*``/``p_bootstrap`` are the within-run answers.
    Empty when the grid has one method.
    """
    from medtune.stats import compare_runs

    base = baseline_method(run)
    if base is None:
        return pd.DataFrame()
    d = run.done[run.done["strategy"] != BASE_STRATEGY]
    rows: list[dict[str, Any]] = []
    crossed = bool((d["order_seed"] != d["seed"]).any())

    def key(r: Any) -> Any:
        return (int(r.seed), int(r.order_seed)) if crossed else int(r.seed)

    for group, g in d.groupby(METHOD_GROUP, sort=False, dropna=False):
        k = dict(zip(METHOD_GROUP, group, strict=True))
        ref = g[g["method"] == base]
        if ref.empty:
            continue
        test_set = k["test_set"]
        ref_frames = {key(r): item_metric_frame(run, r.cell_id, test_set) for r in ref.itertuples()}
        for method, m in g[g["method"] != base].groupby("method", sort=False):
            frames = {key(r): item_metric_frame(run, r.cell_id, test_set) for r in m.itertuples()}
            common_cols = set.intersection(*(set(f.columns) for f in [*frames.values(), *ref_frames.values()]))
            wanted = [c for c in (metrics or _ordered_metrics(common_cols)) if c in common_cols]
            index = None
            for f in [*frames.values(), *ref_frames.values()]:
                index = f.index if index is None else index.intersection(f.index, sort=False)
            if index is None or not len(index):
                continue
            for metric in wanted:
                a = {s: f.loc[index, metric].to_numpy(dtype=float) for s, f in frames.items()}
                b = {s: f.loc[index, metric].to_numpy(dtype=float) for s, f in ref_frames.items()}
                res = compare_runs(a, b, n_boot=run.n_boot, seed=0)
                rows.append({**k, "method": method, "baseline": base, "metric": metric,
                             "value": float(np.mean([v.mean() for v in a.values()])),
                             "value_baseline": float(np.mean([v.mean() for v in b.values()])),
                             "seeds": res["seeds"], "gain": res["gain"], "gain_ci_low": res["ci_low"],
                             "gain_ci_high": res["ci_high"], "p_seed": res["p_value"],
                             "per_seed": ", ".join(f"{100 * res['per_seed'][s]:+.1f}" for s in sorted(res["per_seed"])),
                             "mdg": res["mdg"], "item_ci_low": res.get("item_ci_low"),
                             "item_ci_high": res.get("item_ci_high"), "p_bootstrap": res.get("p_item_bootstrap"),
                             "n_items": res["n_items"]})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["p_holm"] = np.nan
        for _, fam in out.groupby([*METHOD_GROUP, "metric"], sort=False, dropna=False):
            out.loc[fam.index, "p_holm"] = holm(fam["p_seed"].to_numpy(dtype=float))
    return out


def methods_paragraphs(table: pd.DataFrame) -> list[str]:
    """One sentence per method and metric whose seed-aware interval excludes 0 after Holm's adjustment, or a line
    saying none does — the reading a user needs before the table."""
    if table.empty:
        return []
    base = str(table["baseline"].iloc[0])
    hits = table[(table["p_holm"] < 0.05)]
    if hits.empty:
        return [f"No method differs from {base} on any metric once the variance between training runs is taken "
                "into account (Holm-adjusted p ≥ 0.05 everywhere)."]
    return [f"{r.method} vs {base} on {r.test_set}, {r.metric}: {100 * r.gain:+.1f} pp "
            f"[{100 * r.gain_ci_low:+.1f}, {100 * r.gain_ci_high:+.1f}], p_holm {r.p_holm:.3f}."
            for r in hits.itertuples()]
