"""Accuracy per value of an item meta field (by default the USMLE step) for every finished cell group.

A test set that mixes exams (USMLE steps 1-3) can hide an order effect that helps one step and hurts another;
the report's per-cell accuracy averages them away. This table splits each group's accuracy by ``meta[key]``
of the test items, with the same statistics as the per-cell table: the mean over seeds of the per-item
correctness (on the items every seed scored), and a 95% percentile-bootstrap interval over the items of that
seed-averaged correctness (:func:`medtune.evaluation.accuracy_with_ci`).

The groups, their labels and the shared items are the report's own (:mod:`medtune.report.results`), so a step row
belongs to the same group as the per-cell row it splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medtune.report.results import GROUP, RunData, cell_label, common_index

# One row per cell group (the report's GROUP) and meta value.
COLUMNS = [*GROUP, "label", "key", "value", "seeds", "n_items", "accuracy", "ci_low", "ci_high"]


def _meta_values(run: RunData, cell_ids: Sequence[str], test_set: str, key: str,
                 cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Item id → ``meta[key]`` (only items that have it) over the test items of the cells (and their folds)."""
    from medtune.schema import read_items

    out: dict[str, Any] = {}
    for cell_id in cell_ids:
        for part in run.parts(cell_id, test_set):  # the fold cells a pooled row stands for
            path = run.records[part]["tests"][test_set]["items"]
            if path not in cache:
                cache[path] = {it.id: it.meta for it in read_items(path)}
            # Scalars only: a list or an object is no group (as in the evaluation's per-meta accuracy).
            out.update({i: m[key] for i, m in cache[path].items() if isinstance(m.get(key), str | int | float)})
    return out


def _sort_key(typed: tuple[str, Any]) -> tuple[int, Any]:
    # Numbers in numeric order, then flags and text by their text.
    name, value = typed
    return (0, value) if name in ("int", "float") else (1, f"{name}:{value}")


def meta_groups_table(run: RunData, key: str = "step") -> pd.DataFrame:
    """Per finished cell group and value of the test items' ``meta[key]``: accuracy with its 95% item CI.

    ``accuracy`` is the mean over the group's seeds of the per-item correctness (token F1 for free text),
    on the items every seed scored; ``ci_low``/``ci_high`` the percentile bootstrap over those items of
    the seed-averaged correctness; ``n_items``: items with that value. Items without the key are left out;
    a test set none of whose items has it gives no row, and an empty frame (with the columns) when no test
    item has it.
    """
    from medtune.evaluation import accuracy_with_ci

    rows: list[dict[str, Any]] = []
    cache: dict[str, dict[str, Any]] = {}
    done = run.done
    if done.empty:
        return pd.DataFrame(columns=COLUMNS)
    for gkey, g in done.groupby(GROUP, sort=False, dropna=False):
        test_set = gkey[-1]
        cells = list(g["cell_id"])
        values = _meta_values(run, cells, test_set, key, cache)
        if not values:
            continue
        per_seed = [run.correct(c, test_set) for c in cells]
        common = common_index(per_seed)
        mean_item = pd.Series(np.mean([s.loc[common].to_numpy(dtype=float) for s in per_seed], axis=0),
                              index=common)
        # Typed so that True and 1 (equal in Python) stay two values.
        typed = [(type(values[i]).__name__, values[i]) if i in values else None for i in common]
        for value_key in sorted({t for t in typed if t is not None}, key=_sort_key):
            value = value_key[1]
            mask = np.asarray([t == value_key for t in typed], dtype=bool)
            ci = accuracy_with_ci(mean_item.to_numpy()[mask], n_boot=run.n_boot, seed=0)
            rows.append({**dict(zip(GROUP, gkey, strict=True)), "label": cell_label(gkey[4], gkey[3]), "key": key,
                         "value": value, "seeds": len(per_seed), "n_items": int(mask.sum()),
                         "accuracy": ci["accuracy"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]})
    return pd.DataFrame(rows, columns=COLUMNS)
