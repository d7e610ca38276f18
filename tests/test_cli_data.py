"""``medtune data``: load / describe / prepare / leakage / sources through the real CLI entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medtune.cli import main
from medtune.schema import MCQItem, read_items, write_items


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("syn") / "syn.parquet"
    assert main(["data", "load", "synthetic", "--seed", "3", "--option", "n_systems=2", "-o", str(path)]) == 0
    return path


def _jsonl(path: Path, rows: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    return path


ROWS = [{"q": f"Which organ filters blood number {i}?", "a": "Kidney", "b": "Heart", "c": "Lung", "ans": "A",
         "cat": "renal" if i % 2 else "cardio"} for i in range(5)]
TABULAR_ARGS = ["--question-col", "q", "--options-cols", "a,b,c", "--answer-col", "ans", "--answer-format", "letter",
                "--category-col", "cat"]


def test_load_synthetic_writes_items_and_textbook(synthetic_file, capsys):
    items = read_items(synthetic_file)
    assert {it.category for it in items} == {"cardiovascular", "respiratory"}  # --option n_systems=2 reached it
    assert all(it.meta["generator_seed"] == 3 for it in items)
    book = synthetic_file.with_name("syn.textbook.txt").read_text(encoding="utf-8").splitlines()
    assert len(book) > 300 and all(line.endswith(".") for line in book)


def test_load_synthetic_split_and_output_message(tmp_path, capsys):
    out = tmp_path / "test-only.parquet"
    code, stdout, _ = run(capsys, "data", "load", "synthetic", "--split", "test", "-o", out)
    assert code == 0 and "test=432" in stdout and "train" not in stdout.split("(")[1].split(")")[0]
    assert {it.split for it in read_items(out)} == {"test"}


def test_describe_prints_all_tables(synthetic_file, capsys):
    code, out, _ = run(capsys, "data", "describe", synthetic_file)
    assert code == 0
    for title in ("Items", "Categories", "Answer position", "Options per question", "Human difficulty", "Lengths"):
        assert title in out
    assert "cardiovascular" in out and "medium" in out and "median" in out


def test_load_tabular_with_column_options(tmp_path, capsys):
    src = _jsonl(tmp_path / "quiz.jsonl", ROWS)
    out = tmp_path / "quiz.parquet"
    code, _, err = run(capsys, "data", "load", "tabular", src, "-o", out, *TABULAR_ARGS)
    assert code == 0, err
    items = read_items(out)
    assert len(items) == 5 and items[0].options == ["Kidney", "Heart", "Lung"] and items[0].answer == 0
    assert {it.category for it in items} == {"renal", "cardio"}


def test_truncated_json_line_fails_cleanly_in_a_real_process(tmp_path):
    src = _jsonl(tmp_path / "quiz.jsonl", ROWS, tail='{"q": "Which organ pumps blo')
    out = tmp_path / "never.parquet"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", "from medtune.cli import run; run()"]
    proc = subprocess.run([*cmd, "data", "load", "tabular", str(src), "-o", str(out),
                           *TABULAR_ARGS], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert str(src) in lines[0] and "line 6" in lines[0] and "JSON" in lines[0]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [src]  # no temporary file left behind either


def test_on_error_skip_reports_each_skipped_record(tmp_path, capsys):
    rows = [*ROWS[:2], {**ROWS[2], "ans": "Z"}, ROWS[3], {**ROWS[4], "q": ""}]
    src = _jsonl(tmp_path / "quiz.jsonl", rows)
    out = tmp_path / "quiz.parquet"
    code, _, err = run(capsys, "data", "load", "tabular", src, "-o", out, *TABULAR_ARGS)
    assert code == 2 and "line 3" in err and not out.exists()
    code, stdout, err = run(capsys, "data", "load", "tabular", src, "-o", out, "--on-error", "skip", *TABULAR_ARGS)
    assert code == 0
    skipped = [ln for ln in err.splitlines() if ln.startswith("skipped:")]
    assert len(skipped) == 2 and "line 3" in skipped[0] and "line 5" in skipped[1]
    assert len(read_items(out)) == 3 and "skipped 2" in stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "load", "nosuchsource", "-o", "{tmp}/x.parquet"], "unknown data source 'nosuchsource'"),
        (["data", "load", "tabular", "{tmp}/missing.jsonl", "-o", "{tmp}/x.parquet"], "not found"),
        (["data", "load", "synthetic", "--option", "n_systems", "-o", "{tmp}/x.parquet"], "KEY=VALUE"),
        (["data", "load", "synthetic", "--option", "n_systems=99", "-o", "{tmp}/x.parquet"], "n_systems"),
        (["data", "describe", "{tmp}/missing.parquet"], "file not found"),
    ],
)
def test_bad_input_exit_2_and_no_output(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and message in err
    assert not (tmp_path / "x.parquet").exists()


def test_prepare_command(tmp_path, capsys):
    items = [MCQItem(id=f"m{i}", question=f"Which muscle is supplied by nerve number {i} of the arm?",
                     options=["Biceps", "Deltoid", "Triceps", "Brachialis"], answer=i % 4, source="medmcqa",
                     split="train" if i < 8 else "test", category="Anatomy",
                     explanation=f"Ans. is 'a' i.e., Biceps {'detail ' * i}",
                     meta={"choice_type": "multi" if i == 0 else "single"}) for i in range(10)]
    items.append(items[3].model_copy(update={"id": "copy"}))
    src = write_items(items, tmp_path / "in.parquet")
    out, report = tmp_path / "out.parquet", tmp_path / "report.json"
    code, stdout, err = run(capsys, "data", "prepare", src, "-o", out, "--where", "split == 'train'", "--select", "3",
                            "--select-by", "longest", "--report", report)
    assert code == 0, err
    kept = read_items(out)
    assert [it.id for it in kept] == ["m5", "m6", "m7"]
    assert all(not it.explanation.startswith("Ans") for it in kept)
    rep = json.loads(report.read_text())
    assert rep["removed_ids"]["single answer"] == ["m0"] and rep["removed_ids"]["deduplicate"] == ["copy"]
    assert "Removed duplicates" in stdout and "copy" in stdout
    code, _, err = run(capsys, "data", "prepare", src, "-o", tmp_path / "bad.parquet", "--where", "open('x')")
    assert code == 2 and "unsupported syntax" in err and not (tmp_path / "bad.parquet").exists()


def test_leakage_command(synthetic_file, tmp_path, capsys):
    items = read_items(synthetic_file)
    train = [it for it in items if it.split == "train"]
    test = [*[it for it in items if it.split == "test"][:20], train[5].model_copy(update={"id": "leak"})]
    write_items(train, tmp_path / "train.parquet")
    write_items(test, tmp_path / "test.parquet")
    js = tmp_path / "leak.json"
    code, out, _ = run(capsys, "data", "leakage", tmp_path / "train.parquet", tmp_path / "test.parquet", "--json", js)
    assert code == 0 and "leak" in out and train[5].id in out
    rep = json.loads(js.read_text())
    assert rep["n_test_leaked"] == 1 and rep["pairs"] == [
        {"train_id": train[5].id, "test_id": "leak", "kind": "exact", "similarity": 1.0}]
    code, _, _ = run(capsys, "data", "leakage", tmp_path / "train.parquet", tmp_path / "test.parquet", "--fail-on-leak")
    assert code == 1
    # one file, two splits
    code, out, _ = run(capsys, "data", "leakage", synthetic_file, synthetic_file, "--train-split", "train",
                       "--test-split", "test", "--fail-on-leak")
    assert code == 0 and "0.0%" in out


def test_sources_lists_loaders(capsys):
    code, out, _ = run(capsys, "data", "sources")
    assert code == 0
    for name in ("synthetic", "medqa", "medmcqa", "tabular"):
        assert name in out


@pytest.mark.parametrize("cmd", [[], ["load"], ["describe"], ["prepare"], ["leakage"], ["sources"]])
def test_help_for_every_command(capsys, cmd):
    code, out, _ = run(capsys, "data", *cmd, "--help")
    assert code == 0 and "Usage" in out


def test_describe_free_text_items(tmp_path, capsys):
    from medtune.schema import QAItem

    items = [QAItem(id=f"qa{i}", question=f"What is condition {i}?", answer="A long answer. " * (i + 1),
                    source="medquad", split="train", category="CDC" if i % 2 else "GARD") for i in range(6)]
    path = write_items(items, tmp_path / "qa.parquet")
    code, out, _ = run(capsys, "data", "describe", path)
    assert code == 0 and "answer" in out and "GARD" in out
    assert "Answer position" not in out and "Human difficulty" not in out


def test_load_synthetic_says_how_many_of_each_split(tmp_path, capsys):
    out = tmp_path / "syn.parquet"
    code, stdout, _ = run(capsys, "data", "load", "synthetic", "--option", "n_systems=2", "-o", out)
    items = read_items(out)
    n_train, n_test = sum(it.split == "train" for it in items), sum(it.split == "test" for it in items)
    assert code == 0 and n_train and n_test
    assert f"wrote {len(items)} items to {out} (2 splits in one file: train={n_train}, test={n_test})" in stdout


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("flag", ["--category-col", "--id-col"])
def test_load_tabular_mapped_column_that_does_not_exist(tmp_path, capsys, suffix, flag):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / f"quiz.{suffix}"
    if suffix == "jsonl":
        _jsonl(src, ROWS)
    elif suffix == "parquet":
        pq.write_table(pa.Table.from_pylist(ROWS), src)
    else:
        src.write_text("q,a,b,c,ans,cat\n" + "".join(f"{r['q']},{r['a']},{r['b']},{r['c']},{r['ans']},{r['cat']}\n"
                                                     for r in ROWS), encoding="utf-8")
    out = tmp_path / "quiz.parquet.out"
    args = TABULAR_ARGS[:-2]  # without --category-col cat
    code, _, err = run(capsys, "data", "load", "tabular", src, "-o", out, *args, flag, "subject")
    assert code == 2 and not out.exists()
    assert str(src) in err and "field 'subject'" in err and "column(s) subject not in the" in err
    assert flag.removeprefix("--").replace("-", "_") in err  # names the option that mapped it


def test_load_split_names_files_whose_name_does_not_say_it(tmp_path, capsys):
    from data.badfiles import medqa_record, write_jsonl

    src = write_jsonl(tmp_path / "questions.jsonl", [medqa_record(i) for i in range(3)])
    code, _, err = run(capsys, "data", "load", "medqa", src, "-o", tmp_path / "x.parquet")
    assert code == 2 and "pass split=" in err
    code, stdout, _ = run(capsys, "data", "load", "medqa", src, "--split", "dev", "-o", tmp_path / "x.parquet")
    assert code == 0 and "(dev=3)" in stdout


def test_skipped_messages_are_printed_verbatim(tmp_path, capsys):
    src = _jsonl(tmp_path / "quiz.jsonl", [*ROWS[:2], {**ROWS[2], "ans": "[b]"}])
    code, _, err = run(capsys, "data", "load", "tabular", src, "-o", tmp_path / "q.parquet", "--on-error", "skip",
                       *TABULAR_ARGS)
    assert code == 0 and "got '[b]'" in err  # the file's text is not read as console markup
