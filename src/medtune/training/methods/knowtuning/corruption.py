"""KnowTuning's comparison sets: the answer against three corrupted versions of it, one per aspect.

- **deletion** (completeness): a share of the facts dropped — :data:`DELETE_SHARE` of them, at least one, and at
  least one kept (an item with a single fact cannot lose one and is skipped);
- **revision** (factuality): facts made wrong. With structured facts each revised fact takes the value of the
  same relation from *another subject of the same category*: an exact substitution, so the wrong fact is a real
  fact about a similar subject (the hard kind of error). Without structure, entities — capitalised multi-word
  names or numbers — are replaced by entities of the same kind from other answers of the same category;
- **shuffle** (logicality): the facts in a different order (skipped for a single fact).

The chosen answer is the facts joined by spaces (for structured items exactly the answer). Each item and kind
draws from its own generator seeded by the run's seed, the item id and the kind, so a triple does not depend on
which other items the run has. Every triple records what was changed; every skip records why.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medtune.prompts import qa_prompt
from medtune.schema import QAItem
from medtune.training.methods.knowtuning.facts import Fact, join_facts

KINDS: tuple[str, ...] = ("deletion", "revision", "shuffle")
DELETE_SHARE = 0.5
REVISE_SHARE = 0.5
# Entities of the generic path: two or more capitalised words (a name), or a number.
_NAME = r"[A-Z][a-z]+(?:[ -][A-Z][a-z]+)+"
_NUMBER = r"\d+(?:[.,]\d+)?"
_ENTITY = re.compile(rf"\b(?:{_NAME}|{_NUMBER})\b")


@dataclass(frozen=True)
class Triple:
    """One preference pair: ``chosen`` (the answer) over ``rejected`` (a corruption of ``kind``)."""

    id: str
    source_id: str
    kind: str
    prompt: str
    chosen: str
    rejected: str
    changed: dict[str, Any] = field(default_factory=dict)
    how: str = "rule"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source_id": self.source_id, "kind": self.kind, "prompt": self.prompt,
                "chosen": self.chosen, "rejected": self.rejected, "changed": self.changed, "how": self.how}


@dataclass(frozen=True)
class Revision:
    """An item's revision made elsewhere (a generator, :mod:`.generator`): the fact texts with the revised ones
    in place and what changed, or ``texts=None`` to fall back to the rule, ``changed`` then saying why."""

    texts: list[str] | None
    changed: dict[str, Any]
    how: str


def _rng(seed: int, item_id: str, kind: str) -> random.Random:
    return random.Random(f"knowtuning:{seed}:{item_id}:{kind}")


def _share(n: int, share: float) -> int:
    return max(1, math.floor(share * n))


def revision_targets(item_id: str, facts: Sequence[Fact], seed: int) -> list[int]:
    """The positions of the facts a generator revises: :data:`REVISE_SHARE` of them (at least one), drawn from
    the item's own revision generator, as the rule's draws are."""
    rng = _rng(seed, item_id, "revision")
    n = len(facts)
    return sorted(rng.sample(range(n), min(n, _share(n, REVISE_SHARE)))) if n else []


def entity_kind(text: str) -> str:
    return "number" if text[0].isdigit() else "name"


def entities(text: str) -> list[str]:
    """The entities of the generic revision in ``text``, in order of occurrence."""
    return [m.group(0) for m in _ENTITY.finditer(text)]


# ----------------------------------------------------------------------------------------------------------
# Pools of replacement values


@dataclass(frozen=True)
class Pools:
    """Where revised values come from, per category.

    ``values[(category, relation)]`` lists ``(subject, value, item id)`` for every structured fact; ``entities``
    maps ``(category, kind)`` to ``(entity, item id)`` for the generic path.
    """

    values: Mapping[tuple[str | None, str], list[tuple[str, str, str]]]
    entities: Mapping[tuple[str | None, str], list[tuple[str, str]]]


def subject_of(item: QAItem) -> str:
    """The subject of an item's facts: ``meta["disease"]`` when known, else the item itself."""
    return str((item.meta or {}).get("disease") or item.id)


def build_pools(items: Sequence[QAItem], facts: Mapping[str, Sequence[Fact]]) -> Pools:
    values: dict[tuple[str | None, str], list[tuple[str, str, str]]] = {}
    ents: dict[tuple[str | None, str], list[tuple[str, str]]] = {}
    for it in items:
        for f in facts[it.id]:
            if f.structured:
                assert f.relation is not None and f.value is not None
                values.setdefault((it.category, f.relation), []).append((subject_of(it), f.value, it.id))
            else:
                for e in entities(f.text):
                    ents.setdefault((it.category, entity_kind(e)), []).append((e, it.id))
    return Pools(values, ents)


# ----------------------------------------------------------------------------------------------------------
# The three corruptions: each returns (rejected fact texts, what changed) or (None, why not)


def delete(facts: Sequence[Fact], rng: random.Random) -> tuple[list[str] | None, dict[str, Any]]:
    n = len(facts)
    if n < 2:
        return None, {"reason": "one fact: nothing can be deleted and something kept"}
    k = min(n - 1, _share(n, DELETE_SHARE))
    dropped = sorted(rng.sample(range(n), k))
    kept = [f.text for f in facts if f.index not in set(dropped)]
    return kept, {"deleted": dropped, "kept": [f.index for f in facts if f.index not in set(dropped)]}


def revise_structured(item: QAItem, facts: Sequence[Fact], pools: Pools,
                      rng: random.Random) -> tuple[list[str] | None, dict[str, Any]]:
    subject = subject_of(item)
    options: dict[int, list[tuple[str, str, str]]] = {}
    for f in facts:
        assert f.relation is not None and f.value is not None
        others = [(s, v, i) for s, v, i in pools.values.get((item.category, f.relation), [])
                  if s != subject and v != f.value]
        if others:
            options[f.index] = sorted(set(others))
    if not options:
        return None, {"reason": "no other subject of the category has a different value for these relations"}
    revisable = sorted(options)
    chosen = sorted(rng.sample(revisable, min(len(revisable), _share(len(facts), REVISE_SHARE))))
    texts, changes = [], []
    for f in facts:
        if f.index in chosen:
            other_subject, value, other_id = rng.choice(options[f.index])
            assert f.value is not None
            texts.append(f.text.replace(f.value, value, 1))
            changes.append({"index": f.index, "relation": f.relation, "from": f.value, "to": value,
                            "to_subject": other_subject, "to_item": other_id})
        else:
            texts.append(f.text)
    return texts, {"revised": changes}


def revise_generic(item: QAItem, facts: Sequence[Fact], pools: Pools,
                   rng: random.Random) -> tuple[list[str] | None, dict[str, Any]]:
    spots: list[tuple[int, str, list[tuple[str, str]]]] = []
    for f in facts:
        for e in dict.fromkeys(entities(f.text)):
            others = sorted({(v, i) for v, i in pools.entities.get((item.category, entity_kind(e)), [])
                             if i != item.id and v != e})
            if others:
                spots.append((f.index, e, others))
    if not spots:
        return None, {"reason": "no entity (a capitalised multi-word name or a number) with a replacement from "
                                "another answer of the category"}
    picked = sorted(rng.sample(range(len(spots)), min(len(spots), _share(len(spots), REVISE_SHARE))))
    texts = {f.index: f.text for f in facts}
    changes = []
    for k in picked:
        index, entity, others = spots[k]
        value, other_id = rng.choice(others)
        if entity not in texts[index]:  # an earlier replacement in the same fact already changed it
            continue
        texts[index] = re.sub(rf"\b{re.escape(entity)}\b", value, texts[index], count=1)
        changes.append({"index": index, "from": entity, "to": value, "to_item": other_id})
    return [texts[f.index] for f in facts], {"revised": changes}


def shuffle(facts: Sequence[Fact], rng: random.Random) -> tuple[list[str] | None, dict[str, Any]]:
    texts = [f.text for f in facts]
    if len(set(texts)) < 2:
        return None, {"reason": "one fact (or identical facts): no other order exists"}
    perm = list(range(len(facts)))
    for _ in range(100):
        rng.shuffle(perm)
        if [texts[p] for p in perm] != texts:
            break
    else:  # pragma: no cover - 100 identity draws of a permutation of >= 2 distinct facts
        perm = perm[1:] + perm[:1]
    return [texts[p] for p in perm], {"order": [facts[p].index for p in perm]}


# ----------------------------------------------------------------------------------------------------------
# All triples of a run


def build_triples(items: Sequence[QAItem], facts: Mapping[str, Sequence[Fact]], seed: int,
                  revisions: Mapping[str, Revision] | None = None) -> tuple[list[Triple], list[dict[str, Any]]]:
    """Every item's deletion, revision and shuffle triple (in item order), and the skipped ones with why.

    ``revisions`` (by item id) holds revisions a generator made for items without structured facts; an entry
    without texts falls back to the rule, and the triple's ``how`` records it.
    """
    pools = build_pools(items, facts)
    triples: list[Triple] = []
    skipped: list[dict[str, Any]] = []
    for it in items:
        own = list(facts[it.id])
        chosen = join_facts([f.text for f in own])
        prompt = qa_prompt(it)
        for kind in KINDS:
            rng = _rng(seed, it.id, kind)
            how = "rule"
            if kind == "deletion":
                rejected, changed = delete(own, rng)
            elif kind == "revision":
                structured = all(f.structured for f in own)
                made = None if structured else (revisions or {}).get(it.id)
                if made is not None and made.texts is not None:
                    rejected, changed, how = list(made.texts), dict(made.changed), made.how
                else:
                    rejected, changed = (revise_structured(it, own, pools, rng) if structured
                                         else revise_generic(it, own, pools, rng))
                    if made is not None:
                        changed, how = {**made.changed, **changed}, made.how
            else:
                rejected, changed = shuffle(own, rng)
            text = join_facts(rejected) if rejected is not None else None
            if text is None or text == chosen:
                skipped.append({"source_id": it.id, "kind": kind, "how": how,
                                "reason": changed.get("reason", "the corruption left the answer unchanged")})
                continue
            triples.append(Triple(f"{it.id}::{kind}", it.id, kind, prompt, chosen, text, changed, how))
    return triples, skipped
