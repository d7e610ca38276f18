"""Accuracy per source of the test items, for test sets that hold several (a mixture's parts).

A model trained on a mixture can gain on one source and lose on another while its overall accuracy stays put;
this table splits each cell group's accuracy by the source of its test items (``meta.source``, the part of a
mixture an item was drawn from, else the item's own ``source``: :func:`medtune.schema.item_source`), with the
statistics of the per-cell table: the mean over seeds of the per-item correctness (on the items every seed
scored) and the 95% percentile-bootstrap interval over those items. A test set of one source gives no rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medtune.report.results import GROUP, RunData, cell_label, common_index

COLUMNS = [*GROUP, "label", "source", "seeds", "n_items", "accuracy", "ci_low", "ci_high"]


def _item_sources(run: RunData, cell_ids: list[str], test_set: str, cache: dict[str, dict[str, str]]
                  ) -> dict[str, str]:
    """Item id → source over the test items of the cells (and the fold cells a pooled row stands for)."""
    from medtune.schema import item_source, read_items

    out: dict[str, str] = {}
    for cell_id in cell_ids:
        for part in run.parts(cell_id, test_set):
            path = run.records[part]["tests"][test_set]["items"]
            if path not in cache:
                cache[path] = {it.id: s for it in read_items(path) if (s := item_source(it)) is not None}
            out.update(cache[path])
    return out


def sources_table(run: RunData) -> pd.DataFrame:
    """Per finished cell group of a test set with several sources, and per source: accuracy with its 95% item CI
    (token F1 for free text), mean over the group's seeds."""
    from medtune.evaluation import accuracy_with_ci

    rows: list[dict[str, Any]] = []
    cache: dict[str, dict[str, str]] = {}
    if run.done.empty:
        return pd.DataFrame(columns=COLUMNS)
    for gkey, g in run.done.groupby(GROUP, sort=False, dropna=False):
        test_set = gkey[-1]
        cells = list(g["cell_id"])
        sources = _item_sources(run, cells, test_set, cache)
        if len(set(sources.values())) < 2:
            continue
        per_seed = [run.correct(c, test_set) for c in cells]
        common = common_index(per_seed)
        mean_item = np.mean([s.loc[common].to_numpy(dtype=float) for s in per_seed], axis=0)
        of_item = np.asarray([sources.get(i) for i in common], dtype=object)
        for source in sorted({s for s in of_item if s is not None}):
            mask = of_item == source
            ci = accuracy_with_ci(mean_item[mask], n_boot=run.n_boot, seed=0)
            rows.append({**dict(zip(GROUP, gkey, strict=True)), "label": cell_label(gkey[4], gkey[3]),
                         "source": source, "seeds": len(per_seed), "n_items": int(mask.sum()),
                         "accuracy": ci["accuracy"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]})
    return pd.DataFrame(rows, columns=COLUMNS)


__all__ = ["COLUMNS", "sources_table"]
