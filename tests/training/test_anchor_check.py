"""The in-training anchor check (``TrainSettings.eval_anchors``): a tiny model trained on synthetic items answers the
anchors of a real anchors.json (chosen from simulated known models' responses to the test items) every few steps;
the log holds an estimate inside its interval at the right steps, the check leaves the trained weights exactly as
they are without it, a resume cuts the log back to its checkpoint, and bad inputs fail before training."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from training_helpers import micro_cli_options, micro_config

from medtune.anchors import choose_anchors, write_anchors
from medtune.anchors.check import ANCHOR_EVAL_NAME, AnchorCheck, keep_anchor_evals_through, read_anchor_evals
from medtune.anchors.estimate import DEFAULT_ESTIMATOR, ESTIMATORS
from medtune.cli import main
from medtune.data import load
from medtune.errors import ConfigError, InputError
from medtune.irt import simulate_responses
from medtune.schema import write_items
from medtune.training import train
from medtune.training.config import TrainSettings
from medtune.training.runlog import read_log

N_STEPS = 6  # 24 training items at batch 4
K = 8
TIMING = ("seconds", "score_seconds", "wall")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """items.parquet (train + test splits), a train-only items file, order.json and anchors.json over the test."""
    folder = tmp_path_factory.mktemp("anchor-check")
    data = load("synthetic", None, seed=0, n_systems=2, diseases_per_system=4, train_per_level=2, test_per_level=1)
    train_items = [it for it in data.items if it.split == "train"]
    test_ids = [it.id for it in data.items if it.split == "test"]
    y, _ = simulate_responses(30, len(test_ids), seed=1)
    anchors = choose_anchors(y, test_ids, K, seed=0)
    ids = [it.id for it in train_items]
    order = {"format": "medtune.order/1", "strategy": "hand", "seed": 0, "options": {}, "epoch_policy": "repeat",
             "epochs": [ids], "n_items": len(ids), "segments": [{"start": 0, "label": "all"}], "input_hashes": {}}
    (folder / "order.json").write_text(json.dumps(order))
    return {"dir": folder, "train": train_items, "order": order, "order_path": folder / "order.json",
            "items": write_items(data.items, folder / "items.parquet"),
            "train_only": write_items(train_items, folder / "train.parquet"),
            "anchors": write_anchors(anchors, folder / "anchors.json"), "anchor_set": anchors}


def _config(inputs: dict, **kw) -> TrainSettings:
    # LoRA with dropout: a check that left dropout on (train mode) or drew random numbers would change the weights.
    return micro_config(lora_dropout=0.1, **kw)


def _checked(inputs: dict, **kw) -> TrainSettings:
    return _config(inputs, eval_anchors=str(inputs["anchors"]), eval_items=str(inputs["items"]), eval_split="test",
                   **kw)


@pytest.fixture(scope="module")
def runs(inputs) -> dict:
    """The same run without and with the check (every 2 steps, a checkpoint every 2, all kept)."""
    plain = train(_config(inputs), inputs["train"], inputs["order"], inputs["dir"] / "plain")
    checked = train(_checked(inputs, eval_every=2, save_every=2, keep_checkpoints=None), inputs["train"],
                    inputs["order"], inputs["dir"] / "checked")
    return {"plain": plain, "checked": checked}


def test_the_log_holds_an_estimate_every_n_steps_and_after_the_last(runs, inputs):
    run_dir = runs["checked"].run_dir
    checks = read_anchor_evals(run_dir)
    assert [c["step"] for c in checks] == [2, 4, N_STEPS]
    for c in checks:
        assert c["estimator"] == DEFAULT_ESTIMATOR
        assert 0.0 <= c["low"] <= c["estimate"] <= c["high"] <= 1.0
        assert c["low"] < c["high"]
        assert c["k"] == K and c["n_items"] == 24 and len(c["answers"]) == K
        assert set(c["answers"]) <= {0, 1} and c["correct"] == sum(c["answers"])
        assert c["anchor_accuracy"] == pytest.approx(c["correct"] / K)
        assert set(c["estimates"]) == set(ESTIMATORS) and c["estimates"][c["estimator"]] == c["estimate"]
        assert all(0.0 <= v <= 1.0 for v in c["estimates"].values())
        assert c["seconds"] >= c["score_seconds"] > 0
        assert c["epoch"] == 0
    record = json.loads((run_dir / "config.json").read_text())["anchor_eval"]
    assert record["k"] == K and record["every"] == 2 and record["mode"] == "option"  # the micro run's option target
    assert record["split"] == "test" and record["anchors_in_training"] == 0 and record["log"] == ANCHOR_EVAL_NAME
    assert json.loads((run_dir / "config.json").read_text())["train"]["eval_anchors"] == str(inputs["anchors"])
    assert not (runs["plain"].run_dir / ANCHOR_EVAL_NAME).exists()


def test_the_check_changes_neither_the_steps_nor_the_weights(runs):
    plain, checked = runs["plain"], runs["checked"]
    assert [(r["ids"], r["loss"]) for r in read_log(plain.run_dir)] == \
        [(r["ids"], r["loss"]) for r in read_log(checked.run_dir)]
    a, b = plain.model.state_dict(), checked.model.state_dict()
    assert a.keys() == b.keys()
    assert any("lora" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert plain.model.training == checked.model.training


def test_the_check_does_not_count_in_the_step_times(inputs, tmp_path, monkeypatch):
    pause = 0.8
    real_run = AnchorCheck.run

    def slow_run(self, *args, **kwargs):
        time.sleep(pause)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(AnchorCheck, "run", slow_run)
    result = train(_checked(inputs, eval_every=1, max_steps=2), inputs["train"], inputs["order"], tmp_path / "run")
    assert [c["step"] for c in read_anchor_evals(result.run_dir)] == [1, 2]
    assert all(r["time"] < pause for r in read_log(result.run_dir))
    assert result.seconds < 2 * pause


def test_a_resume_drops_the_checks_after_its_checkpoint_and_redoes_them(runs, inputs, tmp_path):
    ref = runs["checked"].run_dir
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    shutil.rmtree(run / "checkpoints" / "step-4")  # as if killed after step 5: the latest checkpoint is step 2
    shutil.rmtree(run / "adapter")
    with open(run / ANCHOR_EVAL_NAME, "a") as fh:
        fh.write('{"step": 6, "estim')  # and a line cut short by the kill
    result = train(_checked(inputs, eval_every=2, save_every=2, keep_checkpoints=None), inputs["train"],
                   inputs["order"], run, resume=True)
    assert result.steps == N_STEPS
    assert [r["step"] for r in read_log(run)] == list(range(1, N_STEPS + 1))

    def strip(checks):
        return [{k: v for k, v in c.items() if k not in TIMING} for c in checks]

    assert strip(read_anchor_evals(run)) == strip(read_anchor_evals(ref))
    kept = keep_anchor_evals_through(run / ANCHOR_EVAL_NAME, 3)
    assert [c["step"] for c in kept] == [2] and [c["step"] for c in read_anchor_evals(run)] == [2]
    assert keep_anchor_evals_through(run / ANCHOR_EVAL_NAME, 0) == [] and read_anchor_evals(run) == []


def test_the_command_line_checks_and_prints_the_last_estimate(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--items", str(inputs["items"]), "--order", str(inputs["order_path"]), "-o", str(out),
                 "--no-progress", *micro_cli_options(), "--max-steps", "3", "--eval-anchors", str(inputs["anchors"]),
                 "--eval-items", str(inputs["items"]), "--eval-split", "test", "--eval-every", "2",
                 "--eval-estimator", "weighted"])
    assert code == 0
    checks = read_anchor_evals(out)
    assert [c["step"] for c in checks] == [2, 3] and checks[-1]["estimator"] == "weighted"
    stdout = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert f"estimated test accuracy after step 3: {checks[-1]['estimate']:.3f}" in stdout
    assert f"{checks[-1]['correct']}/{K} anchors right" in stdout


# ----------------------------------------------------------------------------------------------------------
# Bad settings and inputs fail before any training step


def _fails_before_training(inputs: dict, run_dir: Path, exc: type[Exception], match: str, **kw) -> None:
    with pytest.raises(exc, match=match):
        train(_config(inputs, **kw), inputs["train"], inputs["order"], run_dir)
    assert not (run_dir / "base").exists() and not (run_dir / "train_log.jsonl").exists()


def test_an_unreadable_anchors_file_is_named(inputs, tmp_path):
    bad = tmp_path / "anchors.json"
    bad.write_text('{"format": "medtune.anchors", "version": 1, "anchors": [')
    _fails_before_training(inputs, tmp_path / "a", InputError, f"{bad}.*not valid JSON",
                           eval_anchors=str(bad), eval_items=str(inputs["items"]))
    _fails_before_training(inputs, tmp_path / "b", InputError, "file not found",
                           eval_anchors=str(tmp_path / "none.json"), eval_items=str(inputs["items"]))


def test_anchor_ids_missing_from_the_items_file_are_named(inputs, tmp_path):
    first = inputs["anchor_set"].anchor_ids[0]
    _fails_before_training(inputs, tmp_path / "a", InputError, f"{inputs['train_only']}.*first: '{first}'",
                           eval_anchors=str(inputs["anchors"]), eval_items=str(inputs["train_only"]))
    _fails_before_training(inputs, tmp_path / "b", InputError, "split 'train'",  # the anchors are in the test split
                           eval_anchors=str(inputs["anchors"]), eval_items=str(inputs["items"]), eval_split="train")


@pytest.mark.parametrize(("settings", "match"), [
    ({"eval_every": 0}, "eval_every: Input should be greater than or equal to 1"),
    ({"eval_items": None}, "eval_anchors needs eval_items"),
    ({"eval_anchors": None, "eval_every": 2}, "eval_items, eval_every set without eval_anchors"),
    ({"eval_estimator": "mean"}, "eval_estimator"),
])
def test_bad_check_settings_are_refused_by_the_schema(inputs, settings, match):
    base = {"eval_anchors": str(inputs["anchors"]), "eval_items": str(inputs["items"])}
    with pytest.raises(ConfigError, match=match):
        TrainSettings.from_dict({**base, **settings})


def test_the_command_line_refuses_eval_every_zero(inputs, tmp_path, capsys):
    code = main(["train", "--items", str(inputs["items"]), "--order", str(inputs["order_path"]), "-o",
                 str(tmp_path / "run"), "--no-progress", *micro_cli_options(), "--eval-anchors", str(inputs["anchors"]),
                 "--eval-items", str(inputs["items"]), "--eval-every", "0"])
    assert code != 0
    assert "--eval-every must be ≥ 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run" / "train_log.jsonl").exists()


def test_the_estimators_of_the_schema_are_the_anchors_estimators():
    from typing import get_args

    assert get_args(TrainSettings.model_fields["eval_estimator"].annotation) == ESTIMATORS
    assert TrainSettings().eval_estimator == DEFAULT_ESTIMATOR


def test_a_method_that_runs_its_own_stages_refuses_the_check(inputs, tmp_path):
    _fails_before_training(inputs, tmp_path / "run", ConfigError, "knowtuning.*runs its own stages.*eval_anchors",
                           method="knowtuning", eval_anchors=str(inputs["anchors"]), eval_items=str(inputs["items"]))
