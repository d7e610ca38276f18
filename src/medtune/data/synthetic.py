"""The embedded demo dataset: a deterministic, fictional medical knowledge base, its textbook and its MCQs.

Why a fictional world: the demo must run offline on 2 CPU cores with a ~0.6 M-parameter Llama that is
pretrained from scratch, so the facts must be few, learnable in minutes, and certainly unknown to any model
beforehand (invented names, so nothing can be answered from prior knowledge and no real medical claim is
made). Each choice below is one the tiny model needs in order to learn from the data (the check at the end
shows it does):

* **Knowledge base.** ``n_systems`` organ systems (the item ``category``) × ``diseases_per_system``
  invented diseases (pronounceable names built from syllables with the seed). Each disease has 2–3
  symptoms from its own system's pool, chosen so that no two diseases share a symptom *pair* (any two of a
  disease's symptoms identify it), a cause, a diagnostic test and a first-line drug (invented names).
* **Textbook.** Every fact in 4–5 sentence templates, including *reverse* ones ("Together, S1, S2 and S3
  suggest X"): a tiny model only learns the direction it is shown, and findings → diagnosis questions need
  the reverse direction. Entity names are always Capitalised and sentences never start with a symptom, so a
  name or a symptom is the same token sequence wherever it occurs.
* **Questions** (4 options) at three human-defined levels: ``easy`` = direct recall (disease → drug / test /
  cause), ``medium`` = one inference step (symptoms → disease), ``hard`` = two steps (symptoms → disease →
  drug / test / cause).
* **Split without shortcuts.** Half of each system's diseases are *held out*: they appear only in test
  questions (``meta.heldout=True``; their facts only in the textbook), which measures transfer from the
  textbook. Test questions about trained diseases use phrasings never used by train questions. Wrong options
  come from the same system *and the same half* as the answer: if held-out entities only ever appeared as
  distractors in training, a model would learn "never pick those" and score below chance on held-out items.
* **Balanced answers.** Answer positions are assigned round-robin within each (split, level) group and then
  shuffled with the seed, so every position is (within one) equally often correct.

The same knowledge base and textbook serve the free-text task of :mod:`medtune.data.synthetic_qa`; both
loaders also return the knowledge base as a fact sheet (``extras["facts"]``, :mod:`medtune.factsheet`), which the
data stage writes beside the items as ``<stem>.facts.json``.

Default sizes (seed 0, 6 systems × 8 diseases): 576 train questions (192 per level, trained diseases only),
432 test questions (144 per level; 216 on trained diseases, 216 held out), a textbook of about 1,130
sentences with a word vocabulary of about 350. Generation takes well under a second.

Checked once on seed 0 by a throw-away script (not a test): the default tiny Llama (~0.7 M parameters with
a tokenizer trained on these texts) pretrained 100 epochs on the textbook (lr 3e-3), then fine-tuned 240
steps at batch 16 (lr 3e-4) on the option-text completions, scores 69 % on the test split by option-text
log-likelihood (easy 92 %, medium 61 %, hard 53 %; trained diseases 87 %, held out 51 %); the
pretrained-only model scores 25 % (chance).
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations, permutations
from pathlib import Path
from typing import Any

from medtune.data.registry import LoadResult, OnError, register_loader
from medtune.errors import InputError
from medtune.factsheet import FactSheet
from medtune.schema import DIFFICULTY_LEVELS, Item, MCQItem

SOURCE = "synthetic"
RELATIONS = ("drug", "test", "cause")
# The relations of the fact sheet (``<stem>.facts.json``): every fact the textbook states about a disease
# beyond its organ system, in the order a description gives them.
FACT_RELATIONS = ("symptoms", "cause", "test", "drug")

# ----------------------------------------------------------------------------------------------------------
# The organ systems: adjective (the category), organ (for "X affects the ..."), and a symptom pool that is
# disjoint from every other system's pool, so symptoms also identify the system.

_SYSTEMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("cardiovascular", "heart", (
        "chest pain", "palpitations", "fainting", "ankle swelling", "cold fingers",
        "racing pulse", "bluish lips", "slow pulse", "neck throbbing", "exercise fatigue",
    )),
    ("respiratory", "lungs", (
        "cough", "wheezing", "breathlessness", "chest tightness", "bloody sputum",
        "hoarse voice", "rapid breathing", "night cough", "nasal blockage", "noisy breathing",
    )),
    ("digestive", "gut", (
        "nausea", "vomiting", "diarrhea", "bloating", "heartburn",
        "abdominal cramps", "yellow skin", "bloody stool", "constipation", "poor appetite",
    )),
    ("neurological", "brain", (
        "headache", "dizziness", "tremor", "numbness", "seizures",
        "confusion", "blurred vision", "memory loss", "slurred speech", "muscle twitching",
    )),
    ("renal", "kidneys", (
        "flank pain", "dark urine", "frequent urination", "painful urination", "puffy eyes",
        "foamy urine", "low urine output", "excessive thirst", "lower back pain", "salt craving",
    )),
    ("dermatological", "skin", (
        "rash", "itching", "blisters", "scaly patches", "hair loss",
        "dry skin", "skin ulcers", "red bumps", "peeling skin", "brittle nails",
    )),
    ("endocrine", "glands", (
        "weight gain", "weight loss", "heat intolerance", "cold intolerance", "excessive sweating",
        "constant hunger", "hand tremor", "deep voice", "slow healing", "goitre",
    )),
    ("musculoskeletal", "joints", (
        "joint pain", "stiff joints", "muscle weakness", "bone pain", "swollen knees",
        "back stiffness", "muscle cramps", "limping", "joint clicking", "neck stiffness",
    )),
    ("hematological", "blood", (
        "pale skin", "easy bruising", "nosebleeds", "bleeding gums", "tiredness",
        "swollen glands", "recurrent fevers", "cold feet", "pinpoint spots", "heavy periods",
    )),
    ("ophthalmic", "eyes", (
        "red eyes", "eye pain", "double vision", "watery eyes", "light sensitivity",
        "eyelid swelling", "dry eyes", "floaters", "night blindness", "tunnel vision",
    )),
)
MAX_SYSTEMS = len(_SYSTEMS)

# Name parts. Every name is Capitalised, built from 2 syllables (+ a class suffix for diseases and drugs),
# and its syllable stem is used only once in the whole knowledge base (no name is a prefix of another).
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "pl", "tr",
           "st", "th", "sh", "ch")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "", "n", "r", "l", "s", "m")
_DISEASE_SUFFIXES = ("osis", "itis", "emia", "algia", "opathy", "ism")
_DRUG_SUFFIXES = ("zole", "pril", "stat", "vir", "mab", "tane", "dine", "nex")
_CAUSE_KINDS = ("virus", "bacterium", "parasite", "toxin", "fungus")
_TEST_KINDS = ("assay", "scan", "biopsy", "stain", "panel", "culture")

# Real disease and drug names the syllable generator could plausibly spell: a generated name equal to one
# of these (case-insensitive) is rejected, so the fictional world never names a real condition.
_BLOCKLIST_TEXT = """
    malaria anemia leukemia sepsis gastritis hepatitis nephritis arthritis dermatitis bronchitis colitis
    cystitis otitis rhinitis sinusitis tonsillitis meningitis mastitis myositis uveitis keratitis iritis
    vasculitis pancreatitis carditis fibrosis sclerosis psoriasis scoliosis kyphosis lordosis stenosis
    thrombosis cirrhosis necrosis ptosis mitosis meiosis neurosis psychosis silicosis asbestosis
    sarcoidosis toxemia uremia ischemia hypoxemia viremia bacteremia neuralgia myalgia arthralgia
    fibromyalgia gigantism dwarfism autism rickets scurvy gout lupus tetanus rabies measles mumps cholera
    typhus typhoid plague leprosy dengue zika ebola polio diphtheria pertussis tinea scabies mania
    dementia anorexia bulimia hernia glioma lymphoma melanoma sarcoma myeloma carcinoma adenoma fibroma
    lipoma myopathy neuropathy cardiomyopathy retinopathy nephropathy encephalopathy alcoholism
    botulism albinism hirsutism priapism strabismus nystagmus glaucoma cataract asthma eczema acne
    insulin heparin morphine codeine aspirin digoxin warfarin lisinopril captopril enalapril ramipril
    statin lovastatin simvastatin nystatin acyclovir ritonavir omeprazole fluconazole metronidazole
    albendazole rituximab cetuximab lidocaine ranitidine famotidine cimetidine"""
REAL_NAME_BLOCKLIST = frozenset(_BLOCKLIST_TEXT.split())

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


# ----------------------------------------------------------------------------------------------------------
# Data classes


@dataclass(frozen=True)
class Disease:
    name: str
    system: str
    organ: str
    symptoms: tuple[str, ...]
    cause: str
    test: str
    drug: str
    heldout: bool

    def answer(self, relation: str) -> str:
        return {"drug": self.drug, "test": self.test, "cause": self.cause, "diagnosis": self.name}[relation]


@dataclass(frozen=True)
class KnowledgeBase:
    seed: int
    systems: tuple[str, ...]
    diseases: tuple[Disease, ...]

    def by_name(self, name: str) -> Disease:
        for d in self.diseases:
            if d.name == name:
                return d
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "systems": list(self.systems), "diseases": [asdict(d) for d in self.diseases]}


@dataclass
class SyntheticDataset:
    items: list[MCQItem]
    textbook: list[str]
    knowledge_base: KnowledgeBase
    config: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# Generation


class _Namer:
    """Invents unique pronounceable names; a stem is never reused, so no name is a prefix of another."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.stems: set[str] = set()

    def _syllable(self) -> str:
        return self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)

    def new(self, suffixes: Sequence[str] = ("",)) -> str:
        for _ in range(10_000):
            stem = self._syllable() + self._syllable()
            suffix = self.rng.choice(suffixes)
            if suffix and stem[-1] in _VOWELS and suffix[0] in _VOWELS:
                suffix = "r" + suffix  # "Zarlo" + "itis" -> "Zarloritis", not "Zarloitis"
            if suffix and stem[-1] == suffix[0]:
                continue  # avoid doubled letters at the joint ("Kalossosis")
            name = stem + suffix
            if stem in self.stems or name.lower() in REAL_NAME_BLOCKLIST or stem in REAL_NAME_BLOCKLIST:
                continue
            if any(stem.startswith(s) or s.startswith(stem) for s in self.stems):
                continue
            self.stems.add(stem)
            return name.capitalize()
        raise RuntimeError("name space exhausted")  # pragma: no cover - 24*5*8 squared stems


def _assign_symptoms(
    pool: Sequence[str], n: int, rng: random.Random, min_s: int, max_s: int
) -> list[tuple[str, ...]]:
    """Pick ``n`` symptom sets of size min_s..max_s from ``pool`` with no symptom pair shared between sets."""
    for _ in range(1000):
        used_pairs: set[frozenset[str]] = set()
        sets: list[tuple[str, ...]] = []
        for _i in range(n):
            size = rng.randint(min_s, max_s)
            for _try in range(200):
                cand = tuple(rng.sample(list(pool), size))
                pairs = {frozenset(p) for p in combinations(cand, 2)}
                if not pairs & used_pairs:
                    used_pairs |= pairs
                    sets.append(cand)
                    break
            else:
                break
        if len(sets) == n:
            return sets
    raise InputError(
        f"cannot give {n} diseases distinct symptom pairs from a pool of {len(pool)} symptoms; "
        "use fewer diseases per system"
    )


def _symptom_list(symptoms: Sequence[str]) -> str:
    return symptoms[0] if len(symptoms) == 1 else ", ".join(symptoms[:-1]) + " and " + symptoms[-1]


def build_knowledge_base(
    seed: int = 0, n_systems: int = 6, diseases_per_system: int = 8, min_symptoms: int = 2, max_symptoms: int = 3
) -> KnowledgeBase:
    """The fictional knowledge base alone (deterministic for the arguments)."""
    if not 1 <= n_systems <= MAX_SYSTEMS:
        raise InputError(f"n_systems must be between 1 and {MAX_SYSTEMS}, got {n_systems}", field="n_systems")
    if diseases_per_system < 4:
        raise InputError("diseases_per_system must be at least 4 (two trained, two held out)",
                         field="diseases_per_system")
    if not 2 <= min_symptoms <= max_symptoms <= 4:
        raise InputError("need 2 <= min_symptoms <= max_symptoms <= 4", field="min_symptoms")
    rng = random.Random(f"medtune-synthetic-kb-{seed}")
    namer = _Namer(rng)
    diseases: list[Disease] = []
    systems = _SYSTEMS[:n_systems]
    for system, organ, pool in systems:
        symptom_sets = _assign_symptoms(pool, diseases_per_system, rng, min_symptoms, max_symptoms)
        heldout_idx = set(rng.sample(range(diseases_per_system), diseases_per_system // 2))
        for i, symptoms in enumerate(symptom_sets):
            diseases.append(
                Disease(
                    name=namer.new(_DISEASE_SUFFIXES),
                    system=system,
                    organ=organ,
                    symptoms=symptoms,
                    cause=f"{namer.new()} {rng.choice(_CAUSE_KINDS)}",
                    test=f"{namer.new()} {rng.choice(_TEST_KINDS)}",
                    drug=namer.new(_DRUG_SUFFIXES),
                    heldout=i in heldout_idx,
                )
            )
    return KnowledgeBase(seed=seed, systems=tuple(s[0] for s in systems), diseases=tuple(diseases))


def _fill(template: str, d: Disease, symptoms: Sequence[str] | None = None, pair: Sequence[str] | None = None) -> str:
    return template.format(
        D=d.name, S=_symptom_list(symptoms or d.symptoms), SA=pair[0] if pair else "", SB=pair[1] if pair else "",
        C=d.cause, T=d.test, M=d.drug, SYS=d.system, ORG=d.organ,
    )


def textbook_sentences(d: Disease) -> list[str]:
    """Every sentence the textbook states about one disease."""
    out = [_fill(t, d) for t in TEXTBOOK_TEMPLATES["system"]]
    out += [_fill(t, d) for t in TEXTBOOK_TEMPLATES["symptoms"]]
    if len(d.symptoms) > 2:
        out += [_fill(t, d, pair=p) for p in combinations(d.symptoms, 2) for t in TEXTBOOK_TEMPLATES["symptom_pair"]]
    for rel in RELATIONS:
        out += [_fill(t, d) for t in TEXTBOOK_TEMPLATES[rel]]
    return out


def _items_rng(seed: int) -> random.Random:
    return random.Random(f"medtune-synthetic-items-{seed}")


def _shuffled_textbook(kb: KnowledgeBase, rng: random.Random) -> list[str]:
    textbook = [s for d in kb.diseases for s in textbook_sentences(d)]
    rng.shuffle(textbook)
    return textbook


def build_textbook(kb: KnowledgeBase) -> list[str]:
    """The textbook of ``kb`` in the order :func:`generate_synthetic` writes it (every generated task of one
    knowledge base shares it, so one pretrained model serves them all)."""
    return _shuffled_textbook(kb, _items_rng(kb.seed))


def knowledge_base_facts(kb: KnowledgeBase) -> FactSheet:
    """The fact sheet of ``kb``: disease → symptoms (each one a value), cause, test and first-line drug."""
    return FactSheet.from_facts(FACT_RELATIONS, {
        d.name: {"symptoms": d.symptoms, "cause": [d.cause], "test": [d.test], "drug": [d.drug]}
        for d in kb.diseases})


def _explanation(d: Disease, level: str, relation: str, symptoms: Sequence[str] | None) -> str:
    # The textbook sentences that answer the question, in inference order.
    parts = []
    if level in ("medium", "hard"):
        parts.append(_fill(TEXTBOOK_TEMPLATES["symptoms"][3], d))  # "Together, S suggest D."
    if level in ("easy", "hard"):
        parts.append(_fill(TEXTBOOK_TEMPLATES[relation][0], d))
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
    rng = _items_rng(seed)
    textbook = _shuffled_textbook(kb, rng)

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
    question = _fill(spec["text"], d, symptoms=symptoms)
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


# ----------------------------------------------------------------------------------------------------------
# Loader


def _generator_options(generator: Any = None) -> tuple[str, ...]:
    import inspect

    return tuple(p for p in inspect.signature(generator or generate_synthetic).parameters if p != "seed")


def load_generated(
    source: str, generator: Any, path: str | Path | None, seed: int, split: str | None, options: dict[str, Any]
) -> tuple[Any, list[Item]]:
    """Run a synthetic ``generator`` for a loader: check the options, generate, keep ``split``.

    Returns the generated dataset and its (kept) items. Shared by the generated sources so that they take
    options and splits alike.
    """
    if path is not None:
        raise InputError(f"the {source} source takes no path", file=path)
    allowed = set(_generator_options(generator))
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"unknown option(s) for {source}: {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
    try:
        ds = generator(seed=int(seed), **{k: int(v) for k, v in options.items()})
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad {source} option: {exc}") from None
    items = list(ds.items)
    if split is not None:
        if split not in ("train", "test"):
            raise InputError(f"{source} has splits 'train' and 'test', not '{split}'", field="split")
        items = [it for it in items if it.split == split]
    return ds, items


@register_loader("synthetic", needs_path=False, options=_generator_options(),
                 description="Generated fictional medical knowledge base (the embedded demo; no path)")
def load_synthetic(
    path: str | Path | None = None,
    *,
    on_error: OnError = "raise",
    seed: int = 0,
    split: str | None = None,
    **options: Any,
) -> LoadResult:
    """Generate the synthetic dataset; ``split`` keeps one split; the textbook is ``extras["textbook"]``.

    ``options`` are :func:`generate_synthetic`'s keyword arguments (n_systems, diseases_per_system, ...).
    ``extras["facts"]`` is the knowledge base's :class:`~medtune.factsheet.FactSheet`.
    """
    ds, items = load_generated(SOURCE, generate_synthetic, path, seed, split, options)
    return LoadResult(items, [], {"textbook": ds.textbook, "knowledge_base": ds.knowledge_base.to_dict(),
                                  "facts": knowledge_base_facts(ds.knowledge_base)})
