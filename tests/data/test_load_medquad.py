"""MedQuAD loader: the two real collections (729 + 270 QA pairs) and non-MedQuAD / broken XML."""

from __future__ import annotations

from collections import Counter

import pytest

from medtune.data import load
from medtune.errors import InputError
from medtune.schema import QAItem
from shared_data import shared_path

from .badfiles import INVALID_UTF8, medquad_xml

COLLECTIONS = {"1_CancerGov_QA": ("CancerGov", 729, 116), "9_CDC_QA": ("CDC", 270, 59)}


@pytest.mark.parametrize("folder", sorted(COLLECTIONS))
def test_each_real_collection(folder):
    name, n_pairs, n_files = COLLECTIONS[folder]
    res = load("medquad", shared_path("medquad", folder))
    items = res.items
    assert len(items) == n_pairs and not res.skipped
    assert all(isinstance(it, QAItem) and it.category == name and it.split == "train" for it in items)
    assert len({it.meta["file"] for it in items}) == n_files
    assert all(it.meta["qtype"] and it.meta["collection"] == name for it in items)
    assert sum(it.meta["focus"] is not None for it in items) > 0.9 * n_pairs  # a few CDC documents have no Focus
    assert all(it.answer.strip() == it.answer and it.question.strip() for it in items)


def test_real_folder_of_collections_and_categories():
    root = shared_path("medquad")
    items = load("medquad", root).items
    assert Counter(it.category for it in items) == {"CancerGov": 729, "CDC": 270}
    assert len({it.id for it in items}) == 999  # although the source repeats qids across files
    assert len({(it.meta["collection"], it.meta["qid"]) for it in items}) < 999
    groups = Counter(it.category for it in load("medquad", root, category="semantic_group").items)
    assert groups["CDC"] == 270 and sum(groups.values()) == 999 and len(groups) >= 2
    one = sorted((root / "9_CDC_QA").glob("*.xml"))[0]
    single = load("medquad", one).items
    assert single and {it.meta["file"] for it in single} == {one.stem}


def _doc(tmp_path, name="0000001.xml", **kw):
    folder = tmp_path / "3_Generated_QA"
    folder.mkdir(exist_ok=True)
    pairs = kw.pop("pairs", [("information", "What is X ?", "X is a thing."), ("treatment", "How to treat X ?",
                                                                                 "Rest.")])
    path = folder / name
    path.write_text(medquad_xml(name.removesuffix(".xml"), pairs, **kw), encoding="utf-8")
    return path


def test_generated_document_fields(tmp_path):
    path = _doc(tmp_path, root="DiseaseFile", group="Disorders")
    items = load("medquad", path, split="test").items
    assert [it.id for it in items] == ["medquad-Generated-0000001-1", "medquad-Generated-0000001-2"]
    assert [it.meta["qtype"] for it in items] == ["information", "treatment"]
    assert items[1].answer == "Rest." and items[0].split == "test" and items[0].category == "Generated"
    assert load("medquad", path, category="semantic_group").items[0].category == "Disorders"


def test_empty_answer_raises_or_is_skipped_and_reported(tmp_path):
    _doc(tmp_path)
    path = _doc(tmp_path, "0000002.xml", pairs=[("information", "What is Y ?", "Y is."), ("causes", "Why Y ?", "  ")])
    with pytest.raises(InputError) as info:
        load("medquad", tmp_path)
    msg = str(info.value)
    assert str(path) in msg and "QAPair 2" in msg and "field 'Answer'" in msg and "answer is empty" in msg
    res = load("medquad", tmp_path, on_error="skip")
    assert len(res.items) == 3 and [(e.file, e.record) for e in res.skipped] == [(str(path), "2")]


def test_not_medquad_and_broken_xml(tmp_path):
    other = tmp_path / "feed.xml"
    other.write_text('<?xml version="1.0"?><rss><channel/></rss>')
    with pytest.raises(InputError, match=r"feed\.xml: not a MedQuAD document: root element <rss>"):
        load("medquad", other)
    path = _doc(tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(InputError, match=r"0000001\.xml, line \d+: malformed XML"):
        load("medquad", path)
    path.write_bytes(text.encode().replace(b"X is a thing.", b"X " + INVALID_UTF8))
    line = text[: text.index("X is a thing.")].count("\n") + 1
    with pytest.raises(InputError, match=rf"0000001\.xml, line {line}: invalid UTF-8"):
        load("medquad", path)
    path.write_text("")
    with pytest.raises(InputError, match="file is empty"):
        load("medquad", path)
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(InputError, match=r"no \.xml files"):
        load("medquad", empty)


def test_duplicate_pid_in_a_document(tmp_path):
    path = _doc(tmp_path)
    path.write_text(path.read_text().replace('<QAPair pid="2">', '<QAPair pid="1">'))
    with pytest.raises(InputError, match=r"0000001\.xml, QAPair 1, field 'pid': duplicate id .*first seen at"):
        load("medquad", path)
    res = load("medquad", path, on_error="skip")
    assert len(res.items) == 1 and res.skipped[0].field == "pid"
