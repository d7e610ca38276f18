"""KnowTuning: both stages on a tiny model and hand-built free-text items whose answers are known facts.

One run through the training stage (``run_training``) is shared by most tests: its artifacts are checked against
what they claim (the kept facts are the hardest by the recorded perplexities, which are the base model's; each
triple's change is of its kind; the DPO reference is the KA model; the final model loads for evaluation and
differs from the KA model). The same run repeated through ``medtune train`` must give the same artifacts.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from training_helpers import make_items, make_order, micro_cli_options, micro_config

from medtune.adaptive.verify import verify_run
from medtune.errors import ConfigError, InputError
from medtune.schema import QAItem, write_items
from medtune.scoring.backends import load_backend
from medtune.training.config import PRESETS, TrainSettings, resolve_training_settings
from medtune.training.methods import get_method, method_names
from medtune.training.methods.knowtuning.augmentation import n_kept
from medtune.training.methods.knowtuning.corruption import build_triples, entities
from medtune.training.methods.knowtuning.facts import Fact, item_facts, split_facts
from medtune.training.methods.knowtuning.inner import lora_target_names

SUBJECTS = {"cardiac": ["Varnel syndrome", "Ostrik disease", "Pellow fever", "Quorin heart", "Tamsel block"],
            "renal": ["Brevin nephritis", "Caldor stones", "Dunmar kidney", "Eskel syndrome", "Fallow uremia"],
            "skin": ["Gorrin rash"]}
VALUES = {"symptom": ["chest pain", "swollen ankles", "night sweats", "blue lips", "back pain", "dark urine"],
          "treatment": ["Zorafen", "Quilmab", "Dextavir", "Pomerol", "Halcitra", "Venorin"],
          "test": ["an echo scan", "a urine strip", "a blood panel", "a biopsy", "an MRI"]}
TEMPLATES = {"symptom": ("{d} mainly causes {v}.", "What is the main symptom of {d}?"),
             "treatment": ("The first-line drug for {d} is {v}.", "Which drug treats {d} first?"),
             "test": ("{d} is diagnosed with {v}.", "How is {d} diagnosed?")}


def structured_items(seed: int = 1) -> list[QAItem]:
    """Ten subjects with three facts in two organ systems, and one single-fact subject alone in its system."""
    rng = random.Random(seed)
    items = []
    for category, diseases in SUBJECTS.items():
        for d in diseases:
            relations = ["symptom"] if category == "skin" else ["symptom", "treatment", "test"]
            facts = []
            for rel in relations:
                v = rng.choice(VALUES[rel])
                text, question = TEMPLATES[rel]
                facts.append({"relation": rel, "value": v, "text": text.format(d=d, v=v),
                              "question": question.format(d=d)})
            items.append(QAItem(id=f"{category}-{len(items):02d}", question=f"What should one know about {d}?",
                                answer=" ".join(f["text"] for f in facts), source="test", split="train",
                                category=category, meta={"facts": facts, "disease": d}))
    return items


SETTINGS = {"method": "knowtuning", "knowtuning": {"lora_targets": ["q_proj", "v_proj"], "kc_lr": 1e-3}, "lr": 1e-3}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """One KnowTuning run through the training stage, as ``medtune train`` and the grid call it."""
    from medtune.training.stage import run_training

    home = tmp_path_factory.mktemp("knowtuning")
    items = structured_items()
    items_path = write_items(items, home / "items.parquet")
    order_path = home / "order.json"
    order_path.write_text(json.dumps(make_order([it.id for it in reversed(items)])))
    summary = run_training(micro_config(**SETTINGS), items_path, order_path, home / "run")
    return {"home": home, "dir": home / "run", "items": {it.id: it for it in items}, "summary": summary,
            "items_path": items_path, "order_path": order_path}


# ----------------------------------------------------------------------------------------------------------
# The run and its artifacts


def test_the_run_looks_like_a_full_model_run_to_evaluation(run):
    from medtune.evaluation_stage import ModelRef

    out = run["dir"]
    ref = run["summary"]["model_ref"]
    assert ref["method"] == "knowtuning" and ref["adapter"] is None and ref["model_dir"] == "run/model"
    model_ref = ModelRef.from_run(out)
    assert model_ref.model_dir == out / "model" and model_ref.adapter is None
    assert list((out / "model").glob("*.safetensors")) and not list((out / "model").glob("*.bin"))
    meta = json.loads((out / "config.json").read_text())
    assert meta["train"]["method"] == "knowtuning"
    kt = meta["knowtuning"]
    assert kt["ka"]["pairs"] == sum(1 for _ in (out / "ka" / "ka_pairs.jsonl").open())
    assert kt["kc"]["triples"] == sum(kt["kc"]["by_kind"].values()) == len(_read_jsonl(out / "kc" / "triples.jsonl"))
    assert kt["kc"]["loss"] == {"type": ["sigmoid", "sft"], "weights": [1.0, 0.2], "beta": 0.1}
    assert kt["kc"]["steps"] > 0 and _read_jsonl(out / "kc" / "train_log.jsonl")


def test_ka_keeps_the_hardest_share_by_the_base_models_perplexity(run):
    out = run["dir"] / "ka"
    rows = _read_jsonl(out / "facts.jsonl")
    pairs = _read_jsonl(out / "ka_pairs.jsonl")
    assert len(rows) == len(run["items"])
    expected_pairs = []
    for row in rows:
        facts = row["facts"]
        ranked = sorted(facts, key=lambda f: (-f["perplexity"], f["index"]))
        hardest = {f["index"] for f in ranked[: math.ceil(0.5 * len(facts))]}
        assert {f["index"] for f in facts if f["kept"]} == hardest, row["id"]
        expected_pairs += [(row["id"], f["index"]) for f in facts if f["kept"]]
    assert [(p["source_id"], p["fact_index"]) for p in pairs] == expected_pairs
    item = run["items"][pairs[0]["source_id"]]
    fact = item.meta["facts"][pairs[0]["fact_index"]]
    assert pairs[0]["question"] == fact["question"] and pairs[0]["answer"] == fact["text"]
    assert pairs[0]["made_by"] == "fact question"
    # The recorded perplexities are the base model's (not the trained one's): score a few facts again.
    base = load_backend(str(out / "base"), dtype="fp32", device="cpu")
    from medtune.prompts import qa_prompt

    some = rows[0]["facts"]
    again = base.loglikelihood([(qa_prompt(run["items"][rows[0]["id"]]), f["text"]) for f in some])
    assert [s for s, _ in again] == pytest.approx([f["logprob"] for f in some], abs=1e-4)


def test_ka_order_puts_each_items_pairs_after_it_and_verify_order_passes(run):
    out = run["dir"] / "ka"
    order = json.loads((out / "order.json").read_text())
    planned = json.loads(run["order_path"].read_text())["epochs"][0]
    pairs_of: dict[str, list[str]] = {}
    for p in _read_jsonl(out / "ka_pairs.jsonl"):
        pairs_of.setdefault(p["source_id"], []).append(p["id"])
    assert order["epochs"][0] == [x for i in planned for x in (i, *pairs_of.get(i, []))]
    assert order["strategy"] == "hand+knowtuning-ka"
    result = verify_run(out)
    assert result.ok, result.message
    from medtune.schema import read_items

    assert {it.id for it in read_items(out / "items.parquet")} == set(run["items"]) | {
        i for ids in pairs_of.values() for i in ids}


def test_every_triple_changes_its_answer_as_its_kind_says(run):
    items = run["items"]
    triples = _read_jsonl(run["dir"] / "kc" / "triples.jsonl")
    skipped = _read_jsonl(run["dir"] / "kc" / "skipped.jsonl")
    assert {t["kind"] for t in triples} == {"deletion", "revision", "shuffle"}
    for t in triples:
        item = items[t["source_id"]]
        texts = [f["text"] for f in item.meta["facts"]]
        assert t["chosen"] == item.answer and t["rejected"] != t["chosen"]
        if t["kind"] == "deletion":
            kept = t["changed"]["kept"]
            assert 0 < len(kept) < len(texts) and kept == sorted(kept)
            assert t["rejected"] == " ".join(texts[i] for i in kept)
        elif t["kind"] == "shuffle":
            perm = t["changed"]["order"]
            assert sorted(perm) == list(range(len(texts))) and perm != sorted(perm)
            assert t["rejected"] == " ".join(texts[i] for i in perm)
        else:
            revised = list(texts)
            for c in t["changed"]["revised"]:
                other = items[c["to_item"]]
                assert other.category == item.category and other.meta["disease"] != item.meta["disease"]
                assert c["to_subject"] == other.meta["disease"]
                # The new value is a real fact of the other subject, for the same relation.
                assert {"relation": c["relation"], "value": c["to"]}.items() <= next(
                    f for f in other.meta["facts"] if f["relation"] == c["relation"]).items()
                assert c["from"] == item.meta["facts"][c["index"]]["value"] != c["to"]
                revised[c["index"]] = revised[c["index"]].replace(c["from"], c["to"])
            assert t["rejected"] == " ".join(revised)
    # The lone single-fact subject gets no triple, and each skip says why.
    lone = next(i for i, it in items.items() if it.category == "skin")
    assert not [t for t in triples if t["source_id"] == lone]
    assert sorted(s["kind"] for s in skipped if s["source_id"] == lone) == ["deletion", "revision", "shuffle"]
    assert all(s["reason"] for s in skipped)


def test_the_kc_reference_is_the_ka_model_and_the_final_model_differs_from_it(run):
    out = run["dir"]
    checks = _read_jsonl(out / "kc" / "reference_logprobs.jsonl")
    triples = {t["id"]: t for t in _read_jsonl(out / "kc" / "triples.jsonl")}
    pairs = [(triples[c["id"]]["prompt"], triples[c["id"]][side]) for c in checks for side in ("chosen", "rejected")]
    recorded = [c[side] for c in checks for side in ("chosen", "rejected")]
    ka = [s for s, _ in load_backend(str(out / "ka" / "merged"), dtype="fp32", device="cpu").loglikelihood(pairs)]
    base = [s for s, _ in load_backend(str(out / "ka" / "base"), dtype="fp32", device="cpu").loglikelihood(pairs)]
    final = [s for s, _ in load_backend(str(out / "model"), dtype="fp32", device="cpu").loglikelihood(pairs)]
    assert recorded == pytest.approx(ka, abs=1e-3)
    assert max(abs(a - b) for a, b in zip(ka, base, strict=True)) > 1e-2  # KA trained: the check can fail
    assert max(abs(a - b) for a, b in zip(ka, final, strict=True)) > 1e-3  # KC trained on top of KA


def test_medtune_train_with_the_same_seed_gives_the_same_artifacts(run, tmp_path):
    from safetensors.torch import load_file

    from medtune.cli import main

    out = tmp_path / "again"
    args = ["train", "--items", str(run["items_path"]), "--order", str(run["order_path"]), "-o", str(out),
            "--method", "knowtuning", "--knowtuning-lora-targets", "q_proj", "--knowtuning-lora-targets", "v_proj",
            "--lr", "0.001", "--knowtuning-kc-lr", "0.001", "--no-progress", *micro_cli_options()]
    assert main(args) == 0
    for name in ("ka/facts.jsonl", "ka/ka_pairs.jsonl", "ka/order.json", "kc/triples.jsonl", "kc/skipped.jsonl"):
        assert (out / name).read_text() == (run["dir"] / name).read_text(), name
    first, second = _read_jsonl(run["dir"] / "ka" / "train_log.jsonl"), _read_jsonl(out / "ka" / "train_log.jsonl")
    assert [(r["ids"], r["loss"]) for r in first] == [(r["ids"], r["loss"]) for r in second]
    a = load_file(str(run["dir"] / "model" / "model.safetensors"))
    b = load_file(str(out / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_full_inner_training_uses_a_frozen_copy_of_the_ka_model_as_reference(tmp_path):
    from medtune.training import train

    items = structured_items(seed=2)[:6]
    config = micro_config(method="knowtuning", knowtuning={"inner_method": "full"}, lr=1e-3, max_steps=2)
    result = train(config, items, make_order([it.id for it in items]), tmp_path / "run")
    out = tmp_path / "run"
    assert result.output_dir == out / "model" and not (out / "ka" / "merged").exists()
    meta = json.loads((out / "config.json").read_text())["knowtuning"]
    assert meta["ka"]["model"] == "ka/model" and meta["kc"]["reference"] == "a frozen copy of the KA model"
    checks = _read_jsonl(out / "kc" / "reference_logprobs.jsonl")
    triples = {t["id"]: t for t in _read_jsonl(out / "kc" / "triples.jsonl")}
    pairs = [(triples[c["id"]]["prompt"], triples[c["id"]]["chosen"]) for c in checks]
    ka = load_backend(str(out / "ka" / "model"), dtype="fp32", device="cpu").loglikelihood(pairs)
    assert [c["chosen"] for c in checks] == pytest.approx([s for s, _ in ka], abs=1e-3)
    assert verify_run(out / "ka").ok


# ----------------------------------------------------------------------------------------------------------
# Without structured facts: the splitter and entity substitution


def test_the_splitter_cuts_sentences_then_clauses_and_keeps_short_fragments_attached():
    text = ("Glaucoma damages the optic nerve of the eye. It is often linked to high eye pressure, and it can "
            "lead to blindness; early drops help most patients. See Dr. Smith for tests. Yes. The dose is 2.5 mg.")
    facts = split_facts(text)
    assert facts == ["Glaucoma damages the optic nerve of the eye.", "It is often linked to high eye pressure,",
                     "and it can lead to blindness;", "early drops help most patients.",
                     "See Dr. Smith for tests. Yes.", "The dose is 2.5 mg."]
    assert " ".join(facts) == text


@given(st.lists(st.text(alphabet="abcdefghij ,;.ABC", min_size=1, max_size=40), min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_split_facts_keeps_every_non_space_character_in_order(parts):
    text = " ".join(parts)
    if not text.strip():
        return
    facts = split_facts(text)
    assert "".join("".join(facts).split()) == "".join(text.split())
    assert all(f == f.strip() and f for f in facts)


def _generic(i: int, category: str, answer: str) -> QAItem:
    return QAItem(id=f"g{i}", question=f"What about case {i}?", answer=answer, source="test", split="train",
                  category=category)


def test_generic_revision_substitutes_entities_from_other_answers_of_the_same_category():
    items = [_generic(0, "a", "Mount Sinai Hospital treats the disease. About 40 patients a year need surgery."),
             _generic(1, "a", "Johns Hopkins Clinic studies it closely. Only 12 cases were reported last year."),
             _generic(2, "b", "Cedar Grove Centre sees 99 patients in total every single year.")]
    facts = {it.id: item_facts(it) for it in items}
    assert all(not f.structured for fs in facts.values() for f in fs)
    assert entities(items[0].answer) == ["Mount Sinai Hospital", "40"]
    triples, skipped = build_triples(items, facts, seed=0)
    rev = next(t for t in triples if t.kind == "revision" and t.source_id == "g0")
    for change in rev.changed["revised"]:
        assert change["to_item"] == "g1"  # same category only
        assert change["to"] in {"Johns Hopkins Clinic", "12"} and change["from"] in {"Mount Sinai Hospital", "40"}
        assert (change["from"][0].isdigit()) == (change["to"][0].isdigit())  # a number for a number
        assert change["to"] in rev.rejected and rev.chosen == items[0].answer
    # Alone in its category and with one fact, g2 gets no triple; each skip says why.
    assert len(facts["g2"]) == 1 and not [t for t in triples if t.source_id == "g2"]
    assert sorted(s["kind"] for s in skipped if s["source_id"] == "g2") == ["deletion", "revision", "shuffle"]


def test_the_same_seed_draws_the_same_corruptions_and_another_seed_may_not():
    items = structured_items()
    facts = {it.id: item_facts(it) for it in items}
    a, _ = build_triples(items, facts, seed=3)
    b, _ = build_triples(items, facts, seed=3)
    c, _ = build_triples(items, facts, seed=4)
    assert a == b and a != c
    # A triple does not depend on the other items the run has (only on the pool it draws revisions from).
    d, _ = build_triples(items[::-1], {k: facts[k] for k in reversed(list(facts))}, seed=3)
    assert sorted(a, key=lambda t: t.id) == sorted(d, key=lambda t: t.id)


@given(st.integers(1, 40), st.floats(0.01, 1.0))
def test_ka_keeps_at_least_one_and_at_most_all_facts(n, share):
    k = n_kept(n, share)
    assert 1 <= k <= n and k >= share * n - 1e-6


# ----------------------------------------------------------------------------------------------------------
# Settings, inputs and the registry


def test_the_registry_and_the_preset_know_knowtuning():
    assert "knowtuning" in method_names() and "knowtuning-lora" in method_names()
    spec = get_method("knowtuning")
    assert not spec.is_adapter and spec.output_name == "model"
    cfg = resolve_training_settings({}, preset="knowtuning")
    kt = cfg.knowtuning
    assert (cfg.method, kt.inner_method, kt.lora_targets) == ("knowtuning", "lora", ["q_proj", "v_proj"])
    assert (kt.ka_lr, kt.ka_epochs, kt.kc_lr, kt.kc_epochs) == (1e-4, 3, 1e-5, 1)
    assert (kt.beta, kt.sft_weight) == (0.1, 0.2)
    explicit = resolve_training_settings({"knowtuning": {"ka_lr": 5e-5}}, preset="knowtuning").knowtuning
    assert explicit.ka_lr == 5e-5 and explicit.kc_lr == 1e-5  # the preset's other KnowTuning settings stay
    assert PRESETS["knowtuning"]["method"] == "knowtuning"


@pytest.mark.parametrize(("field", "value", "words"), [
    ("ka_share", 0, "greater than 0"),
    ("ka_share", 1.5, "less than or equal to 1"),
    ("inner_method", "qlora", "'lora' or 'full'"),
    ("lora_targets", [], "at least one layer"),
    ("lora_targets", ["q proj"], "module names"),
    ("beta", 0, "greater than 0"),
    ("sft_weight", -1, "greater than or equal to 0"),
])
def test_bad_settings_are_refused_naming_the_field(field, value, words):
    with pytest.raises(ConfigError, match=rf"training\.knowtuning\.{field}.*{words}"):
        TrainSettings.from_dict({"method": "knowtuning", "knowtuning": {field: value}})


def test_lora_targets_that_match_no_layer_are_refused_with_the_layer_names():
    from medtune.models import build_tiny_model

    model, _ = build_tiny_model(["a few words to train a tokenizer on"], vocab_size=64, hidden_size=16,
                                num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    assert {n.rsplit(".", 1)[-1] for n in lora_target_names(model, ["q_proj", "v_proj"])} == {"q_proj", "v_proj"}
    with pytest.raises(ConfigError, match=r"match no linear layer.*q_proj"):
        lora_target_names(model, ["query"])


def test_mcq_items_and_bad_facts_are_refused_naming_the_record(tmp_path):
    from medtune.training import train

    mcq = make_items(4)
    with pytest.raises(InputError, match=r"record q000, field 'kind': knowtuning trains on free-text items"):
        train(micro_config(method="knowtuning"), mcq, make_order([it.id for it in mcq]), tmp_path / "r",
              items_path="items.parquet")
    item = structured_items()[0]
    item.meta["facts"][1]["value"] = "Nothing like it"
    with pytest.raises(InputError, match=r"record cardiac-00.*meta\.facts\.1\.value"):
        item_facts(item, file="items.parquet")
    assert isinstance(item_facts(structured_items()[0])[0], Fact)
