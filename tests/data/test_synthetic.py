"""The synthetic generator: sizes, determinism, answerability from the textbook, and the split's guarantees."""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from itertools import combinations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtune.data import load
from medtune.data.synthetic_questions import SyntheticDataset, generate_synthetic, unanswerable_items
from medtune.data.synthetic_world import _SYSTEMS, REAL_NAME_BLOCKLIST
from medtune.errors import InputError
from medtune.schema import write_items


@pytest.fixture(scope="module")
def default() -> SyntheticDataset:
    return generate_synthetic(seed=0)


def _words(sentences):
    return {w for s in sentences for w in re.findall(r"[\w-]+", s.lower())}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- sizes


def test_default_sizes_match_docstring(default):
    items = default.items
    split = Counter(it.split for it in items)
    assert split == {"train": 576, "test": 432}
    assert sum(it.meta["heldout"] for it in items) == 216
    per_level = Counter((it.split, it.human_difficulty) for it in items)
    assert per_level == {("train", lvl): 192 for lvl in ("easy", "medium", "hard")} | {
        ("test", lvl): 144 for lvl in ("easy", "medium", "hard")}
    assert len(default.knowledge_base.diseases) == 48
    assert Counter(it.category for it in items).keys() == set(default.knowledge_base.systems)
    # ~1,100 sentences and a small word vocabulary (what a 0.6 M-parameter model can learn in minutes)
    assert 1000 <= len(default.textbook) <= 1250
    assert 300 <= len(_words(default.textbook)) <= 400
    assert len(set(default.textbook)) == len(default.textbook)


def test_item_fields(default):
    for it in default.items:
        assert it.source == "synthetic"
        assert it.human_difficulty in ("easy", "medium", "hard")
        assert len(it.options) == 4 and len(set(it.options)) == 4
        assert it.meta["relation"] in ({"diagnosis"} if it.human_difficulty == "medium" else {"drug", "test", "cause"})
        assert (it.meta["symptoms"] is None) == (it.human_difficulty == "easy")
        assert it.explanation
    assert len({it.id for it in default.items}) == len(default.items)


# ---- determinism


def test_same_seed_gives_byte_identical_files(tmp_path):
    hashes = []
    for run in ("a", "b", "c"):
        ds = generate_synthetic(seed=7 if run != "c" else 8)
        items = write_items(ds.items, tmp_path / f"{run}.parquet")
        book = tmp_path / f"{run}.txt"
        book.write_text("\n".join(ds.textbook), encoding="utf-8")
        hashes.append((_sha(items), _sha(book)))
    assert hashes[0] == hashes[1]
    assert hashes[0][0] != hashes[2][0] and hashes[0][1] != hashes[2][1]


# ---- textbook


def _stated(item, textbook) -> bool:
    """Independent of the generator's own check: plain substring search over the sentences."""
    disease, answer = item.meta["disease"], item.options[item.answer]
    symptoms = item.meta["symptoms"] or []
    about = [s for s in textbook if disease in s]
    fact = any(answer in s and s != answer for s in about)
    findings = any(all(x in s for x in symptoms) for s in about)
    if item.human_difficulty == "easy":
        return fact
    if item.human_difficulty == "medium":
        return answer == disease and findings
    return fact and findings


def test_every_answer_is_stated_in_the_textbook(default):
    missing = [it.id for it in default.items if not _stated(it, default.textbook)]
    assert missing == []
    assert unanswerable_items(default.items, default.textbook) == []


def test_removing_a_fact_makes_its_questions_unanswerable(default):
    kb = default.knowledge_base
    d = next(d for d in kb.diseases if d.heldout)
    book = [s for s in default.textbook if not (d.name in s and d.drug in s)]
    bad = set(unanswerable_items(default.items, book))
    expected = {it.id for it in default.items
                if it.meta["disease"] == d.name and it.meta["relation"] == "drug"}
    assert expected and bad == expected


def test_textbook_states_each_fact_in_4_to_5_phrasings_including_reverse(default):
    for d in default.knowledge_base.diseases:
        about = [s for s in default.textbook if re.search(rf"\b{d.name}\b", s)]
        for answer in (d.drug, d.test, d.cause):
            assert 4 <= sum(answer in s for s in about) <= 5
        full = [s for s in about if all(x in s for x in d.symptoms)]
        assert len(full) == 5
        # reverse phrasing: the findings come before the disease
        assert any(s.index(d.symptoms[0]) < s.index(d.name) for s in full)


# ---- knowledge base


def test_knowledge_base_invariants(default):
    kb = default.knowledge_base
    pools = {name: set(pool) for name, _, pool in _SYSTEMS}
    assert all(not (pools[a] & pools[b]) for a, b in combinations(pools, 2))
    names = [n for d in kb.diseases for n in (d.name, d.drug, d.cause.split()[0], d.test.split()[0])]
    assert len(set(names)) == len(names)
    for n in names:
        assert re.fullmatch(r"[A-Z][a-z]{3,}", n), n
        assert n.lower() not in REAL_NAME_BLOCKLIST
    by_system = defaultdict(list)
    for d in kb.diseases:
        by_system[d.system].append(d)
        assert 2 <= len(d.symptoms) <= 3 and set(d.symptoms) <= pools[d.system]
    for diseases in by_system.values():
        assert len(diseases) == 8 and sum(d.heldout for d in diseases) == 4
        pairs = [frozenset(p) for d in diseases for p in combinations(d.symptoms, 2)]
        assert len(pairs) == len(set(pairs)), "a symptom pair is shared by two diseases"


# ---- the split


def _entity_owner(kb):
    owner = {}
    for d in kb.diseases:
        for e in (d.name, d.drug, d.test, d.cause):
            owner[e] = d
    return owner


def _frame(item) -> str:
    """The question with its disease and findings replaced by placeholders: its phrasing."""
    q = item.question.replace(item.meta["disease"], "{D}")
    return re.sub(r"(reveals|with|reports|of|behind) [a-z ,]+?(?=[.?]| have| suggest)", r"\1 {S}", q)


def check_split_invariants(ds: SyntheticDataset) -> None:
    kb = ds.knowledge_base
    owner = _entity_owner(kb)
    heldout_entities = {e for e, d in owner.items() if d.heldout}
    train = [it for it in ds.items if it.split == "train"]
    test = [it for it in ds.items if it.split == "test"]
    # held-out diseases never appear in training questions, not even as distractors
    for it in train:
        assert not it.meta["heldout"]
        text = " ".join([it.question, *it.options])
        assert not any(re.search(rf"\b{re.escape(e)}\b", text) for e in heldout_entities), it
    assert {it.meta["heldout"] for it in test} == {True, False}
    # distractors come from the same system and the same half as the answer
    for it in ds.items:
        d = owner[it.options[it.answer]]
        assert d.name == it.meta["disease"] and d.heldout == it.meta["heldout"] and d.system == it.category
        for o in it.options:
            assert owner[o].system == d.system and owner[o].heldout == d.heldout
    # test questions on trained diseases use phrasings no training question uses
    train_frames = {_frame(it) for it in train}
    for it in test:
        assert _frame(it) not in train_frames, it.question
    assert not ({it.meta["template"] for it in train} & {it.meta["template"] for it in test})
    # answers are balanced within every (split, level, option count) group
    groups = defaultdict(Counter)
    for it in ds.items:
        groups[(it.split, it.human_difficulty, len(it.options))][it.answer] += 1
    for (_, _, k), counts in groups.items():
        n = sum(counts.values())
        assert all(n // k <= counts[pos] <= -(-n // k) for pos in range(k)), counts


def test_split_invariants_default(default):
    check_split_invariants(default)
    # a trained disease's test questions exist, with a new phrasing, for every level
    trained_test = Counter(it.human_difficulty for it in default.items if it.split == "test" and not it.meta["heldout"])
    assert trained_test == {"easy": 72, "medium": 72, "hard": 72}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_systems=st.integers(1, 4), per_system=st.integers(4, 9),
       train_k=st.integers(1, 8), test_k=st.integers(1, 3))
def test_properties_hold_for_any_seed_and_size(seed, n_systems, per_system, train_k, test_k):
    ds = generate_synthetic(seed=seed, n_systems=n_systems, diseases_per_system=per_system,
                            train_per_level=train_k, test_per_level=test_k)
    check_split_invariants(ds)
    assert unanswerable_items(ds.items, ds.textbook) == []
    assert len({it.id for it in ds.items}) == len(ds.items)
    assert Counter(it.split for it in ds.items)["train"] > 0


def test_bad_sizes_are_input_errors():
    with pytest.raises(InputError, match="n_systems"):
        generate_synthetic(n_systems=11)
    with pytest.raises(InputError, match="diseases_per_system"):
        generate_synthetic(diseases_per_system=3)
    with pytest.raises(InputError, match="symptom pairs"):
        generate_synthetic(diseases_per_system=40, n_systems=1)


# ---- loader


def test_loader_returns_items_and_textbook():
    res = load("synthetic", None, seed=5, n_systems=2)
    ds = generate_synthetic(seed=5, n_systems=2)
    assert res.items == ds.items
    assert res.extras["textbook"] == ds.textbook
    assert res.extras["knowledge_base"]["seed"] == 5
    test_only = load("synthetic", None, seed=5, n_systems=2, split="test").items
    assert test_only and {it.split for it in test_only} == {"test"}


def test_loader_rejects_bad_options(tmp_path):
    with pytest.raises(InputError, match="unknown option"):
        load("synthetic", None, colour="blue")
    with pytest.raises(InputError, match="no path"):
        load("synthetic", tmp_path)
    with pytest.raises(InputError, match="splits"):
        load("synthetic", None, split="dev")
