"""LEK loader: the paper's response files (parsing the prompt), the CSV form, and broken inputs."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtune.data import load
from medtune.data.lek import parse_prompt
from medtune.errors import InputError
from shared_data import shared_path

from .badfiles import break_utf8, lek_prompt, lek_record, write_csv, write_lek

FULL = ["Llama-2-7b-chat-hf.json", "Mixtral-8x7B-v0.1.json", "meditron-7b.json"]


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


@pytest.fixture(scope="module")
def real():
    return {name: load("lek", shared_path("lek", name)).items for name in FULL}


@pytest.mark.parametrize("name", FULL)
def test_each_full_response_file_has_the_874_questions(real, name):
    items = real[name]
    assert len(items) == 874
    assert [it.meta["position"] for it in items] == list(range(874))
    assert sorted(it.meta["question_index"] for it in items) == list(range(874))
    assert len({it.id for it in items}) == 874 and all(it.id == f"lek-{it.meta['question_index']}" for it in items)
    # SOURCE.md: gold letters A 156, B 169, C 176, D 199, E 174; position differs from question_index for 826
    assert Counter("ABCDE"[it.answer] for it in items) == {"A": 156, "B": 169, "C": 176, "D": 199, "E": 174}
    assert sum(it.meta["position"] != it.meta["question_index"] for it in items) == 826
    assert all(len(it.options) == 5 and it.split == "train" for it in items)
    assert {it.meta["response_model"] for it in items} == {name.removesuffix(".json")}


def test_parsed_stem_and_options_rebuild_the_prompt(real):
    """Nothing of the question is lost or duplicated: stem + "A) .." .. "E) .." is the prompt's question part."""
    path = shared_path("lek", FULL[0])
    raw = json.loads(path.read_text(encoding="utf-8"))["questions"]
    for it, rec in zip(real[FULL[0]], raw, strict=True):
        body = rec["question"].split("Question:", 1)[1]
        rebuilt = " ".join([it.question, *(f"{k}) {o}" for k, o in zip("ABCDE", it.options, strict=True))])
        assert _norm(body) == _norm(rebuilt), it.id
        assert it.meta["clls"] == rec["clls"] and "ABCDE"[it.answer] == rec["correct_answer"]


def test_the_three_files_hold_the_same_questions_in_the_same_order(real):
    a, b, c = (real[n] for n in FULL)
    key = [(it.id, it.question, it.options, it.answer) for it in a]
    assert key == [(it.id, it.question, it.options, it.answer) for it in b]
    assert key == [(it.id, it.question, it.options, it.answer) for it in c]


def test_positions_key_the_papers_difficulty_table(real):
    with shared_path("oxford_llm_difficulty", "llm_difficulty_lek.csv").open(newline="") as f:
        index = [int(row["Index"]) for row in csv.DictReader(f)]
    assert sorted(index) == sorted(it.meta["position"] for it in real[FULL[0]])


def test_partial_gemma_file():
    items = load("lek", shared_path("lek", "gemma-7b-it.json")).items
    assert len(items) == 10 and sorted(it.meta["question_index"] for it in items) == list(range(10))


# --- parse_prompt -----------------------------------------------------------------------------------------

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789,.;-", min_size=1, max_size=8)
_text = st.lists(_word, min_size=1, max_size=6).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(stem=_text, options=st.lists(_text, min_size=5, max_size=5), tricky=st.integers(0, 4))
def test_property_parse_prompt_inverts_the_prompt_format(stem, options, tricky):
    # an option may itself mention earlier letters in the marker form, as "(A and B) differ" does
    options = list(options)
    options[tricky] = "(A and B) " + options[tricky] if tricky >= 2 else options[tricky]
    got_stem, got_options = parse_prompt(lek_prompt(stem, options))
    assert got_stem == stem and got_options == options


def test_parse_prompt_missing_marker():
    with pytest.raises(InputError, match=r"field 'question': option marker 'D\)' not found"):
        parse_prompt("Question: stem A) a B) b C) c E) e")


# --- generated files: CSV form and broken inputs ----------------------------------------------------------


def test_csv_form(tmp_path):
    rows = [[f"Stem {i}?", *(f"opt {k}{i}" for k in "abcde"), "ABCDE"[i % 5]] for i in range(7)]
    path = write_csv(tmp_path / "lek.csv", rows, header=["prompt", "A", "B", "C", "D", "E", "Answer"])
    items = load("lek", path).items
    assert [it.id for it in items] == [f"lek-pos{i}" for i in range(7)]
    assert [it.answer for it in items] == [i % 5 for i in range(7)]
    assert items[3].options[items[3].answer] == "opt d3" and items[3].meta == {"position": 3}
    rows[4] = rows[4][:-1]
    write_csv(path, rows, header=["prompt", "A", "B", "C", "D", "E", "Answer"])
    with pytest.raises(InputError, match=r"lek\.csv, line 6, field 'columns': row has 6 columns"):
        load("lek", path)
    write_csv(path, rows[:2], header=["prompt", "A", "B", "C", "D", "Answer"])
    with pytest.raises(InputError, match="field 'E': missing column"):
        load("lek", path)


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        (lambda r: r.update(correct_answer="F"), "correct_answer", "outside the options A-E"),
        (lambda r: r.update(correct_answer="AB"), "correct_answer", "expected an answer letter"),
        (lambda r: r.update(question=r["question"].replace("D)  ", "D. ")), "question", "'D)' not found"),
        (lambda r: r.update(question_index=1), "question_index", "duplicate id 'lek-1'"),
        (lambda r: r.pop("question_index"), "question_index", "missing"),
        (lambda r: r.update(question=""), "question", "empty"),
    ],
)
def test_bad_record_names_position_and_field(tmp_path, change, field, fragment):
    recs = [lek_record(i, answer="ABCDE"[i % 5]) for i in range(5)]
    change(recs[3])
    path = write_lek(tmp_path / "model.json", recs)
    with pytest.raises(InputError) as info:
        load("lek", path)
    msg = str(info.value)
    assert str(path) in msg and "record 3" in msg and f"field '{field}'" in msg and fragment in msg
    res = load("lek", path, on_error="skip")
    assert [it.meta["position"] for it in res.items] == [0, 1, 2, 4] and res.skipped[0].record == 3


def test_broken_files(tmp_path):
    path = write_lek(tmp_path / "model.json", [lek_record(i) for i in range(3)])
    text = path.read_text()
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    with pytest.raises(InputError, match=r"cut\.json, line \d+: invalid JSON"):
        load("lek", tmp_path / "cut.json")
    with pytest.raises(InputError, match=r"model\.json, line 5: invalid UTF-8"):
        load("lek", break_utf8(path, 5))
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InputError, match="not a LEK response file"):
        load("lek", tmp_path / "list.json")
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(InputError, match="file is empty"):
        load("lek", tmp_path / "empty.json")
