"""The order stage (OrderSettings, run_order, `medtune order`) and the one order-file format (OrderFile)."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medtune.bucketing import Bucketing
from medtune.cli import main
from medtune.errors import ConfigError, InputError
from medtune.orders import OrderFile, OrderSettings, build_order, order_items, read_order, run_order, write_order
from medtune.orders.inputs import bucket_values
from medtune.schema import MCQItem, write_items
from medtune.settings import validate_settings
from medtune.training.data import check_order
from medtune.training.data import read_order as training_read_order


def mcq(i: int, split: str = "train", hd: object = "easy", category: str = "c0") -> MCQItem:
    return MCQItem(id=f"q{i:03d}", question=f"Question {i}?", options=["a", "b"], answer=0, source="t",
                   split=split, category=category, human_difficulty=hd)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ settings


def test_settings_validate_each_key_by_name():
    s = validate_settings(OrderSettings, {"strategy": "interleaved", "seed": 2, "options": {"k": "2"}})
    assert s.options == {"k": 2} and s.epochs == 1 and s.epoch_policy == "repeat"
    assert validate_settings(OrderSettings, {"strategy": "pacing", "seed": 0}).options["schedule"] == "linear"
    cases = [
        ({"strategy": "nope", "seed": 0}, "strategy: unknown strategy 'nope'"),
        ({"strategy": "interleaved", "seed": 0, "options": {"k": "x"}}, "options: k must be a positive integer"),
        ({"strategy": "random", "seed": 0, "options": {"k": 3}}, "options: strategy 'random' has no option 'k'"),
        ({"strategy": "random", "seed": -1}, "seed:"),
        ({"strategy": "random"}, "seed: required key is missing"),
        ({"strategy": "random", "seed": 0, "epochs": 0}, "epochs:"),
        ({"strategy": "random", "seed": 0, "colour": "red"}, "colour: unknown key"),
        ({"strategy": "random", "seed": 0, "thresholds": [0.8, 0.6]}, "thresholds: thresholds must be two increasing"),
        ({"strategy": "curriculum", "seed": 0, "difficulty_source": "none"}, "difficulty_source: strategy "
         "'curriculum' orders by difficulty"),
        ({"strategy": "spaced-repetition", "seed": 0, "options": {"base": "curriculum"}, "difficulty_source": "none"},
         "orders by difficulty"),
        ({"strategy": "random", "seed": 0, "quantiles": [0.2, 0.8]}, "only with bucketing 'quantiles'"),
    ]
    for data, message in cases:
        with pytest.raises(ConfigError, match=message):
            validate_settings(OrderSettings, data)
    assert validate_settings(OrderSettings, {"strategy": "blocked", "seed": 0, "difficulty_source": "none"})


# ------------------------------------------------------------------------------------------------ run_order


@pytest.fixture
def two_splits(tmp_path):
    items = [mcq(i, "train" if i < 12 else "test", ["easy", "medium", "hard"][i % 3], f"c{i % 2}")
             for i in range(20)]
    return write_items(items, tmp_path / "items.parquet")


def test_run_order_takes_the_training_split_and_writes_both_files(tmp_path, two_splits):
    summary = run_order({"strategy": "curriculum", "seed": 1}, two_splits, tmp_path / "out")
    order = OrderFile.read(tmp_path / "out" / "order.json")
    assert sorted(order.epochs[0]) == [f"q{i:03d}" for i in range(12)]  # no test question
    assert summary["split"] == "train" and summary["splits"] == {"train": 12, "test": 8}
    assert summary["n_items"] == 12 and summary["n_items_in_file"] == 20 and summary["difficulty_source"] == "human"
    assert order.input_hashes == {"items": sha256(two_splits)}
    rows = json.loads((tmp_path / "out" / "order_items.json").read_text())
    assert [r["id"] for r in rows] == [f"q{i:03d}" for i in range(12)]
    assert {r["bucket"] for r in rows} == {"easy", "medium", "hard"} and rows[0]["category"] == "c0"
    json.dumps(summary)  # JSON-able

    everything = run_order({"strategy": "random", "seed": 1, "split": "all"}, two_splits, tmp_path / "all")
    assert everything["n_items"] == 20 and everything["split"] == "all"
    test = run_order({"strategy": "random", "seed": 1, "split": "test"}, two_splits, tmp_path / "test")
    assert test["n_items"] == 8
    with pytest.raises(ConfigError, match=r"split 'dev' is not in .*train \(12\), test \(8\)"):
        run_order({"strategy": "random", "seed": 1, "split": "dev"}, two_splits, tmp_path / "dev")


def test_several_splits_without_train_must_be_chosen(tmp_path):
    path = write_items([mcq(0, "dev"), mcq(1, "test")], tmp_path / "items.parquet")
    with pytest.raises(ConfigError, match="none is 'train': choose the split"):
        run_order({"strategy": "random", "seed": 0}, path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    one = write_items([mcq(0, "dev"), mcq(1, "dev")], tmp_path / "one.parquet")
    assert run_order({"strategy": "random", "seed": 0}, one, tmp_path / "one")["split"] == "dev"


def _difficulty_file(path, ids, difficulty, irt_b, bucket):
    pq.write_table(pa.table({"id": ids, "difficulty": difficulty, "irt_b": irt_b, "bucket": bucket}), path)
    return path


def test_difficulty_sources_read_their_column(tmp_path):
    items_path = write_items([mcq(i, hd=None) for i in range(9)], tmp_path / "items.parquet")
    ids = [f"q{i:03d}" for i in range(9)]
    diff = _difficulty_file(tmp_path / "d.parquet", ids, [i / 10 for i in range(9)],  # rising difficulty
                            [3.0 - i for i in range(9)],  # IRT b falling: the reverse ranking
                            ["easy"] * 9)
    llm = run_order({"strategy": "curriculum-strict", "seed": 0}, items_path, tmp_path / "llm", difficulty_path=diff)
    assert llm["difficulty_source"] == "llm" and llm["buckets"] == {"easy": 9}  # the file's own buckets
    assert OrderFile.read(tmp_path / "llm" / "order.json").epochs[0] == ids
    assert OrderFile.read(tmp_path / "llm" / "order.json").input_hashes == {"items": sha256(items_path),
                                                                             "difficulty": sha256(diff)}
    irt = run_order({"strategy": "curriculum-strict", "seed": 0, "difficulty_source": "irt"}, items_path,
                    tmp_path / "irt", difficulty_path=diff)
    assert OrderFile.read(tmp_path / "irt" / "order.json").epochs[0] == ids[::-1]
    assert irt["buckets"] == {"easy": 3, "medium": 3, "hard": 3}  # IRT b bucketed by terciles
    rows = json.loads((tmp_path / "irt" / "order_items.json").read_text())
    assert rows[0] == {"id": "q000", "category": "c0", "difficulty": 3.0, "bucket": "hard"}
    fixed = run_order({"strategy": "curriculum", "seed": 0, "bucketing": "thresholds", "thresholds": [0.25, 0.55]},
                      items_path, tmp_path / "fixed", difficulty_path=diff)
    assert fixed["buckets"] == {"easy": 3, "medium": 3, "hard": 3}
    with pytest.raises(ConfigError, match="difficulty_source 'irt' reads a difficulty file"):
        run_order({"strategy": "random", "seed": 0, "difficulty_source": "irt"}, items_path, tmp_path / "x")
    with pytest.raises(ConfigError, match="difficulty_source 'human' does not read the difficulty file"):
        run_order({"strategy": "random", "seed": 0, "difficulty_source": "human"}, items_path, tmp_path / "x",
                  difficulty_path=diff)


def test_a_table_over_every_split_orders_the_training_split(tmp_path, two_splits):
    """difficulty and categories are computed over the whole items file; ordering its train split with
    them is the usual case, not an error."""
    ids = [f"q{i:03d}" for i in range(20)]
    diff = _difficulty_file(tmp_path / "d.parquet", ids, [i / 20 for i in range(20)], [0.0] * 20,
                            ["easy"] * 20)
    cats = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ids, "category": [f"k{i % 4}" for i in range(20)]}), cats)
    summary = run_order({"strategy": "curriculum-strict", "seed": 0}, two_splits, tmp_path / "out",
                        difficulty_path=diff, categories_path=cats)
    assert summary["split"] == "train" and summary["n_items"] == 12
    assert OrderFile.read(tmp_path / "out" / "order.json").epochs[0] == ids[:12]


# ------------------------------------------------------------------------------------------------ the CLI


def test_cli_on_the_synthetic_file_orders_the_training_split_and_says_so(tmp_path, capsys):
    assert main(["data", "load", "synthetic", "--seed", "0", "-o", str(tmp_path / "syn.parquet")]) == 0
    capsys.readouterr()
    out = tmp_path / "o.json"
    assert main(["order", str(tmp_path / "syn.parquet"), "-s", "random", "--seed", "0", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "576 items of split 'train' (the file holds 1008: train 576, test 432" in said
    ids = read_order(out)["epochs"][0]
    assert len(ids) == 576 and not any("test" in i for i in ids)
    assert not (tmp_path / "o_items.json").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "o.json", "syn.facts.json", "syn.parquet", "syn.textbook.txt"]
    folder = tmp_path / "stage"
    assert main(["order", str(tmp_path / "syn.parquet"), "-s", "random", "--seed", "0", "--split", "all", "-o",
                 str(folder)]) == 0
    assert "1008 items of all splits" in capsys.readouterr().out
    assert len(read_order(folder / "order.json")["epochs"][0]) == 1008 and (folder / "order_items.json").exists()


def test_cli_settings_flags(tmp_path, two_splits, capsys):
    out = tmp_path / "o.json"
    assert main(["order", str(two_splits), "-s", "interleaved", "--seed", "3", "-O", "k=2", "--epochs", "2",
                 "--epoch-policy", "reshuffle", "--split", "test", "-o", str(out)]) == 0
    plan = read_order(out)
    assert plan["options"] == {"k": 2} and len(plan["epochs"]) == 2 and len(plan["epochs"][0]) == 8
    assert main(["order", str(two_splits), "-s", "curriculum", "--seed", "0", "--difficulty-source", "none",
                 "-o", str(out)]) == 2
    assert "orders by difficulty" in capsys.readouterr().err
    assert main(["order", str(two_splits), "-s", "random", "--seed", "0", "--thresholds", "0.9", "-o", str(out)]) == 2
    assert "--thresholds takes two increasing numbers" in capsys.readouterr().err
    assert main(["order", str(two_splits), "-s", "random", "-o", str(out)]) == 2
    assert "seed: required key is missing" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ OrderFile


def test_order_file_bytes_are_stable(tmp_path):
    """The written form is the medtune.order/1 layout: a file written earlier reads back and re-writes the same."""
    text = ('{\n "format": "medtune.order/1",\n "strategy": "blocked",\n "seed": 3,\n "options": {},\n'
            ' "epoch_policy": "repeat",\n "epochs": [\n  ["b", "a"],\n  ["b", "a"]\n ],\n "n_items": 2,\n'
            ' "segments": [{"start": 0, "label": "x"}],\n "input_hashes": {"items": "abc"}\n}\n')
    old = tmp_path / "old.json"
    old.write_text(text)
    again = OrderFile.read(old).write(tmp_path / "new.json")
    assert again.read_text() == text
    plan = build_order(order_items([mcq(0), mcq(1)]), "random", 0)
    assert write_order(plan, tmp_path / "p.json").read_text() == OrderFile.from_dict(plan).write(
        tmp_path / "q.json").read_text()


def test_one_validation_for_the_order_stage_and_training(tmp_path):
    """Both readers accept the same files and refuse the same ones, naming the field."""
    minimal = {"format": "medtune.order/1", "epochs": [["b", "a", "b"]]}
    path = tmp_path / "o.json"
    path.write_text(json.dumps(minimal))
    full = read_order(path)
    assert full == training_read_order(path) == check_order(minimal)
    assert full["n_items"] == 2 and full["epoch_policy"] == "repeat" and full["options"] == {}
    bad_cases = [({"epochs": [["a"], []]}, "epochs.1", "epoch 1 is empty"),
                 ({"epochs": [["a", 3]]}, "epochs.0", "epoch 0 is not a list of id strings"),
                 ({"epoch_policy": "shuffle"}, "epoch_policy", "unknown epoch_policy"),
                 ({"seed": "one"}, "seed", "non-negative integer"),
                 ({"segments": [{"label": "x"}]}, "segments.0", "segment 0"),
                 ({"epochs_": []}, "epochs_", "unknown field"),
                 ({"format": "medtune.order/2"}, "format", "unsupported format")]
    for change, field, message in bad_cases:
        path.write_text(json.dumps({**minimal, **change}))
        for reader in (read_order, training_read_order, OrderFile.read):
            with pytest.raises(InputError, match=message) as exc:
                reader(path)
            assert exc.value.field == field and exc.value.file == str(path)
    with pytest.raises(InputError, match="order file not found"):
        OrderFile.read(tmp_path / "missing.json")


def test_orders_bucket_with_the_difficulty_stages_rule():
    values = [0.1, 0.66, 0.67, 0.8, 0.81, 0.95]
    labels, _ = Bucketing.fixed().assign(values)
    assert bucket_values(values) == list(labels) == ["easy", "easy", "medium", "medium", "hard", "hard"]
    labels, info = Bucketing.terciles().assign(values)
    assert bucket_values(values, "terciles") == list(labels) and info["rule"] == "quantile"
