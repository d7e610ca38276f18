"""The difficulty stage: DifficultySettings and run_difficulty on real files (a table, tiny models, fine-tunes)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from medtune.cli import main
from medtune.difficulty import read_difficulty
from medtune.difficulty_stage import (
    CROSSFIT_FOLD_SEED,
    DifficultySettings,
    crossfit_folds_path,
    crossfit_train_config,
    fold_of,
    run_difficulty,
    scores_dir,
)
from medtune.errors import ConfigError, InputError
from medtune.schema import MCQItem, write_items
from medtune.settings import validate_settings


def _items(n: int) -> list[MCQItem]:
    return [MCQItem(id=f"q{i}", question=f"question {i}?", options=["a", "b", "c"], answer=i % 3, source="t",
                    split="train") for i in range(n)]


# ------------------------------------------------------------------------------------------------ settings


def test_settings_reject_bad_keys_and_values_naming_them():
    with pytest.raises(ConfigError, match=r"difficulty\.ensembel: unknown key"):
        validate_settings(DifficultySettings, {"ensembel": ["x"]}, "difficulty")
    with pytest.raises(ConfigError, match="'llm' needs `ensemble`"):
        validate_settings(DifficultySettings, {"source": "llm"}, "difficulty")
    with pytest.raises(ConfigError, match="'file' needs `file`"):
        validate_settings(DifficultySettings, {"source": "file"}, "difficulty")
    with pytest.raises(ConfigError, match=r"difficulty\.thresholds: thresholds must be two increasing"):
        validate_settings(DifficultySettings, {"thresholds": [0.8, 0.2]}, "difficulty")
    with pytest.raises(ConfigError, match=r"difficulty\.quantiles: quantiles must satisfy"):
        validate_settings(DifficultySettings, {"quantiles": [0.0, 0.5]}, "difficulty")
    with pytest.raises(ConfigError, match="not both"):
        validate_settings(DifficultySettings, {"thresholds": [0.2, 0.4], "quantiles": [0.3, 0.6]}, "difficulty")
    with pytest.raises(ConfigError, match=r"crossfit\.folds"):
        validate_settings(DifficultySettings, {"source": "llm", "crossfit": {"folds": 1}}, "difficulty")


def test_llm_and_irt_share_one_artifact_and_the_file_source_ignores_ensemble_settings():
    s = DifficultySettings(ensemble=["a", "b"], mode="option", quantiles=(0.3, 0.6), file="t.csv")
    llm, irt = s.for_source("llm"), s.for_source("irt")
    assert llm.source == "llm" and llm.artifact_settings() == irt.artifact_settings()
    assert llm.artifact_settings()["template"] == "options"  # the mode's default template
    assert llm.artifact_settings() != llm.model_copy(update={"mode": "letter"}).artifact_settings()
    f = s.for_source("file")
    assert f.artifact_settings() == s.model_copy(update={"ensemble": ["c"]}).for_source("file").artifact_settings()
    with pytest.raises(ConfigError, match="needs `ensemble`"):
        validate_settings(DifficultySettings, DifficultySettings().model_dump() | {"source": "irt"})
    assert s.bucketing().rule == "quantile" and DifficultySettings().bucketing().thresholds == (0.66, 0.80)


def test_human_difficulty_needs_items_that_carry_it(tmp_path):
    items = write_items(_items(3), tmp_path / "items.parquet")
    with pytest.raises(InputError, match="human_difficulty"):
        run_difficulty({"source": "human"}, items, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_crossfit_training_settings_layer_in_order():
    cross = DifficultySettings(source="llm", crossfit={"max_steps": 7, "method": "lora"}).crossfit
    config = crossfit_train_config({"lr": 0.01, "batch_size": 2, "preset": "paper-qlora"}, cross, "base-dir", 3)
    # the crossfit's method, steps, base and seed win; training's lr wins over the preset; the preset fills the rest
    assert (config.method, config.max_steps, config.model, config.seed) == ("lora", 7, "base-dir", 3)
    assert config.lr == 0.01 and config.batch_size == 2 and config.lora_alpha == 64
    cross_lr = cross.model_copy(update={"lr": 0.5})
    assert crossfit_train_config(None, cross_lr, "m", 0).lr == 0.5
    with pytest.raises(ConfigError, match=r"difficulty\.crossfit"):
        crossfit_train_config({"learning_rate": 1}, cross, "m", 0)


def test_folds_are_stable_and_cover_every_fold():
    ids = [f"id{i}" for i in range(200)]
    folds = [fold_of(i, 1000, 3) for i in ids]
    assert set(folds) == {0, 1, 2} and folds == [fold_of(i, 1000, 3) for i in ids]
    assert folds != [fold_of(i, 1001, 3) for i in ids]


# ------------------------------------------------------------------------------------------------ file source


def test_file_source_joins_the_table_and_writes_artifact_and_histogram(tmp_path):
    items = write_items(_items(4), tmp_path / "items.parquet")
    table = tmp_path / "acc.csv"
    pd.DataFrame({"qid": ["q3", "q2", "q1", "q0", "zz"], "acc": [0.9, 0.6, 0.3, 0.1, 0.5]}).to_csv(table, index=False)
    settings = {"source": "file", "file": str(table), "key": "id", "key_column": "qid", "value_column": "acc",
                "one_minus": True, "thresholds": [0.3, 0.6], "on_unmatched": "report"}
    out = tmp_path / "out"
    summary = run_difficulty(settings, items, out)
    got = read_difficulty(out / "difficulty.parquet")
    assert list(got.table["id"]) == ["q0", "q1", "q2", "q3"]
    np.testing.assert_allclose(got.table["difficulty"], [0.9, 0.7, 0.4, 0.1])
    assert list(got.table["bucket"]) == ["hard", "hard", "medium", "easy"]
    assert got.meta["source"] == "import" and got.meta["thresholds"] == [0.3, 0.6]
    assert summary["buckets"] == {"easy": 1, "medium": 1, "hard": 2}
    assert summary["import"]["n_matched"] == 4 and summary["import"]["unmatched_keys"] == ["zz"]
    assert (out / "difficulty.png").read_bytes()[:4] == b"\x89PNG" and summary["plot"] == str(out / "difficulty.png")
    # the same table under the default on_unmatched=error: the stray key is an error naming the table
    with pytest.raises(InputError, match=r"acc\.csv.*match no item"):
        run_difficulty({**settings, "on_unmatched": "error"}, items, tmp_path / "strict")


# ------------------------------------------------------------------------------------------------ ensembles


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Llama saved as a safetensors folder, and a few synthetic questions (option mode)."""
    from medtune.data import load
    from medtune.models import build_tiny_model

    items = [it for it in load("synthetic", None, seed=0).items if it.split == "train"][:10]
    root = tmp_path_factory.mktemp("tiny")
    model, tok = build_tiny_model([it.question for it in items] + [o for it in items for o in it.options],
                                  vocab_size=400, seed=0)
    model_dir = root / "tiny0"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return items, write_items(items, root / "items.parquet"), model_dir


def _expected_p(model_dir, items, mode, template):
    from medtune.models import resolve_model
    from medtune.scoring import score_items

    frame = score_items(resolve_model(str(model_dir)), items, mode=mode, template=template, progress=False)
    return [probs[a] / sum(probs) for probs, a in zip(frame["probs"], frame["answer"], strict=True)]


def test_ensemble_in_option_mode_equals_the_scorer_and_the_cli(tmp_path, tiny):
    items, items_path, model_dir = tiny
    lines: list[str] = []
    summary = run_difficulty({"source": "llm", "ensemble": ["base"], "mode": "option", "quantiles": [0.3, 0.7]},
                             items_path, tmp_path / "stage", models={"base": str(model_dir)}, log=lines.append)
    got = read_difficulty(tmp_path / "stage" / "difficulty.parquet")
    expected = _expected_p(model_dir, items, "option", "options")
    np.testing.assert_allclose(got.table["p_correct__base"], expected, rtol=1e-5)
    np.testing.assert_allclose(got.table["difficulty"], 1 - np.asarray(expected), rtol=1e-5)
    assert got.table["irt_b"].notna().all() and got.meta["model_specs"] == {"base": str(model_dir)}
    assert summary["models"] == ["base"] and summary["rule"] == "quantile" and lines == [
        "base: scoring 10 questions (option mode)"]
    # `medtune difficulty score` is the same stage: the same numbers
    cli_out = tmp_path / "cli" / "d.parquet"
    assert main(["difficulty", "score", str(items_path), "--model", str(model_dir), "--mode", "option",
                 "--quantiles", "--quantile-cuts", "0.3,0.7", "-o", str(cli_out), "--no-progress"]) == 0
    cli = read_difficulty(cli_out)
    np.testing.assert_allclose(cli.table["p_correct__tiny0"], got.table["p_correct__base"], rtol=1e-6)
    pd.testing.assert_series_equal(cli.table["bucket"], got.table["bucket"])
    assert (scores_dir(cli_out) / "tiny0.option.options.parquet").exists() and not (cli_out.parent / "d.png").exists()


def test_ensemble_scores_are_reused_and_crossfit_adds_fine_tuned_members(tmp_path, tiny):
    _, items_path, model_dir = tiny
    work = tmp_path / "model"
    shutil.copytree(model_dir, work)
    settings = {"source": "irt", "ensemble": [str(work)], "mode": "option",
                "crossfit": {"folds": 2, "repeats": 1, "max_steps": 2}}
    training = {"batch_size": 2, "max_length": 96, "target": "option", "template": "options", "lr": 0.01}
    lines: list[str] = []
    run_difficulty(settings, items_path, tmp_path / "out", training=training, plot=False, log=lines.append)
    first = read_difficulty(tmp_path / "out" / "difficulty.parquet")
    assert first.models == ["model", "crossfit-r0"]
    assert first.meta["crossfit"]["base"] == str(work)  # default base: the first ensemble member
    assert not np.allclose(first.table["p_correct__crossfit-r0"], first.table["p_correct__model"])
    np.testing.assert_allclose(first.table["difficulty"],
                               1 - first.table[["p_correct__model", "p_correct__crossfit-r0"]].mean(axis=1))
    assert not (tmp_path / "out" / "difficulty.png").exists()
    # a rerun needs neither the model nor training: every member's scores are read back
    shutil.rmtree(work)
    lines.clear()
    run_difficulty(settings, items_path, tmp_path / "out", training=training, plot=False, log=lines.append)
    assert all("reusing" in line for line in lines) and len(lines) == 2
    again = read_difficulty(tmp_path / "out" / "difficulty.parquet")
    pd.testing.assert_frame_equal(again.table, first.table)
    # other training settings are other fine-tunes: not reused
    with pytest.raises(InputError, match="does not exist"):
        run_difficulty(settings, items_path, tmp_path / "out", training={**training, "lr": 0.02}, plot=False)


def test_crossfit_never_scores_an_item_with_a_model_that_trained_on_it(tmp_path, tiny):
    """The fold record beside each repeat's scores is read from the fine-tunes' own run logs: per repeat, every item
    is scored exactly once, by the fine-tune of its own fold, whose optimizer steps never saw it."""
    items, items_path, model_dir = tiny
    ids = {it.id for it in items}
    # max_steps above a fold's epoch: each fine-tune trains on every item it is given, so an item given to it would
    # show up in its log
    settings = {"source": "llm", "mode": "option",
                "crossfit": {"model": str(model_dir), "folds": 2, "repeats": 2, "max_steps": 8}}
    training = {"batch_size": 4, "max_length": 96, "target": "option", "template": "options", "lr": 0.01}
    run_difficulty(settings, items_path, tmp_path / "out", training=training, plot=False)
    records = {}
    for r in range(2):
        (scores,) = scores_dir(tmp_path / "out" / "difficulty.parquet").glob(f"crossfit-r{r}.*.parquet")
        side = crossfit_folds_path(scores)
        assert side.parent == scores.parent and side.name.startswith(scores.name.removesuffix(".parquet"))
        records[r] = record = json.loads(side.read_text())
        assert record["predictions"] == scores.name and record["repeat"] == r
        assert [f["fold"] for f in record["folds"]] == [0, 1]
        scored = [i for f in record["folds"] for i in f["scored_ids"]]
        assert sorted(scored) == sorted(ids)  # every item scored exactly once per repeat
        for f in record["folds"]:
            assert f["scored_ids"] and f["trained_ids"] and f["steps"] <= 8
            assert not set(f["scored_ids"]) & set(f["trained_ids"]), f"fold {f['fold']} scored items it trained on"
            # it trained on all the other folds, and the fold is the stable split of the repeat
            assert set(f["trained_ids"]) == ids - set(f["scored_ids"])
            assert {fold_of(i, CROSSFIT_FOLD_SEED + r, 2) for i in f["scored_ids"]} == {f["fold"]}
    assert records[0]["folds"] != records[1]["folds"]  # each repeat its own split
    # reused scores keep their record
    lines: list[str] = []
    run_difficulty(settings, items_path, tmp_path / "out", training=training, plot=False, log=lines.append)
    assert len(lines) == 2 and all("reusing" in line for line in lines)
    for r in range(2):
        (scores,) = scores_dir(tmp_path / "out" / "difficulty.parquet").glob(f"crossfit-r{r}.*.parquet")
        assert json.loads(crossfit_folds_path(scores).read_text()) == records[r]
