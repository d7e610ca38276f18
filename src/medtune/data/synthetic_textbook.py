"""The textbook of the synthetic demo dataset: every fact of the knowledge base in several sentences.

Every fact is stated in 4–5 sentence templates, including *reverse* ones ("Together, S1, S2 and S3 suggest X"):
a tiny model only learns the direction it is shown, and findings → diagnosis questions need the reverse
direction. Entity names are always Capitalised and sentences never start with a symptom, so a name or a symptom
is the same token sequence wherever it occurs. Questions and answers are phrased with the same filling
(:func:`fill_template`), so they speak of the world exactly as the textbook does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import combinations

from medtune.data.synthetic_world import RELATIONS, Disease, KnowledgeBase

# ----------------------------------------------------------------------------------------------------------
# Textbook templates. {D} disease, {S} symptom list ("a, b and c"), {SA}/{SB} two symptoms, {C} cause,
# {T} test, {M} drug, {SYS} system adjective, {ORG} organ.

TEXTBOOK_TEMPLATES: dict[str, tuple[str, ...]] = {
    "system": (
        "{D} is a {SYS} disease.",
        "{D} affects the {ORG}.",
        "Among {SYS} diseases is {D}.",
    ),
    "symptoms": (
        "{D} presents with {S}.",
        "Patients with {D} have {S}.",
        "The symptoms of {D} are {S}.",
        # reverse: findings -> disease
        "Together, {S} suggest {D}.",
        "A patient with {S} most likely has {D}.",
    ),
    "symptom_pair": ("Both {SA} and {SB} point to {D}.",),
    "cause": (
        "{D} is caused by the {C}.",
        "The cause of {D} is the {C}.",
        "The {C} causes {D}.",
        "{D} results from the {C}.",
    ),
    "test": (
        "{D} is confirmed by the {T}.",
        "The diagnostic test for {D} is the {T}.",
        "The {T} confirms {D}.",
        "Doctors diagnose {D} with the {T}.",
        "To confirm {D}, order the {T}.",
    ),
    "drug": (
        "The first-line drug for {D} is {M}.",
        "{D} is treated first with {M}.",
        "{M} is the first-line treatment of {D}.",
        "Doctors treat {D} with {M}.",
        "Give {M} first for {D}.",
    ),
}


def symptom_list(symptoms: Sequence[str]) -> str:
    """Symptoms as a phrase: "a", "a and b", "a, b and c"."""
    return symptoms[0] if len(symptoms) == 1 else ", ".join(symptoms[:-1]) + " and " + symptoms[-1]


def fill_template(template: str, d: Disease, symptoms: Sequence[str] | None = None,
                  pair: Sequence[str] | None = None) -> str:
    """``template`` about disease ``d`` (its symptoms, or the ``symptoms`` a question shows; ``pair`` for
    {SA}/{SB})."""
    return template.format(
        D=d.name, S=symptom_list(symptoms or d.symptoms), SA=pair[0] if pair else "", SB=pair[1] if pair else "",
        C=d.cause, T=d.test, M=d.drug, SYS=d.system, ORG=d.organ,
    )


def textbook_sentences(d: Disease) -> list[str]:
    """Every sentence the textbook states about one disease."""
    out = [fill_template(t, d) for t in TEXTBOOK_TEMPLATES["system"]]
    out += [fill_template(t, d) for t in TEXTBOOK_TEMPLATES["symptoms"]]
    if len(d.symptoms) > 2:
        out += [fill_template(t, d, pair=p) for p in combinations(d.symptoms, 2)
                for t in TEXTBOOK_TEMPLATES["symptom_pair"]]
    for rel in RELATIONS:
        out += [fill_template(t, d) for t in TEXTBOOK_TEMPLATES[rel]]
    return out


def items_rng(seed: int) -> random.Random:
    """The random stream of a generated dataset after its knowledge base: the textbook's shuffle draws from it
    first and the questions go on drawing from it, so the same seed gives the same textbook and items."""
    return random.Random(f"medtune-synthetic-items-{seed}")


def shuffled_textbook(kb: KnowledgeBase, rng: random.Random) -> list[str]:
    """Every sentence about every disease of ``kb``, shuffled with ``rng`` (which it advances)."""
    textbook = [s for d in kb.diseases for s in textbook_sentences(d)]
    rng.shuffle(textbook)
    return textbook


def build_textbook(kb: KnowledgeBase) -> list[str]:
    """The textbook of ``kb`` in the order
    :func:`~medtune.data.synthetic_questions.generate_synthetic` writes it (every generated task of one
    knowledge base shares it, so one pretrained model serves them all)."""
    return shuffled_textbook(kb, items_rng(kb.seed))
