"""The report of a grid run: which strategy beats random shuffle, by how much, with what confidence.

``medtune report RUN_DIR`` reads the run's results table and each cell's predictions and writes
``RUN_DIR/report/``: ``report.html`` (self-contained: figures embedded as base64 PNG, inline CSS, no
external asset), ``report.md`` and ``tables/*.csv``. Every number comes from the run's files.

Statistics (all from :mod:`medtune.evaluation`, nothing re-implemented here):

- accuracy per model × training set × method × difficulty source × strategy × test set: the mean over
  seeds, with a 95% percentile-bootstrap CI over *items* of the seed-averaged per-item correctness;
- gain over random shuffle: per seed, the strategy's cell against the random cell of the same seed, on
  the same items; the (seed, item) pairs of all seeds are pooled for a paired bootstrap of the accuracy
  difference and McNemar's test;
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

GROUP = ["model", "dataset", "method", "difficulty", "strategy", "test_set"]
SECTIONS = {
    "overview": "Overview",
    "failed": "Failed cells",
    "summary": "Accuracy per cell (mean over seeds, 95% CI)",
    "gains": "Gain over random shuffle",
    "heatmap": "Heatmap of gains",
    "best": "Best strategy per model and test set",
    "difficulty-sources": "Human vs LLM difficulty",
    "levels": "Accuracy per difficulty level and on held-out items",
    "loss": "Loss curves",
    "orders": "Learning orders",
}


@dataclass
class Report:
    out_dir: Path
    html: Path
    markdown: Path
    tables: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    headline: pd.DataFrame = field(default_factory=pd.DataFrame)

    def headline_text(self) -> str:
        """The headline table as plain text (for a closing console message)."""
        if self.headline.empty:
            return "(no finished cell)"
        return _fmt_table(self.headline, pct=("accuracy", "ci_low", "ci_high", "gain"),
                          pvals=("p_bootstrap",)).to_string(index=False)


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
        if not results.exists():
            store.build_tables()
        self.results = pd.read_parquet(results)
        self.records = {r["cell_id"]: r for r in store.all()}
        self.config = _read_config(run_dir)
        ev = self.config.get("evaluation") or {}
        self.n_boot = int(n_boot or ev.get("bootstrap") or 1000)
        self.baseline = self.config.get("baseline_strategy") or "random"
        self._correct: dict[tuple[str, str], pd.Series] = {}
        self._items: dict[str, pd.DataFrame] = {}
        done = self.results[self.results["status"] == "done"].copy()
        done["seed"] = done["seed"].astype(int)
        self.done = done

    def correct(self, cell_id: str, test_set: str) -> pd.Series:
        """Per-item correctness (0/1, or token F1 for free text), indexed by item id."""
        key = (cell_id, test_set)
        if key not in self._correct:
            from medtune.evaluation import per_item_scores, read_predictions

            path = self.records[cell_id]["tests"][test_set]["predictions"]
            frame = read_predictions(path)
            self._correct[key] = pd.Series(per_item_scores(frame), index=frame["id"].astype(str))
        return self._correct[key]

    def item_table(self, cell_id: str, test_set: str) -> pd.DataFrame:
        """Test items' level and held-out flag, indexed by id."""
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
    """Mean accuracy over seeds per group, with the item-bootstrap CI of the seed-averaged correctness."""
    from medtune.evaluation import accuracy_with_ci

    rows = []
    for key, g in run.done.groupby(GROUP, sort=False, dropna=False):
        per_seed = [run.correct(c, key[-1]) for c in g["cell_id"]]
        common = _common_index(per_seed)
        mean_item = np.mean([s.loc[common].to_numpy() for s in per_seed], axis=0)
        ci = accuracy_with_ci(mean_item, n_boot=run.n_boot, seed=0)
        accs = g["accuracy"].astype(float).to_numpy()
        rows.append({**dict(zip(GROUP, key, strict=True)), "label": _label(key[4], key[3]),
                     "metric": g["metric"].iloc[0] if "metric" in g else "accuracy",
                     "seeds": len(g), "accuracy": float(accs.mean()),
                     "sd": float(accs.std(ddof=1)) if len(accs) > 1 else float("nan"),
                     "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "n_items": len(common),
                     "final_loss": float(np.nanmean(g["final_loss"].astype(float))) if g["final_loss"].notna().any()
                     else float("nan")})
    return pd.DataFrame(rows)


def _common_index(series: Sequence[pd.Series]) -> pd.Index:
    idx = series[0].index
    for s in series[1:]:
        idx = idx.intersection(s.index, sort=False)
    return idx


def _paired(run: RunData, a: pd.DataFrame, b: pd.DataFrame, test_set: str) -> dict[str, Any] | None:
    """Pool (seed, item) pairs of two groups' cells with the same seeds; paired bootstrap + McNemar."""
    from medtune.evaluation import mcnemar, paired_bootstrap

    seeds = sorted(set(a["seed"]) & set(b["seed"]))
    if not seeds:
        return None
    xs, ys, per_seed = [], [], []
    for s in seeds:
        ca = run.correct(a.loc[a["seed"] == s, "cell_id"].iloc[0], test_set)
        cb = run.correct(b.loc[b["seed"] == s, "cell_id"].iloc[0], test_set)
        common = ca.index.intersection(cb.index, sort=False)
        xa, xb = ca.loc[common].to_numpy(), cb.loc[common].to_numpy()
        xs.append(xa)
        ys.append(xb)
        per_seed.append(float(xa.mean() - xb.mean()))
    x, y = np.concatenate(xs), np.concatenate(ys)
    boot = paired_bootstrap(x, y, n_boot=run.n_boot, seed=0)
    out = {"seeds": len(seeds), "gain": float(np.mean(per_seed)), "gain_ci_low": boot["ci_low"],
           "gain_ci_high": boot["ci_high"], "p_bootstrap": boot["p_value"],
           "per_seed": ", ".join(f"{100 * g:+.1f}" for g in per_seed), "n_pairs": int(x.size)}
    if np.isin(x, (0, 1)).all() and np.isin(y, (0, 1)).all():
        m = mcnemar(x, y)
        out.update({"p_mcnemar": m["p_exact"], "p_mcnemar_midp": m["p_midp"], "only_strategy": m["a_only"],
                    "only_random": m["b_only"]})
    return out


def gains_table(run: RunData) -> pd.DataFrame:
    """Each strategy against random shuffle (same model, training set, method, test set and seeds)."""
    d = run.done
    rows = []
    base_keys = ["model", "dataset", "method", "test_set"]
    for key, g in d.groupby(GROUP, sort=False, dropna=False):
        k = dict(zip(GROUP, key, strict=True))
        if k["strategy"] in (run.baseline, BASE_STRATEGY):
            continue
        mask = (d["strategy"] == run.baseline) & (d["difficulty"] == NO_DIFFICULTY)
        for col in base_keys:
            mask &= d[col] == k[col]
        ref = d[mask]
        if ref.empty:
            continue
        res = _paired(run, g, ref, k["test_set"])
        if res is None:
            continue
        rows.append({**k, "label": _label(k["strategy"], k["difficulty"]), **res})
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
                row["p_bootstrap"] = m["p_bootstrap"].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


def difficulty_sources_table(run: RunData) -> pd.DataFrame:
    """For strategies that use difficulty: each pair of difficulty sources compared, paired per seed/item."""
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
                         "ci_low": res["gain_ci_low"], "ci_high": res["gain_ci_high"],
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
    """Per model × test set × strategy: mean accuracy with CI, and the gain over random with its p-value."""
    if summary.empty:
        return pd.DataFrame()
    keys = ["model", "dataset", "method", "test_set", "label"]
    out = summary[[*keys, "seeds", "accuracy", "ci_low", "ci_high"]].copy()
    if not gains.empty:
        out = out.merge(gains[[*keys, "gain", "p_bootstrap"]], on=keys, how="left")
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


# ----------------------------------------------------------------------------------------------------------
# Figures


def _fig_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def heatmap_figure(gains: pd.DataFrame, value: str = "gain", title: str = "gain over random shuffle (pp)") -> bytes:
    """Rows: model / test set (/ method, training set when several); columns: strategies; cells: gain in pp."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = gains.copy()
    multi = [c for c in ("method", "dataset") if g[c].nunique() > 1]
    row = g["model"].astype(str) + " / " + g["test_set"].astype(str)
    for c in multi:
        row = row + " / " + g[c].astype(str)
    g["row"] = row
    pivot = g.pivot_table(index="row", columns="label", values=value, aggfunc="mean", sort=False) * 100
    pvals = g.pivot_table(index="row", columns="label", values="p_bootstrap", aggfunc="min", sort=False)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * pivot.shape[1], 1.2 + 0.55 * pivot.shape[0]))
    lim = max(1.0, float(np.nanmax(np.abs(pivot.to_numpy())))) if pivot.size else 1.0
    im = ax.imshow(pivot.to_numpy(dtype=float), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(pivot.shape[1]), pivot.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(pivot.shape[0]), pivot.index, fontsize=8)
    for i in range(pivot.shape[0]):
        for j in range(pivot.shape[1]):
            v = pivot.iat[i, j]
            if not math.isnan(v):
                p = pvals.iat[i, j] if pvals.shape == pivot.shape else float("nan")
                star = "*" if (not math.isnan(p) and p < 0.05) else ""
                ax.text(j, i, f"{v:+.1f}{star}", ha="center", va="center", fontsize=8,
                        color="white" if abs(v) > 0.6 * lim else "black")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="pp")
    ax.set_title(title + "  (* paired bootstrap p < 0.05)", fontsize=9)
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
           f"Seeds: {', '.join(str(x) for x in sorted(res['seed'].dropna().unique())) if not res.empty else '-'}.")
    s.text(f"Baseline strategy: {run.baseline}. Confidence intervals: 95% percentile bootstrap over items "
           f"({run.n_boot} resamples); paired tests pool the (seed, item) pairs of matching seeds. "
           "Accuracies in %, gains in percentage points (pp).")

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
                "n_items", "final_loss"]
        s.text("label = strategy [difficulty source]; 'base' is the model before fine-tuning. sd: across seeds.")
        s.table(summary[cols], pct=("accuracy", "ci_low", "ci_high", "sd"))
    save_table("summary", summary)

    gains = gains_table(run) if not run.done.empty else pd.DataFrame()
    s = section("gains")
    if gains.empty:
        s.text(f"No strategy could be paired with a finished '{run.baseline}' cell.")
    else:
        cols = ["model", "dataset", "method", "test_set", "label", "seeds", "gain", "gain_ci_low", "gain_ci_high",
                "p_bootstrap", "p_mcnemar", "per_seed"]
        cols = [c for c in cols if c in gains.columns]
        s.text("gain = strategy − random shuffle, same seed and items; per_seed in pp; p-values: paired bootstrap "
               "(two-sided) and exact McNemar on the pooled (seed, item) pairs.")
        s.table(gains[cols], pct=("gain", "gain_ci_low", "gain_ci_high"), pvals=("p_bootstrap", "p_mcnemar"))
    save_table("gains", gains)

    s = section("heatmap")
    if gains.empty:
        s.text("Nothing to draw.")
    else:
        png = heatmap_figure(gains)
        s.image(png, save_fig("gains_heatmap", png), "heatmap of gains over random shuffle")

    best = best_table(summary, gains)
    s = section("best")
    if best.empty:
        s.text("Nothing to rank.")
    else:
        s.table(best, pct=[c for c in ("accuracy", "margin", "gain_over_random") if c in best.columns],
                pvals=("p_bootstrap",))
    save_table("best", best)

    diffs = difficulty_sources_table(run) if not run.done.empty else pd.DataFrame()
    s = section("difficulty-sources")
    if diffs.empty:
        s.text("Only one difficulty source in this grid (add e.g. `llm` to difficulty.sources to compare).")
    else:
        s.text("The same strategy under two difficulty sources, paired per seed and item.")
        cols = ["model", "dataset", "method", "test_set", "strategy", "comparison", "accuracy_source",
                "accuracy_versus", "difference", "ci_low", "ci_high", "p_bootstrap", "p_mcnemar", "seeds"]
        s.table(diffs[cols], pct=("accuracy_source", "accuracy_versus", "difference", "ci_low", "ci_high"),
                pvals=("p_bootstrap", "p_mcnemar"))
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
