"""An answer as a list of atomic facts: the unit KnowTuning scores, rewrites and corrupts.

Items that know their facts carry ``meta["facts"]``: a list of ``{"relation", "value", "text", "question"}``
objects whose ``text`` sentences, joined by single spaces, are the answer. Those are taken as they are, so every
later step (the hardest facts, the value revised to another subject's) works on exact, checkable units.

Other items (real data such as MedQuAD) have prose answers. The offline stand-in for the authors' GPT-made
atomic facts is :func:`split_facts`: sentences first, then clauses after ``;`` and after the comma of
``, and`` / ``, but`` / ``, while`` / ``, which`` / ``, whereas``, with fragments shorter than
:data:`MIN_FACT_WORDS` words kept attached to their neighbour (a fact of two words is a phrase, not knowledge).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medtune.errors import InputError

MIN_FACT_WORDS = 4
FACT_KEYS: tuple[str, ...] = ("relation", "value", "text", "question")

# A sentence ends at . ! ? followed by space and an upper-case letter or a digit (so "e.g. the" and "2.5 mg"
# stay whole); abbreviations that are commonly followed by a capitalised name are not ends.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_NOT_AN_END = re.compile(r"(?:\b(?:Dr|Mr|Mrs|Ms|St|vs|etc|e\.g|i\.e|Fig|No)\.|\b[A-Z]\.)$")
_CLAUSE = re.compile(r"(?<=;)\s+|(?<=,)\s+(?=(?:and|but|while|which|whereas)\s)")


@dataclass(frozen=True)
class Fact:
    """One atomic fact of an answer. ``relation``/``value``/``question`` are known only for structured facts.

    ``how`` says where the fact came from, so every artifact can tell: ``meta.facts``, ``rule`` (the splitter),
    ``generator:<backend spec>``, or ``rule (generator reply unparseable)`` (:mod:`.generator`).
    """

    index: int
    text: str
    relation: str | None = None
    value: str | None = None
    question: str | None = None
    how: str = "rule"

    @property
    def structured(self) -> bool:
        return self.relation is not None and self.value is not None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text, "relation": self.relation, "value": self.value,
                "question": self.question, "how": self.how}


def _sentences(text: str) -> list[str]:
    parts: list[str] = []
    for piece in _SENTENCE_END.split(text.strip()):
        if parts and _NOT_AN_END.search(parts[-1]):
            parts[-1] = f"{parts[-1]} {piece}"
        else:
            parts.append(piece)
    return [p.strip() for p in parts if p.strip()]


def _attach_short(pieces: list[str], glue: str) -> list[str]:
    """Merge fragments under :data:`MIN_FACT_WORDS` words into the previous piece (the next one at the start)."""
    out: list[str] = []
    for piece in pieces:
        if out and (len(piece.split()) < MIN_FACT_WORDS or len(out[-1].split()) < MIN_FACT_WORDS):
            out[-1] = f"{out[-1]}{glue}{piece}"
        else:
            out.append(piece)
    return out


def split_facts(text: str) -> list[str]:
    """The answer cut into facts: sentences, then clauses; short fragments stay attached (module docstring).

    Every character of ``text`` but the whitespace at the cuts is kept, in order (a clause keeps its ``;`` or
    ``,``), so the facts joined by single spaces are the answer with its whitespace normalised.
    """
    facts: list[str] = []
    for sentence in _attach_short(_sentences(text), " "):
        clauses = [c.strip() for c in _CLAUSE.split(sentence) if c.strip()]
        facts.extend(_attach_short(clauses, " ") if len(clauses) > 1 else [sentence])
    return facts


def structured_facts(item: Any, *, file: Any = None) -> list[Fact] | None:
    """``meta["facts"]`` as :class:`Fact` objects, checked; ``None`` when the item has none."""
    raw = (item.meta or {}).get("facts")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise InputError("meta.facts must be a non-empty list of {relation, value, text, question} objects",
                         file=file, record=item.id, field="meta.facts")
    facts = []
    for k, f in enumerate(raw):
        where = f"meta.facts.{k}"
        if not isinstance(f, dict):
            raise InputError("expected an object", file=file, record=item.id, field=where)
        missing = [key for key in FACT_KEYS if not isinstance(f.get(key), str) or not f[key].strip()]
        if missing:
            raise InputError(f"needs non-empty text for {', '.join(missing)}", file=file, record=item.id,
                             field=f"{where}.{missing[0]}")
        if f["value"] not in f["text"]:
            raise InputError(f"the value {f['value']!r} does not occur in the fact's text {f['text']!r}",
                             file=file, record=item.id, field=f"{where}.value")
        facts.append(Fact(k, f["text"].strip(), f["relation"], f["value"], f["question"].strip(), how="meta.facts"))
    return facts


def item_facts(item: Any, *, file: Any = None) -> list[Fact]:
    """The facts of an item's answer: ``meta["facts"]`` when present, else :func:`split_facts` of the answer."""
    known = structured_facts(item, file=file)
    if known is not None:
        return known
    return [Fact(k, t) for k, t in enumerate(split_facts(item.answer))]


def join_facts(texts: Sequence[str]) -> str:
    """An answer made of fact sentences (the inverse of the split, up to whitespace)."""
    return " ".join(t.strip() for t in texts)
