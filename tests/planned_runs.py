"""A grid's run folder written by hand, with each cell's accuracy planned: report tests that need known gains.

Each cell's per-item correctness is drawn around its planned accuracy from one item difficulty shared by every cell
(runs agree on most items, as real runs do), then a few items are flipped; predictions, cell records and the
results tables are written in the real formats (``ResultStore``), so the report reads them as it reads a grid's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from medtune.experiments.store import ResultStore
from medtune.schema import MCQItem, write_items

Plan = Mapping[str, Mapping[int, float]]  # strategy -> seed -> planned accuracy


def planned_run(root: Path, plan: Plan, *, n_items: int, rng_seed: int, flips: int,
                other_ids: tuple[str, ...] = ()) -> tuple[Path, dict[tuple[str, int], np.ndarray]]:
    """The run folder ``root/run`` and each (strategy, seed)'s 0/1 correctness. Strategies in ``other_ids`` are
    scored on other item ids than the rest (nothing to pair them with)."""
    run = root / "run"
    items = write_items([MCQItem(id=f"t{i}", question=f"Q{i}?", options=["a", "b", "c", "d"], answer=i % 4,
                                 source="t", split="test") for i in range(n_items)], root / "test.parquet")
    rng = np.random.default_rng(rng_seed)
    easy = rng.random(n_items)
    answers = np.arange(n_items) % 4
    store = ResultStore(run)
    correct: dict[tuple[str, int], np.ndarray] = {}
    for strategy, per_seed in plan.items():
        for s, acc in per_seed.items():
            c = (easy < acc).astype(int)
            flip = rng.choice(n_items, flips, replace=False)
            c[flip] = 1 - c[flip]
            pred = np.where(c == 1, answers, (answers + 1) % 4)
            probs = [[0.7 if k == p else 0.1 for k in range(4)] for p in pred]
            cell = f"m__d__lora__{strategy}__none__s{s}"
            path = root / "preds" / f"{cell}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            ids = [f"{'u' if strategy in other_ids else 't'}{i}" for i in range(n_items)]
            pd.DataFrame({"id": ids, "mode": "option", "answer": answers, "pred": pred, "correct": c.astype(bool),
                          "scores": probs, "probs": probs, "permutation": None, "generated": None}).to_parquet(path)
            correct[(strategy, s)] = c
            store.write({"cell_id": cell, "model": "m", "dataset": "d", "method": "lora", "strategy": strategy,
                         "difficulty": "none", "seed": s, "key": "k", "status": "done", "test_sets": ["t"],
                         "tests": {"t": {"accuracy": float(c.mean()), "ci_low": 0.0, "ci_high": 1.0,
                                         "n_items": n_items, "n_correct": int(c.sum()), "metric": "accuracy",
                                         "predictions": str(path), "items": str(items)}},
                         "train": {"steps": 3, "final_loss": 1.0, "seconds": 0.1, "dir": str(root / "none")}})
    store.build_tables()
    return run, correct
