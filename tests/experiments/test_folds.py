"""k-fold cross-validation as a grid axis: folds of equal size, fold cells tested only on what they never saw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from medtune.data.stage import DataSettings, assign_folds, select_items
from medtune.errors import ConfigError
from medtune.experiments import config_from_dict, expand
from medtune.schema import MCQItem

REPO = Path(__file__).resolve().parents[2]


def _items(n: int) -> list[MCQItem]:
    return [MCQItem(id=f"q{i}", question=f"Q{i}?", options=["a", "b"], answer=0, source="t", split="train")
            for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 300), k=st.integers(2, 10), seed=st.integers(0, 5))
def test_folds_are_equal_and_each_fold_splits_the_items_in_two(n: int, k: int, seed: int) -> None:
    if k > n:
        return
    items = _items(n)
    folds = assign_folds(items, k, seed)
    sizes = [list(folds.values()).count(f) for f in range(k)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n
    for f in range(k):
        base = {"source": "synthetic", "folds": k, "fold": f, "portion_seed": seed}
        train = {it.id for it in select_items(items, DataSettings(**base, fold_part="train"))}
        test = {it.id for it in select_items(items, DataSettings(**base, fold_part="test"))}
        assert not train & test and train | test == {it.id for it in items}
    # the assignment does not depend on the order the loader gives the items in
    assert assign_folds(items[::-1], k, seed) == folds


def test_a_fold_needs_folds_greater_than_it() -> None:
    with pytest.raises(ValueError, match="needs `folds`"):
        DataSettings(source="synthetic", fold=2, folds=2)


def _cv_config(tmp_path: Path, **changes: object) -> dict:
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data["output_dir"] = str(tmp_path / "run")
    data["datasets"][0]["folds"] = 2
    data["test_sets"] = [{"name": "syn-cv", "folds_of": "synthetic"}, *data["test_sets"]]
    data.update(changes)
    return data


def test_fold_cells_test_on_their_own_fold_and_whole_set_cells_on_the_rest(tmp_path: Path) -> None:
    cfg = config_from_dict(_cv_config(tmp_path, seeds=[0]))
    cv = cfg.test_sets[0]
    assert cv.source == "synthetic" and cv.folds == 2 and cv.folds_of == "synthetic"
    cells = expand(cfg)
    random = [c for c in cells if c.strategy == "random"]
    assert sorted((c.fold is None, c.fold) for c in random) == [(False, 0), (False, 1), (True, None)]
    assert {c.id for c in random} >= {"tiny__synthetic-f0__lora__random__none__s0",
                                      "tiny__synthetic__lora__random__none__s0"}
    for c in random:
        tests = cfg.test_sets_for(c.dataset, c.fold)
        if c.fold is None:
            assert [t.label for t in tests] == ["synthetic-test"]
        else:
            assert [(t.label, t.fold, t.fold_part) for t in tests] == [("syn-cv", c.fold, "test")]
            assert (cfg.training_set(c.dataset, c.fold).fold, cfg.training_set(c.dataset, c.fold).fold_part) == \
                (c.fold, "train")
    base = next(c for c in cells if c.is_base)
    assert [(t.label, t.fold) for t in cfg.test_sets_for(base.dataset, base.fold, base=True)] == \
        [("syn-cv", None), ("synthetic-test", None)]


def test_without_other_test_sets_only_fold_cells_are_run(tmp_path: Path) -> None:
    data = _cv_config(tmp_path, seeds=[0])
    data["test_sets"] = data["test_sets"][:1]
    cfg = config_from_dict(data)
    assert {c.fold for c in expand(cfg) if not c.is_base} == {0, 1}


@pytest.mark.parametrize("entry, message", [
    ({"name": "x", "folds_of": "synthetic", "path": "a.json"}, "takes its data settings"),
    ({"name": "x", "folds_of": "nosuch"}, "names no training set"),
])
def test_a_bad_folds_of_test_set_is_refused(tmp_path: Path, entry: dict, message: str) -> None:
    data = _cv_config(tmp_path)
    data["test_sets"] = [entry]
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_folds_of_a_set_without_folds_is_refused(tmp_path: Path) -> None:
    data = _cv_config(tmp_path)
    del data["datasets"][0]["folds"]
    with pytest.raises(ConfigError, match="has no `folds`"):
        config_from_dict(data)


@pytest.mark.slow  # an end-to-end run: the whole suite has it, the fast subset does not
def test_a_cross_validated_run_pools_its_folds_in_the_report(tmp_path: Path) -> None:
    import pandas as pd

    from medtune.experiments import run_experiment
    from medtune.report import write_report
    from medtune.report.inference import gains_table
    from medtune.report.results import RunData
    from medtune.report.tables import summary_table
    from medtune.schema import read_items

    data = _cv_config(tmp_path)
    data["training"]["max_steps"] = 3
    summary = run_experiment(config_from_dict(data), progress=False)
    assert summary.counts == {"done": 13}  # base + 2 strategies × 2 seeds × (2 folds + the whole set)
    res = pd.read_parquet(summary.results)
    folded = res[res["fold"].notna()]
    assert set(folded["test_set"]) == {"syn-cv"} and set(res[res["fold"].isna() & (res["strategy"] != "base")]
                                                        ["test_set"]) == {"synthetic-test"}
    # Each fold cell is scored on exactly the items it did not train on.
    for r in folded.drop_duplicates("cell_id").itertuples():
        cell = json.loads((summary.run_dir / "cells" / f"{r.cell_id}.json").read_text())
        order = {i for epoch in json.loads(Path(cell["order"]).read_text())["epochs"] for i in epoch}
        tested = {it.id for it in read_items(cell["tests"]["syn-cv"]["items"])}
        assert tested and not order & tested
    run = RunData(summary.run_dir)
    pooled = run.done[(run.done["test_set"] == "syn-cv") & (run.done["strategy"] == "random")]
    assert list(pooled["cell_id"]) == ["tiny__synthetic__lora__random__none__s0",
                                       "tiny__synthetic__lora__random__none__s1"]
    whole = run.correct("tiny__synthetic__lora__random__none__s0", "syn-cv")
    assert whole.index.is_unique and len(whole) == int(pooled["n_items"].iloc[0])
    base_items = run.correct(next(c for c in run.done["cell_id"] if "__base__" in c), "syn-cv")
    assert set(whole.index) == set(base_items.index)  # the folds together are the whole training set
    gains = gains_table(run)
    assert set(gains["test_set"]) == {"syn-cv", "synthetic-test"} and (gains["seeds"] == 2).all()
    assert not summary_table(run).empty
    assert "syn-cv" in write_report(summary.run_dir).markdown.read_text()


def test_the_dry_run_refuses_more_folds_than_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medtune.cli import main

    data = _cv_config(tmp_path)
    data["datasets"][0].update(folds=5, limit=3)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "has 3 item(s) for 5 folds" in err and "tiny__synthetic-f0__lora__random__none__s0" in err
