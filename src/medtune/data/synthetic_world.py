"""The fictional knowledge base of the synthetic demo dataset: organ systems, invented diseases and their facts.

Why a fictional world: the demo must run offline on 2 CPU cores with a ~0.6 M-parameter Llama that is
pretrained from scratch, so the facts must be few, learnable in minutes, and certainly unknown to any model
beforehand (invented names, so nothing can be answered from prior knowledge and no real medical claim is
made).

``n_systems`` organ systems (the item ``category``) × ``diseases_per_system`` invented diseases (pronounceable
names built from syllables with the seed). Each disease has 2–3 symptoms from its own system's pool, chosen so
that no two diseases share a symptom *pair* (any two of a disease's symptoms identify it), a cause, a diagnostic
test and a first-line drug (invented names). Half of each system's diseases are *held out* (asked about only in
test questions). The knowledge base is also a fact sheet (:func:`knowledge_base_facts`), which the data stage
writes beside the items as ``<stem>.facts.json``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

from medtune.errors import InputError
from medtune.factsheet import FactSheet

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


def knowledge_base_facts(kb: KnowledgeBase) -> FactSheet:
    """The fact sheet of ``kb``: disease → symptoms (each one a value), cause, test and first-line drug."""
    return FactSheet.from_facts(FACT_RELATIONS, {
        d.name: {"symptoms": d.symptoms, "cause": [d.cause], "test": [d.test], "drug": [d.drug]}
        for d in kb.diseases})
