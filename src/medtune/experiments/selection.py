"""Choosing each arm's setting of a sweep: a pure function of the results table's validation columns.

An arm is one model × training set × method × strategy × difficulty source; its cells differ in the sweep's
setting and the seeds. The chosen setting is the one with the best mean validation score (``val_accuracy``: the
headline metric on the validation items, accuracy or token F1) over the arm's finished cells of that setting —
its seeds, and its folds where the training set is cross-validated. Ties (means equal to within 1e-12) go to the
setting that comes first in sweep order (``setting_index``: the first key of the sweep outermost), so a flat curve
keeps the first, usually the default, setting.

Nothing here reads a test column: the test set is scored at every setting but read only at the chosen one, so
the test number of an arm is not the best of several draws of it (see :mod:`medtune.experiments.validation`).
"""

from __future__ import annotations

import pandas as pd

ARM = ["model", "dataset", "method", "strategy", "difficulty"]
TIE = 1e-12  # means closer than this are a tie (float sums of equal accuracies in another order differ by ~1e-16)
CURVE_COLUMNS = [*ARM, "setting", "setting_index", "val_accuracy", "val_sd", "seeds"]


def _swept_cells(results: pd.DataFrame) -> pd.DataFrame:
    """One row per finished cell of a sweep (the table has a row per cell × test set)."""
    if results.empty or "setting" not in results or "val_accuracy" not in results:
        return results.iloc[0:0]
    done = results[(results["status"] == "done") & results["setting"].notna() & results["val_accuracy"].notna()]
    return done.drop_duplicates("cell_id")


def validation_curves(results: pd.DataFrame) -> pd.DataFrame:
    """Each arm's mean validation score per setting, in sweep order: the curve the choice is read from."""
    cells = _swept_cells(results)
    if cells.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    g = cells.groupby([*ARM, "setting", "setting_index"], sort=False, dropna=False)["val_accuracy"]
    curve = g.agg(val_accuracy="mean", val_sd="std", seeds="count").reset_index()
    curve["setting_index"] = curve["setting_index"].astype(int)
    return curve.sort_values([*ARM, "setting_index"], kind="stable").reset_index(drop=True)[CURVE_COLUMNS]


def select_settings(results: pd.DataFrame) -> pd.DataFrame:
    """One row per arm: its chosen setting (best mean validation score; ties: first in sweep order)."""
    curve = validation_curves(results)
    rows = []
    for _, g in curve.groupby(ARM, sort=False, dropna=False):
        best = g["val_accuracy"].max()
        rows.append(g[g["val_accuracy"] >= best - TIE].sort_values("setting_index", kind="stable").iloc[0])
    return pd.DataFrame(rows, columns=CURVE_COLUMNS).reset_index(drop=True)


def at_chosen(results: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """The rows of the results table at each arm's chosen setting, with the rows of cells outside any sweep."""
    keys = chosen[[*ARM, "setting"]].assign(_chosen=True)
    merged = results.merge(keys, on=[*ARM, "setting"], how="left")
    keep = merged["_chosen"].fillna(False).astype(bool) | results["setting"].isna().to_numpy()
    return results[keep.to_numpy()]


def at_shared(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of the results table at each arm's shared setting (``setting_shared``), with the unswept cells'."""
    shared = results["setting_shared"].fillna(False).astype(bool) if "setting_shared" in results else False
    return results[shared | results["setting"].isna()]
