"""The free-text synthetic task: sizes, determinism, answers made of textbook sentences, the split, the fact sheet
beside the items."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtune.cli import main
from medtune.data import DataSettings, load, run_data
from medtune.data.synthetic_qa import (
    QUESTION_TEMPLATES,
    SyntheticQADataset,
    fact_value,
    generate_synthetic_qa,
    n_phrasings,
)
from medtune.data.synthetic_questions import generate_synthetic
from medtune.data.synthetic_world import knowledge_base_facts
from medtune.errors import InputError
from medtune.factcheck import FactMatcher, fact_scores
from medtune.factsheet import factsheet_path, read_factsheet
from medtune.schema import read_items, write_items
from medtune.textbook import read_textbook


@pytest.fixture(scope="module")
def default() -> SyntheticQADataset:
    return generate_synthetic_qa(seed=0)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _word(text: str, phrase: str) -> int:
    return len(re.findall(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text))


# ---- sizes and fields


def test_default_sizes_match_docstring(default):
    assert Counter(it.split for it in default.items) == {"train": 384, "test": 144}
    assert Counter((it.split, it.meta["heldout"]) for it in default.items) == {
        ("train", False): 384, ("test", False): 72, ("test", True): 72}
    assert n_phrasings("train") == 17 and n_phrasings("test") == 10
    assert len({it.id for it in default.items}) == len(default.items)
    kb = default.knowledge_base
    assert {it.category for it in default.items} == set(kb.systems)
    for it in default.items:
        d = kb.by_name(it.meta["disease"])
        assert it.kind == "qa" and it.source == "synthetic-qa" and it.category == d.system
        assert it.meta["heldout"] == d.heldout
        assert set(it.meta) == {"disease", "heldout", "relations", "facts", "template", "generator_seed"}
        assert 2 <= len(it.meta["relations"]) <= 4
        assert [f["relation"] for f in it.meta["facts"]] == it.meta["relations"]
        assert all(set(f) == {"relation", "value", "text", "question"} for f in it.meta["facts"])
    # the relation sets are balanced: every trained disease is asked about each combination
    per_disease = Counter(tuple(it.meta["relations"]) for it in default.items if it.split == "train")
    assert set(per_disease) == set(QUESTION_TEMPLATES)


def test_shares_the_knowledge_base_and_textbook_of_the_mcq_set(default):
    mcq = generate_synthetic(seed=0)
    assert default.knowledge_base == mcq.knowledge_base
    assert default.textbook == mcq.textbook
    assert default.facts == knowledge_base_facts(mcq.knowledge_base)


def test_same_seed_gives_byte_identical_files(tmp_path):
    hashes = []
    for run, seed in (("a", 7), ("b", 7), ("c", 8)):
        ds = generate_synthetic_qa(seed=seed, n_systems=3)
        hashes.append(_sha(write_items(ds.items, tmp_path / f"{run}.parquet")))
    assert hashes[0] == hashes[1] != hashes[2]


# ---- answers


def test_every_reference_sentence_is_one_textbook_sentence_stating_one_fact(default):
    book = set(default.textbook)
    kb = default.knowledge_base
    matcher = FactMatcher(default.facts)
    for it in default.items:
        d = kb.by_name(it.meta["disease"])
        facts = it.meta["facts"]
        assert it.answer == " ".join(f["text"] for f in facts)
        for f in facts:
            assert f["text"] in book, f["text"]
            assert f["value"] == fact_value(d, f["relation"])
            assert _word(f["text"], f["value"]) == 1  # so a revision can swap the value
            own = set(d.symptoms) if f["relation"] == "symptoms" else {f["value"]}
            assert matcher.mentioned(f["text"]) == own  # exactly its value, nothing else of the sheet
            assert d.name in f["question"] and f["question"].endswith("?")
        scores = fact_scores(it.answer, it, default.facts)
        assert scores["factual_precision"] == 1.0 and scores["completeness"] == 1.0
        assert scores["n_reference"] == len(facts) and scores["wrong"] == scores["missing"] == []


# ---- the split


def check_split(ds: SyntheticQADataset) -> None:
    kb = ds.knowledge_base
    heldout = [d for d in kb.diseases if d.heldout]
    heldout_words = {e for d in heldout for e in (d.name, d.drug, d.test, d.cause)}
    train = [it for it in ds.items if it.split == "train"]
    test = [it for it in ds.items if it.split == "test"]
    for it in train:
        assert not it.meta["heldout"]
        text = " ".join([it.question, it.answer])
        assert not [e for e in heldout_words if _word(text, e)], it.question
    assert {it.meta["disease"] for it in test} == {d.name for d in kb.diseases}
    # test phrasings are never train phrasings, by template id and by the question with its disease blanked
    assert not ({it.meta["template"] for it in train} & {it.meta["template"] for it in test})
    frames = {it.question.replace(it.meta["disease"], "{D}") for it in train}
    assert not [it.question for it in test if it.question.replace(it.meta["disease"], "{D}") in frames]
    # within a split a disease never gets the same question twice
    keys = Counter((it.split, it.question) for it in ds.items)
    assert max(keys.values()) == 1


def test_split_invariants_default(default):
    check_split(default)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_systems=st.integers(1, 3), per_system=st.integers(4, 8),
       train_k=st.integers(1, 17), test_k=st.integers(1, 10))
def test_split_invariants_hold_for_any_seed_and_size(seed, n_systems, per_system, train_k, test_k):
    ds = generate_synthetic_qa(seed, n_systems, per_system, train_per_disease=train_k, test_per_disease=test_k)
    check_split(ds)
    trained = sum(not d.heldout for d in ds.knowledge_base.diseases)
    assert Counter(it.split for it in ds.items) == {"train": trained * train_k,
                                                   "test": n_systems * per_system * test_k}
    book = set(ds.textbook)
    assert all(f["text"] in book for it in ds.items for f in it.meta["facts"])


def test_bad_sizes_and_options_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="train_per_disease must be between 0 and 17"):
        generate_synthetic_qa(train_per_disease=18)
    with pytest.raises(InputError, match="test_per_disease"):
        generate_synthetic_qa(test_per_disease=-1)
    with pytest.raises(InputError, match="n_systems"):
        generate_synthetic_qa(n_systems=0)
    with pytest.raises(InputError, match=r"unknown option\(s\) for synthetic-qa: train_per_level"):
        load("synthetic-qa", None, train_per_level=3)
    with pytest.raises(InputError, match="no path"):
        load("synthetic-qa", tmp_path)
    with pytest.raises(InputError, match="splits 'train' and 'test'"):
        load("synthetic-qa", None, split="dev")


# ---- loader, data stage, CLI


def test_loaders_return_textbook_and_fact_sheet():
    qa = load("synthetic-qa", None, seed=5, n_systems=2, split="test")
    ds = generate_synthetic_qa(seed=5, n_systems=2)
    assert qa.items == [it for it in ds.items if it.split == "test"]
    assert qa.extras["textbook"] == ds.textbook and qa.extras["facts"] == ds.facts
    mcq = load("synthetic", None, seed=5, n_systems=2)
    assert mcq.extras["facts"] == ds.facts and mcq.extras["textbook"] == ds.textbook


def test_data_stage_writes_items_textbook_and_fact_sheet(tmp_path):
    settings = DataSettings(source="synthetic-qa", options={"seed": 2, "n_systems": 2, "train_per_disease": 4})
    summary = run_data(settings, tmp_path / "data")
    items_path = tmp_path / "data" / "items.parquet"
    ds = generate_synthetic_qa(seed=2, n_systems=2, train_per_disease=4)
    assert summary["splits"] == {"train": 32, "test": 48}
    assert read_items(items_path) == ds.items  # meta.facts survives the Parquet round trip
    assert read_textbook(items_path) == ds.textbook
    assert factsheet_path(items_path) == tmp_path / "data" / "items.facts.json"
    assert read_factsheet(items_path) == ds.facts
    assert json.loads(factsheet_path(items_path).read_text())["format"] == "medtune.facts/1"


def test_cli_data_load_writes_the_fact_sheet(tmp_path, capsys):
    out = tmp_path / "qa.parquet"
    assert main(["data", "load", "synthetic-qa", "--seed", "1", "--option", "n_systems=1", "-o", str(out)]) == 0
    assert "wrote 88 items" in capsys.readouterr().out  # 4 trained diseases x 16 + 8 x 3
    sheet = read_factsheet(out)
    assert sheet is not None and set(sheet.subjects) == {it.meta["disease"] for it in read_items(out)}
    assert (tmp_path / "qa.textbook.txt").exists()
