"""USMLE questions the published files leave unanswerable (choices only in a figure, a key beyond the options):
skipped and reported by default, so the published folder loads; ``strict`` stops at them."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtune.cli import main
from medtune.data import load
from medtune.errors import InputError
from medtune.schema import read_items

from .test_load_usmle import record, write_json


@pytest.fixture
def published(tmp_path: Path) -> Path:
    """Step files in the published shape, with one question of each unanswerable kind."""
    folder = tmp_path / "usmle"
    figure = {**record(2), "options": {k: "" for k in "ABCDE"}}
    write_json(folder / "step1.json", [record(1), figure, record(3)])
    write_json(folder / "step1_solutions.json", {"1": "A", "2": "C", "3": "B"})
    write_json(folder / "step2.json", [record(1, 4), record(2, 4)])
    write_json(folder / "step2_solutions.json", {"1": "D", "2": "E"})  # question 2 has options A-D only
    return folder


def test_skipped_by_default_each_named_with_file_and_record(published: Path) -> None:
    res = load("usmle", published)
    assert [it.id for it in res.items] == ["usmle-step1-0001", "usmle-step1-0003", "usmle-step2-0001"]
    assert res.extras["unanswerable"] == 2
    assert [(Path(e.file).name, e.record, e.field) for e in res.skipped] == [
        ("step1.json", 2, "options"), ("step2.json", 2, "answer")]
    assert "every option is empty" in str(res.skipped[0])
    assert "'E' is not among the options A-D (step2_solutions.json's answer of question 2)" in str(res.skipped[1])


@pytest.mark.parametrize(("step", "fragment"), [
    (1, r"step1\.json, record 2, field 'options': every option is empty"),
    (2, r"step2\.json, record 2, field 'answer': answer letter 'E' is not among the options A-D"),
])
def test_strict_stops_at_the_first(published: Path, step: int, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        load("usmle", published, step=step, strict=True)
    with pytest.raises(InputError, match="strict must be true or false"):
        load("usmle", published, strict="yes")


def test_an_answerable_folder_skips_nothing(tmp_path: Path) -> None:
    write_json(tmp_path / "step1.json", [record(1), record(2)])
    write_json(tmp_path / "step1_solutions.json", {"1": "A", "2": "E"})
    res = load("usmle", tmp_path / "step1.json")
    assert len(res.items) == 2 and res.skipped == [] and res.extras["unanswerable"] == 0


def test_one_empty_option_is_still_an_error(tmp_path: Path) -> None:
    path = write_json(tmp_path / "step1.json", [{**record(1, answer="A"), "options": {"A": "x", "B": ""}}])
    with pytest.raises(InputError, match=r"field 'options\.B': option is empty"):
        load("usmle", path)


def test_data_load_command_warns_per_question_and_counts(published: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "usmle.parquet"
    code = main(["data", "load", "usmle", str(published), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warnings = [line for line in captured.err.splitlines() if line.startswith("skipped:")]
    assert len(warnings) == 2
    assert "step1.json, record 2" in warnings[0] and "step2.json, record 2" in warnings[1]
    assert "skipped 2" in captured.out
    assert len(read_items(out)) == 3
    assert main(["data", "load", "usmle", str(published), "-o", str(out), "--option", "strict=true"]) == 2
    assert "every option is empty" in capsys.readouterr().err
