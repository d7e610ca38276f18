"""MMLU loader: the real medical-subject CSVs (counts from SOURCE.md), folder selection, broken CSVs."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from medtune.data import load
from medtune.errors import InputError
from shared_data import shared_path

from .badfiles import break_utf8, write_csv

# SOURCE.md's table: rows per (subject, split); professional_medicine test is held out (not in shared/).
COUNTS = {
    "anatomy": {"dev": 5, "val": 14, "test": 135},
    "clinical_knowledge": {"dev": 5, "val": 29, "test": 265},
    "college_biology": {"dev": 5, "val": 16, "test": 144},
    "college_medicine": {"dev": 5, "val": 22, "test": 173},
    "medical_genetics": {"dev": 5, "val": 11, "test": 100},
    "professional_medicine": {"dev": 5, "val": 31},
}
FILES = [(subject, split, n) for subject, splits in COUNTS.items() for split, n in splits.items()]


@pytest.mark.parametrize(("subject", "split", "n"), FILES)
def test_each_real_file(subject, split, n):
    items = load("mmlu", shared_path("mmlu_medical", split, f"{subject}_{split}.csv")).items
    assert len(items) == n
    assert {(it.category, it.split) for it in items} == {(subject, split)}
    assert all(len(it.options) == 4 for it in items)
    assert items[0].id == f"mmlu-{subject}-{split}-1" and items[-1].meta["row"] == n


def test_real_folder_and_selection():
    folder = shared_path("mmlu_medical")
    items = load("mmlu", folder).items
    assert Counter((it.category, it.split) for it in items) == {
        (subject, split): n for subject, split, n in FILES
    }
    assert not (folder / "test" / "professional_medicine_test.csv").exists()
    val = load("mmlu", folder, split="val", subjects="anatomy,medical_genetics").items
    assert len(val) == 14 + 11
    assert len(load("mmlu", folder, split="dev", subjects="medical").items) == 30
    with pytest.raises(InputError, match=r"no MMLU file for split 'test' for subject.*professional_medicine"):
        load("mmlu", folder, split="test", subjects="medical")


def _rows(n=4):
    return [[f"Question {i}?", f"a{i}", f"b{i}", f"c{i}", f"d{i}", "ABCD"[i % 4]] for i in range(n)]


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        (lambda r: r.pop(3), "columns", "expected 6 columns"),
        (lambda r: r.append("extra"), "columns", "got 7"),
        (lambda r: r.__setitem__(5, "E"), "answer", "outside the options A-D"),
        (lambda r: r.__setitem__(5, "1"), "answer", "expected an answer letter"),
        (lambda r: r.__setitem__(2, " "), "B", "option is empty"),
        (lambda r: r.__setitem__(0, ""), "question", "question is empty"),
    ],
)
def test_bad_row_names_line_and_field(tmp_path, change, field, fragment):
    rows = _rows()
    change(rows[2])
    path = write_csv(tmp_path / "virology_test.csv", rows)
    with pytest.raises(InputError) as info:
        load("mmlu", path)
    msg = str(info.value)
    assert str(path) in msg and "line 3" in msg and f"field '{field}'" in msg and fragment in msg
    res = load("mmlu", path, on_error="skip")
    assert [it.meta["row"] for it in res.items] == [1, 2, 4] and res.skipped[0].record == 3


def test_multiline_cells_keep_their_starting_line(tmp_path):
    rows = _rows(3)
    rows[0][0] = "A question\nspread over\nthree lines?"
    rows[2][5] = "Z"
    path = write_csv(tmp_path / "virology_dev.csv", rows)
    with pytest.raises(InputError, match=r"line 5, field 'answer'"):  # rows start at lines 1, 4, 5
        load("mmlu", path)


def test_broken_files(tmp_path):
    path = write_csv(tmp_path / "virology_val.csv", _rows())
    with pytest.raises(InputError, match=r"virology_val\.csv, line 2: invalid UTF-8"):
        load("mmlu", break_utf8(path, 2))
    (tmp_path / "empty_val.csv").write_text("")
    with pytest.raises(InputError, match="file is empty"):
        load("mmlu", tmp_path / "empty_val.csv")
    write_csv(tmp_path / "virology.csv", _rows())
    with pytest.raises(InputError, match=re.escape("<subject>_<dev|val|test>.csv")):
        load("mmlu", tmp_path / "virology.csv")
    with pytest.raises(InputError, match="no MMLU"):
        load("mmlu", tmp_path, subjects="nope")
