"""Fact-level scores of free-text answers about a known world: how many stated facts are true, how many asked
facts are stated.

Token overlap (F1, ROUGE) rewards an answer for its wording; a fine-tuning method that teaches facts should be
judged on the facts. When every fact of the world is on a fact sheet (:mod:`medtune.factsheet`), an answer's
facts can be read off exactly:

* **Stated facts** are the sheet's values (any subject's drug, test, cause, symptom, ...) that the answer
  mentions as whole words, ignoring case, each value counted once however often it occurs. Longer values are
  matched first and their text is then masked, so a value inside another ("cough" in "night cough") is not
  counted twice. Words that are no value of the sheet (the subject's own name, filler) state nothing.
* A stated fact is **true** when the item's subject (``meta.disease``) has that value for that value's relation.
  The check is at the level of values: "the first-line drug for X is <X's test>" states X's test, a true fact
  in a wrong frame; in the synthetic world every name's form tells its kind, so such slips are rare.
* **factual precision** = true stated / stated. An answer that states nothing scores **0**, so silence is not
  rewarded; ``no_fact`` marks it, and :func:`fact_metrics` reports ``no_fact_rate`` and
  ``precision_when_stated`` (the mean over answers that state something) beside the mean.
* **completeness** = the share of the item's reference facts (``meta.facts``) stated. A reference fact's values
  are the sheet values its ``value`` names (a drug: one; the symptoms "a, b and c": three); a fact counts by the
  share of its values stated, so a fact is 1 when all are and deleting k of n facts from the reference answer
  gives (n − k) / n.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from medtune.errors import InputError
from medtune.factsheet import FactSheet
from medtune.schema import Item

_MASK = "\x00"  # neither a word character nor a hyphen: masked text is a word boundary to what follows


class FactMatcher:
    """Finds the values of one fact sheet in a text (whole words, longest first, ignoring case)."""

    def __init__(self, sheet: FactSheet) -> None:
        self.sheet = sheet
        originals: dict[str, list[str]] = {}
        for value in sorted(sheet.values):
            originals.setdefault(value.lower(), []).append(value)
        self._originals = {k: tuple(v) for k, v in originals.items()}
        self._patterns = [(key, re.compile(rf"(?<![\w-]){re.escape(key)}(?![\w-])"))
                          for key in sorted(originals, key=lambda k: (-len(k), k))]

    def mentioned(self, text: str) -> set[str]:
        """The sheet values ``text`` mentions (values that differ only in case are found together)."""
        masked = text.lower()
        found: set[str] = set()
        for key, pattern in self._patterns:
            if key not in masked:
                continue
            spans = [m.span() for m in pattern.finditer(masked)]
            if spans:
                found.update(self._originals[key])
                for start, end in spans:
                    masked = masked[:start] + _MASK * (end - start) + masked[end:]
        return found


def _where(item: Item, field: str, message: str) -> InputError:
    return InputError(message, record=item.id, record_kind="item", field=field)


def _subject_and_reference(item: Item, matcher: FactMatcher) -> tuple[str, list[set[str]]]:
    """The item's subject and, per reference fact, the sheet values it states (checked against the sheet)."""
    sheet = matcher.sheet
    subject = item.meta.get("disease")
    if not isinstance(subject, str) or not subject:
        raise _where(item, "meta.disease", "needs the subject of its facts (meta.disease) to be checked fact by fact")
    if subject not in sheet.subjects:
        raise _where(item, "meta.disease", f"subject '{subject}' is not in the fact sheet")
    facts = item.meta.get("facts")
    if not isinstance(facts, list) or not facts:
        raise _where(item, "meta.facts", "needs its reference facts (meta.facts, a non-empty list) to be checked")
    reference = []
    for i, fact in enumerate(facts):
        where = f"meta.facts[{i}]"
        if not isinstance(fact, dict) or not isinstance(fact.get("relation"), str) \
                or not isinstance(fact.get("value"), str):
            raise _where(item, where, "expected an object with a relation and a value (strings)")
        relation, value = fact["relation"], fact["value"]
        values = matcher.mentioned(value)
        if not values:
            raise _where(item, f"{where}.value", f"'{value}' names no value of the fact sheet")
        wrong = sorted(v for v in values if not sheet.holds(subject, relation, v))
        if wrong:
            raise _where(item, f"{where}.value",
                         f"'{wrong[0]}' is not a {relation} of '{subject}' in the fact sheet")
        reference.append(values)
    return subject, reference


def _as_text(prediction: Any) -> str:
    if prediction is None or (isinstance(prediction, float) and math.isnan(prediction)):
        return ""  # nothing generated
    if not isinstance(prediction, str):
        raise InputError(f"a prediction must be text, got {type(prediction).__name__}")
    return prediction


def _scores(prediction: str | None, item: Item, matcher: FactMatcher) -> dict[str, Any]:
    subject, reference = _subject_and_reference(item, matcher)
    own = {v for values in matcher.sheet.subjects[subject].values() for v in values}
    stated = matcher.mentioned(_as_text(prediction))
    true = stated & own
    n_stated = len(stated)
    return {
        "factual_precision": len(true) / n_stated if n_stated else 0.0,
        "completeness": sum(len(values & stated) / len(values) for values in reference) / len(reference),
        "n_stated": n_stated,
        "n_true": len(true),
        "n_reference": len(reference),
        "no_fact": n_stated == 0,
        "stated": sorted(stated),
        "wrong": sorted(stated - own),
        "missing": sorted(set().union(*reference) - stated),
    }


def fact_scores(prediction: str | None, item: Item, sheet: FactSheet) -> dict[str, Any]:
    """One answer's fact-level scores against ``item``'s subject and reference facts.

    Returns ``factual_precision``, ``completeness`` (floats in [0, 1]), ``n_stated``, ``n_true``, ``n_reference``
    (reference facts), ``no_fact`` (bool) and the sorted value lists ``stated``, ``wrong`` (stated, not facts of
    the subject) and ``missing`` (reference values not stated). ``None`` counts as an empty answer. An item
    without ``meta.disease`` / ``meta.facts``, or whose subject or facts the sheet lacks, is an
    :class:`InputError` naming the item and the field.
    """
    return _scores(prediction, item, FactMatcher(sheet))


_MEANS = ("factual_precision", "completeness", "n_stated", "n_true", "n_reference")


def fact_metrics(predictions: Sequence[str | None], items: Sequence[Item], sheet: FactSheet) -> dict[str, Any]:
    """Fact-level scores over answers, one per item (in the same order).

    Returns the means of ``factual_precision``, ``completeness``, ``n_stated``, ``n_true`` and ``n_reference``;
    ``no_fact_rate`` (share of answers stating no fact); ``precision_when_stated`` (mean precision over the
    answers that state a fact; None when none does); ``pooled_precision`` (all true stated / all stated; None
    when nothing is stated); ``n``; and ``per_item``: every key of :func:`fact_scores` as a list, plus ``id``.
    """
    if len(predictions) != len(items):
        raise InputError(f"{len(predictions)} predictions for {len(items)} items")
    if not items:
        raise InputError("no items to check fact by fact")
    matcher = FactMatcher(sheet)
    rows = [_scores(p, it, matcher) for p, it in zip(predictions, items, strict=True)]
    n = len(rows)
    out: dict[str, Any] = {k: sum(r[k] for r in rows) / n for k in _MEANS}
    out["no_fact_rate"] = sum(r["no_fact"] for r in rows) / n
    with_facts = [r["factual_precision"] for r in rows if not r["no_fact"]]
    out["precision_when_stated"] = sum(with_facts) / len(with_facts) if with_facts else None
    n_stated = sum(r["n_stated"] for r in rows)
    out["pooled_precision"] = sum(r["n_true"] for r in rows) / n_stated if n_stated else None
    out["n"] = n
    out["per_item"] = {"id": [it.id for it in items], **{k: [r[k] for r in rows] for k in rows[0]}}
    return out


__all__ = ["FactMatcher", "fact_metrics", "fact_scores"]
