"""KnowTuning's first stage, fine-grained knowledge augmentation (KA): which facts are hard, and their QA pairs.

1. **Hardness**: the perplexity of each fact given the item's question, under the *base* model — the facts it
   finds least predictable are the ones fine-tuning has most to teach. All facts of all items go to the scoring
   backend in one :meth:`~medtune.scoring.backends.ScoringBackend.loglikelihood` call (the backend groups the
   pairs by question and runs each question once), with the same prompt training uses (:func:`qa_prompt`).
2. **Selection**: per item, the hardest ``ceil(share * n_facts)`` facts (ties: the earlier fact), so every answer
   contributes and the share means the same on long and short answers.
3. **Rewriting**: each kept fact becomes its own QA pair: the fact's own ``question`` when the item knows it,
   else :data:`KA_QUESTION` built from the original question; the answer is the fact's sentence.
4. **Order** (:func:`ka_order`): the run's planned order with each item's KA pairs right after it, in every
   epoch. The planned order (a curriculum, blocks by category, ...) is what the run studies, so its KA variant
   keeps the subjects where the order put them and the pairs arrive while their subject is being learnt; the
   KA run is then an ordinary run of the standard loop on that order, and ``verify-order`` checks it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medtune.orders.orderfile import OrderFile
from medtune.prompts import qa_prompt
from medtune.schema import QAItem
from medtune.training.data import planned_epochs
from medtune.training.methods.knowtuning.facts import Fact

KA_QUESTION = "{question} State one specific fact of the answer."
KA_ID = "{source}::ka{index}"
KA_STRATEGY_SUFFIX = "+knowtuning-ka"


@dataclass(frozen=True)
class ScoredFact:
    """A fact with its perplexity under the base model and whether KA keeps it."""

    item_id: str
    fact: Fact
    logprob: float
    n_tokens: int
    kept: bool = False

    @property
    def perplexity(self) -> float:
        return math.exp(-self.logprob / max(1, self.n_tokens))


def fact_pairs(items: Sequence[QAItem], facts: Mapping[str, Sequence[Fact]]) -> list[tuple[str, str]]:
    """The ``(context, continuation)`` pairs hardness is measured on: the training prompt, then the fact."""
    return [(qa_prompt(it), f.text) for it in items for f in facts[it.id]]


def score_facts(backend: Any, items: Sequence[QAItem], facts: Mapping[str, Sequence[Fact]]) -> list[ScoredFact]:
    """Every fact's log-likelihood given its question: one batched pass through the backend's ``loglikelihood``."""
    results = backend.loglikelihood(fact_pairs(items, facts))
    out: list[ScoredFact] = []
    k = 0
    for it in items:
        for f in facts[it.id]:
            total, n = results[k]
            out.append(ScoredFact(it.id, f, float(total), int(n)))
            k += 1
    return out


def n_kept(n_facts: int, share: float) -> int:
    """How many of an answer's ``n_facts`` facts KA keeps: ``ceil(share * n)``, at least one."""
    return min(n_facts, max(1, math.ceil(share * n_facts - 1e-9))) if n_facts else 0


def select_hardest(scored: Sequence[ScoredFact], share: float) -> list[ScoredFact]:
    """``scored`` with ``kept`` set on each item's hardest share (highest perplexity; ties: the earlier fact)."""
    by_item: dict[str, list[ScoredFact]] = {}
    for s in scored:
        by_item.setdefault(s.item_id, []).append(s)
    keep: set[tuple[str, int]] = set()
    for item_id, group in by_item.items():
        ranked = sorted(group, key=lambda s: (-s.perplexity, s.fact.index))
        keep |= {(item_id, s.fact.index) for s in ranked[: n_kept(len(group), share)]}
    return [ScoredFact(s.item_id, s.fact, s.logprob, s.n_tokens, (s.item_id, s.fact.index) in keep) for s in scored]


@dataclass(frozen=True)
class Rewrite:
    """A fact made into a KA pair: the question, the answer, where the question came from (``fact question``,
    ``template`` or ``generator``) and how the pair was made (``rule``, ``generator:<spec>`` or the fallback,
    see :mod:`.generator`), so ``ka_pairs.jsonl`` can say which pairs an external model wrote."""

    question: str
    answer: str
    made_by: str
    how: str = "rule"


def rule_rewrite(item: QAItem, fact: Fact, how: str = "rule") -> Rewrite:
    """The offline KA pair of ``fact``: :func:`ka_question`, answered by the fact's sentence."""
    question, made_by = ka_question(item, fact)
    return Rewrite(question, fact.text, made_by, how)


def ka_question(item: QAItem, fact: Fact) -> tuple[str, str]:
    """The KA question for ``fact`` and how it was made (``fact question`` or ``template``)."""
    if fact.question:
        return fact.question, "fact question"
    return KA_QUESTION.format(question=item.question.strip()), "template"


def ka_pairs(items: Sequence[QAItem], scored: Sequence[ScoredFact],
             rewrites: Mapping[tuple[str, int], Rewrite] | None = None) -> tuple[list[QAItem], list[dict[str, Any]]]:
    """The KA items (one per kept fact, in item then fact order) and their records for ``ka_pairs.jsonl``.

    ``rewrites`` (by item id and fact index) holds the pairs a generator made; other kept facts get
    :func:`rule_rewrite`.
    """
    by_id = {it.id: it for it in items}
    new_items: list[QAItem] = []
    records: list[dict[str, Any]] = []
    for s in scored:
        if not s.kept:
            continue
        source = by_id[s.item_id]
        pair = (rewrites or {}).get((source.id, s.fact.index)) or rule_rewrite(source, s.fact)
        pair_id = KA_ID.format(source=source.id, index=s.fact.index)
        meta = {"knowtuning": {"source_id": source.id, "fact_index": s.fact.index, "made_by": pair.made_by}}
        new_items.append(QAItem(id=pair_id, question=pair.question, answer=pair.answer, source=source.source,
                                split=source.split, category=source.category, meta=meta))
        records.append({"id": pair_id, "source_id": source.id, "fact_index": s.fact.index, "fact": s.fact.text,
                        "relation": s.fact.relation, "question": pair.question, "answer": pair.answer,
                        "made_by": pair.made_by, "how": pair.how, "perplexity": s.perplexity})
    return new_items, records


def facts_records(items: Sequence[QAItem], scored: Sequence[ScoredFact]) -> list[dict[str, Any]]:
    """One ``facts.jsonl`` row per item: its facts with their perplexity and whether KA kept them."""
    by_item: dict[str, list[ScoredFact]] = {}
    for s in scored:
        by_item.setdefault(s.item_id, []).append(s)
    rows = []
    for it in items:
        group = by_item.get(it.id, [])
        rows.append({"id": it.id, "structured": bool(group) and group[0].fact.structured,
                     "facts": [{**s.fact.to_dict(), "logprob": s.logprob, "n_tokens": s.n_tokens,
                                "perplexity": s.perplexity, "kept": s.kept} for s in group]})
    return rows


def ka_order(order: Mapping[str, Any], n_epochs: int | None, pairs_of: Mapping[str, Sequence[str]]) -> OrderFile:
    """The run's planned epochs (``n_epochs`` of them, as training would expand them) with each item's KA pair
    ids right after the item (module docstring); segment marks move with the items they started at."""
    epochs = planned_epochs(order, n_epochs)
    new_epochs: list[list[str]] = []
    position: list[int] = []  # epoch 0: old index -> new index
    for e, ids in enumerate(epochs):
        out: list[str] = []
        for i in ids:
            if e == 0:
                position.append(len(out))
            out.append(i)
            out.extend(pairs_of.get(i, ()))
        new_epochs.append(out)
    segments = []
    for seg in order.get("segments") or []:
        start = int(seg.get("start", 0))
        segments.append({**seg, "start": position[start] if start < len(position) else len(new_epochs[0])})
    strategy = (order.get("strategy") or "hand") + KA_STRATEGY_SUFFIX
    options = {**(order.get("options") or {}), "knowtuning_ka": "each item's KA pairs follow it"}
    return OrderFile(epochs=new_epochs, strategy=strategy, seed=order.get("seed"), options=options,
                     epoch_policy="repeat", segments=segments, input_hashes=dict(order.get("input_hashes") or {}))
