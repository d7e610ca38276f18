"""A grid trains on a two-source mixture blocked by source, and reports accuracy per source of a mixed test set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medtune.data import DataSettings, load_data
from medtune.data.stage import write_data
from medtune.errors import ConfigError
from medtune.experiments import config_from_dict, load_config, run_experiment
from medtune.report import write_report
from medtune.schema import read_items

SYNTHETIC = {"n_systems": 2, "diseases_per_system": 4, "train_per_level": 1, "test_per_level": 1}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two items files (train and test splits) written by the data stage: ``medqa`` and ``mmlu``."""
    tmp = tmp_path_factory.mktemp("mixsrc")
    for name, seed in (("medqa", 0), ("mmlu", 1)):
        data = load_data(DataSettings(source="synthetic", options={**SYNTHETIC, "seed": seed}))
        write_data(data, tmp / f"{name}.parquet")
    return tmp


def grid(sources: Path, out: Path) -> dict:
    return {
        "name": "mix", "output_dir": str(out), "seeds": [0],
        "models": [{"name": "tiny", "spec": "tiny", "vocab_size": 512,
                    "tiny": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                             "num_attention_heads": 2}}],
        "datasets": [{"name": "mix", "seed": 1, "mix": [{"items": str(sources / "medqa.parquet"), "share": 0.5},
                                                        {"items": str(sources / "mmlu.parquet"), "share": 0.5}]}],
        "test_sets": [{"name": "mix-test", "split": "test",
                       "mix": [{"items": str(sources / "medqa.parquet"), "count": 6},
                               {"items": str(sources / "mmlu.parquet"), "count": 6}]}],
        "strategies": [{"name": "blocked", "label": "by-source", "options": {"by": "source",
                                                                             "category_order": "sorted"}}],
        "baseline_strategy": "by-source",
        "categories": {"method": "given"},
        "training": {"methods": ["lora"], "max_steps": 2, "batch_size": 4, "lr": 0.001, "max_length": 96,
                     "target": "option", "template": "options"},
        "evaluation": {"mode": "option", "template": "options", "bootstrap": 50, "baseline": False},
        "executor": {"kind": "local", "torch_threads": 1},
    }


@pytest.mark.slow  # an end-to-end run (about 20 s): the whole suite has it, the fast subset does not
def test_a_grid_trains_a_mixture_blocked_by_source(sources: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(grid(sources, tmp_path / "run"))
    summary = run_experiment(cfg, progress=False)
    assert summary.counts == {"done": 1}, summary.counts
    record = json.loads(next((cfg.run_dir / "cells").glob("*.json")).read_text())
    # the training set: the train split of each file, half each (12 train items each), meta.source = the stem
    mixed = [it for p in (cfg.store_path / "data").glob("*/items.parquet") for it in read_items(p)
             if {i.split for i in read_items(p)} == {"train"}]
    assert Counter(it.meta["source"] for it in mixed) == {"medqa": 12, "mmlu": 12}
    # the order: one block per source, in label order (category_order: sorted)
    order = json.loads(Path(record["order"]).read_text())
    seen = {r["id"]: r["source"] for r in json.loads(Path(record["order_items"]).read_text())}
    blocks = [seen[i] for i in order["epochs"][0]]
    assert blocks == ["medqa"] * 12 + ["mmlu"] * 12
    assert [s["label"] for s in order["segments"]] == ["medqa", "mmlu"]
    assert order["options"] == {"by": "source", "category_order": "sorted"}
    # the run trained in that order: its first steps hold medqa's items
    log = [json.loads(line) for line in (Path(record["train"]["dir"]) / "train_log.jsonl").read_text().splitlines()]
    trained = [i for step in log for i in step["ids"]]
    assert len(log) == 2 and trained == order["epochs"][0][:len(trained)] and {seen[i] for i in trained} == {"medqa"}
    # the mixed test set: accuracy per source in metrics.json and in the report
    metrics = json.loads(Path(record["tests"]["mix-test"]["metrics"]).read_text())
    assert {k: v["n"] for k, v in metrics["per_source"].items()} == {"medqa": 6, "mmlu": 6}
    rep = write_report(summary.run_dir)
    table = pd.read_csv(rep.tables["sources"])
    assert list(table["source"]) == ["medqa", "mmlu"] and list(table["n_items"]) == [6, 6]
    acc = {s: v["accuracy"]["accuracy"] if isinstance(v["accuracy"], dict) else v["accuracy"]
           for s, v in metrics["per_source"].items()}
    assert list(table["accuracy"]) == pytest.approx([acc["medqa"], acc["mmlu"]])
    assert "Accuracy per source" in rep.html.read_text()


def test_a_mix_entry_is_checked_at_its_yaml_line(sources: Path, tmp_path: Path) -> None:
    data = grid(sources, tmp_path / "run")
    data["datasets"][0]["mix"][1] = {"items": "mmlu.parquet", "shre": 0.5}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "shre" in text)
    with pytest.raises(ConfigError, match=rf"grid.yaml:{line}: datasets\[0\]\.mix\[1\]\.shre"):
        load_config(path)
    data["datasets"][0]["mix"][1] = {"items": str(tmp_path / "none.parquet"), "share": 0.5}
    from medtune.experiments.checks import cell_problems

    problems = cell_problems(config_from_dict(data))
    assert any("mix part 'none'" in p and "not found" in p for p in problems), problems
