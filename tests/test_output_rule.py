"""One output rule for every command: a path of the wrong kind is refused up front, and an earlier output is
never lost.

A file is expected where a command writes a file (``data load -o``, ``evaluate metrics -o``, ``difficulty import
-o``), a folder where it writes a folder (``export -o``, ``evaluate run -o``, ``order -o``, ``train -o``). The
wrong kind is one line naming the path, exit code 2, no traceback, and the path is left byte for byte as it was.
A command that fails after being pointed at an earlier good output leaves that output byte for byte as it was,
and no temporary folder beside it. Everything here is real: a micro model trained by ``medtune train``, its
predictions from ``medtune evaluate run``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.test_bad_inputs import SMALL, error_line, run
from tests.training.training_helpers import micro_cli_options

from medtune.cli import main
from medtune.errors import InputError
from medtune.io import atomic_folder, atomic_path, check_file_output, require_file, write_json_atomic


def tree_hashes(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or ``path`` itself) by relative name → sha256; folders are listed too."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(path.rglob("*"))}


def leftovers(path: Path) -> list[str]:
    """Temporary files or folders of the output rule beside ``path``."""
    return sorted(p.name for p in path.parent.iterdir()
                  if p.name.startswith(f".{path.name}.") and (".tmp-" in p.name or ".old-" in p.name))


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """Items, an order, a micro LoRA run trained by the CLI, its predictions and an adapter export."""
    d = tmp_path_factory.mktemp("outputs")
    items = d / "items.parquet"
    assert main(["data", "load", "synthetic", *SMALL, "-o", str(items)]) == 0
    order = d / "order.json"
    assert main(["order", "build", str(items), "-s", "random", "--seed", "0", "-o", str(order)]) == 0
    run_dir = d / "run"
    assert main(["train", "--items", str(items), "--order", str(order), "-o", str(run_dir), "--method", "lora",
                 "--max-steps", "1", "--batch-size", "4", "--no-progress", *micro_cli_options()]) == 0
    assert (run_dir / "adapter").is_dir()
    ev = d / "eval"
    assert main(["evaluate", "run", str(items), "--run", str(run_dir), "--split", "test", "-o", str(ev),
                 "--n-boot", "20", "--no-progress"]) == 0
    export = d / "export"
    assert main(["export", str(run_dir), "--adapter", "-o", str(export)]) == 0
    broken = d / "run-without-adapter"
    shutil.copytree(run_dir, broken)
    shutil.rmtree(broken / "adapter")
    return {"dir": d, "items": items, "order": order, "run": run_dir, "eval": ev,
            "predictions": ev / "predictions.parquet", "export": export, "broken": broken}


def a_file(tmp_path: Path) -> Path:
    f = tmp_path / "taken.txt"
    f.write_text("an earlier file that must survive\n")
    return f


def a_folder(tmp_path: Path) -> Path:
    f = tmp_path / "taken"
    f.mkdir()
    (f / "keep.txt").write_text("an earlier folder that must survive\n")
    return f


# --- (a) an output path of the wrong kind --------------------------------------------------------------------------

FOLDER_OUTPUTS: dict[str, Any] = {
    "export --adapter": lambda m, o: ["export", m["run"], "--adapter", "-o", o],
    "export --merge": lambda m, o: ["export", m["run"], "--merge", "-o", o],
    "evaluate run": lambda m, o: ["evaluate", "run", m["items"], "--run", m["run"], "--split", "test", "-o", o,
                                  "--no-progress"],
    "evaluate score-file": lambda m, o: ["evaluate", "score-file", m["gen"], "-o", o],
    "order build": lambda m, o: ["order", "build", m["items"], "-s", "random", "--seed", "0", "-o", o],
    "train": lambda m, o: ["train", "--items", m["items"], "--order", m["order"], "-o", o, "--method", "lora",
                           "--max-steps", "1", "--batch-size", "4", "--no-progress", *micro_cli_options()],
}

FILE_OUTPUTS: dict[str, Any] = {
    "data load": lambda m, o: ["data", "load", "synthetic", *SMALL, "-o", o],
    "data prepare": lambda m, o: ["data", "prepare", m["items"], "-o", o],
    "data mix": lambda m, o: ["data", "mix", f"{m['items']}:1.0", "-o", o],
    "evaluate metrics": lambda m, o: ["evaluate", "metrics", m["predictions"], "--items", m["items"], "-o", o,
                                      "--n-boot", "10"],
    "evaluate compare": lambda m, o: ["evaluate", "compare", m["predictions"], m["predictions"], "-o", o],
    "difficulty import": lambda m, o: ["difficulty", "import", m["table"], "--items", m["items"], "-o", o],
    "anchors estimate": lambda m, o: ["evaluate", "anchors", "estimate", m["predictions"], "--anchors",
                                      m["anchors"], "-o", o],
    "order plot": lambda m, o: ["order", "plot", m["order"], "--items", m["items"], "-o", o],
}


@pytest.fixture(scope="module")
def inputs(made) -> dict[str, Path]:
    """A generations file, a difficulty table and an anchors.json, beside what ``made`` built."""
    d = made["dir"]
    gen = d / "generations.jsonl"
    gen.write_text(json.dumps({"prompt": "What treats X?", "reference": "Drug Y", "prediction": "Drug Y"}) + "\n")
    import pyarrow.parquet as pq

    ids = [str(i) for i in pq.read_table(made["items"]).column("id").to_pylist()]
    table = d / "difficulty.csv"
    table.write_text("id,difficulty\n" + "".join(f"{i},{k / len(ids):.3f}\n" for k, i in enumerate(ids)))
    anchors = d / "anchors.json"
    other = d / "other" / "predictions.parquet"  # a second known model (the same answers)
    other.parent.mkdir()
    shutil.copy(made["predictions"], other)
    assert main(["evaluate", "anchors", "choose", str(made["predictions"]), str(other), "-o", str(anchors),
                 "--k", "2", "--method", "random"]) == 0
    return {**made, "gen": gen, "table": table, "anchors": anchors}


@pytest.mark.parametrize("command", sorted(FOLDER_OUTPUTS))
def test_a_file_where_a_folder_is_written_is_refused(inputs, tmp_path, capsys, command):
    taken = a_file(tmp_path)
    before = tree_hashes(taken)
    code, _, err = run(capsys, *FOLDER_OUTPUTS[command](inputs, taken))
    assert code == 2, err
    line = error_line(err)
    assert str(taken) in line and "is a file" in line, line
    assert tree_hashes(taken) == before and leftovers(taken) == []


@pytest.mark.parametrize("command", sorted(FILE_OUTPUTS))
def test_a_folder_where_a_file_is_written_is_refused(inputs, tmp_path, capsys, command):
    taken = a_folder(tmp_path)
    before = tree_hashes(taken)
    code, _, err = run(capsys, *FILE_OUTPUTS[command](inputs, taken))
    assert code == 2, err
    line = error_line(err)
    assert str(taken) in line and "is a folder; give a file path" in line, line
    assert tree_hashes(taken) == before


def test_train_names_the_option_for_a_file(inputs, tmp_path, capsys):
    taken = a_file(tmp_path)
    code, _, err = run(capsys, *FOLDER_OUTPUTS["train"](inputs, taken))
    assert code == 2 and "-o" in error_line(err)


@pytest.mark.parametrize("command", ["score-file", "anchors estimate"])
def test_a_folder_given_as_an_input_file_is_named_as_such(inputs, tmp_path, capsys, command):
    folder = a_folder(tmp_path)
    argv = (["evaluate", "score-file", folder, "-o", tmp_path / "out"] if command == "score-file" else
            ["evaluate", "anchors", "estimate", inputs["predictions"], "--anchors", folder])
    code, _, err = run(capsys, *argv)
    assert code == 2
    line = error_line(err)
    assert str(folder) in line and "is a folder, expected a file" in line and "not found" not in line, line


# --- (b) an earlier good output survives a failing run -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["--adapter", "--merge"])
def test_export_of_a_run_without_adapter_keeps_the_earlier_export(inputs, tmp_path, capsys, mode):
    out = tmp_path / "export"
    shutil.copytree(inputs["export"], out)
    before = tree_hashes(out)
    assert any(k.endswith(".safetensors") for k in before)
    code, _, err = run(capsys, "export", inputs["broken"], mode, "-o", out)
    assert code == 2
    assert "no adapter/" in error_line(err)
    assert tree_hashes(out) == before and leftovers(out) == []


def test_export_replaces_an_earlier_export_whole(inputs, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"from an earlier export")
    code, _, err = run(capsys, "export", inputs["run"], "--adapter", "-o", out)
    assert code == 0, err
    assert tree_hashes(out) == tree_hashes(inputs["run"] / "adapter")  # the stale file is gone with the old folder
    assert leftovers(out) == []


def test_data_load_of_a_broken_file_keeps_the_earlier_items(inputs, tmp_path, capsys):
    out = tmp_path / "items.parquet"
    shutil.copy(inputs["items"], out)
    before = tree_hashes(out)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "cut sho')
    code, _, err = run(capsys, "data", "load", "medqa", broken, "-o", out)
    assert code == 2
    assert str(broken) in error_line(err)
    assert tree_hashes(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_evaluate_run_that_fails_keeps_the_earlier_output(inputs, tmp_path, capsys):
    out = tmp_path / "eval"
    shutil.copytree(inputs["eval"], out)
    before = tree_hashes(out)
    code, _, err = run(capsys, "evaluate", "run", inputs["items"], "--run", inputs["broken"], "--split", "test",
                       "-o", out, "--no-progress")
    assert code == 2
    assert "no adapter/" in error_line(err)
    assert tree_hashes(out) == before and leftovers(out) == []


def test_evaluate_run_over_an_earlier_output_writes_the_new_one_whole(inputs, tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "predictions.parquet").write_bytes(b"an earlier, different output")
    (out / "metrics.json").write_text("{}")
    code, _, err = run(capsys, "evaluate", "run", inputs["items"], "--run", inputs["run"], "--split", "test",
                       "-o", out, "--n-boot", "20", "--no-progress")
    assert code == 0, err
    assert sorted(tree_hashes(out)) == ["metrics.json", "predictions.parquet"]
    assert tree_hashes(out)["predictions.parquet"] == tree_hashes(inputs["eval"])["predictions.parquet"]
    assert json.loads((out / "metrics.json").read_text())["accuracy"]
    assert leftovers(out) == []


def test_evaluate_run_into_a_folder_with_other_files_keeps_them(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(inputs["run"], out)  # e.g. evaluating a run into its own folder
    before = tree_hashes(out)
    code, _, err = run(capsys, "evaluate", "run", inputs["items"], "--run", out, "--split", "test", "-o", out,
                       "--n-boot", "20", "--no-progress")
    assert code == 0, err
    after = tree_hashes(out)
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == ["metrics.json", "predictions.parquet"]
    assert leftovers(out) == []


@pytest.mark.parametrize("where", ["the run", "its parent"])
def test_export_refuses_the_run_folder_or_one_holding_it(inputs, tmp_path, capsys, where):
    parent = tmp_path / "runs"
    run_dir = parent / "run"
    shutil.copytree(inputs["run"], run_dir)
    before = tree_hashes(parent)
    out = run_dir if where == "the run" else parent
    code, _, err = run(capsys, "export", run_dir, "--merge", "-o", out)
    assert code == 2 and "is the run folder or holds it" in error_line(err)
    assert tree_hashes(parent) == before


def test_export_refuses_the_current_folder(inputs, tmp_path, capsys, monkeypatch):
    keep = a_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "export", inputs["run"], "--adapter", "-o", ".")
    assert code == 2 and "is the current folder" in error_line(err)
    assert keep.read_text() == "an earlier file that must survive\n"


def test_evaluate_run_on_anchors_keeps_the_earlier_output_and_names_the_final_folder(inputs, tmp_path, capsys):
    out = tmp_path / "eval"
    shutil.copytree(inputs["eval"], out)
    (out / "earlier.txt").write_text("from an earlier run")
    before = tree_hashes(out)
    argv = ["evaluate", "run", inputs["items"], "--split", "test", "-o", out, "--anchors", inputs["anchors"],
            "--n-boot", "20", "--no-progress"]
    code, _, err = run(capsys, *argv, "--run", inputs["broken"])
    assert code == 2 and "no adapter/" in error_line(err)
    assert tree_hashes(out) == before and leftovers(out) == []
    code, _, err = run(capsys, *argv, "--run", inputs["run"])
    assert code == 0, err
    assert tree_hashes(out)["earlier.txt"] == before["earlier.txt"]  # not an output of the command: it stays
    assert tree_hashes(out)["predictions.parquet"] != before["predictions.parquet"] and leftovers(out) == []
    text = (out / "metrics.json").read_text()
    assert ".tmp-" not in text
    assert json.loads(text)["run"]["items"] == str(out / "anchor_items.parquet")
    assert (out / "anchor_items.parquet").is_file()


def test_score_file_replaces_its_earlier_output_and_keeps_other_files(inputs, tmp_path, capsys):
    out = tmp_path / "scored"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}')
    (out / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "evaluate", "score-file", inputs["gen"], "-o", out, "--n-boot", "10",
                       "--no-bertscore")
    assert code == 0, err
    assert sorted(tree_hashes(out)) == ["item_metrics.parquet", "metrics.json", "notes.txt"]
    assert "earlier" not in json.loads((out / "metrics.json").read_text())
    assert (out / "notes.txt").read_text() == "mine" and leftovers(out) == []


# --- the helpers themselves ----------------------------------------------------------------------------------------


def test_atomic_folder_keeps_the_old_folder_until_the_new_is_complete(tmp_path):
    target = a_folder(tmp_path)
    before = tree_hashes(target)
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "half.bin").write_bytes(b"half")
        assert tree_hashes(target) == before  # nothing of the new output shows while it is built
        raise RuntimeError("the build fails")
    assert tree_hashes(target) == before and leftovers(target) == []
    with atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert tree_hashes(target) == {"new.txt": hashlib.sha256(b"new").hexdigest()}
    assert leftovers(target) == []


def test_atomic_folder_cleans_up_after_a_killed_run(tmp_path):
    target = a_folder(tmp_path)
    before = tree_hashes(target)
    dead = _dead_pid()
    # A run killed while building, and one killed between the two renames (no target, only its .old copy).
    (tmp_path / f".{target.name}.tmp-{dead}").mkdir()
    (tmp_path / f".{target.name}.tmp-{dead}" / "half.bin").write_bytes(b"half")
    os.replace(target, tmp_path / f".{target.name}.old-{dead}")
    with pytest.raises(RuntimeError), atomic_folder(target):
        raise RuntimeError("fails again")
    assert tree_hashes(target) == before  # the old folder is back in place
    assert leftovers(target) == []


def test_atomic_path_removes_the_temporary_file_of_a_killed_write(tmp_path):
    target = tmp_path / "metrics.json"
    stale = tmp_path / f".metrics.json.tmp-{_dead_pid()}-x1.json"
    stale.write_text('{"half": ')
    in_flight = tmp_path / f".metrics.json.tmp-{os.getpid()}-x2"  # another write of this process: not stale
    in_flight.write_text("{}")
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert not stale.exists() and in_flight.exists()


def test_atomic_folder_refuses_a_file(tmp_path):
    taken = a_file(tmp_path)
    with pytest.raises(InputError, match="is a file; give a folder path"), atomic_folder(taken):
        pytest.fail("must not be entered")
    assert taken.read_text() == "an earlier file that must survive\n"


def test_file_helpers_refuse_a_folder(tmp_path):
    folder = a_folder(tmp_path)
    for call in (lambda: check_file_output(folder), lambda: atomic_path(folder).__enter__()):
        with pytest.raises(InputError, match="is a folder; give a file path"):
            call()
    with pytest.raises(InputError, match="is a folder, expected a file"):
        require_file(folder)
    with pytest.raises(InputError, match="file not found"):
        require_file(tmp_path / "nothing")
    assert require_file(folder / "keep.txt") == folder / "keep.txt"


def _dead_pid() -> int:
    """The id of a process that has exited."""
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --- an output of several files: the items with their textbook and fact sheet, an order with its items ------------


def _loaded(seed: int, sides: bool = True):
    from medtune.data.stage import DataSettings, load_data

    data = load_data(DataSettings(source="synthetic", options={"seed": seed, "n_systems": 2,
                                                               "diseases_per_system": 4}))
    if not sides:
        data.textbook, data.facts = None, None
    return data


def _read_set(items: Path) -> tuple[Any, ...]:
    """The output as its readers see it: the items with the textbook and fact sheet they belong to."""
    from medtune.factsheet import read_factsheet
    from medtune.schema import read_items
    from medtune.textbook import read_textbook

    return tuple(it.model_dump() for it in read_items(items)), read_textbook(items), read_factsheet(items)


def _expected_set(data) -> tuple[Any, ...]:
    return tuple(it.model_dump() for it in data.items), data.textbook, data.facts


def _killed_write(data, items: Path, before: int, after: bool) -> None:
    """``write_data`` in a child process killed (``os._exit``) at the ``before``-th rename, or right after it."""
    from medtune.data.stage import write_data

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        calls = [0]
        real = os.replace

        def replace(src, dst):
            calls[0] += 1
            if calls[0] == before and not after:
                os._exit(9)
            real(src, dst)
            if calls[0] == before and after:
                os._exit(9)

        os.replace = replace
        try:
            write_data(data, items)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


@pytest.mark.parametrize("old_sides", [True, False], ids=["old-with-side-files", "old-items-only"])
def test_data_set_killed_at_every_rename_reads_as_the_old_set_or_the_new_one(tmp_path, old_sides):
    from medtune.data.stage import write_data

    old, new = _loaded(1, sides=old_sides), _loaded(2)
    items = tmp_path / "items.parquet"
    seen = []
    # The renames: the textbook, the fact sheet, the items; killed before each and after the last.
    for before, after in [(1, False), (2, False), (3, False), (3, True)]:
        write_data(old, items)
        _killed_write(new, items, before, after)
        got = _read_set(items)
        assert got in (_expected_set(old), _expected_set(new)), (before, after)
        seen.append("old" if got == _expected_set(old) else "new")
        write_data(old, items)  # the next write puts the kept set back first, then replaces it whole
        assert _read_set(items) == _expected_set(old) and leftovers(textbook_of(items)) == []
    assert seen == ["old", "old", "old", "new"]
    write_data(new, items)
    assert _read_set(items) == _expected_set(new)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def textbook_of(items: Path) -> Path:
    from medtune.textbook import textbook_path

    return textbook_path(items)


def test_a_side_file_that_belongs_to_other_items_is_refused_or_left_unread(tmp_path):
    from medtune.data.stage import write_data
    from medtune.factsheet import factsheet_path, read_factsheet
    from medtune.textbook import read_textbook

    items = tmp_path / "items.parquet"
    write_data(_loaded(1, sides=False), items)  # the items record that they have no side files
    textbook_of(items).write_text("A stray sentence.\n")
    assert read_textbook(items) is None  # left by a killed run that never got its items in
    write_data(_loaded(1), items)
    textbook_of(items).write_text("An edited sentence.\n")
    with pytest.raises(InputError, match=r"items\.textbook\.txt: does not belong to the file beside it"):
        read_textbook(items)
    assert read_factsheet(items) is not None  # its own fact sheet is still read
    factsheet_path(items).write_text('{"format": "medtune.facts/1"}\n')
    with pytest.raises(InputError, match=r"items\.facts\.json: does not belong"):
        read_factsheet(items)


def test_items_without_a_record_read_the_textbook_a_killed_run_kept_aside(tmp_path):
    """Items written before records (or by another writer) cannot check; a backup left means they never got in."""
    from medtune.schema import write_items
    from medtune.textbook import read_textbook, write_textbook

    items = tmp_path / "syn.parquet"
    write_items(_loaded(1).items, items)
    write_textbook(items, ["The old sentence."])
    assert read_textbook(items) == ["The old sentence."]
    backup = tmp_path / f".syn.textbook.txt.old-{_dead_pid()}"
    os.link(textbook_of(items), backup)
    (tmp_path / "new.txt").write_text("The new sentence.\n")
    os.replace(tmp_path / "new.txt", textbook_of(items))  # renamed in, then killed before the items
    assert read_textbook(items) == ["The old sentence."]
    write_textbook(items, ["Written on its own."])  # a direct write owns the file again: the backup goes
    assert read_textbook(items) == ["Written on its own."] and not backup.exists()


def test_order_into_a_folder_replaces_its_pair_and_keeps_other_files(tmp_path, capsys):
    items = tmp_path / "items.parquet"
    assert main(["data", "load", "synthetic", *SMALL, "-o", str(items)]) == 0
    out = tmp_path / "order"
    out.mkdir()
    (out / "order.json").write_text('{"earlier": true}\n')
    (out / "order_items.json").write_text("[]\n")
    before = tree_hashes(out)
    argv = ["order", "build", str(items), "-s", "random", "--seed", "0", "-o", str(out)]
    assert main([*argv, "--difficulty-source", "llm"]) != 0  # fails: no difficulty file
    assert tree_hashes(out) == before and leftovers(out) == []
    capsys.readouterr()
    assert main(argv) == 0
    assert f"→ {out / 'order.json'}" in capsys.readouterr().out
    assert sorted(tree_hashes(out)) == ["order.json", "order_items.json"] and leftovers(out) == []
    assert "earlier" not in (out / "order.json").read_text()
    (out / "notes.txt").write_text("mine")
    assert main([*argv[:-4], "--seed", "1", "-o", str(out)]) == 0
    assert sorted(tree_hashes(out)) == ["notes.txt", "order.json", "order_items.json"]
    assert (out / "notes.txt").read_text() == "mine" and leftovers(out) == []


def test_order_into_the_current_folder_leaves_the_folder_in_place(tmp_path, capsys, monkeypatch):
    """A folder holding only the pair would be swapped whole; the one a shell is in keeps its place."""
    items = tmp_path / "items.parquet"
    assert main(["data", "load", "synthetic", *SMALL, "-o", str(items)]) == 0
    here = tmp_path / "here"
    here.mkdir()
    (here / "order.json").write_text('{"earlier": true}\n')
    (here / "order_items.json").write_text("[]\n")
    inode = here.stat().st_ino
    monkeypatch.chdir(here)
    assert main(["order", "build", str(items), "-s", "random", "--seed", "0", "-o", "."]) == 0
    assert Path.cwd().stat().st_ino == inode == here.stat().st_ino
    assert sorted(p.name for p in here.iterdir()) == ["order.json", "order_items.json"]
    assert "earlier" not in (here / "order.json").read_text()
