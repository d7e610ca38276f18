"""The questions of the synthetic demo dataset: multiple-choice items generated from the knowledge base, and the
check that the textbook states every answer.

* **Questions** (4 options) at three human-defined levels: ``easy`` = direct recall (disease → drug / test /
  cause), ``medium`` = one inference step (symptoms → disease), ``hard`` = two steps (symptoms → disease →
  drug / test / cause).
* **Split without shortcuts.** Held-out diseases appear only in test questions (``meta.heldout=True``; their
  facts only in the textbook), which measures transfer from the textbook. Test questions about trained diseases
  use phrasings never used by train questions. Wrong options come from the same system *and the same half* as
  the answer: if held-out entities only ever appeared as distractors in training, a model would learn "never
  pick those" and score below chance on held-out items.
* **Balanced answers.** Answer positions are assigned round-robin within each (split, level) group and then
  shuffled with the seed, so every position is (within one) equally often correct.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations, permutations
from typing import Any

from medtune.data.synthetic_textbook import TEXTBOOK_TEMPLATES, fill_template, items_rng, shuffled_textbook
from medtune.data.synthetic_world import Disease, KnowledgeBase, build_knowledge_base
from medtune.errors import InputError
from medtune.schema import DIFFICULTY_LEVELS, MCQItem

SOURCE = "synthetic"

# ----------------------------------------------------------------------------------------------------------
# Question templates: {D} disease, {S} symptom list. "train" phrasings are used by train questions only; "test"
# phrasings by test questions only (for trained and held-out diseases alike), so test questions on trained
# diseases probe the same facts through unseen phrasings.

QUESTION_TEMPLATES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "easy": {
        "drug": {
            "train": ("What is the first-line drug for {D}?", "Which drug is given first for {D}?",
                      "{D} is treated first with which drug?"),
            "test": ("A patient is diagnosed with {D}. Which drug should be started first?",
                     "Which medicine is the first choice in {D}?"),
        },
        "test": {
            "train": ("Which test confirms {D}?", "What is the diagnostic test for {D}?",
                      "{D} is diagnosed with which test?"),
            "test": ("A doctor suspects {D}. Which test will confirm it?",
                     "Which investigation establishes the diagnosis of {D}?"),
        },
        "cause": {
            "train": ("What causes {D}?", "What is the cause of {D}?", "{D} results from what?"),
            "test": ("Which agent is responsible for {D}?", "A patient has {D}. What caused it?"),
        },
    },
    "medium": {
        "diagnosis": {
            "train": ("A patient presents with {S}. What is the most likely diagnosis?",
                      "Which disease causes {S}?",
                      "Findings of {S} suggest which disease?",
                      "What disease does a patient with {S} have?"),
            "test": ("A patient reports {S}. Which condition is most likely?",
                     "Examination reveals {S}. What is the diagnosis?"),
        },
    },
    "hard": {
        "drug": {
            "train": ("A patient presents with {S}. What is the first-line drug for the most likely disease?",
                      "Which drug treats the disease that causes {S}?"),
            "test": ("Examination reveals {S}. Which drug is the first choice?",),
        },
        "test": {
            "train": ("A patient presents with {S}. Which test confirms the most likely disease?",
                      "Which test confirms the disease behind {S}?"),
            "test": ("Examination reveals {S}. Which investigation will confirm the diagnosis?",),
        },
        "cause": {
            "train": ("A patient presents with {S}. What most likely caused the disease?",
                      "What causes the disease that presents with {S}?"),
            "test": ("Examination reveals {S}. Which agent is responsible?",),
        },
    },
}


@dataclass
class SyntheticDataset:
    """What one generation gives: the items, the textbook, the knowledge base and the arguments it ran with."""

    items: list[MCQItem]
    textbook: list[str]
    knowledge_base: KnowledgeBase
    config: dict[str, Any] = field(default_factory=dict)


def _explanation(d: Disease, level: str, relation: str, symptoms: Sequence[str] | None) -> str:
    # The textbook sentences that answer the question, in inference order.
    parts = []
    if level in ("medium", "hard"):
        parts.append(fill_template(TEXTBOOK_TEMPLATES["symptoms"][3], d))  # "Together, S suggest D."
    if level in ("easy", "hard"):
        parts.append(fill_template(TEXTBOOK_TEMPLATES[relation][0], d))
    return " ".join(parts)


def _symptom_variants(d: Disease) -> list[tuple[str, ...]]:
    """The findings a question may show: the full set and (for 3+ symptoms) every pair, in every order."""
    subsets = [d.symptoms]
    if len(d.symptoms) > 2:
        subsets += list(combinations(d.symptoms, 2))
    return [p for s in subsets for p in permutations(s)]


def _question_specs(d: Disease, level: str, phrasing: str, k: int, rng: random.Random) -> list[dict[str, Any]]:
    """Up to ``k`` distinct (relation, findings, template) combinations, balanced across relations."""
    by_relation: list[list[dict[str, Any]]] = []
    for relation, sets in QUESTION_TEMPLATES[level].items():
        combos = []
        for t_idx, template in enumerate(sets[phrasing]):
            findings = _symptom_variants(d) if level != "easy" else [None]
            for f in findings:
                combos.append({"relation": relation, "template": f"{level}.{relation}.{phrasing}.{t_idx}",
                               "text": template, "symptoms": f})
        rng.shuffle(combos)
        by_relation.append(combos)
    rng.shuffle(by_relation)
    out: list[dict[str, Any]] = []
    # Round-robin over relations so they are balanced.
    while len(out) < k and any(by_relation):
        for combos in by_relation:
            if combos and len(out) < k:
                out.append(combos.pop())
    return out


def generate_synthetic(
    seed: int = 0,
    n_systems: int = 6,
    diseases_per_system: int = 8,
    *,
    train_per_level: int = 8,
    test_per_level: int = 3,
    n_options: int = 4,
    min_symptoms: int = 2,
    max_symptoms: int = 3,
) -> SyntheticDataset:
    """Generate the fictional knowledge base, its textbook and its train/test MCQs (deterministic).

    ``train_per_level`` questions per trained disease and level go to the train split, ``test_per_level``
    per disease (trained and held out) and level to the test split. Defaults: 576 train and 432 test
    questions (216 of them held out), ~1,130 textbook sentences.
    """
    if n_options < 2:
        raise InputError("n_options must be at least 2", field="n_options")
    if train_per_level < 0 or test_per_level < 0:
        raise InputError("questions per level must be >= 0", field="train_per_level")
    kb = build_knowledge_base(seed, n_systems, diseases_per_system, min_symptoms, max_symptoms)
    rng = items_rng(seed)
    textbook = shuffled_textbook(kb, rng)

    # Distractor pools: same system, same half.
    groups: dict[tuple[str, bool], list[Disease]] = {}
    for d in kb.diseases:
        groups.setdefault((d.system, d.heldout), []).append(d)

    raw: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for d in kb.diseases:
        for level in DIFFICULTY_LEVELS:
            splits = [("test", test_per_level)] if d.heldout else [("train", train_per_level), ("test", test_per_level)]
            for split, k in splits:
                for spec in _question_specs(d, level, split, k, rng):
                    raw.setdefault((split, level), []).append({**spec, "disease": d, "level": level})

    items: list[MCQItem] = []
    for split in ("train", "test"):
        split_items: list[MCQItem] = []
        for level in DIFFICULTY_LEVELS:
            # Balanced answer positions: round-robin over positions, shuffled, per option count (a small
            # half-system offers fewer than n_options entities).
            by_k: dict[int, list[dict[str, Any]]] = {}
            for spec in raw.get((split, level), []):
                d = spec["disease"]
                by_k.setdefault(min(n_options, len(groups[(d.system, d.heldout)])), []).append(spec)
            for k, specs in sorted(by_k.items()):
                positions = [i % k for i in range(len(specs))]
                rng.shuffle(positions)
                for spec, pos in zip(specs, positions, strict=True):
                    split_items.append(_make_item(spec, pos, groups, k, rng, split, seed))
        rng.shuffle(split_items)
        for i, it in enumerate(split_items):
            it.id = f"syn{seed}-{split}-{i:04d}"
        items.extend(split_items)
    config = {"seed": seed, "n_systems": n_systems, "diseases_per_system": diseases_per_system,
              "train_per_level": train_per_level, "test_per_level": test_per_level, "n_options": n_options,
              "min_symptoms": min_symptoms, "max_symptoms": max_symptoms}
    return SyntheticDataset(items=items, textbook=textbook, knowledge_base=kb, config=config)


def _make_item(
    spec: dict[str, Any],
    pos: int,
    groups: dict[tuple[str, bool], list[Disease]],
    n_options: int,
    rng: random.Random,
    split: str,
    seed: int,
) -> MCQItem:
    d: Disease = spec["disease"]
    relation: str = spec["relation"]
    others = [o for o in groups[(d.system, d.heldout)] if o is not d]
    distractors = [o.answer(relation) for o in rng.sample(others, n_options - 1)]
    options = [*distractors[:pos], d.answer(relation), *distractors[pos:]]
    symptoms = spec["symptoms"]
    question = fill_template(spec["text"], d, symptoms=symptoms)
    meta: dict[str, Any] = {
        "disease": d.name,
        "heldout": d.heldout,
        "relation": relation,
        "template": spec["template"],
        "symptoms": list(symptoms) if symptoms else None,
        "generator_seed": seed,
    }
    return MCQItem(
        id="pending",
        question=question,
        options=options,
        answer=pos,
        source=SOURCE,
        split=split,
        category=d.system,
        human_difficulty=spec["level"],
        explanation=_explanation(d, spec["level"], relation, symptoms),
        meta=meta,
    )


# ----------------------------------------------------------------------------------------------------------
# Checks


@functools.lru_cache(maxsize=4096)
def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])")


def _mentions(sentence: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``sentence`` as whole words (so "Kal" does not match "Kalor")."""
    return phrase in sentence and _phrase_pattern(phrase).search(sentence) is not None


def unanswerable_items(items: Sequence[MCQItem], textbook: Sequence[str]) -> list[str]:
    """Ids of items whose answer is not stated in ``textbook`` (empty when the dataset is consistent).

    easy: some sentence names the disease and the answer; medium: some sentence names all shown findings
    and the answer disease; hard: both links (findings → disease, disease → answer).
    """
    about: dict[str, list[str]] = {}  # disease -> the sentences that mention it

    def sentences_about(disease: str) -> list[str]:
        if disease not in about:
            about[disease] = [s for s in textbook if _mentions(s, disease)]
        return about[disease]

    bad = []
    for it in items:
        m = it.meta
        disease, symptoms, answer = m["disease"], m.get("symptoms") or [], it.options[it.answer]
        sents = sentences_about(disease)
        link_fact = any(_mentions(s, answer) for s in sents)
        link_findings = any(all(_mentions(s, x) for x in symptoms) for s in sents)
        ok = {"easy": link_fact, "medium": link_findings and answer == disease,
              "hard": link_findings and link_fact}.get(str(it.human_difficulty), False)
        if not ok:
            bad.append(it.id)
    return bad
