"""The report's statistics on a run folder built by hand: cell records, predictions and items written here.

Each cell's predictions are made up so that the answer is known: per-seed gains that agree (a real effect),
per-seed gains that swing with the seed (noise the item bootstrap takes for an effect), one seed (nothing
seed-aware is estimable), and option probabilities whose calibration is computed independently.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from medtune.evaluation import calibration_metrics, paired_bootstrap
from medtune.experiments.store import ResultStore
from medtune.report import write_report
from medtune.report.figures import heatmap_cells
from medtune.report.inference import gains_table
from medtune.report.results import RunData
from medtune.schema import MCQItem, write_items
from medtune.stats import holm, power_of_runs

N_ITEMS = 240


def _items(path: Path) -> Path:
    return write_items([MCQItem(id=f"t{i}", question=f"Q{i}?", options=["a", "b", "c", "d"], answer=i % 4,
                                source="t", split="test", human_difficulty=["easy", "medium", "hard"][i % 3])
                        for i in range(N_ITEMS)], path)


def _predictions(correct: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Option-mode rows whose argmax probability is the answer exactly where ``correct`` is 1."""
    answers = np.arange(N_ITEMS) % 4
    probs, preds = [], []
    for i, ok in enumerate(correct):
        top = rng.uniform(0.4, 0.9)
        pred = answers[i] if ok else (answers[i] + 1) % 4
        p = np.full(4, (1 - top) / 3)
        p[pred] = top
        probs.append(p.tolist())
        preds.append(int(pred))
    return pd.DataFrame({"id": [f"t{i}" for i in range(N_ITEMS)], "mode": "option", "answer": answers,
                         "pred": preds, "correct": correct.astype(bool), "scores": probs, "probs": probs,
                         "permutation": None, "generated": None})


def _run(root: Path, plan: dict[str, dict[int, float]], seed: int = 0) -> tuple[Path, dict]:
    """A run folder: for each strategy and seed, a cell whose correctness has the given accuracy."""
    root.mkdir(parents=True, exist_ok=True)
    run = root / "run"
    items = _items(root / "test.parquet")
    rng = np.random.default_rng(seed)
    easy = rng.random(N_ITEMS)  # a shared item difficulty: the runs agree on most items, as real runs do
    store = ResultStore(run)
    correct: dict[tuple[str, int], np.ndarray] = {}
    for strategy, per_seed in plan.items():
        for s, acc in per_seed.items():
            c = (easy < acc).astype(int)
            flip = rng.choice(N_ITEMS, 12, replace=False)  # a little run noise on top, accuracy kept
            c[flip[:6]], c[flip[6:]] = 1 - c[flip[:6]], 1 - c[flip[6:]]
            cell = f"m__d__lora__{strategy}__none__s{s}"
            pred_path = root / "preds" / f"{cell}.parquet"
            pred_path.parent.mkdir(exist_ok=True)
            _predictions(c, rng).to_parquet(pred_path)
            correct[(strategy, s)] = c
            store.write({"cell_id": cell, "model": "m", "dataset": "d", "method": "lora", "strategy": strategy,
                         "difficulty": "none", "seed": s, "key": "k", "status": "done", "test_sets": ["t"],
                         "tests": {"t": {"accuracy": float(c.mean()), "ci_low": 0.0, "ci_high": 1.0,
                                         "n_items": N_ITEMS, "n_correct": int(c.sum()), "metric": "accuracy",
                                         "predictions": str(pred_path), "items": str(items)}},
                         "train": {"steps": 3, "final_loss": 1.0, "seconds": 0.1, "dir": str(root / "none")}})
    store.build_tables()
    return run, correct


PLAN = {
    "random": {0: 0.50, 1: 0.55, 2: 0.45},
    "steady": {0: 0.62, 1: 0.67, 2: 0.57},    # +12 pp on every seed: an effect
    "swinging": {0: 0.60, 1: 0.47, 2: 0.53},  # +10, −8, +8 pp: the seed, not the strategy
    "base": {0: 0.25},
}


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _run(tmp_path_factory.mktemp("grid"), PLAN)


def test_gains_are_tested_with_the_training_run_as_the_unit(grid: tuple[Path, dict]) -> None:
    run_dir, correct = grid
    gains = gains_table(RunData(run_dir, n_boot=500)).set_index("strategy")
    acc = {k: v.mean() for k, v in correct.items()}
    for strategy in ("steady", "swinging"):
        row = gains.loc[strategy]
        per_seed = [acc[(strategy, s)] - acc[("random", s)] for s in range(3)]
        ref = sps.ttest_1samp(per_seed, 0)
        assert row["seeds"] == 3 and row["test"] == "paired t (per-seed gains)"
        assert row["gain"] == pytest.approx(np.mean(per_seed))
        assert row["p_seed"] == pytest.approx(ref.pvalue)
        half = sps.t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / math.sqrt(3)
        assert row["gain_ci_high"] - row["gain"] == pytest.approx(half)
        assert row["per_seed_gains"] == pytest.approx(per_seed)
        # the within-run test on the pooled (seed, item) pairs, as before
        pooled = paired_bootstrap(np.concatenate([correct[(strategy, s)] for s in range(3)]),
                                  np.concatenate([correct[("random", s)] for s in range(3)]), n_boot=500)
        assert row["p_bootstrap"] == pooled["p_value"] and row["item_ci_low"] == pooled["ci_low"]
    np.testing.assert_allclose(gains.loc[["steady", "swinging"], "p_holm"],
                               holm(gains.loc[["steady", "swinging"], "p_seed"].to_numpy()))
    # the steady gain survives the adjustment; the swinging one is noise the item bootstrap calls significant
    assert gains.loc["steady", "p_holm"] < 0.05
    assert gains.loc["swinging", "p_bootstrap"] < 0.05 < gains.loc["swinging", "p_holm"]
    # the heatmap stars only the adjusted result
    _, cells = heatmap_cells(gains.reset_index().assign(label=lambda f: f["strategy"]))
    assert cells.loc["m / t", "steady"].endswith("*") and not cells.loc["m / t", "swinging"].endswith("*")


def test_the_report_shows_seed_aware_gains_power_calibration_and_a_forest_plot(grid: tuple[Path, dict]) -> None:
    run_dir, correct = grid
    rep = write_report(run_dir, n_boot=300)
    page = rep.html.read_text()
    for sid in ("gains", "forest", "heatmap", "power"):
        assert f"<section id='{sid}'>" in page, sid
    assert rep.figures["gains_forest"].stat().st_size > 2000
    assert "Holm-adjusted" in page and "within-run" in page.lower()
    assert "with 3 seeds and 240 test items, the smallest gain" in page
    head = rep.headline.set_index("strategy")
    assert {"gain_ci_low", "gain_ci_high", "p_holm"} <= set(head.columns)
    assert "p_bootstrap" not in head.columns
    # calibration per cell: ECE and Brier, mean over the seeds, from the probabilities in the predictions
    summary = pd.read_csv(rep.tables["summary"]).set_index("strategy")
    frames = [pd.read_parquet(run_dir.parent / "preds" / f"m__d__lora__steady__none__s{s}.parquet") for s in range(3)]
    cal = [calibration_metrics(f["probs"].map(list).tolist(), f["answer"].tolist()) for f in frames]
    assert summary.loc["steady", "ece"] == pytest.approx(np.mean([c["ece"] for c in cal]))
    assert summary.loc["steady", "brier"] == pytest.approx(np.mean([c["brier"] for c in cal]))
    # the power table: the design's minimum detectable gain and the seeds for 1 pp, from stats.power_of_runs
    power = pd.read_csv(rep.tables["power"]).set_index("label")
    ra = {s: correct[("steady", s)] for s in range(3)}
    rb = {s: correct[("random", s)] for s in range(3)}
    expect = power_of_runs(ra, rb)
    assert power.loc["steady", "mdg"] == pytest.approx(expect["mdg"])
    assert power.loc["steady", "seeds_needed"] == expect["seeds_needed"]


def test_a_grid_with_one_seed_says_no_run_variance_can_be_estimated(tmp_path: Path) -> None:
    run_dir, _ = _run(tmp_path, {"random": {0: 0.5}, "steady": {0: 0.62}})
    rep = write_report(run_dir, n_boot=300)
    page = rep.html.read_text()
    assert "This grid has one seed: no variance between training runs can be estimated" in page
    assert "neither the minimum detectable gain nor the seeds needed can be" in page
    gains = pd.read_csv(rep.tables["gains"])
    assert gains["p_seed"].isna().all() and gains["p_holm"].isna().all()
    assert gains["item_ci_low"].notna().all() and (gains["p_bootstrap"] < 0.05).all()
    head = rep.headline.set_index("strategy")
    assert {"item_ci_low", "item_ci_high", "p_within_run"} <= set(head.columns) and "p_holm" not in head.columns
    assert "item_ci_low" in rep.headline_text()
    _, cells = heatmap_cells(gains)
    assert not any(str(v).endswith("*") for v in cells.to_numpy().ravel())
