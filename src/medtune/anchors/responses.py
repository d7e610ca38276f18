"""Known models' responses from medtune's own files: prediction files, or a grid run's cells.

Rows are models, columns item ids, values the per-item correctness the scorer wrote (0/1; free-text rows give
token F1, see :func:`medtune.evaluation.per_item_scores`). Anchors describe one test set, so every file must
hold predictions for the same items.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medtune.errors import InputError
from medtune.evaluation import per_item_scores, read_predictions


def responses_from_predictions(paths: Sequence[str | Path], names: Sequence[str] | None = None) -> pd.DataFrame:
    """Models × items correctness from predictions files (one per model, all on the same items).

    Model names default to the files' paths. Files on different item sets are an ``InputError`` naming the
    file and an item it lacks or adds.
    """
    if names is not None and len(names) != len(paths):
        raise InputError(f"{len(names)} names for {len(paths)} predictions files")
    rows: dict[str, pd.Series] = {}
    first: tuple[Path, list[str]] | None = None
    for n, path in enumerate(paths):
        path = Path(path)
        frame = read_predictions(path)
        ids = [str(i) for i in frame["id"]]
        if first is None:
            first = (path, ids)
        else:
            ref = set(first[1])
            extra = [i for i in ids if i not in ref]
            lacking = [i for i in first[1] if i not in set(ids)]
            if extra or lacking:
                what = f"has item {extra[0]!r} that {first[0]} lacks" if extra else \
                    f"lacks item {lacking[0]!r} of {first[0]}"
                raise InputError(f"{what} ({len(extra)} extra, {len(lacking)} missing): anchors need every model's "
                                 "predictions on the same items", file=path, field="id")
        name = str(names[n]) if names is not None else str(path)
        if name in rows:
            raise InputError(f"model name {name!r} given twice", file=path)
        rows[name] = pd.Series(per_item_scores(frame), index=ids, dtype=float)
    if first is None:
        raise InputError("no predictions files given")
    return pd.DataFrame(rows).T.loc[:, first[1]]


def responses_from_run(run_dir: str | Path, test_set: str | None = None) -> dict[str, pd.DataFrame]:
    """Per test set, the responses of a grid run's finished cells (``RUN_DIR/cells/*.json``, ``tests[name]``).

    Each finished cell is one model (its id the row name); only test sets whose cells all cover the same
    items are returned as they are (the first cell's items otherwise decide, and a differing cell is an
    ``InputError``).
    """
    cells_dir = Path(run_dir) / "cells"
    if not cells_dir.is_dir():
        raise InputError("not a grid run folder (no cells/)", file=run_dir)
    paths: dict[str, dict[str, str]] = {}
    for p in sorted(cells_dir.glob("*.json")):
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError, UnicodeDecodeError):
            continue  # a cell being written: the store skips it the same way
        if not isinstance(rec, dict) or rec.get("status") != "done":
            continue
        for name, test in (rec.get("tests") or {}).items():
            if test_set is not None and name != test_set:
                continue
            if isinstance(test, dict) and test.get("predictions"):
                paths.setdefault(name, {})[str(rec.get("cell_id", p.stem))] = str(test["predictions"])
    if not paths:
        raise InputError(f"no finished cell has predictions{f' for test set {test_set!r}' if test_set else ''}",
                         file=cells_dir)
    return {name: responses_from_predictions(list(by_cell.values()), names=list(by_cell))
            for name, by_cell in paths.items()}
