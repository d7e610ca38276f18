"""MedQA loader: the real 5- and 4-option test files, and each kind of broken record."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from medtune.data import load
from medtune.errors import InputError
from medtune.schema import MCQItem
from shared_data import shared_path

from .badfiles import break_utf8, medqa_record, truncate_line, write_jsonl

FILES = {5: ("medqa", "test.jsonl"), 4: ("medqa", "4_options", "phrases_no_exclude_test.jsonl")}


@pytest.mark.parametrize("n_options", [5, 4])
def test_real_test_files_load_completely(n_options):
    path = shared_path(*FILES[n_options])
    result = load("medqa", path)
    items = result.items
    assert len(items) == 1273 and not result.skipped
    assert all(isinstance(it, MCQItem) and len(it.options) == n_options for it in items)
    assert {it.split for it in items} == {"test"}
    # SOURCE.md: step1 679 / step2&3 594 (the 4-option file's one "stfep2&3" is read as step2&3)
    assert Counter(it.category for it in items) == {"step1": 679, "step2&3": 594}
    assert items[0].id == "medqa-test-1"
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for it, rec in zip(items, raw, strict=True):
        assert it.options[it.answer] == rec["answer"]
        assert "ABCDE"[it.answer] == rec["answer_idx"]
        assert it.meta["meta_info"] == rec["meta_info"]


def test_both_variants_give_the_same_questions_and_answers():
    five = load("medqa", shared_path(*FILES[5])).items
    four = load("medqa", shared_path(*FILES[4])).items
    assert [it.id for it in five] == [it.id for it in four]
    assert all(a.question == b.question for a, b in zip(five, four, strict=True))
    assert all(a.options[a.answer] == b.options[b.answer] for a, b in zip(five, four, strict=True))
    assert sum(it.meta["meta_info"] == "stfep2&3" for it in four) == 1


def test_split_from_option_or_file_name(tmp_path):
    write_jsonl(tmp_path / "dev.jsonl", [medqa_record(i) for i in range(3)])
    assert {it.split for it in load("medqa", tmp_path / "dev.jsonl").items} == {"dev"}
    assert load("medqa", tmp_path / "dev.jsonl", split="train").items[0].id == "medqa-train-1"
    write_jsonl(tmp_path / "questions.jsonl", [medqa_record(0)])
    with pytest.raises(InputError, match="split"):
        load("medqa", tmp_path / "questions.jsonl")


def _file(tmp_path, n=4):
    return write_jsonl(tmp_path / "test.jsonl", [medqa_record(i, answer=i % 5) for i in range(n)])


def _broken(rec, change):
    rec = json.loads(json.dumps(rec))
    change(rec)
    return rec


BAD_RECORDS = {
    "missing option": (lambda r: r["options"].pop("C"), "options.C", "option C is missing"),
    "letter outside": (lambda r: r.update(answer_idx="F"), "answer_idx", "outside the options"),
    "letter outside 4": (lambda r: (r["options"].pop("E"), r.update(answer_idx="E")), "answer_idx", "outside"),
    "answer text": (lambda r: r.update(answer="not one of them"), "answer", "differs from option"),
    "empty question": (lambda r: r.update(question="   "), "question", "empty"),
    "empty option": (lambda r: r["options"].update(B=""), "options.B", "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_record_names_file_line_and_field(tmp_path, case):
    change, field, fragment = BAD_RECORDS[case]
    records = [medqa_record(i) for i in range(4)]
    records[2] = _broken(records[2], change)
    path = write_jsonl(tmp_path / "test.jsonl", records)
    with pytest.raises(InputError) as info:
        load("medqa", path)
    msg = str(info.value)
    assert str(path) in msg and "line 3" in msg and f"field '{field}'" in msg and fragment in msg
    skipped = load("medqa", path, on_error="skip")
    assert [it.id for it in skipped.items] == ["medqa-test-1", "medqa-test-2", "medqa-test-4"]
    assert [(e.record, e.field) for e in skipped.skipped] == [(3, field)]


def test_truncated_line(tmp_path):
    path = truncate_line(_file(tmp_path), 2)
    with pytest.raises(InputError, match=r"test\.jsonl, line 2: invalid JSON .*truncated"):
        load("medqa", path)
    res = load("medqa", path, on_error="skip")
    assert len(res.items) == 3 and res.skipped[0].record == 2


def test_invalid_utf8(tmp_path):
    path = break_utf8(_file(tmp_path), 4)
    with pytest.raises(InputError, match=r"test\.jsonl, line 4: invalid UTF-8"):
        load("medqa", path)


def test_empty_file(tmp_path):
    (tmp_path / "test.jsonl").write_text("\n  \n")
    with pytest.raises(InputError, match=r"test\.jsonl: file is empty"):
        load("medqa", tmp_path / "test.jsonl")


def test_not_an_object_and_unknown_option(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text('"a string"\n')
    with pytest.raises(InputError, match="line 1: expected a JSON object"):
        load("medqa", path)
    path.write_text('["a list"]\n')
    with pytest.raises(InputError, match=r"line 1: expected JSON lines .*got a JSON array"):
        load("medqa", path)
    with pytest.raises(InputError, match="unknown option"):
        load("medqa", _file(tmp_path), cop_base=1)
