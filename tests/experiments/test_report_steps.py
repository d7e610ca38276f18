"""Accuracy per USMLE step in the report, on a run folder built by hand from medtune's own writers.

The test items come from step files written here and read by the ``usmle`` loader; each cell's predictions
are made up (so the answer is known) and written with the scorer's writer. The table must equal a hand
computation from those predictions: the per-item correctness averaged over seeds, on the items every seed
scored, then averaged over the items of each step.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtune.data import load
from medtune.evaluation import accuracy_with_ci
from medtune.experiments.store import ResultStore
from medtune.report import results, write_report
from medtune.report import steps as report_steps
from medtune.report.results import RunData
from medtune.report.steps import COLUMNS, meta_groups_table
from medtune.schema import MCQItem, write_items
from medtune.scoring.store import write_predictions

STEP_SIZES = {1: 14, 2: 11, 3: 7}
SEEDS = (0, 1, 2)
STRATEGIES = ("random", "curriculum")


def _usmle_items(folder: Path) -> list[MCQItem]:
    for step, n in STEP_SIZES.items():
        n_opts = 9 if step == 2 else 5
        recs = [{"no": no, "question": f"Invented step {step} question {no}?",
                 "options": {k: f"choice {k} of {no}" for k in "ABCDEFGHI"[:n_opts]},
                 "answer": "ABCDEFGHI"[no % n_opts]} for no in range(1, n + 1)]
        (folder / f"step{step}.json").write_text(json.dumps(recs), encoding="utf-8")
    items = load("usmle", folder).items
    assert len(items) == sum(STEP_SIZES.values())
    return items


def _predictions(items: list[MCQItem], correct: np.ndarray) -> pd.DataFrame:
    preds = [it.answer if ok else (it.answer + 1) % len(it.options) for it, ok in zip(items, correct, strict=True)]
    return pd.DataFrame({"id": [it.id for it in items], "mode": "option", "answer": [it.answer for it in items],
                         "pred": preds, "correct": correct.astype(bool)})


def _run(root: Path, items: list[MCQItem], *, test_set: str = "usmle") -> tuple[Path, dict]:
    """Cells of two strategies × three seeds; seed 2 of each leaves one item unscored."""
    items_path = write_items(items, root / "test.parquet")
    rng = np.random.default_rng(7)
    store = ResultStore(root / "run")
    (root / "preds").mkdir(exist_ok=True)
    scored: dict[tuple[str, int], pd.Series] = {}
    for strategy in STRATEGIES:
        for seed in SEEDS:
            kept = items[:-1] if seed == 2 else items
            p_step = {1: 0.8, 2: 0.5, 3: 0.3} if strategy == "random" else {1: 0.4, 2: 0.6, 3: 0.9}
            correct = np.array([rng.random() < p_step[it.meta.get("step", 1)] for it in kept], dtype=int)
            cell = f"m__d__lora__{strategy}__none__s{seed}"
            pred_path = write_predictions(_predictions(kept, correct), root / "preds" / f"{cell}.parquet")
            scored[(strategy, seed)] = pd.Series(correct, index=[it.id for it in kept])
            store.write({"cell_id": cell, "model": "m", "dataset": "d", "method": "lora", "strategy": strategy,
                         "difficulty": "none", "seed": seed, "key": "k", "status": "done", "test_sets": [test_set],
                         "tests": {test_set: {"accuracy": float(correct.mean()), "ci_low": 0.0, "ci_high": 1.0,
                                              "n_items": len(kept), "n_correct": int(correct.sum()),
                                              "metric": "accuracy", "predictions": str(pred_path),
                                              "items": str(items_path)}},
                         "train": {"steps": 3, "final_loss": 1.0, "seconds": 0.1, "dir": str(root / "none")}})
    store.build_tables()
    return root / "run", scored


@pytest.fixture(scope="module")
def usmle_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[MCQItem]]:
    root = tmp_path_factory.mktemp("steps")
    (root / "usmle").mkdir()
    items = _usmle_items(root / "usmle")
    run_dir, scored = _run(root, items)
    return run_dir, scored, items


def test_per_step_accuracy_equals_a_hand_computation(usmle_run: tuple[Path, dict, list[MCQItem]]) -> None:
    run_dir, scored, items = usmle_run
    table = meta_groups_table(RunData(run_dir))
    assert list(table.columns) == COLUMNS
    assert len(table) == len(STRATEGIES) * len(STEP_SIZES)
    step_of = {it.id: it.meta["step"] for it in items}
    for strategy in STRATEGIES:
        per_seed = [scored[(strategy, s)] for s in SEEDS]
        common = [i for i in per_seed[0].index if all(i in s.index for s in per_seed)]
        assert len(common) == len(items) - 1  # the item seed 2 did not score is left out
        mean_item = {i: sum(float(s[i]) for s in per_seed) / len(SEEDS) for i in common}
        rows = table[table["strategy"] == strategy]
        assert rows["value"].tolist() == [1, 2, 3] and set(rows["key"]) == {"step"}
        assert set(rows["label"]) == {strategy} and set(rows["seeds"]) == {3}
        assert set(rows["test_set"]) == {"usmle"} and set(rows["model"]) == {"m"}
        for _, row in rows.iterrows():
            ids = [i for i in common if step_of[i] == row["value"]]
            vec = [mean_item[i] for i in ids]
            assert row["n_items"] == len(ids)
            assert row["accuracy"] == pytest.approx(sum(vec) / len(vec), abs=1e-12)
            ci = accuracy_with_ci(np.asarray(vec), n_boot=1000, seed=0)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci["ci_low"], ci["ci_high"]))
            assert row["ci_low"] <= row["accuracy"] <= row["ci_high"] and row["ci_low"] < row["ci_high"]
    # the made-up effect is visible per step: random is better on step 1, curriculum on step 3
    acc = table.set_index(["strategy", "value"])["accuracy"]
    assert acc[("random", 1)] > acc[("curriculum", 1)] and acc[("curriculum", 3)] > acc[("random", 3)]


def test_another_meta_key_and_a_key_no_item_has(usmle_run: tuple[Path, dict, list[MCQItem]]) -> None:
    run_dir, _, items = usmle_run
    run = RunData(run_dir)
    by_image = meta_groups_table(run, "image")
    assert by_image["value"].tolist() == [False, False]  # no image question among them: one value
    assert by_image["n_items"].tolist() == [len(items) - 1] * 2
    empty = meta_groups_table(run, "no_such_key")
    assert empty.empty and list(empty.columns) == COLUMNS


def test_the_report_has_a_steps_section_and_table(usmle_run: tuple[Path, dict, list[MCQItem]],
                                                  tmp_path: Path) -> None:
    run_dir, _, _ = usmle_run
    rep = write_report(run_dir, tmp_path / "report", n_boot=200)
    assert rep.sections.index("steps") == rep.sections.index("levels") + 1
    saved = pd.read_csv(rep.tables["steps"])
    expected = meta_groups_table(RunData(run_dir, 200))
    assert saved[["strategy", "value", "n_items"]].values.tolist() == \
        expected[["strategy", "value", "n_items"]].values.tolist()
    assert np.allclose(saved["accuracy"], expected["accuracy"])
    md = rep.markdown.read_text(encoding="utf-8")
    assert "## Accuracy per USMLE step" in md
    assert "Accuracy per USMLE step" in rep.html.read_text(encoding="utf-8")


def test_no_steps_section_without_step_meta(tmp_path: Path) -> None:
    items = [MCQItem(id=f"q{i}", question=f"Q{i}?", options=["a", "b", "c"], answer=i % 3, source="t",
                     split="test") for i in range(12)]
    run_dir, _ = _run(tmp_path, items, test_set="plain")
    assert meta_groups_table(RunData(run_dir)).empty
    rep = write_report(run_dir, tmp_path / "report", n_boot=100)
    assert "steps" not in rep.sections and "steps" not in rep.tables
    assert not (tmp_path / "report" / "tables" / "steps.csv").exists()


def test_the_group_columns_are_the_reports() -> None:
    assert report_steps.GROUP is results.GROUP and report_steps.COLUMNS[:len(results.GROUP)] == results.GROUP


# --- a real grid: the tiny model trained on synthetic data, tested on USMLE step files -----------------------

REPO = Path(__file__).resolve().parents[2]


def test_a_real_grid_reports_per_step_accuracy_from_its_predictions(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from medtune.evaluation import read_predictions
    from medtune.experiments import run_experiment

    folder = tmp_path / "usmle"
    folder.mkdir()
    for step, n in {1: 6, 2: 5, 3: 4}.items():  # answers from the solutions files, as users download them
        n_opts = 9 if step == 2 else 5
        recs = [{"no": no, "question": f"Invented step {step} question {no}?",
                 "options": {k: f"choice {k} of {no}" for k in "ABCDEFGHI"[:n_opts]}} for no in range(1, n + 1)]
        (folder / f"step{step}.json").write_text(json.dumps(recs), encoding="utf-8")
        (folder / f"step{step}_solutions.json").write_text(
            json.dumps({str(no): "ABCDEFGHI"[no % n_opts] for no in range(1, n + 1)}), encoding="utf-8")
    cfg = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text(encoding="utf-8"))
    cfg.update(output_dir=str(tmp_path / "run"), seeds=[0, 1], strategies=["random"],
               test_sets=[{"name": "usmle", "source": "usmle", "path": str(folder)}])
    cfg["evaluation"]["baseline"] = False
    cfg["executor"]["workers"] = 1
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    summary = run_experiment(tmp_path / "grid.yaml", progress=False, log=lambda _: None)
    run_dir = summary.run_dir
    rep = write_report(run_dir)
    assert "steps" in rep.sections
    table = pd.read_csv(rep.tables["steps"])
    run = RunData(run_dir)
    records = [run.records[c] for c in run.done["cell_id"]]
    assert len(records) == 2
    frames = [read_predictions(r["tests"]["usmle"]["predictions"]).set_index("id") for r in records]
    step_of = {it.id: it.meta["step"] for it in load("usmle", folder).items}
    for step in (1, 2, 3):
        ids = [i for i in frames[0].index if step_of[i] == step]
        by_hand = np.mean([[float(f.loc[i, "correct"]) for f in frames] for i in ids])
        row = table[table["value"] == step].iloc[0]
        assert row["n_items"] == len(ids) and row["seeds"] == 2
        assert row["accuracy"] == pytest.approx(by_hand)
    # each seed's metrics.json has the evaluation's own per-step accuracy: their mean is the table's
    metrics = [json.loads(Path(r["tests"]["usmle"]["predictions"]).with_name("metrics.json").read_text())
               for r in records]
    for step in (1, 2, 3):
        mean = np.mean([m["per_meta"]["step"][str(step)]["accuracy"] for m in metrics])
        assert table[table["value"] == step]["accuracy"].iloc[0] == pytest.approx(mean)
