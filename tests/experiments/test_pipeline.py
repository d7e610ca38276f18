"""The stages wired for real: LLM/IRT difficulty from an ensemble, shared artifacts, difficulty comparison.

(Clustered categories go through the same order stage; they are left out here because the first UMAP call
compiles with numba for ~50 s on this machine, which the suite's budget cannot afford.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from medtune.data import id_fraction
from medtune.experiments import config_from_dict, expand, run_experiment
from medtune.report import write_report

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def difficulty_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("diff")
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data.update(output_dir=str(tmp / "run"), seeds=[0], strategies=["random", "curriculum"])
    data["models"][0]["pretrain"] = {"epochs": 3, "lr": 0.003}  # the base model reads the textbook first
    data["difficulty"] = {"sources": ["human", "llm", "irt"], "ensemble": ["tiny"], "mode": "option",
                          "template": "options", "quantiles": [0.34, 0.67],
                          "crossfit": {"folds": 2, "repeats": 1, "max_steps": 3}}
    data["evaluation"]["baseline"] = False
    cfg = config_from_dict(data)
    return cfg, run_experiment(cfg, progress=False)


def test_llm_and_irt_difficulty_feed_the_orders(difficulty_run) -> None:
    cfg, summary = difficulty_run
    assert summary.counts == {"done": 4}, summary.counts
    assert sorted(c.difficulty for c in expand(cfg)) == ["human", "irt", "llm", "none"]
    store = cfg.store_path
    # One difficulty artifact serves both llm and irt cells (the other is human difficulty cut by the grid's
    # quantiles: a stage of its own).
    diffs = {p: pq.read_table(p).to_pandas() for p in (store / "difficulty").glob("*/difficulty.parquet")}
    ensemble = [t for t in diffs.values() if "p_correct__tiny" in t.columns]
    assert len(diffs) == 2 and len(ensemble) == 1 and not (store / "categories").exists()
    table = ensemble[0]
    assert {"id", "p_correct__tiny", "p_correct__crossfit-r0", "difficulty", "irt_b", "bucket"} <= set(table.columns)
    # The cross-fitted member is a fine-tuned model, not a copy of the base model's scores.
    assert not table["p_correct__crossfit-r0"].equals(table["p_correct__tiny"])
    assert table["difficulty"].to_numpy() == pytest.approx(
        1 - table[["p_correct__tiny", "p_correct__crossfit-r0"]].mean(axis=1).to_numpy())
    assert table["difficulty"].between(0, 1).all() and table["irt_b"].notna().all()
    # Each curriculum order follows its own difficulty source; categories are the items' own (organ system).
    records = {json.loads(p.read_text())["difficulty"]: json.loads(p.read_text())
               for p in (cfg.run_dir / "cells").glob("*.json")}
    by_id = table.set_index("id")
    rank = {"easy": 0, "medium": 1, "hard": 2}
    for source in ("llm", "irt"):
        order = json.loads(Path(records[source]["order"]).read_text())
        seen = json.loads(Path(records[source]["order_items"]).read_text())
        assert len({r["category"] for r in seen}) == 3
        buckets = {r["id"]: r["bucket"] for r in seen}
        ranks = [rank[buckets[i]] for i in order["epochs"][0]]
        assert ranks == sorted(ranks), f"{source} curriculum is not easy → hard"
        values = {r["id"]: r["difficulty"] for r in seen}
        col = "difficulty" if source == "llm" else "irt_b"
        assert all(values[i] == pytest.approx(by_id.loc[i, col]) for i in values)
    # The base model was built once and pretrained on the synthetic textbook (its loss fell).
    bases = list((store / "base_model").glob("*/manifest.json"))
    assert len(bases) == 1
    losses = json.loads(bases[0].read_text())["pretrain_loss"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    human = json.loads(Path(records["human"]["order_items"]).read_text())
    assert {r["bucket"] for r in human} == {"easy", "medium", "hard"}


def test_report_compares_difficulty_sources(difficulty_run) -> None:
    _cfg, summary = difficulty_run
    rep = write_report(summary.run_dir)
    diffs = pd.read_csv(rep.tables["difficulty_sources"])
    assert set(diffs["comparison"]) == {"irt − human", "llm − human", "llm − irt"}
    res = pd.read_parquet(summary.results).set_index("difficulty")["accuracy"]
    row = diffs[diffs["comparison"] == "llm − human"].iloc[0]
    assert row["difference"] == pytest.approx(res["llm"] - res["human"])
    page = rep.html.read_text()
    assert "llm − human" in page and "curriculum [irt]" in page


def test_portions_split_one_file_disjointly() -> None:
    ids = [f"q{i}" for i in range(2000)]
    train = {i for i in ids if id_fraction(i, 0) < 0.8}
    test = {i for i in ids if 0.8 <= id_fraction(i, 0) < 1.0}
    assert train.isdisjoint(test) and train | test == set(ids)
    assert 0.75 < len(train) / len(ids) < 0.85
    assert {i for i in ids if id_fraction(i, 1) < 0.8} != train  # the seed re-draws the split
