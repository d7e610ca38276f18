"""PubMedQA loader: the real PQA-L file (MCQ and long-answer forms, official test split) and broken files."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from medtune.data import load
from medtune.errors import InputError
from medtune.schema import MCQItem, QAItem
from shared_data import shared_path

from .badfiles import break_utf8, pubmedqa_record


@pytest.fixture(scope="module")
def raw():
    path = shared_path("pubmedqa", "ori_pqal.json")
    truth = json.loads(shared_path("pubmedqa", "test_ground_truth.json").read_text(encoding="utf-8"))
    return path, json.loads(path.read_text(encoding="utf-8")), truth


def test_real_mcq_form(raw):
    path, data, truth = raw
    items = load("pubmedqa", path).items
    assert len(items) == 1000 and all(isinstance(it, MCQItem) for it in items)
    assert Counter(it.options[it.answer] for it in items) == {"yes": 552, "no": 338, "maybe": 110}
    assert Counter(it.split for it in items) == {"test": 500, "train": 500}
    assert {it.meta["pmid"] for it in items if it.split == "test"} == set(truth)
    for it in items:
        rec = data[it.meta["pmid"]]
        assert it.options == ["yes", "no", "maybe"] and it.options[it.answer] == rec["final_decision"]
        # the contexts reach the prompt: each one is in the question text, which ends with the question
        assert it.question.startswith("Context: ") and it.question.endswith("Question: " + rec["QUESTION"].strip())
        assert all(ctx.strip() in it.question for ctx in rec["CONTEXTS"])
        assert it.meta["contexts"] == rec["CONTEXTS"] and it.explanation == rec["LONG_ANSWER"]


def test_real_qa_form_and_split_selection(raw):
    path, data, _ = raw
    items = load("pubmedqa", path.parent, form="qa", contexts="meta", split="test").items
    assert len(items) == 500 and all(isinstance(it, QAItem) for it in items)
    for it in items:
        rec = data[it.meta["pmid"]]
        assert it.question == rec["QUESTION"] and it.answer == rec["LONG_ANSWER"]
        assert it.meta["final_decision"] == rec["final_decision"]


def _write(tmp_path, records, truth=None):
    path = tmp_path / "ori_pqal.json"
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    if truth is not None:
        (tmp_path / "test_ground_truth.json").write_text(json.dumps(truth), encoding="utf-8")
    return path


def test_without_ground_truth_every_item_takes_the_split(tmp_path):
    path = _write(tmp_path, {str(100 + i): pubmedqa_record(i, d) for i, d in enumerate(["yes", "no", "maybe"])})
    res = load("pubmedqa", path)
    assert [it.split for it in res.items] == ["train"] * 3 and res.extras["ground_truth"] is None
    assert [it.answer for it in res.items] == [0, 1, 2]
    assert {it.split for it in load("pubmedqa", path, split="dev").items} == {"dev"}
    assert res.items[0].question.splitlines() == [
        "Context: (BACKGROUND) Background sentence 0.", "(RESULTS) Result sentence 0.",
        "Question: Does generated factor 0 matter?",
    ]


def test_ground_truth_given_as_an_option(tmp_path):
    path = _write(tmp_path, {str(100 + i): pubmedqa_record(i) for i in range(4)})
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"101": "yes", "103": "yes"}))
    items = load("pubmedqa", path, ground_truth=gt).items
    assert [it.split for it in items] == ["train", "test", "train", "test"]
    with pytest.raises(InputError, match="ground-truth file not found"):
        load("pubmedqa", path, ground_truth=tmp_path / "nope.json")


def test_ground_truth_disagreeing_or_unknown(tmp_path):
    path = _write(tmp_path, {str(100 + i): pubmedqa_record(i) for i in range(3)}, truth={"101": "no"})
    with pytest.raises(InputError, match=r"ori_pqal\.json, PMID 101, field 'final_decision': .*disagrees"):
        load("pubmedqa", path)
    assert [it.meta["pmid"] for it in load("pubmedqa", path, on_error="skip").items] == ["100", "102"]
    _write(tmp_path, {str(100 + i): pubmedqa_record(i) for i in range(3)}, truth={"999": "no"})
    with pytest.raises(InputError, match=r"test_ground_truth\.json, PMID 999: PMID is not in"):
        load("pubmedqa", path)


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        (lambda r: r.update(final_decision="perhaps"), "final_decision", "expected one of yes, no, maybe"),
        (lambda r: r.update(QUESTION=" "), "QUESTION", "empty"),
        (lambda r: r.pop("CONTEXTS"), "CONTEXTS", "missing"),
        (lambda r: r.update(CONTEXTS="text"), "CONTEXTS", "expected a list of strings"),
    ],
)
def test_bad_record_names_pmid_and_field(tmp_path, change, field, fragment):
    records = {str(100 + i): pubmedqa_record(i) for i in range(3)}
    change(records["101"])
    path = _write(tmp_path, records)
    with pytest.raises(InputError) as info:
        load("pubmedqa", path)
    msg = str(info.value)
    assert str(path) in msg and "PMID 101" in msg and f"field '{field}'" in msg and fragment in msg
    res = load("pubmedqa", path, on_error="skip")
    assert len(res.items) == 2 and res.skipped[0].record == "101"


def test_qa_form_empty_long_answer(tmp_path):
    records = {str(100 + i): pubmedqa_record(i) for i in range(2)}
    records["100"]["LONG_ANSWER"] = ""
    with pytest.raises(InputError, match=r"PMID 100, field 'LONG_ANSWER': empty"):
        load("pubmedqa", _write(tmp_path, records), form="qa")


def test_duplicate_pmid_and_broken_files(tmp_path):
    text = json.dumps({"100": pubmedqa_record(0)})
    dup = "{" + text[1:-1] + ", " + text[1:-1] + "}"
    (tmp_path / "ori_pqal.json").write_text(dup)
    with pytest.raises(InputError, match=r"field '100': duplicate key '100'"):
        load("pubmedqa", tmp_path / "ori_pqal.json")
    path = _write(tmp_path, {str(100 + i): pubmedqa_record(i) for i in range(3)})
    full = path.read_text()
    path.write_text(full[: len(full) // 2])
    with pytest.raises(InputError, match=r"ori_pqal\.json, line \d+: invalid JSON"):
        load("pubmedqa", path)
    path.write_text(full)
    with pytest.raises(InputError, match=r"line 3: invalid UTF-8"):
        load("pubmedqa", break_utf8(path, 3))
    path.write_text("  ")
    with pytest.raises(InputError, match="file is empty"):
        load("pubmedqa", path)
