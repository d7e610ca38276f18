"""Every column of the gains table is the statistic it names: a run folder written here (two strategies and the
baseline, three seeds, 0/1 scores known in advance) and each row compared field by field with
:func:`medtune.stats.compare_runs` on the same runs, with the power settings passed through."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtune.experiments.store import ResultStore
from medtune.report.inference import _paired, gains_table
from medtune.report.results import RunData
from medtune.schema import MCQItem, write_items
from medtune.stats import compare_runs, holm

N_ITEMS = 60
PLAN = {"random": {0: 0.50, 1: 0.55, 2: 0.45}, "disjoint": {0: 0.5, 1: 0.5, 2: 0.5},
        "steady": {0: 0.62, 1: 0.67, 2: 0.57}, "swinging": {0: 0.60, 1: 0.47, 2: 0.53}}
# "disjoint" was scored on other item ids than the baseline: nothing to pair, so it has no row (and the strategies
# after it still have theirs)


def _run(root: Path) -> tuple[Path, dict[tuple[str, int], np.ndarray]]:
    run = root / "run"
    items = write_items([MCQItem(id=f"t{i}", question=f"Q{i}?", options=["a", "b", "c", "d"], answer=i % 4,
                                 source="t", split="test") for i in range(N_ITEMS)], root / "test.parquet")
    rng = np.random.default_rng(3)
    easy = rng.random(N_ITEMS)
    answers = np.arange(N_ITEMS) % 4
    store = ResultStore(run)
    correct: dict[tuple[str, int], np.ndarray] = {}
    for strategy, per_seed in PLAN.items():
        for s, acc in per_seed.items():
            c = (easy < acc).astype(int)
            flip = rng.choice(N_ITEMS, 4, replace=False)
            c[flip] = 1 - c[flip]
            pred = np.where(c == 1, answers, (answers + 1) % 4)
            probs = [[0.7 if k == p else 0.1 for k in range(4)] for p in pred]
            cell = f"m__d__lora__{strategy}__none__s{s}"
            path = root / "preds" / f"{cell}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            ids = [f"{'u' if strategy == 'disjoint' else 't'}{i}" for i in range(N_ITEMS)]
            pd.DataFrame({"id": ids, "mode": "option", "answer": answers,
                          "pred": pred, "correct": c.astype(bool), "scores": probs, "probs": probs,
                          "permutation": None, "generated": None}).to_parquet(path)
            correct[(strategy, s)] = c
            store.write({"cell_id": cell, "model": "m", "dataset": "d", "method": "lora", "strategy": strategy,
                         "difficulty": "none", "seed": s, "key": "k", "status": "done", "test_sets": ["t"],
                         "tests": {"t": {"accuracy": float(c.mean()), "ci_low": 0.0, "ci_high": 1.0,
                                         "n_items": N_ITEMS, "n_correct": int(c.sum()), "metric": "accuracy",
                                         "predictions": str(path), "items": str(items)}},
                         "train": {"steps": 3, "final_loss": 1.0, "seconds": 0.1, "dir": str(root / "none")}})
    store.build_tables()
    return run, correct


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _run(tmp_path_factory.mktemp("gains"))


def test_each_column_is_the_statistic_it_names(grid):
    run_dir, correct = grid
    gains = gains_table(RunData(run_dir, n_boot=200), gain=0.03, alpha=0.1, power=0.9).set_index("strategy")
    assert set(gains.index) == {"steady", "swinging"}
    for strategy in ("steady", "swinging"):
        row = gains.loc[strategy]
        ref = compare_runs({s: correct[(strategy, s)] for s in range(3)}, {s: correct[("random", s)] for s in range(3)},
                           n_boot=200, seed=0, gain=0.03, alpha=0.1, power=0.9)
        same = {"seeds": "seeds", "test": "test", "gain": "gain", "gain_ci_low": "ci_low", "gain_ci_high": "ci_high",
                "p_seed": "p_value", "df": "df", "sd_gain": "sd_gain", "hb_ci_low": "hb_ci_low",
                "hb_ci_high": "hb_ci_high", "p_hier": "p_hier", "item_ci_low": "item_ci_low",
                "item_ci_high": "item_ci_high", "p_bootstrap": "p_item_bootstrap", "n_items": "n_items",
                "n_pairs": "n_pairs", "mdg": "mdg", "seeds_needed": "seeds_needed", "power_gain": "power_gain",
                "power_seeds": "power_seeds", "sd_gain_power": "sd_gain_power", "mdg_items": "mdg_items",
                "p_mcnemar": "p_mcnemar", "p_mcnemar_midp": "p_mcnemar_midp", "only_strategy": "only_a",
                "only_random": "only_b"}
        for col, key in same.items():
            assert row[col] == pytest.approx(ref[key]), col
        assert row["power_gain"] == 0.03 and row["reason"] is None
        assert row["between_sd"] == pytest.approx(math.sqrt(ref["between_var"]))
        assert row["item_sd"] == pytest.approx(math.sqrt(ref["item_var"]))
        per_seed = [ref["per_seed"][s] for s in range(3)]
        assert row["per_seed_gains"] == pytest.approx(per_seed)
        assert row["per_seed"] == ", ".join(f"{100 * g:+.1f}" for g in per_seed)
        assert row["label"] == strategy and row["model"] == "m" and row["test_set"] == "t"
    np.testing.assert_allclose(gains["p_holm"], holm(gains["p_seed"].to_numpy()))


def test_an_empty_group_has_no_comparison(grid):
    run = RunData(grid[0], n_boot=50)
    d = run.done
    ref = d[d["strategy"] == "random"]
    assert _paired(run, d.iloc[0:0], ref, "t") is None
    assert _paired(run, ref, d.iloc[0:0], "t") is None
    assert _paired(run, d[d["strategy"] == "steady"], ref, "t")["seeds"] == 3
