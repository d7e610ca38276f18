"""The A/A arm: the baseline strategy again with order seeds of its own, reported as a calibration check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from medtune.experiments import config_from_dict, expand, run_experiment
from medtune.experiments.config import AA_ORDER_SEED_OFFSET
from medtune.report import write_report
from medtune.report.inference import aa_check_lines, gains_table
from medtune.report.results import RunData
from planned_runs import planned_run

REPO = Path(__file__).resolve().parents[2]


def test_the_aa_arm_draws_its_own_orders_keeps_the_initialisation_and_is_reported(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data.update(output_dir=str(tmp_path / "run"), strategies=["random"])
    data["evaluation"].update(aa_check=True, baseline=False)
    cfg = config_from_dict(data)
    assert [s.id for s in cfg.strategies] == ["random", "random-aa"]
    assert {c.strategy for c in expand(cfg)} == {"random", "random-aa"}
    summary = run_experiment(cfg, progress=False)
    assert summary.counts == {"done": 4}

    cells = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")}
    for seed in (0, 1):
        a = cells[f"tiny__synthetic__lora__random__none__s{seed}"]
        b = cells[f"tiny__synthetic__lora__random-aa__none__s{seed}"]
        order_a, order_b = (json.loads(Path(c["order"]).read_text()) for c in (a, b))
        assert order_a["seed"] == seed and order_b["seed"] == seed + AA_ORDER_SEED_OFFSET
        assert order_a["epochs"] != order_b["epochs"]  # its own order ...
        train_a, train_b = (json.loads((Path(c["train"]["dir"]) / "config.json").read_text())["train"]
                            for c in (a, b))
        assert train_a["seed"] == train_b["seed"] == seed  # ... from the same initialisation
        assert {k: v for k, v in train_a.items()} == train_b

    rep = write_report(summary.run_dir)
    md = rep.markdown.read_text()
    assert "A/A check (tiny / synthetic-test): random-aa − random =" in md


# ----------------------------------------------------------------------------------------------------------
# The verdict, on a run folder built by hand: cell records and predictions whose per-seed accuracies are known.

N_ITEMS = 240


def _aa_run(root: Path, plan: dict[str, dict[int, float]]) -> tuple[Path, dict[tuple[str, int], np.ndarray]]:
    """A run folder with one cell per strategy and seed, each around ``plan``'s accuracy (tests/planned_runs.py)."""
    return planned_run(root, plan, n_items=N_ITEMS, rng_seed=7, flips=10)


RANDOM = {0: 0.50, 1: 0.56, 2: 0.44, 3: 0.53, 4: 0.47}


def _seed_p(correct: dict[tuple[str, int], np.ndarray], strategy: str) -> float:
    """The paired t-test on the per-seed accuracy differences (the run as the unit), by scipy."""
    diffs = [correct[(strategy, s)].mean() - correct[("random", s)].mean() for s in RANDOM]
    return float(sps.ttest_1samp(diffs, 0).pvalue)


def _holm2(p_a: float, p_b: float) -> float:
    """Holm's adjusted p of ``p_a`` in a family of two (written out: 2 × the smaller, then a running max)."""
    lo, hi = sorted((p_a, p_b))
    adj_lo = min(1.0, 2 * lo)
    return adj_lo if p_a == lo else min(1.0, max(adj_lo, hi))


def _line(run_dir: Path) -> tuple[str, pd.Series]:
    gains = gains_table(RunData(run_dir, n_boot=400))
    lines = aa_check_lines(gains, "random")
    assert len(lines) == 1, lines
    return lines[0], gains.set_index("strategy").loc["random-aa"]


def _printed_p(line: str, name: str) -> float:
    m = re.search(rf"{name} ([0-9.eE+-]+)", line)
    assert m, line
    return float(m.group(1).rstrip("."))


def test_an_aa_arm_better_on_every_seed_is_called_significant_with_its_seed_aware_p(tmp_path: Path) -> None:
    plan = {"random": RANDOM,
            "random-aa": {s: a + 0.08 + 0.01 * (s % 2) for s, a in RANDOM.items()},  # +8 to +9 pp on each seed
            "other": {s: a + (0.04 if s % 2 else -0.01) for s, a in RANDOM.items()}}  # a second strategy: Holm
    run_dir, correct = _aa_run(tmp_path, plan)
    line, row = _line(run_dir)
    p_aa, p_other = _seed_p(correct, "random-aa"), _seed_p(correct, "other")
    expected = _holm2(p_aa, p_other)
    assert row["p_seed"] == pytest.approx(p_aa) and row["p_holm"] == pytest.approx(expected)
    assert expected < 0.05 and p_aa < expected  # significant after Holm, and the adjustment changed it
    # the printed p is the seed-aware, Holm-adjusted one, not the within-run bootstrap p nor the unadjusted one
    assert f"{row['p_bootstrap']:.3g}" != f"{expected:.3g}" != f"{p_aa:.3g}"
    assert _printed_p(line, "seed-aware p_holm") == pytest.approx(float(f"{expected:.3g}"))
    assert _printed_p(line, "within-run p_bootstrap") == pytest.approx(float(f"{row['p_bootstrap']:.3g}"))
    gain = np.mean([correct[("random-aa", s)].mean() - correct[("random", s)].mean() for s in RANDOM])
    assert f"random-aa − random = {100 * gain:+.1f} pp" in line
    assert "SIGNIFICANT: the comparison is miscalibrated" in line and "null, as it must be" not in line


def test_an_aa_arm_that_only_swings_with_the_seed_is_called_null(tmp_path: Path) -> None:
    # −6 … +10 pp from seed to seed: the run-level test sees noise; the pooled items look like an effect
    swings = {0: 0.10, 1: -0.06, 2: 0.09, 3: -0.05, 4: 0.08}
    plan = {"random": RANDOM, "random-aa": {s: a + swings[s] for s, a in RANDOM.items()}}
    run_dir, correct = _aa_run(tmp_path, plan)
    line, row = _line(run_dir)
    p_aa = _seed_p(correct, "random-aa")
    assert row["p_holm"] == pytest.approx(p_aa) and p_aa > 0.05
    assert row["p_bootstrap"] < 0.05  # a verdict taken from the within-run p would call this significant
    assert _printed_p(line, "seed-aware p_holm") == pytest.approx(float(f"{p_aa:.3g}"))
    assert "null, as it must be" in line and "SIGNIFICANT" not in line
