"""Every column of the gains table is the statistic it names: a run folder written here (two strategies and the
baseline, three seeds, 0/1 scores known in advance) and each row compared field by field with
:func:`medtune.stats.compare_runs` on the same runs, with the power settings passed through."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from medtune.report.inference import _paired, gains_table
from medtune.report.results import RunData
from medtune.stats import compare_runs, holm
from planned_runs import planned_run

N_ITEMS = 60
PLAN = {"random": {0: 0.50, 1: 0.55, 2: 0.45}, "disjoint": {0: 0.5, 1: 0.5, 2: 0.5},
        "steady": {0: 0.62, 1: 0.67, 2: 0.57}, "swinging": {0: 0.60, 1: 0.47, 2: 0.53}}
# "disjoint" was scored on other item ids than the baseline: nothing to pair, so it has no row (and the strategies
# after it still have theirs)


def _run(root: Path) -> tuple[Path, dict[tuple[str, int], np.ndarray]]:
    return planned_run(root, PLAN, n_items=N_ITEMS, rng_seed=3, flips=4, other_ids=("disjoint",))


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
