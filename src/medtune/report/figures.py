"""The report's figures as PNG bytes: the heatmap and forest plot of gains, accuracy per level, loss curves, orders.

Figures only draw tables computed elsewhere (:mod:`medtune.report.inference`, :mod:`medtune.report.tables`) or a
run's own files (training logs, order files), so a figure can never show a number the tables do not have.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtune.experiments.grid import NO_DIFFICULTY
from medtune.orders.orderfile import OrderFile
from medtune.report.results import FAMILY, RunData, cell_label
from medtune.schema import DIFFICULTY_LEVELS


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


Curves = dict[tuple[str, str, str], dict[str, list[pd.Series]]]


def _log_curves(run: RunData, value: str, kind: str | None = None) -> Curves:
    """``value`` per step from the training logs of the done cells, by model/data/method and strategy: of the
    optimizer steps (``kind`` None) or of the records of one kind (``validation``)."""
    curves: Curves = {}
    for rec in run.records.values():
        train = rec.get("train") or {}
        if rec.get("status") != "done" or not train.get("dir"):
            continue
        log = Path(train["dir"]) / "train_log.jsonl"
        if not log.exists():
            continue
        steps, values = [], []
        for line in log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("kind") == kind and r.get(value) is not None:
                    steps.append(r["step"])
                    values.append(float(r[value]))
        if not steps:
            continue
        key = (rec["model"], rec["dataset"], rec["method"])
        curves.setdefault(key, {}).setdefault(cell_label(rec["strategy"], rec["difficulty"]), []).append(
            pd.Series(values, index=steps))
    return curves


def validation_figure(run: RunData) -> bytes | None:
    """Held-out validation loss (and accuracy, where the runs scored it) per step, mean over the seeds that reached
    the step (early stopping ends runs at different steps), one line per strategy; one row per model/data/method.
    ``None`` when no run validated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [("val_loss", "validation loss (answer tokens)"), ("val_accuracy", "validation accuracy")]
    curves = {c: _log_curves(run, c, "validation") for c, _ in columns}
    columns = [(c, label) for c, label in columns if curves[c]]
    if not columns:
        return None
    keys = list(dict.fromkeys(k for c, _ in columns for k in curves[c]))[:6]
    fig, axes = plt.subplots(len(keys), len(columns), figsize=(6 * len(columns), 3.0 * len(keys)), squeeze=False)
    for i, key in enumerate(keys):
        for j, (c, label) in enumerate(columns):
            ax = axes[i, j]
            for arm, series in sorted(curves[c].get(key, {}).items()):
                mean = pd.concat(series, axis=1).mean(axis=1).sort_index()
                ax.plot(mean.index, mean.to_numpy(), marker="o", ms=3, lw=1.4, label=f"{arm} (n={len(series)})")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(label)
            ax.set_title(" / ".join(key) + " — mean over seeds", fontsize=9, loc="left")
            if ax.lines:
                ax.legend(fontsize=7)
    fig.tight_layout()
    return _fig_png(fig)


def loss_figure(run: RunData) -> bytes | None:
    """Training loss per step, mean over seeds, one line per strategy; one panel per model/data/method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = _log_curves(run, "loss")
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
        by_source.setdefault(src or "", {})[cell_label(rec["strategy"], rec["difficulty"])] = (
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
