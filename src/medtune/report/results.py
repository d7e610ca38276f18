"""A grid run as the report reads it: its results table, cell records and per-item scores (:class:`RunData`).

Everything the report computes starts here, from the files ``medtune run`` wrote (``results.parquet``, ``cells/``,
each cell's predictions and test items), so every number in the report can be traced to a run's files. Fold cells
of a cross-validated run are pooled into one run per seed here, once, so no table has to know about folds.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medtune.errors import InputError
from medtune.experiments.grid import NO_DIFFICULTY
from medtune.experiments.selection import at_chosen, at_shared, select_settings
from medtune.experiments.store import ResultStore
from medtune.schema import DIFFICULTY_LEVELS

# The axes of one cell group: the cells of a group differ only in their seeds.
GROUP = ["model", "dataset", "method", "difficulty", "strategy", "test_set"]
# The comparisons with the baseline that form one family for Holm's adjustment.
FAMILY = ["model", "dataset", "method", "test_set"]


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
        # A sweep: every table reads each arm at its setting chosen on validation items (chosen before folds are
        # pooled: the choice averages over seeds and folds); the shared setting's rows are kept beside them.
        self.chosen = select_settings(done)
        shared = at_shared(done) if not self.chosen.empty else done.iloc[0:0]
        if not self.chosen.empty:
            done = at_chosen(done, self.chosen)
        # Cross-validation: the fold cells of one run are one run on the pooled held-out folds.
        self._pooled: dict[tuple[str, str], list[str]] = {}
        if "fold" in done and done["fold"].notna().any():
            done = self._pool_folds(done)
            shared = self._pool_folds(shared) if not shared.empty else shared
        self.done = done
        self.shared_done = shared

    @property
    def swept(self) -> bool:
        """Whether the run is a sweep (then ``done`` holds each arm at its chosen setting)."""
        return not self.chosen.empty

    def at_shared_setting(self) -> RunData:
        """This run as the report would read it with every arm at its shared setting (the same files)."""
        view = copy.copy(self)
        view.done = self.shared_done
        return view

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


def cell_label(strategy: str, difficulty: str) -> str:
    """A group's name in every table and figure: the strategy, and the difficulty source where it uses one."""
    return strategy if difficulty == NO_DIFFICULTY else f"{strategy} [{difficulty}]"


def common_index(series: Sequence[pd.Series]) -> pd.Index:
    """The item ids every one of ``series`` scored (in the first one's order): runs are compared on shared items."""
    idx = series[0].index
    for s in series[1:]:
        idx = idx.intersection(s.index, sort=False)
    return idx
