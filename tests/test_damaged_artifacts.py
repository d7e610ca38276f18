"""Damaged artifacts of earlier stages: a cut-short run record, order file, table, predictions or anchors file.

Files break in real life by being cut short (a killed writer, a full disk), by being something else under the
right name, or by missing a column. Each case writes the good artifact first and checks the command accepts it,
then damages it: the command must stop with exit code 2 and one line naming the file (and the line, record or
field where it has them) — no ``JSONDecodeError`` or pyarrow traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from tests import test_bad_inputs
from tests.test_bad_inputs import _copy_run, error_line, run

from medtune.schema import read_items

base = test_bad_inputs.base  # the items, order and run folder of the bad-input cases (a module fixture)

# --- the run record (RUN_DIR/config.json): verify-order, evaluate run --run, export ------------------------------

RECORD_CASES: dict[str, tuple[Any, list[str]]] = {
    "cut short": (lambda text: text[: len(text) // 2], ["not valid JSON", "line 1"]),
    "empty": (lambda text: "", ["not valid JSON"]),
    "not an object": (lambda text: json.dumps([json.loads(text)]), ["JSON object"]),
    "no train section": (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "train"}),
                         ["field 'train'"]),
}


def _damaged_run(base: dict[str, Path], dest: Path, case: str) -> tuple[Path, Path]:
    run_dir = _copy_run(base, dest)
    (run_dir / "adapter").mkdir()
    (run_dir / "adapter" / "adapter_config.json").write_text("{}")  # weights present: only the record is bad
    record = run_dir / "config.json"
    change, _ = RECORD_CASES[case]
    record.write_text(change(record.read_text()))
    return run_dir, record


@pytest.mark.parametrize("case", sorted(RECORD_CASES))
def test_verify_order_damaged_run_record(base, tmp_path, capsys, case):
    assert run(capsys, "verify-order", base["run"])[0] == 0  # the good run passes
    run_dir, record = _damaged_run(base, tmp_path / "run", case)
    code, _, err = run(capsys, "verify-order", run_dir)
    assert code == 2
    line = error_line(err)
    assert str(record) in line and all(f in line for f in RECORD_CASES[case][1]), line


@pytest.mark.parametrize("case", sorted(RECORD_CASES))
def test_evaluate_run_damaged_run_record(base, tmp_path, capsys, case):
    run_dir, record = _damaged_run(base, tmp_path / "run", case)
    code, _, err = run(capsys, "evaluate", "run", base["items"], "--run", run_dir, "-o", tmp_path / "ev")
    assert code == 2
    line = error_line(err)
    # A record without training settings is not a run folder at all: the folder is named; else the file.
    assert (str(run_dir) if case == "no train section" else str(record)) in line, line
    assert not (tmp_path / "ev").exists()


def test_export_cut_short_run_record(base, tmp_path, capsys):
    run_dir, record = _damaged_run(base, tmp_path / "run", "cut short")
    code, _, err = run(capsys, "export", run_dir, "-o", tmp_path / "out")
    assert code == 2 and str(record) in error_line(err)
    assert not (tmp_path / "out").exists()


# --- order files: `order plot` (verify-order and train are covered with the bad-input cases) ---------------------


def test_order_plot_cut_short_order_file(base, tmp_path, capsys):
    bad = tmp_path / "order.json"
    bad.write_text(base["order"].read_text()[:150])
    code, _, err = run(capsys, "order", "plot", bad, "--items", base["items"], "-o", tmp_path / "plot.png")
    assert code == 2
    line = error_line(err)
    assert str(bad) in line and "JSON" in line, line
    assert not (tmp_path / "plot.png").exists()


# --- difficulty and categories tables: `order build` -------------------------------------------------------------


def _not_parquet(path: Path, good: Path) -> Path:
    path.write_text("id,difficulty\nx,0.5\n")  # a CSV under a .parquet name
    return path


def _cut_short(path: Path, good: Path) -> Path:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


DAMAGE = {"not parquet": _not_parquet, "cut short": _cut_short}


@pytest.mark.parametrize("option", ["difficulty", "categories"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_order_build_damaged_table(base, tmp_path, capsys, option, damage):
    ids = json.loads(base["order"].read_text())["epochs"][0]
    frame = (pd.DataFrame({"id": ids, "difficulty": [i / len(ids) for i in range(len(ids))]}) if option == "difficulty"
             else pd.DataFrame({"id": ids, "category": [f"c{i % 3}" for i in range(len(ids))]}))
    good = tmp_path / "good.parquet"
    frame.to_parquet(good)
    strategy = "curriculum-strict" if option == "difficulty" else "blocked"
    argv = ["order", "build", base["items"], "-s", strategy, "--seed", "0"]
    assert run(capsys, *argv, f"--{option}", good, "-o", tmp_path / "good.json")[0] == 0
    bad = DAMAGE[damage](tmp_path / f"{option}.parquet", good)
    code, _, err = run(capsys, *argv, f"--{option}", bad, "-o", tmp_path / "order.json")
    assert code == 2
    assert str(bad) in error_line(err)
    assert not (tmp_path / "order.json").exists()


# --- predictions files: `evaluate metrics`, `evaluate compare`, `evaluate anchors choose/estimate` ---------------


def _predictions(base: dict[str, Path], path: Path, *, wrong_every: int = 0) -> Path:
    """A predictions file for the test items: every answer right, except every ``wrong_every``-th."""
    items = [it for it in read_items(base["items"]) if it.split == "test"]
    pred = [(it.answer + 1) % len(it.options) if wrong_every and i % wrong_every == 0 else it.answer
            for i, it in enumerate(items)]
    pd.DataFrame({"id": [it.id for it in items], "answer": [it.answer for it in items], "pred": pred,
                  "correct": [p == it.answer for p, it in zip(pred, items, strict=True)]}).to_parquet(path)
    return path


PREDICTION_DAMAGE: dict[str, Any] = {
    **DAMAGE,
    "no 'correct' column": lambda path, good: _drop_column(path, good, "correct"),
}


def _drop_column(path: Path, good: Path, column: str) -> Path:
    pd.read_parquet(good).drop(columns=[column]).to_parquet(path)
    return path


def _commands(base: dict[str, Path], tmp_path: Path, other: Path, anchors: Path) -> dict[str, Any]:
    """Each command that reads a predictions file, given the file to read (the others good)."""
    return {
        "metrics": lambda p: ["evaluate", "metrics", p, "--items", base["items"], "--n-boot", "50"],
        "compare": lambda p: ["evaluate", "compare", other, p, "--n-boot", "50"],
        "anchors choose": lambda p: ["evaluate", "anchors", "choose", other, p, "--k", "2", "--method", "random",
                                     "-o", tmp_path / "chosen.json"],
        "anchors estimate": lambda p: ["evaluate", "anchors", "estimate", p, "--anchors", anchors, "--n-boot", "50"],
    }


@pytest.fixture(scope="module")
def scored(base, tmp_path_factory) -> dict[str, Path]:
    """Two good predictions files and an anchors file chosen from them."""
    d = tmp_path_factory.mktemp("scored")
    good = _predictions(base, d / "good.parquet")
    other = _predictions(base, d / "other.parquet", wrong_every=2)
    anchors = d / "anchors.json"
    from medtune.cli import main

    assert main(["evaluate", "anchors", "choose", str(good), str(other), "--k", "2", "--method", "random",
                 "-o", str(anchors)]) == 0
    return {"good": good, "other": other, "anchors": anchors}


@pytest.mark.parametrize("command", ["metrics", "compare", "anchors choose", "anchors estimate"])
@pytest.mark.parametrize("damage", sorted(PREDICTION_DAMAGE))
def test_damaged_predictions_file(base, scored, tmp_path, capsys, command, damage):
    argv = _commands(base, tmp_path, scored["other"], scored["anchors"])[command]
    code, _, err = run(capsys, *argv(scored["good"]))
    assert code == 0, err
    bad = PREDICTION_DAMAGE[damage](tmp_path / "bad.parquet", scored["good"])
    code, _, err = run(capsys, *argv(bad))
    assert code == 2
    line = error_line(err)
    assert str(bad) in line, line
    if damage.startswith("no "):
        assert "correct" in line, line


def test_predictions_for_another_items_file_count_rows_from_1(base, scored, tmp_path, capsys):
    frame = pd.read_parquet(scored["good"])
    frame.loc[2, "id"] = "from-another-file"  # the third row
    bad = tmp_path / "other-items.parquet"
    frame.to_parquet(bad)
    code, _, err = run(capsys, "evaluate", "metrics", bad, "--items", base["items"], "--n-boot", "50")
    assert code == 2
    line = error_line(err)
    assert str(bad) in line and "record 3" in line and "from-another-file" in line, line


# --- anchors files: `evaluate anchors estimate` -------------------------------------------------------------------


def _anchors_data(scored: dict[str, Path]) -> dict[str, Any]:
    return json.loads(scored["anchors"].read_text())


ANCHORS_DAMAGE: dict[str, tuple[Any, list[str]]] = {
    "cut short": (lambda data: json.dumps(data)[:60], ["not valid JSON", "line 1"]),
    "not an object": (lambda data: json.dumps(data["anchors"]), ["JSON object"]),
    "second anchor unknown": (lambda data: json.dumps({**data, "anchors": [
        data["anchors"][0], {**data["anchors"][1], "id": "nowhere"}]}), ["record 2", "field 'anchors.id'", "nowhere"]),
    "no anchors": (lambda data: json.dumps({k: v for k, v in data.items() if k != "anchors"}), ["anchors"]),
}


@pytest.mark.parametrize("damage", sorted(ANCHORS_DAMAGE))
def test_damaged_anchors_file(scored, tmp_path, capsys, damage):
    change, fragments = ANCHORS_DAMAGE[damage]
    bad = tmp_path / "anchors.json"
    bad.write_text(change(_anchors_data(scored)))
    code, _, err = run(capsys, "evaluate", "anchors", "estimate", scored["good"], "--anchors", bad, "--n-boot", "50")
    assert code == 2
    line = error_line(err)
    assert str(bad) in line and all(f in line for f in fragments), line


# --- `difficulty human` on items whose difficulty is given as levels ---------------------------------------------


def test_difficulty_human_from_levels_prints_its_summary(base, tmp_path, capsys):
    items = read_items(base["items"])
    assert {it.human_difficulty for it in items} <= {"easy", "medium", "hard"}  # the synthetic data's levels
    out = tmp_path / "difficulty.parquet"
    code, stdout, err = run(capsys, "difficulty", "human", base["items"], "-o", out)
    assert code == 0, err
    table = pq.read_table(out).to_pandas()
    assert dict(zip(table["id"], table["bucket"], strict=True)) == {it.id: it.human_difficulty for it in items}
    for level in ("easy", "medium", "hard"):
        assert f"{level}" in stdout
        count = sum(it.human_difficulty == level for it in items)
        assert any(level in ln and f" {count} " in f" {ln} " for ln in stdout.splitlines()), stdout
    assert "given as level" in stdout and "no numeric difficulty" in stdout
    assert "wrote" in stdout and str(out) in stdout.replace("\n", "")  # the console wraps a long path


# --- the scoring part file an interrupted `evaluate run` resumes from ---------------------------------------------


@pytest.mark.parametrize(("lines", "place"), [
    (['{"medtune_part": 1, "settings": {}}', '{"id": "a", "pred": 1}', '{"id": "b", pred: 2}'], "line 3"),
    (['["medtune_part", 1]'], "line 1"),
    (['{"medtune_part": 1, "settings": {}}', '{"pred": 2}'], "line 2, field 'id'"),
])
def test_damaged_scoring_part_file_names_its_line(tmp_path, lines, place):
    from medtune.errors import InputError
    from medtune.scoring.store import HEADER_KEY, ScoredRowStore, part_path

    out = tmp_path / "predictions.parquet"
    good = [json.dumps({HEADER_KEY: 1, "settings": {}}), json.dumps({"id": "a", "pred": 1})]
    part_path(out).write_text("\n".join(good) + "\n")
    assert ScoredRowStore(out, {}).done() == {"a"}  # the good file resumes
    part_path(out).write_text("\n".join(ln.replace("medtune_part", HEADER_KEY) for ln in lines) + "\n")
    with pytest.raises(InputError) as info:
        ScoredRowStore(out, {})
    assert str(part_path(out)) in str(info.value) and place in str(info.value), str(info.value)
