"""Fact-level scores: exact precision and completeness for answers built from the knowledge base with facts
deleted and revised, whole-word matching, and clear errors for bad fact sheets and items."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtune.data.synthetic_qa import SyntheticQADataset, fact_value, generate_synthetic_qa
from medtune.errors import InputError
from medtune.factcheck import fact_metrics, fact_scores
from medtune.factsheet import FactSheet, factsheet_path, read_factsheet, write_factsheet
from medtune.schema import MCQItem, QAItem


@pytest.fixture(scope="module")
def ds() -> SyntheticQADataset:
    return generate_synthetic_qa(seed=3, n_systems=3)


def _item(ds: SyntheticQADataset, relations: tuple[str, ...]) -> QAItem:
    return next(it for it in ds.items if tuple(it.meta["relations"]) == relations)


def _qa(disease: str, facts: list, item_id: str = "q1") -> QAItem:
    return QAItem(id=item_id, question="Describe it.", answer="Some answer.", source="t", split="test",
                  meta={"disease": disease, "facts": facts})


# ---- exact values on hand-made answers


def test_a_revised_drug_gives_the_exact_precision(ds):
    it = _item(ds, ("symptoms", "cause", "test", "drug"))
    kb = ds.knowledge_base
    d = kb.by_name(it.meta["disease"])
    other = next(o for o in kb.diseases if o.name != d.name)
    answer = it.answer.replace(d.drug, other.drug)
    scores = fact_scores(answer, it, ds.facts)
    n = len(d.symptoms) + 3  # each symptom, the cause, the test, the drug
    assert scores["n_stated"] == n and scores["n_true"] == n - 1
    assert scores["factual_precision"] == pytest.approx((n - 1) / n)
    assert scores["completeness"] == pytest.approx(3 / 4)  # the drug fact is missing
    assert scores["wrong"] == [other.drug] and scores["missing"] == [d.drug]


def test_partial_symptoms_count_as_part_of_one_fact(ds):
    it = _item(ds, ("cause", "symptoms"))
    d = ds.knowledge_base.by_name(it.meta["disease"])
    scores = fact_scores(f"{d.name} is caused by the {d.cause}. It presents with {d.symptoms[0]}.", it, ds.facts)
    assert scores["completeness"] == pytest.approx((1 + 1 / len(d.symptoms)) / 2)
    assert scores["factual_precision"] == 1.0 and scores["n_stated"] == 2


def test_an_answer_stating_nothing_scores_zero_and_is_flagged(ds):
    it = _item(ds, ("test", "drug"))
    for answer in ("", None, f"{it.meta['disease']} is a disease. I do not know more."):
        scores = fact_scores(answer, it, ds.facts)
        assert scores["no_fact"] and scores["factual_precision"] == 0.0 and scores["completeness"] == 0.0


def test_fact_metrics_means_and_per_item_lists(ds):
    items = [_item(ds, ("test", "drug")), _item(ds, ("cause", "drug"))]
    d0 = ds.knowledge_base.by_name(items[0].meta["disease"])
    other = next(o for o in ds.knowledge_base.diseases if o.name != d0.name)
    predictions = [f"Confirm with the {d0.test}; treat with {other.drug}.", None]
    m = fact_metrics(predictions, items, ds.facts)
    assert m["n"] == 2
    assert m["factual_precision"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["completeness"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["no_fact_rate"] == 0.5 and m["precision_when_stated"] == pytest.approx(0.5)
    assert m["pooled_precision"] == pytest.approx(0.5)
    assert m["per_item"]["id"] == [it.id for it in items]
    assert m["per_item"]["factual_precision"] == [0.5, 0.0] and m["per_item"]["no_fact"] == [False, True]
    assert m["per_item"]["wrong"] == [[other.drug], []]
    assert fact_metrics([None], items[:1], ds.facts)["precision_when_stated"] is None
    with pytest.raises(InputError, match="1 predictions for 2 items"):
        fact_metrics([None], items, ds.facts)


# ---- a property over deletions and revisions


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_deleting_and_revising_facts_gives_the_expected_scores(ds, data):
    kb = ds.knowledge_base
    it = data.draw(st.sampled_from(ds.items))
    d = kb.by_name(it.meta["disease"])
    facts = it.meta["facts"]
    n = len(facts)
    kept = data.draw(st.lists(st.sampled_from(range(n)), unique=True, max_size=n))
    revised = data.draw(st.lists(st.sampled_from(kept), unique=True, max_size=len(kept))) if kept else []
    own = {"symptoms": set(d.symptoms), "cause": {d.cause}, "test": {d.test}, "drug": {d.drug}}
    sentences, stated = [], set()
    for i in data.draw(st.permutations(kept)):  # the kept facts in any order
        f = facts[i]
        if i in revised:  # the value of another disease, swapped into the same sentence
            other = data.draw(st.sampled_from([o for o in kb.diseases if o.name != d.name]))
            sentences.append(f["text"].replace(f["value"], fact_value(other, f["relation"])))
            stated |= set(other.symptoms) if f["relation"] == "symptoms" else {fact_value(other, f["relation"])}
        else:
            sentences.append(f["text"])
            stated |= own[f["relation"]]
    scores = fact_scores(" ".join(sentences), it, ds.facts)
    true = stated & set().union(*own.values())
    assert scores["n_stated"] == len(stated) and scores["n_true"] == len(true)
    assert scores["factual_precision"] == pytest.approx(len(true) / len(stated) if stated else 0.0)
    expected = sum(len(own[f["relation"]] & stated) / len(own[f["relation"]]) for f in facts) / n
    assert scores["completeness"] == pytest.approx(expected)
    if not revised:  # deleting k of n facts: completeness (n - k) / n, every stated fact true
        assert scores["completeness"] == pytest.approx(len(kept) / n)
        assert scores["factual_precision"] == (1.0 if kept else 0.0)


# ---- matching


def _sheet() -> FactSheet:
    return FactSheet.from_facts(("symptoms", "drug"), {
        "Alpha": {"symptoms": ["cough", "night cough"], "drug": ["Kal"]},
        "Beta": {"symptoms": ["pain"], "drug": ["Kalor"]},
    })


def test_a_name_inside_another_is_not_counted_twice():
    sheet = _sheet()
    item = _qa("Alpha", [{"relation": "drug", "value": "Kal", "text": "Give Kal.", "question": "Drug?"}])
    kalor = fact_scores("Give Kalor for the night cough.", item, sheet)
    assert kalor["stated"] == ["Kalor", "night cough"]  # not "Kal", not "cough"
    assert kalor["factual_precision"] == 0.5 and kalor["completeness"] == 0.0
    both = fact_scores("Give Kal; night cough and cough. Night Cough again.", item, sheet)
    assert both["stated"] == ["Kal", "cough", "night cough"] and both["factual_precision"] == 1.0
    assert fact_scores("Kal-x, Kalo, painful", item, sheet)["no_fact"]


# ---- errors


def test_items_the_sheet_cannot_check_are_clear_errors(ds):
    sheet = _sheet()
    fact = {"relation": "drug", "value": "Kal", "text": "Give Kal.", "question": "?"}
    cases = [
        (QAItem(id="a", question="q?", answer="x", source="t", split="test"), "item a, field 'meta.disease'"),
        (_qa("Gamma", [fact]), "subject 'Gamma' is not in the fact sheet"),
        (QAItem(id="b", question="q?", answer="x", source="t", split="test", meta={"disease": "Alpha"}),
         "field 'meta.facts'"),
        (_qa("Alpha", [{**fact, "value": "Kalor"}]), "meta.facts[0].value': 'Kalor' is not a drug of 'Alpha'"),
        (_qa("Alpha", [{**fact, "value": "Zed"}]), "'Zed' names no value"),
        (_qa("Alpha", ["Kal"]), "field 'meta.facts[0]'"),
        (MCQItem(id="m", question="q?", options=["a", "b"], answer=0, source="t", split="test"), "meta.disease"),
    ]
    for item, message in cases:
        with pytest.raises(InputError) as exc:
            fact_scores("Kal", item, sheet)
        assert message in str(exc.value)
    with pytest.raises(InputError, match=r"subject .* is not in the fact sheet"):
        fact_scores("", ds.items[0], sheet)


def test_the_fact_sheet_round_trips(tmp_path, ds):
    items_path = tmp_path / "syn.parquet"
    assert read_factsheet(items_path) is None
    path = write_factsheet(items_path, ds.facts)
    assert path == tmp_path / "syn.facts.json" == factsheet_path(items_path)
    back = read_factsheet(items_path)
    assert back == ds.facts and back.values == ds.facts.values
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the write left no temp file


GOOD = {"format": "medtune.facts/1", "relations": ["drug"], "subjects": {"Alpha": {"drug": ["Kal"]}}}


@pytest.mark.parametrize(("content", "where"), [
    (b"{not json", "line 1"),
    (b"\xff\xfe", "invalid UTF-8"),
    (json.dumps([1]).encode(), "field 'format'"),
    (json.dumps({**GOOD, "format": "medtune.facts/2"}).encode(), "field 'format': expected format"),
    (json.dumps({**GOOD, "colour": 1}).encode(), "field 'colour': unknown key"),
    (json.dumps({**GOOD, "relations": []}).encode(), "field 'relations'"),
    (json.dumps({**GOOD, "relations": ["drug", "drug"]}).encode(), "field 'relations': a relation is listed twice"),
    (json.dumps({**GOOD, "subjects": {}}).encode(), "field 'subjects'"),
    (json.dumps({**GOOD, "subjects": {"Alpha": ["Kal"]}}).encode(), "field 'subjects.Alpha'"),
    (json.dumps({**GOOD, "subjects": {"Alpha": {"dose": ["Kal"]}}}).encode(),
     "field 'subjects.Alpha.dose': relation 'dose' is not in relations"),
    (json.dumps({**GOOD, "subjects": {"Alpha": {"drug": "Kal"}}}).encode(), "field 'subjects.Alpha.drug'"),
    (json.dumps({**GOOD, "subjects": {"Alpha": {"drug": ["Kal", 3]}}}).encode(),
     "field 'subjects.Alpha.drug[1]': expected a non-empty string"),
    (json.dumps({**GOOD, "subjects": {"Alpha": {"drug": ["Kal", "Kal"]}}}).encode(), "a value is listed twice"),
])
def test_bad_fact_sheets_give_one_line_errors(tmp_path, content, where):
    items_path = tmp_path / "x.parquet"
    factsheet_path(items_path).write_bytes(content)
    with pytest.raises(InputError) as exc:
        read_factsheet(items_path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(str(factsheet_path(items_path))) and where in message


def test_a_folder_in_the_fact_sheets_place_is_an_error(tmp_path):
    factsheet_path(tmp_path / "x.parquet").mkdir()
    with pytest.raises(InputError, match="got a folder"):
        read_factsheet(tmp_path / "x.parquet")
