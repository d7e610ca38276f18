"""Bad inputs of the commands after ``data``: order files, difficulty/category tables, run folders, grid configs.

Each input is a small real-format file written here and then broken in one way. Every command must stop with
exit code 2 and one line naming the file and the place (line, row, field) — no traceback, nothing written.
The good version of each input is checked to pass first, so a case fails for its own defect only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from medtune.cli import main

SMALL = ["--option", "n_systems=2", "--option", "diseases_per_system=4", "--option", "train_per_level=2",
         "--option", "test_per_level=1"]


def run(capsys, *argv: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """Items (train + test), a valid order of the train split, and a run folder in the documented layout."""
    d = tmp_path_factory.mktemp("inputs")
    items = d / "items.parquet"
    assert main(["data", "load", "synthetic", *SMALL, "-o", str(items)]) == 0
    order = d / "order.json"
    assert main(["order", "build", str(items), "-s", "random", "--seed", "0", "-o", str(order)]) == 0
    run_dir = d / "run"
    run_dir.mkdir()
    train = {"method": "lora", "model": "tiny", "max_steps": 3, "batch_size": 4}
    (run_dir / "config.json").write_text(json.dumps({"train": train, "items": str(items), "order": str(order)}))
    (run_dir / "order.json").write_text(order.read_text())
    ids = json.loads(order.read_text())["epochs"][0]
    log = [{"step": s + 1, "epoch": 0, "ids": ids[4 * s: 4 * s + 4], "tokens": 100, "loss": 1.0, "lr": 1e-3,
            "time": 0.1} for s in range(3)]
    (run_dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return {"dir": d, "items": items, "order": order, "run": run_dir}


def _order(base: dict[str, Path]) -> dict[str, Any]:
    return json.loads(base["order"].read_text())


def _write(path: Path, obj: Any) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


# --- order files: `medtune train` and `medtune verify-order` -----------------------------------------------------

ORDER_CASES: dict[str, tuple[Callable[[dict[str, Any]], Any], list[str]]] = {
    "not JSON": (lambda o: "epochs: [a, b]\n", ["JSON"]),
    "truncated": (lambda o: json.dumps(o)[:200], ["JSON", "line 1"]),
    "not an object": (lambda o: [o["epochs"][0]], ["object"]),
    "wrong format": (lambda o: {**o, "format": "medtune.order/9"}, ["field 'format'", "medtune.order/9"]),
    "no format": (lambda o: {k: v for k, v in o.items() if k != "format"}, ["field 'format'"]),
    "empty epochs": (lambda o: {**o, "epochs": []}, ["field 'epochs'"]),
    "an empty epoch": (lambda o: {**o, "epochs": [[]]}, ["epochs.0"]),
    "non-string ids": (lambda o: {**o, "epochs": [[1, 2, 3]]}, ["epochs.0"]),
    "epochs not lists": (lambda o: {**o, "epochs": "id1,id2"}, ["field 'epochs'"]),
}


@pytest.mark.parametrize("case", sorted(ORDER_CASES))
def test_verify_order_rejects_a_bad_order_file(base, tmp_path, capsys, case):
    assert run(capsys, "verify-order", base["run"], "--order", base["order"])[0] == 0  # the good one passes
    change, fragments = ORDER_CASES[case]
    bad = _write(tmp_path / "order.json", change(_order(base)))
    code, _, err = run(capsys, "verify-order", base["run"], "--order", bad)
    assert code == 2
    line = error_line(err)
    assert str(bad) in line and all(f in line for f in fragments), line


TRAIN = ["--model", "tiny", "--method", "lora", "--max-steps", "1", "--batch-size", "4", "--no-progress"]


@pytest.mark.parametrize("case", [*sorted(ORDER_CASES), "ids not in the items"])
def test_train_rejects_a_bad_order_file_before_training(base, tmp_path, capsys, case):
    if case == "ids not in the items":
        order = _order(base)
        order["epochs"] = [["no-such-item", *order["epochs"][0][1:]]]
        bad, fragments = _write(tmp_path / "order.json", order), ["no-such-item", "epochs.0"]
    else:
        change, fragments = ORDER_CASES[case]
        bad = _write(tmp_path / "order.json", change(_order(base)))
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--items", base["items"], "--order", bad, "-o", out, *TRAIN)
    assert code == 2
    line = error_line(err)
    assert str(bad) in line and all(f in line for f in fragments), line
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]  # no file written


# --- difficulty and category tables: `medtune order` -------------------------------------------------------------


def _train_ids(base: dict[str, Path]) -> list[str]:
    return list(_order(base)["epochs"][0])


def _table(path: Path, columns: dict[str, list[Any]]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


TABLE_CASES: dict[str, tuple[str, Callable[[list[str]], dict[str, list[Any]]], list[str]]] = {
    "difficulty without id column": ("difficulty", lambda ids: {"item": ids, "difficulty": [0.5] * len(ids)},
                                     ["field 'id'"]),
    "difficulty not numeric": ("difficulty", lambda ids: {"id": ids, "difficulty": ["hard-ish"] * len(ids)},
                               ["field 'difficulty'"]),
    "difficulty ids not in the items": ("difficulty", lambda ids: {"id": [*ids, "no-such-item"],
                                                                   "difficulty": [0.5] * (len(ids) + 1)},
                                        ["no-such-item"]),
    "difficulty misses an item": ("difficulty", lambda ids: {"id": ids[1:], "difficulty": [0.5] * (len(ids) - 1)},
                                  ["field 'difficulty'", "has no row"]),
    "categories without id column": ("categories", lambda ids: {"item": ids, "category": ["a"] * len(ids)},
                                     ["field 'id'"]),
    "categories ids not in the items": ("categories", lambda ids: {"id": [*ids, "no-such-item"],
                                                                   "category": ["a"] * (len(ids) + 1)},
                                        ["no-such-item"]),
    "categories without category column": ("categories", lambda ids: {"id": ids, "cluster": ["a"] * len(ids)},
                                           ["field 'category'"]),
}


@pytest.mark.parametrize("case", sorted(TABLE_CASES))
def test_order_rejects_a_bad_table(base, tmp_path, capsys, case):
    option, columns, fragments = TABLE_CASES[case]
    strategy = "curriculum-strict" if option == "difficulty" else "blocked"
    ids = _train_ids(base)
    good = _table(tmp_path / "good.parquet", {"id": ids, "difficulty": [i / len(ids) for i in range(len(ids))]}
                  if option == "difficulty" else {"id": ids, "category": [f"c{i % 3}" for i in range(len(ids))]})
    code, _, err = run(capsys, "order", "build", base["items"], "-s", strategy, "--seed", "0", f"--{option}", good,
                       "-o", tmp_path / "good.json")
    assert code == 0, err
    bad = _table(tmp_path / f"{option}.parquet", columns(ids))
    out = tmp_path / "order.json"
    code, _, err = run(capsys, "order", "build", base["items"], "-s", strategy, "--seed", "0", f"--{option}", bad,
                       "-o", out)
    assert code == 2
    line = error_line(err)
    assert str(bad) in line and all(f in line for f in fragments), line
    assert not out.exists()


# --- run folders: `medtune verify-order`, `medtune export`, `medtune evaluate run --run` ------------------------


def _copy_run(base: dict[str, Path], dest: Path, *, drop: str | None = None) -> Path:
    dest.mkdir()
    for f in base["run"].iterdir():
        if f.name != drop:
            (dest / f.name).write_bytes(f.read_bytes())
    return dest


def test_verify_order_missing_run_folder(base, tmp_path, capsys):
    code, _, err = run(capsys, "verify-order", tmp_path / "nope")
    assert code == 2 and str(tmp_path / "nope") in error_line(err)


def test_verify_order_run_without_train_log(base, tmp_path, capsys):
    run_dir = _copy_run(base, tmp_path / "run", drop="train_log.jsonl")
    code, _, err = run(capsys, "verify-order", run_dir)
    assert code == 2 and str(run_dir / "train_log.jsonl") in error_line(err)


def test_verify_order_run_without_config(base, tmp_path, capsys):
    run_dir = _copy_run(base, tmp_path / "run", drop="config.json")
    code, _, err = run(capsys, "verify-order", run_dir)
    assert code == 2 and str(run_dir) in error_line(err) and "config.json" in err


def test_verify_order_truncated_log_line(base, tmp_path, capsys):
    run_dir = _copy_run(base, tmp_path / "run")
    log = run_dir / "train_log.jsonl"
    lines = log.read_text().splitlines()
    lines[1] = lines[1][:25]
    log.write_text("\n".join(lines) + "\n")
    code, _, err = run(capsys, "verify-order", run_dir)
    assert code == 2
    line = error_line(err)
    assert str(log) in line and "line 2" in line, line


def test_verify_order_log_record_without_ids(base, tmp_path, capsys):
    run_dir = _copy_run(base, tmp_path / "run")
    log = run_dir / "train_log.jsonl"
    recs = [json.loads(ln) for ln in log.read_text().splitlines()]
    del recs[0]["ids"]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    code, _, err = run(capsys, "verify-order", run_dir)
    assert code == 2
    line = error_line(err)
    assert str(log) in line and "line 1" in line and "field 'ids'" in line, line


def test_export_missing_run_folder(tmp_path, capsys):
    code, _, err = run(capsys, "export", tmp_path / "nope", "-o", tmp_path / "out")
    assert code == 2 and str(tmp_path / "nope") in error_line(err)
    assert not (tmp_path / "out").exists()


def test_export_run_without_weights(base, tmp_path, capsys):
    run_dir = _copy_run(base, tmp_path / "run")  # config, order and log, but no adapter/ or model/
    code, _, err = run(capsys, "export", run_dir, "-o", tmp_path / "out")
    assert code == 2
    line = error_line(err)
    assert str(run_dir) in line and ("adapter" in line or "model" in line), line
    assert not (tmp_path / "out").exists()


def test_evaluate_missing_run_folder(base, tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", "run", base["items"], "--run", tmp_path / "nope", "-o", tmp_path / "ev")
    assert code == 2 and str(tmp_path / "nope") in error_line(err)
    assert not (tmp_path / "ev").exists()


def test_evaluate_run_without_weights(base, tmp_path, capsys):
    run_dir = _copy_run(base, tmp_path / "run")
    code, _, err = run(capsys, "evaluate", "run", base["items"], "--run", run_dir, "-o", tmp_path / "ev")
    assert code == 2
    line = error_line(err)
    assert str(run_dir) in line and ("adapter" in line or "model" in line), line
    assert not (tmp_path / "ev").exists()


# --- grid configs: `medtune run --dry-run` -----------------------------------------------------------------------


def _grid(tmp_path: Path) -> dict[str, Any]:
    data = {"source": "synthetic", "options": {"seed": 0, "n_systems": 2, "diseases_per_system": 4}}
    return {"name": "bad-inputs", "output_dir": str(tmp_path / "runs"), "seeds": [0],
            "models": [{"name": "tiny", "spec": "tiny"}],
            "datasets": [{"name": "syn", "split": "train", **data}],
            "test_sets": [{"name": "syn-test", "split": "test", **data}],
            "strategies": ["random"], "training": {"methods": ["lora"], "max_steps": 2}}


def _with_dataset(cfg: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**cfg, "datasets": [{**cfg["datasets"][0], **changes}]}


CONFIG_CASES: dict[str, tuple[Callable[[dict[str, Any]], Any], list[str]]] = {
    "not a mapping": (lambda c: ["random", "curriculum"], ["mapping"]),
    "YAML syntax error": (lambda c: "name: tiny\nseeds: [0, 1\nmodels: []\n", ["line"]),
    "empty file": (lambda c: "", []),
    "unknown top-level key": (lambda c: {**c, "trainng": {"lr": 0.1}}, ["trainng"]),
    "unknown training key": (lambda c: {**c, "training": {**c["training"], "learning_rate": 0.1}},
                             ["training", "learning_rate"]),
    "wrong type": (lambda c: {**c, "seeds": "zero"}, ["seeds"]),
    "wrong type in training": (lambda c: {**c, "training": {**c["training"], "max_steps": "many"}},
                               ["training", "max_steps"]),
    "unknown dataset key": (lambda c: _with_dataset(c, splt="train"), ["datasets", "splt"]),
    "unknown loader option": (lambda c: _with_dataset(c, options={"n_system": 2}), ["datasets", "n_system"]),
    "unknown data source": (lambda c: _with_dataset(c, source="nosuch"), ["datasets", "source", "nosuch"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_run_dry_run_rejects_a_bad_config(tmp_path, capsys, case):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_grid(tmp_path)))
    code, _, err = run(capsys, "run", good, "--dry-run")
    assert code == 0, err
    change, fragments = CONFIG_CASES[case]
    content = change(_grid(tmp_path))
    bad = tmp_path / "bad.yaml"
    bad.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    code, _, err = run(capsys, "run", bad, "--dry-run")
    assert code == 2
    line = error_line(err)
    assert str(bad) in line and all(f in line for f in fragments), line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_error_line_prints_the_message_verbatim(tmp_path, capsys):
    # A message quoting the input ("[b]") must not be eaten as console markup.
    src = tmp_path / "quiz.jsonl"
    src.write_text(json.dumps({"q": "Q?", "a": "x", "b": "y", "ans": "[b]"}) + "\n")
    code, _, err = run(capsys, "data", "load", "tabular", src, "-o", tmp_path / "q.parquet", "--question-col", "q",
                       "--options-cols", "a,b", "--answer-col", "ans", "--answer-format", "letter")
    assert code == 2 and "got '[b]'" in error_line(err)
