"""The free-text synthetic task: questions that ask for several facts of one invented disease at once.

Fine-tuning methods are compared on whether they learn *facts*; a multiple-choice score cannot say which fact
a model got wrong, and a free-text score such as ROUGE rewards wording. So this task shares the fictional
knowledge base and the textbook of :func:`~medtune.data.synthetic_questions.generate_synthetic` (same seed → same
diseases, byte-identical textbook: one pretrained model serves both tasks) and asks free-text questions whose
every stated fact can be checked exactly against the fact sheet (:mod:`medtune.factcheck`).

* **Questions** ask for two to four of a disease's facts (relations ``symptoms``, ``cause``, ``test``,
  ``drug``): "How is X diagnosed and treated?", "What causes X and how does it present?", "Describe X." and
  other combinations, each in a few phrasings.
* **Reference answers** state the asked facts in the order the question asks for them, one sentence per fact,
  joined with single spaces. Each sentence is one of the textbook's own sentences about that fact (the
  template drawn with the seed), so a model pretrained on the textbook can recall it word for word.
* **Split without shortcuts**, as in the MCQ set: half of each system's diseases are held out and appear only
  in test questions (``meta.heldout``); every test question, on a trained or a held-out disease, uses a
  phrasing no train question uses.

Item fields: ``question``, ``answer`` (the reference), ``category`` (the organ system), ``split``,
``source`` = ``synthetic-qa``, and ``meta``:

* ``disease`` (str): the subject, a key of the fact sheet's ``subjects``;
* ``heldout`` (bool): the disease appears in test questions only;
* ``relations`` (list of str): the relations asked, in answer order;
* ``facts`` (list of objects, one per asked relation, in answer order; ``" ".join(f["text"] for f in facts)``
  is the answer): ``{"relation": ..., "value": ..., "text": ..., "question": ...}`` — ``relation`` one of
  ``relations``; ``value`` the fact's object as ``text`` writes it (a drug, test or cause name; for
  ``symptoms`` the disease's symptom list as the textbook writes it, "a, b and c"), occurring exactly once in
  ``text``, so a revision can swap it for another fact's value of the same relation; ``text`` the answer's
  sentence for this fact, a textbook sentence; ``question`` a one-fact question whose answer is ``text``
  ("What is the first-line drug for X?");
* ``template`` (str): the question phrasing's id, e.g. ``cause+symptoms.train.0``; ``generator_seed`` (int).

Default sizes (seed 0, 6 systems × 8 diseases): 384 train questions (16 per trained disease, of 17 train
phrasings), 144 test questions (3 per disease; 72 on trained diseases, 72 held out). Generation takes well
under a second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtune.data.registry import LoadResult, OnError, register_loader
from medtune.data.synthetic import generator_options, load_generated
from medtune.data.synthetic_textbook import TEXTBOOK_TEMPLATES, build_textbook, fill_template, symptom_list
from medtune.data.synthetic_world import Disease, KnowledgeBase, build_knowledge_base, knowledge_base_facts
from medtune.errors import InputError
from medtune.factsheet import FactSheet
from medtune.schema import QAItem

SOURCE = "synthetic-qa"

# The textbook templates that state one fact about the disease (the reverse "findings → disease" phrasings of
# the symptoms are left out: an answer about X starts from X).
ANSWER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "symptoms": TEXTBOOK_TEMPLATES["symptoms"][:3],
    "cause": TEXTBOOK_TEMPLATES["cause"],
    "test": TEXTBOOK_TEMPLATES["test"],
    "drug": TEXTBOOK_TEMPLATES["drug"],
}

# One question per relation whose whole answer is that one fact.
FACT_QUESTIONS: dict[str, str] = {
    "symptoms": "What are the symptoms of {D}?",
    "cause": "What causes {D}?",
    "test": "Which test confirms {D}?",
    "drug": "What is the first-line drug for {D}?",
}

# The asked relations (in answer order) → phrasings; "train" phrasings only in train questions, "test" ones only
# in test questions.
QUESTION_TEMPLATES: dict[tuple[str, ...], dict[str, tuple[str, ...]]] = {
    ("test", "drug"): {
        "train": ("How is {D} diagnosed and treated?", "Which test confirms {D}, and which drug is given first?"),
        "test": ("A doctor suspects {D}. How is it confirmed, and what should be started first?",),
    },
    ("cause", "symptoms"): {
        "train": ("What causes {D} and how does it present?", "What is the cause of {D}, and what are its symptoms?"),
        "test": ("Which agent is responsible for {D}, and what do patients notice?",),
    },
    ("symptoms", "test"): {
        "train": ("How does {D} present and how is it confirmed?",
                  "What are the symptoms of {D}, and which test confirms it?"),
        "test": ("What findings does {D} produce, and which investigation establishes the diagnosis?",),
    },
    ("symptoms", "drug"): {
        "train": ("How does {D} present and how is it treated?",
                  "What are the symptoms of {D}, and which drug is given first?"),
        "test": ("What do patients with {D} notice, and which medicine is the first choice?",),
    },
    ("cause", "drug"): {
        "train": ("What causes {D} and how is it treated?", "What is the cause of {D}, and which drug is given first?"),
        "test": ("Which agent is responsible for {D}, and which medicine is the first choice?",),
    },
    ("cause", "test"): {
        "train": ("What causes {D} and how is it diagnosed?", "What is the cause of {D}, and which test confirms it?"),
        "test": ("Which agent is responsible for {D}, and which investigation establishes the diagnosis?",),
    },
    ("cause", "test", "drug"): {
        "train": ("What causes {D}, and how is it diagnosed and treated?",),
        "test": ("For {D}, name the responsible agent, the confirming investigation and the first-choice medicine.",),
    },
    ("symptoms", "test", "drug"): {
        "train": ("How does {D} present, and how is it diagnosed and treated?",),
        "test": ("What does a patient with {D} notice, and how is the disease confirmed and managed?",),
    },
    ("symptoms", "cause", "test", "drug"): {
        "train": ("Describe {D}.", "Tell me about {D}.", "What is known about {D}?"),
        "test": ("Give an overview of {D}.", "Summarise the key facts about {D}."),
    },
}


def n_phrasings(split: str) -> int:
    """How many distinct questions one disease can get in ``split`` (the most ``*_per_disease`` may ask)."""
    return sum(len(t[split]) for t in QUESTION_TEMPLATES.values())


@dataclass
class SyntheticQADataset:
    items: list[QAItem]
    textbook: list[str]
    knowledge_base: KnowledgeBase
    facts: FactSheet
    config: dict[str, Any] = field(default_factory=dict)


def fact_value(d: Disease, relation: str) -> str:
    """The object of one fact as an answer sentence writes it (symptoms as the list "a, b and c")."""
    return symptom_list(d.symptoms) if relation == "symptoms" else d.answer(relation)


def _fact(d: Disease, relation: str, rng: random.Random) -> dict[str, str]:
    return {"relation": relation, "value": fact_value(d, relation),
            "text": fill_template(rng.choice(ANSWER_TEMPLATES[relation]), d),
            "question": FACT_QUESTIONS[relation].format(D=d.name)}


def _specs(split: str, k: int, rng: random.Random) -> list[tuple[tuple[str, ...], int]]:
    """``k`` distinct (relations, phrasing index) pairs, round-robin over the relation sets so they are balanced."""
    by_relations = []
    for relations, phrasings in QUESTION_TEMPLATES.items():
        options = [(relations, i) for i in range(len(phrasings[split]))]
        rng.shuffle(options)
        by_relations.append(options)
    rng.shuffle(by_relations)
    out: list[tuple[tuple[str, ...], int]] = []
    while len(out) < k:
        for options in by_relations:
            if options and len(out) < k:
                out.append(options.pop())
    return out


def generate_synthetic_qa(
    seed: int = 0,
    n_systems: int = 6,
    diseases_per_system: int = 8,
    *,
    train_per_disease: int = 16,
    test_per_disease: int = 3,
    min_symptoms: int = 2,
    max_symptoms: int = 3,
) -> SyntheticQADataset:
    """Generate the free-text task on the knowledge base of ``generate_synthetic(seed, ...)`` (deterministic).

    ``train_per_disease`` questions per trained disease go to the train split, ``test_per_disease`` per disease
    (trained and held out) to the test split, each a distinct phrasing. Defaults: 384 train, 144 test.
    """
    for name, k, split in (("train_per_disease", train_per_disease, "train"),
                           ("test_per_disease", test_per_disease, "test")):
        if not 0 <= k <= n_phrasings(split):
            raise InputError(f"{name} must be between 0 and {n_phrasings(split)} (the distinct {split} "
                             f"phrasings), got {k}", field=name)
    kb = build_knowledge_base(seed, n_systems, diseases_per_system, min_symptoms, max_symptoms)
    rng = random.Random(f"medtune-synthetic-qa-{seed}")
    items: list[QAItem] = []
    for split, k in (("train", train_per_disease), ("test", test_per_disease)):
        split_items = []
        for d in kb.diseases:
            if split == "train" and d.heldout:
                continue
            for relations, t_idx in _specs(split, k, rng):
                facts = [_fact(d, r, rng) for r in relations]
                split_items.append(QAItem(
                    id="pending",
                    question=QUESTION_TEMPLATES[relations][split][t_idx].format(D=d.name),
                    answer=" ".join(f["text"] for f in facts),
                    source=SOURCE,
                    split=split,
                    category=d.system,
                    meta={"disease": d.name, "heldout": d.heldout, "relations": list(relations), "facts": facts,
                          "template": f"{'+'.join(relations)}.{split}.{t_idx}", "generator_seed": seed},
                ))
        rng.shuffle(split_items)
        for i, it in enumerate(split_items):
            it.id = f"synqa{seed}-{split}-{i:04d}"
        items.extend(split_items)
    config = {"seed": seed, "n_systems": n_systems, "diseases_per_system": diseases_per_system,
              "train_per_disease": train_per_disease, "test_per_disease": test_per_disease,
              "min_symptoms": min_symptoms, "max_symptoms": max_symptoms}
    return SyntheticQADataset(items=items, textbook=build_textbook(kb), knowledge_base=kb,
                              facts=knowledge_base_facts(kb), config=config)


@register_loader(SOURCE, needs_path=False, options=generator_options(generate_synthetic_qa),
                 description="Free-text questions on the synthetic knowledge base, checkable fact by fact (no path)")
def load_synthetic_qa(
    path: str | Path | None = None,
    *,
    on_error: OnError = "raise",
    seed: int = 0,
    split: str | None = None,
    **options: Any,
) -> LoadResult:
    """Generate the free-text task; the textbook is ``extras["textbook"]``, the fact sheet ``extras["facts"]``.

    ``options`` are :func:`generate_synthetic_qa`'s keyword arguments (n_systems, train_per_disease, ...).
    """
    ds, items = load_generated(SOURCE, generate_synthetic_qa, path, seed, split, options)
    return LoadResult(items, [], {"textbook": ds.textbook, "knowledge_base": ds.knowledge_base.to_dict(),
                                  "facts": ds.facts})
