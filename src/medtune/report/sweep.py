"""The report of a sweep: each arm's chosen setting, its validation curve, its test result at that setting, and the
comparison of the arms at their own best settings beside the comparison at one shared setting.

The choice is :func:`medtune.experiments.selection.select_settings` (validation items only); the comparisons are the
report's own seed-aware tables (the gains of strategies, the methods against the baseline method), which
:mod:`medtune.report.write` computes once on the chosen rows and once on the shared setting's rows of the same run
(:meth:`~medtune.report.results.RunData.at_shared_setting`) and this module lays side by side.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

from medtune.experiments.selection import ARM, validation_curves
from medtune.report.results import RunData, cell_label

CHOSEN_COLUMNS = [*ARM, "label", "test_set", "chosen", "val_chosen", "seeds", "test_chosen", "shared", "val_shared",
                  "test_shared"]


def _test_means(done: pd.DataFrame) -> pd.DataFrame:
    rows = done[done["setting"].notna()]
    g = rows.groupby([*ARM, "test_set"], sort=False, dropna=False)
    return g.agg(setting=("setting", "first"), test=("accuracy", "mean")).reset_index()


def chosen_table(run: RunData) -> pd.DataFrame:
    """Per arm and test set: the chosen setting with its mean validation score and mean test score over seeds, and
    the same at the arm's shared setting."""
    if not run.swept:
        return pd.DataFrame(columns=CHOSEN_COLUMNS)
    curves = validation_curves(run.results)
    chosen = _test_means(run.done).merge(run.chosen[[*ARM, "setting", "val_accuracy", "seeds"]], on=[*ARM, "setting"])
    chosen = chosen.rename(columns={"setting": "chosen", "val_accuracy": "val_chosen", "test": "test_chosen"})
    shared = _test_means(run.shared_done).merge(curves[[*ARM, "setting", "val_accuracy"]], on=[*ARM, "setting"])
    shared = shared.rename(columns={"setting": "shared", "val_accuracy": "val_shared", "test": "test_shared"})
    out = chosen.merge(shared, on=[*ARM, "test_set"], how="left")
    out["label"] = [cell_label(s, d) for s, d in zip(out["strategy"], out["difficulty"], strict=True)]
    return out[CHOSEN_COLUMNS]


def comparison_table(gains: dict[str, pd.DataFrame], methods: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The seed-aware comparisons of the arms side by side: ``gains`` (strategies against the baseline strategy,
    :func:`~medtune.report.inference.gains_table`) and ``methods`` (methods against the baseline method, on their
    headline metrics) as computed at each arm's chosen setting (key ``tuned``) and at the shared one (``shared``)."""
    frames = []
    for name in ("tuned", "shared"):
        g = gains.get(name, pd.DataFrame())
        if not g.empty:
            frames.append(g.assign(settings=name, compared="strategy", arm=g["label"],
                                   metric=g.get("metric", "accuracy")))
        m = methods.get(name, pd.DataFrame())
        if not m.empty:
            frames.append(m.assign(settings=name, compared="method", arm=m["method"]))
    if not frames:
        return pd.DataFrame()
    cols = ["settings", "compared", "model", "dataset", "test_set", "arm", "metric", "seeds", "gain", "gain_ci_low",
            "gain_ci_high", "p_seed", "p_holm"]
    out = pd.concat(frames, ignore_index=True)
    return out[[c for c in cols if c in out.columns]]


def curve_figure(curves: pd.DataFrame) -> bytes:
    """Validation score against setting (in sweep order), one line per arm; the chosen setting ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    labels: list[str] = []
    for _, g in curves.groupby(ARM, sort=False, dropna=False):
        g = g.sort_values("setting_index")
        for s in g["setting"]:
            if s not in labels:
                labels.append(s)
        x = [labels.index(s) for s in g["setting"]]
        arm = g.iloc[0]
        varying = [str(arm[c]) for c in ("model", "dataset") if curves[c].nunique() > 1]
        name = " / ".join([*varying, str(arm["method"]), cell_label(arm["strategy"], arm["difficulty"])])
        line = ax.plot(x, 100 * g["val_accuracy"], marker="o", label=name)[0]
        best = g["val_accuracy"].max()
        first = g[g["val_accuracy"] >= best - 1e-12].iloc[0]
        ax.scatter([labels.index(first["setting"])], [100 * first["val_accuracy"]], s=160, facecolors="none",
                   edgecolors=line.get_color())
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("validation score (%)")
    ax.set_title("validation curve per arm (ring: chosen setting)")
    ax.legend(fontsize=7)
    return _png(fig)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
