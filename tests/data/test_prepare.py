"""Data preparation: single-answer filter, filter expressions, explanation cleaning, selection, dedup, leakage."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtune.data import load
from medtune.data.prepare import (
    ANS_IE,
    PrepareSettings,
    clean_explanation,
    deduplicate,
    filter_items,
    item_text,
    keep_single_answer,
    leakage_report,
    prepare_items,
    select_by_explanation_length,
)
from medtune.errors import InputError
from medtune.schema import MCQItem, QAItem


def mcq(id, question="Which nerve supplies the deltoid muscle?", options=("Axillary", "Radial", "Ulnar", "Median"),
        answer=0, explanation=None, **kw):
    return MCQItem(id=id, question=question, options=list(options), answer=answer, source="t",
                   split=kw.pop("split", "train"), explanation=explanation, **kw)


LONG_Q = ("A 45-year-old man presents with sudden painless loss of vision in the right eye after lifting heavy "
          "boxes at work; fundoscopy shows a cherry red spot at the macula. What is the most likely diagnosis?")
LONG_OPTS = ("Central retinal artery occlusion", "Central retinal vein occlusion", "Retinal detachment",
             "Vitreous haemorrhage")


# ---- single answer and filters


def test_keep_single_answer_drops_medmcqa_multi():
    items = [mcq("a", meta={"choice_type": "single"}), mcq("b", meta={"choice_type": "multi"}), mcq("c"),
             QAItem(id="d", question="What is X?", answer="Y", source="t", split="train",
                    meta={"choice_type": "multi"})]
    kept, removed = keep_single_answer(items)
    assert [it.id for it in kept] == ["a", "c", "d"] and [it.id for it in removed] == ["b"]


def test_single_answer_on_a_loaded_medmcqa_file(tmp_path):
    rows = [dict(id=f"r{i}", question=f"Question number {i} about anatomy?", opa="A1", opb="B1", opc="C1", opd="D1",
                 cop=1 + i % 4, choice_type="multi" if i % 3 == 0 else "single",
                 exp=f"Ans. is 'a' i.e., A1 because {i}",
                 subject_name="Anatomy", topic_name="Limbs") for i in range(9)]
    path = tmp_path / "train.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = load("medmcqa", path).items
    out, report = prepare_items(items, PrepareSettings(dedup=False))
    assert len(out) == 6
    assert report.removed_ids["single answer"] == [it.id for it in items if it.meta["choice_type"] == "multi"]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("split == 'test'", ["b"]),
        ("category in ['Anatomy', 'Surgery']", ["a", "c"]),
        ("split == 'train' and not category == 'Surgery'", ["a"]),
        ("meta.year >= 2020", ["c"]),
        ("meta.year is None or n_options < 4", ["a", "b"]),
        ("explanation_length > 5", ["b"]),
    ],
)
def test_filter_expressions(expr, expected):
    items = [mcq("a", category="Anatomy"), mcq("b", split="test", options=["x", "y"], explanation="because so"),
             mcq("c", category="Surgery", meta={"year": 2021})]
    kept, removed = filter_items(items, expr)
    assert [it.id for it in kept] == expected
    assert len(kept) + len(removed) == 3


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("__import__('os').system('true')", "unsupported syntax"),
        ("split ==", "invalid filter"),
        ("colour == 'red'", "unknown field 'colour'"),
        ("question.upper == 'X'", "meta.KEY"),
        ("meta.year > 'x'", "incompatible"),
    ],
)
def test_bad_filter_expressions_are_input_errors(expr, message):
    with pytest.raises(InputError, match=message):
        filter_items([mcq("a", meta={"year": 2001})], expr)


# ---- explanation cleaning (invented examples in MedMCQA's styles)


@pytest.mark.parametrize(
    ("text", "answer", "expected"),
    [
        ("Ans. is 'a' i.e., Axillary nerve  Axillary nerve supplies the deltoid and teres minor.", "Axillary nerve",
         "Axillary nerve supplies the deltoid and teres minor."),
        ("Ans. is 'c' i.e., Ceftriaxone Ans. is 'c' i.e., Ceftriaxone * Ceftriaxone is the drug of choice.",
         "Ceftriaxone", "* Ceftriaxone is the drug of choice."),
        ("Ans is 'b' ie Nucleus ambiguus. It supplies the muscles of the larynx.", "Nucleus ambiguus",
         "It supplies the muscles of the larynx."),
        ("Ans: B. Ref: Ganong 24th ed. p 301. Cortisol rises in the early morning.", "Cortisol",
         "Ref: Ganong 24th ed. p 301. Cortisol rises in the early morning."),
        ("Answer- C (Vitamin K) Vitamin K is needed for clotting factors.", "Vitamin K",
         "Vitamin K is needed for clotting factors."),
        ("Ans. (d) Insulin", "Insulin", None),
        ("ANS: c", "Glucagon", None),
        ("Ans. D Iron is absorbed in the duodenum.", "Folate", "Iron is absorbed in the duodenum."),
        ("Fluoride in excess causes mottling. Ans. is 'a' i.e., Fluorosis", "Fluorosis",
         "Fluoride in excess causes mottling."),
        # prose that merely contains the words stays untouched
        ("Answer is a matter of anatomy: the deltoid is supplied by C5.", "Axillary",
         "Answer is a matter of anatomy: the deltoid is supplied by C5."),
        ("The answer is clear once the roots are known.", "x", "The answer is clear once the roots are known."),
        ("Transplant patients need lifelong drugs.", "x", "Transplant patients need lifelong drugs."),
        (None, "x", None),
    ],
)
def test_clean_explanation(text, answer, expected):
    assert clean_explanation(text, answer) == expected


def test_prepare_cleans_explanations_and_counts_changes():
    items = [mcq("a", explanation="Ans. is 'a' i.e., Axillary  Axillary nerve (C5, C6)."),
             mcq("b", explanation="Plain.")]
    out, report = prepare_items(items, PrepareSettings(dedup=False))
    assert [it.explanation for it in out] == ["Axillary nerve (C5, C6).", "Plain."]
    assert items[0].explanation.startswith("Ans.")  # inputs are not mutated
    assert report.steps[-1].detail == "1 explanations changed"


# ---- selection by explanation length


def test_select_longest_shortest_median_keep_input_order():
    lengths = {"a": 10, "b": 50, "c": 30, "d": 20, "e": 40, "f": 0}
    items = [mcq(k, explanation="x" * n if n else None) for k, n in lengths.items()]
    ids = lambda sel: [it.id for it in sel]  # noqa: E731
    assert ids(select_by_explanation_length(items, 2, "longest")) == ["b", "e"]
    assert ids(select_by_explanation_length(items, 2, "shortest")) == ["a", "d"]
    assert ids(select_by_explanation_length(items, 1, "median")) == ["c"]  # median of 10..50 is 30
    assert ids(select_by_explanation_length(items, 10, "longest")) == ["a", "b", "c", "d", "e"]  # "f" has none
    with pytest.raises(InputError, match="longest, shortest or median"):
        select_by_explanation_length(items, 1, "random")


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=12), n=st.integers(0, 12),
       mode=st.sampled_from(["longest", "shortest", "median"]), data=st.data())
def test_selection_is_independent_of_input_order(lengths, n, mode, data):
    items = [mcq(f"q{i:02d}", explanation="y" * ln) for i, ln in enumerate(lengths)]
    shuffled = data.draw(st.permutations(items))
    a = {it.id for it in select_by_explanation_length(items, n, mode)}
    b = {it.id for it in select_by_explanation_length(shuffled, n, mode)}
    assert a == b and len(a) == min(n, len(items))
    if mode == "longest" and a and len(a) < len(items):
        assert min(len(it.explanation) for it in items if it.id in a) >= max(
            len(it.explanation) for it in items if it.id not in a)


# ---- de-duplication


def test_exact_duplicates_after_normalisation_and_option_shuffle():
    items = [
        mcq("a"),
        mcq("b", question="  which NERVE supplies the deltoid muscle ? ", options=("Ulnar", "Axillary", "Median",
                                                                                    "Radial"), answer=1),
        # same stem, different options: a different question
        mcq("c", options=("Musculocutaneous", "Radial", "Ulnar", "Median")),
    ]
    kept, dups = deduplicate(items)
    assert [it.id for it in kept] == ["a", "c"]
    assert [(d.removed, d.kept, d.kind, d.similarity) for d in dups] == [("b", "a", "exact", 1.0)]


def test_near_duplicates_found_with_similarity_and_threshold():
    near = LONG_Q.replace("45-year-old", "46-year-old")
    items = [mcq("orig", question=LONG_Q, options=LONG_OPTS), mcq("near", question=near, options=LONG_OPTS),
             mcq("other", question="What is the commonest site of carcinoid tumour in the gut?",
                 options=("Appendix", "Ileum", "Rectum", "Stomach"))]
    kept, dups = deduplicate(items, threshold=0.8)
    assert [it.id for it in kept] == ["orig", "other"]
    assert len(dups) == 1 and dups[0].kind == "near" and dups[0].kept == "orig"
    assert 0.8 <= dups[0].similarity < 1.0
    kept_strict, _ = deduplicate(items, threshold=0.99)
    assert len(kept_strict) == 3
    kept_exact_only, _ = deduplicate(items, near=False)
    assert len(kept_exact_only) == 3
    with pytest.raises(InputError, match="threshold"):
        deduplicate(items, threshold=1.5)


def test_item_text_includes_sorted_options():
    assert item_text(mcq("a", options=("B b", "a-A"))) == "which nerve supplies the deltoid muscle | a a | b b"


# ---- leakage


def test_leakage_report_lists_exact_and_near_pairs():
    train = [mcq("tr1", question=LONG_Q, options=LONG_OPTS), mcq("tr2"),
             mcq("tr3", question="Which vitamin deficiency causes scurvy?", options=("C", "D", "A", "K"))]
    test = [mcq("te1", question=LONG_Q.replace("right eye", "left eye"), options=LONG_OPTS, split="test"),
            mcq("te2", question="WHICH nerve supplies the deltoid muscle", split="test"),
            mcq("te3", question="Which bone is fractured most often in falls on the outstretched hand?",
                options=("Scaphoid", "Lunate", "Radius", "Ulna"), split="test")]
    rep = leakage_report(train, test, threshold=0.8)
    pairs = {(p.removed, p.kept, p.kind) for p in rep.pairs}
    assert pairs == {("te1", "tr1", "near"), ("te2", "tr2", "exact")}
    assert rep.leaked_test_ids == ["te1", "te2"]
    d = rep.to_dict()
    assert d["n_exact"] == 1 and d["n_near"] == 1 and d["n_test_leaked"] == 2
    assert {p["train_id"] for p in d["pairs"]} == {"tr1", "tr2"}


def test_synthetic_train_and_test_do_not_leak():
    from medtune.data.synthetic_questions import generate_synthetic

    items = generate_synthetic(seed=0, n_systems=2).items
    train = [it for it in items if it.split == "train"]
    test = [it for it in items if it.split == "test"]
    assert leakage_report(train, test, threshold=0.9).pairs == []
    # and the report does find a copied question
    rep = leakage_report(train, [*test, train[0].model_copy(update={"id": "copy", "split": "test"})])
    assert [(p.removed, p.kept, p.kind) for p in rep.pairs] == [("copy", train[0].id, "exact")]


def test_prepare_pipeline_order_and_report():
    items = [mcq(f"u{i}", question=f"Unique question {i} on renal physiology and sodium handling?",
                 explanation="E" * (10 * i + 5), meta={"choice_type": "single"}) for i in range(6)]
    items += [mcq("dup", question="unique question 3 on renal physiology and sodium handling",
                  explanation="E" * 500), mcq("multi", meta={"choice_type": "multi"}, explanation="E" * 900)]
    out, rep = prepare_items(items, PrepareSettings(select=3, select_by="longest", where="split == 'train'"))
    assert [it.id for it in out] == ["u3", "u4", "u5"]  # "dup" removed before selection, "multi" dropped first
    assert [s.name for s in rep.steps] == ["single answer", "filter", "clean explanations", "deduplicate", "select"]
    assert rep.removed_ids["deduplicate"] == ["dup"] and rep.removed_ids["single answer"] == ["multi"]
    json.dumps(rep.to_dict())


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("Ans.is'abcde ie,:-()XYZ answer")), max_size=60),
       answer=st.sampled_from(["X", "Y Z", ""]))
def test_clean_explanation_never_grows_and_is_stable(text, answer):
    once = clean_explanation(text, answer)
    assert once is None or (len(once) <= len(" ".join(text.split())) and once == once.strip())
    assert once is None or ANS_IE.search(once) is None  # no "Ans. is 'x' i.e." restatement survives
