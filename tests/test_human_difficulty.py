"""Human difficulty in the difficulty stage: its direction (higher = harder or easier) and an external table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtune.bucketing import Bucketing
from medtune.difficulty import read_difficulty
from medtune.difficulty_stage import DifficultySettings, human_difficulty, run_difficulty
from medtune.errors import ConfigError, InputError
from medtune.experiments import config_from_dict
from medtune.orders.inputs import order_items
from medtune.orders.stage import run_order
from medtune.schema import DIFFICULTY_LEVELS, MCQItem, write_items
from medtune.settings import validate_settings

RANK = {level: i for i, level in enumerate(DIFFICULTY_LEVELS)}


def _items(values: list[float | str | None]) -> list[MCQItem]:
    return [MCQItem(id=f"q{i}", question=f"question {i}?", options=["a", "b", "c"], answer=0, source="t",
                    split="train", human_difficulty=v, meta={"position": i}) for i, v in enumerate(values)]


shares = st.lists(st.floats(0, 1, allow_nan=False), min_size=3, max_size=40)
cuts = st.one_of(st.none(), st.tuples(st.floats(0.05, 0.45), st.floats(0.55, 0.95)))


@settings(max_examples=60, deadline=None)
@given(shares, cuts, st.booleans())
def test_higher_is_easier_puts_high_values_in_easy(values, pair, by_quantiles) -> None:
    rule = ({"quantiles": pair} if by_quantiles else {"thresholds": pair}) if pair else {}
    easier = human_difficulty(DifficultySettings(higher_is="easier", **rule), _items(values)).table
    harder = human_difficulty(DifficultySettings(**rule), _items(values)).table
    # stored as 1 − value, then cut like every difficulty
    np.testing.assert_allclose(easier["difficulty"], [1 - v for v in values])
    np.testing.assert_allclose(harder["difficulty"], values)
    for table, sign in ((easier, -1), (harder, 1)):
        ranks = [RANK[b] for b in table["bucket"]]
        for (v1, r1) in zip(values, ranks, strict=True):  # a higher value is never in a harder bucket (easier)
            for (v2, r2) in zip(values, ranks, strict=True):
                if sign * (v2 - v1) > 0:
                    assert r2 >= r1
    # the highest share of examinees answering correctly is easy whenever some value is cut as easy
    if "easy" in set(easier["bucket"]):
        assert easier["bucket"][int(np.argmax(values))] == "easy"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1, allow_nan=False), st.sampled_from(DIFFICULTY_LEVELS)), min_size=1,
                max_size=30))
def test_the_default_direction_buckets_as_the_order_stage_reads_the_items(values) -> None:
    items = _items(values)
    table = human_difficulty(DifficultySettings(), items).table
    view = order_items(items, bucketing=Bucketing.fixed())
    assert list(table["bucket"]) == [o.bucket for o in view]
    assert [None if np.isnan(d) else d for d in table["difficulty"]] == [o.difficulty for o in view]


def test_an_external_table_supplies_values_and_wins_over_the_items_own(tmp_path: Path) -> None:
    items = write_items(_items([0.9, None, None, "hard"]), tmp_path / "items.parquet")
    table = tmp_path / "share_correct.csv"
    # keyed by position; row 7 is an item of another part of the data set (allowed, reported)
    pd.DataFrame({"Index": [0, 1, 2, 7], "share": [0.2, 0.95, 0.5, 0.1]}).to_csv(table, index=False)
    s = {"source": "human", "human_file": str(table), "human_key": "position", "human_key_column": "Index",
         "human_value_column": "share", "higher_is": "easier", "thresholds": [0.3, 0.6]}
    summary = run_difficulty(s, items, tmp_path / "out")
    got = read_difficulty(tmp_path / "out" / "difficulty.parquet")
    assert list(got.table["id"]) == ["q0", "q1", "q2", "q3"]
    np.testing.assert_allclose(got.table["difficulty"][:3], [0.8, 0.05, 0.5])  # q0: the table's 0.2, not 0.9
    assert list(got.table["bucket"]) == ["hard", "easy", "medium", "hard"]  # q3: its own level
    assert got.meta["source"] == "human" and got.meta["higher_is"] == "easier"
    assert got.meta["n_from_table"] == 3 and got.meta["human_file"] == "share_correct.csv"
    assert got.meta["import"]["unmatched_keys"] == [7]
    assert summary["buckets"] == {"easy": 1, "medium": 1, "hard": 2}

    # the artifact orders like any difficulty file: easy (most answered correctly) first
    run_order({"strategy": "curriculum", "seed": 0, "difficulty_source": "file"}, items, tmp_path / "order",
              difficulty_path=tmp_path / "out" / "difficulty.parquet")
    (epoch,) = json.loads((tmp_path / "order" / "order.json").read_text())["epochs"]
    assert epoch[:2] == ["q1", "q2"] and set(epoch[2:]) == {"q0", "q3"}


def test_items_without_human_difficulty_are_refused_naming_the_item_and_the_way_out(tmp_path: Path) -> None:
    items = write_items(_items([0.4, None, None]), tmp_path / "items.parquet")
    with pytest.raises(InputError, match=r"items\.parquet, record q1, field 'human_difficulty': 2 of 3 .*human_file"):
        run_difficulty({"source": "human"}, items, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    table = tmp_path / "partial.csv"
    pd.DataFrame({"id": ["q1"], "human_difficulty": [0.3]}).to_csv(table, index=False)
    with pytest.raises(InputError, match=r"record q2.*neither a human_difficulty of its own nor a row in partial\.csv"):
        run_difficulty({"source": "human", "human_file": str(table)}, items, tmp_path / "out")


def test_bad_tables_are_errors_naming_file_row_and_column(tmp_path: Path) -> None:
    items = _items([None, None])
    table = tmp_path / "t.csv"
    pd.DataFrame({"id": ["q0", "q1"], "share": [0.5, "many"]}).to_csv(table, index=False)
    s = DifficultySettings(human_file=str(table), human_value_column="share")
    with pytest.raises(InputError, match=r"t\.csv, row 2, field 'share': value 'many' is not a number"):
        human_difficulty(s, items)
    with pytest.raises(InputError, match=r"t\.csv, field 'pct': no column 'pct'"):
        human_difficulty(s.model_copy(update={"human_value_column": "pct"}), items)
    with pytest.raises(InputError, match=r"record q0, field 'meta.question_index'"):
        human_difficulty(s.model_copy(update={"human_key": "question_index"}), items)
    with pytest.raises(InputError, match=r"missing\.csv: file not found"):
        human_difficulty(s.model_copy(update={"human_file": str(tmp_path / "missing.csv")}), items)


def test_settings_say_when_human_needs_the_stage_and_what_its_artifact_depends_on() -> None:
    assert not DifficultySettings().human_needs_stage()
    assert not DifficultySettings(thresholds=(0.2, 0.5)).human_needs_stage()  # the order stage applies these
    assert DifficultySettings(higher_is="easier").human_needs_stage()
    assert DifficultySettings(human_file="t.csv").human_needs_stage()
    assert DifficultySettings(quantiles=(0.3, 0.6)).human_needs_stage()
    base = DifficultySettings(source="human")
    assert base.artifact_settings() != base.model_copy(update={"higher_is": "easier"}).artifact_settings()
    with pytest.raises(ConfigError, match=r"difficulty\.higher_is"):
        validate_settings(DifficultySettings, {"higher_is": "lower"}, "difficulty")


def test_the_grid_takes_the_new_keys() -> None:
    cfg = config_from_dict({
        "name": "g", "output_dir": "runs/g", "seeds": [0], "models": [{"name": "tiny", "spec": "tiny"}],
        "datasets": [{"name": "syn", "source": "synthetic", "split": "train"}],
        "test_sets": [{"name": "syn-test", "source": "synthetic", "split": "test"}],
        "strategies": ["random", "curriculum"],
        "difficulty": {"sources": ["human"], "higher_is": "easier", "human_file": "share.csv",
                       "human_key": "position", "human_key_column": "Index", "human_value_column": "share"}})
    s = DifficultySettings.model_validate({**cfg.difficulty.stage_values(), "source": "human"})
    assert (s.higher_is, s.human_key, s.human_value_column) == ("easier", "position", "share")


def test_difficulty_human_command_joins_a_table_with_its_direction(tmp_path: Path) -> None:
    from medtune.cli import main

    items = write_items(_items([None] * 6), tmp_path / "items.parquet")
    shares = tmp_path / "shares.csv"
    shares.write_text("id,p_correct\n" + "".join(f"q{i},{v}\n" for i, v in enumerate([.9, .8, .7, .3, .2, .1])))
    out = tmp_path / "difficulty.parquet"
    assert main(["difficulty", "human", str(items), "--human-file", str(shares), "--human-key-column", "id",
                 "--human-value-column", "p_correct", "--higher-is", "easier", "--thresholds", "0.4,0.75",
                 "-o", str(out)]) == 0
    table = read_difficulty(out).table.set_index("id")
    assert list(table.loc[["q0", "q3", "q5"], "bucket"]) == ["easy", "medium", "hard"]


def test_a_grid_orders_by_a_human_difficulty_table_read_as_higher_is_easier(tmp_path: Path) -> None:
    import yaml

    from medtune.data.synthetic_questions import generate_synthetic
    from medtune.experiments import run_experiment

    root = Path(__file__).resolve().parents[1]
    data = yaml.safe_load((root / "configs" / "tiny.yaml").read_text())
    opts = data["datasets"][0]["options"]
    train = [it.id for it in generate_synthetic(**opts).items if it.split == "train"]
    shares = {item_id: (i * 7919 % 97) / 97 for i, item_id in enumerate(train)}
    table = tmp_path / "shares.csv"
    table.write_text("id,p_correct\n" + "".join(f"{k},{v}\n" for k, v in shares.items()))
    data.update(output_dir=str(tmp_path / "run"), seeds=[0], strategies=["curriculum-strict"],
                baseline_strategy="curriculum-strict")
    data["difficulty"] = {"sources": ["human"], "human_file": str(table), "human_key_column": "id",
                          "human_value_column": "p_correct", "higher_is": "easier"}
    data["evaluation"]["baseline"] = False
    data["training"]["max_steps"] = 2
    summary = run_experiment(config_from_dict(data), progress=False)
    assert summary.counts == {"done": 1}
    rec = json.loads(next((tmp_path / "run" / "cells").glob("*.json")).read_text())
    order = json.loads(Path(rec["order"]).read_text())["epochs"][0]
    assert [round(shares[i], 6) for i in order] == sorted((round(v, 6) for v in shares.values()), reverse=True)
