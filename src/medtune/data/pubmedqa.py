"""PubMedQA (Jin et al. 2019), the expert-labelled PQA-L set, from ``ori_pqal.json``.

``ori_pqal.json`` is a JSON object keyed by PubMed id; each value has ``QUESTION``, ``CONTEXTS`` (abstract
sections), ``LABELS`` (their section names), ``MESHES``, ``YEAR``, ``final_decision`` (yes/no/maybe) and
``LONG_ANSWER`` (the abstract's conclusion).

Two forms:
- ``form="mcq"`` (default): a 3-option MCQ with options ``["yes", "no", "maybe"]`` in that fixed order and
  the answer at ``final_decision``; ``LONG_ANSWER`` is the explanation.
- ``form="qa"``: a free-text :class:`QAItem` whose answer is ``LONG_ANSWER``.

Contexts: PubMedQA is answered from the abstract, and prompts only see ``question`` and the options, so by
default (``contexts="question"``) the question text is the source's reasoning-required setting, one line
per context labelled with its section, then the question::

    Context: (BACKGROUND) ...
    (RESULTS) ...
    Question: Do mitochondria play a role ...?

With ``contexts="meta"`` the question is the bare ``QUESTION``. Either way the raw question, contexts,
labels, MeSH terms, year and the two model predictions stay in ``meta``.

Split: ``test_ground_truth.json`` (the official 500-question test set; found next to ``ori_pqal.json`` or
given as ``ground_truth=``) puts its PMIDs in "test" and the rest in "train"; its labels must agree with
``final_decision``. ``split=`` then keeps only that split. Without a ground-truth file, every item gets
``split`` (default "train"). Ids are ``pubmedqa-<pmid>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from medtune.data.parsing import UniqueIds, load_json, require_str
from medtune.data.registry import LoadResult, OnError, RecordCollector, register_loader
from medtune.errors import InputError
from medtune.schema import Item, MCQItem, QAItem, make_item

SOURCE = "pubmedqa"
DECISIONS = ("yes", "no", "maybe")
GROUND_TRUTH_NAME = "test_ground_truth.json"


def format_question(question: str, contexts: list[str], labels: list[str] | None) -> str:
    """The "Context: ... Question: ..." text of the reasoning-required setting."""
    lines = []
    for i, ctx in enumerate(contexts):
        label = labels[i] if labels and i < len(labels) and labels[i] else None
        text = f"({label}) {ctx.strip()}" if label else ctx.strip()
        lines.append(("Context: " if i == 0 else "") + text)
    lines.append(f"Question: {question.strip()}")
    return "\n".join(lines)


def _str_list(rec: dict[str, Any], key: str, *, required: bool) -> list[str]:
    value = rec.get(key)
    if value is None:
        if required:
            raise InputError("missing", field=key)
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError("expected a list of strings", field=key)
    return value


def _build(
    pmid: str,
    record: Any,
    *,
    form: str,
    contexts_mode: str,
    split: str,
    truth: dict[str, str] | None,
    ids: UniqueIds,
) -> Item:
    if not isinstance(record, dict):
        raise InputError(f"expected a JSON object, got {type(record).__name__}")
    question = require_str(record, "QUESTION")
    contexts = _str_list(record, "CONTEXTS", required=True)
    if not contexts:
        raise InputError("no contexts", field="CONTEXTS")
    labels = _str_list(record, "LABELS", required=False)
    decision = require_str(record, "final_decision").strip().lower()
    if decision not in DECISIONS:
        raise InputError(f"expected one of {', '.join(DECISIONS)}, got {decision!r}", field="final_decision")
    if truth is not None and pmid in truth and truth[pmid] != decision:
        raise InputError(f"final_decision {decision!r} disagrees with the test ground truth {truth[pmid]!r}",
                         field="final_decision")
    meta: dict[str, Any] = {
        "pmid": pmid,
        "pubmed_question": question,
        "contexts": contexts,
        "labels": labels,
        "meshes": _str_list(record, "MESHES", required=False),
    }
    for key in ("YEAR", "reasoning_required_pred", "reasoning_free_pred"):
        if record.get(key) is not None:
            meta[key.lower()] = record[key]
    text = format_question(question, contexts, labels) if contexts_mode == "question" else question
    item_id = f"{SOURCE}-{pmid}"
    ids.claim(item_id, f"PMID {pmid}")
    if form == "qa":
        meta["final_decision"] = decision
        return make_item(
            QAItem,
            {"id": item_id, "question": text, "answer": require_str(record, "LONG_ANSWER"), "source": SOURCE,
             "split": split, "meta": meta},
        )
    return make_item(
        MCQItem,
        {"id": item_id, "question": text, "options": list(DECISIONS), "answer": DECISIONS.index(decision),
         "source": SOURCE, "split": split, "explanation": record.get("LONG_ANSWER") or None, "meta": meta},
    )


def _read_ground_truth(path: Path, pmids: set[str]) -> dict[str, str]:
    data = load_json(path, unique_keys=True)
    if not isinstance(data, dict) or not data:
        raise InputError("expected a non-empty JSON object mapping PMID to yes/no/maybe", file=path)
    truth = {}
    for pmid, label in data.items():
        if not isinstance(label, str) or label.strip().lower() not in DECISIONS:
            raise InputError(f"expected yes/no/maybe, got {label!r}", file=path, record=pmid, record_kind="PMID")
        if pmid not in pmids:
            raise InputError("PMID is not in the PubMedQA file", file=path, record=pmid, record_kind="PMID")
        truth[pmid] = label.strip().lower()
    return truth


@register_loader("pubmedqa", options=(),
                 description="PubMedQA PQA-L ori_pqal.json: yes/no/maybe MCQ or long-answer QA")
def load_pubmedqa(
    path: Path,
    *,
    on_error: OnError = "raise",
    split: str | None = None,
    form: Literal["mcq", "qa"] = "mcq",
    contexts: Literal["question", "meta"] = "question",
    ground_truth: str | Path | None = None,
    **options: Any,
) -> LoadResult:
    """Load ``ori_pqal.json`` (MCQ or ``form="qa"``); ``test_ground_truth.json`` defines the test split."""
    if options:
        raise InputError(f"unknown option(s) for pubmedqa: {', '.join(sorted(options))}")
    if form not in ("mcq", "qa"):
        raise InputError(f"form must be 'mcq' or 'qa', got {form!r}", field="form")
    if contexts not in ("question", "meta"):
        raise InputError(f"contexts must be 'question' or 'meta', got {contexts!r}", field="contexts")
    path = Path(path)
    if path.is_dir():
        path = path / "ori_pqal.json"
        if not path.exists():
            raise InputError("folder has no ori_pqal.json", file=path.parent)
    data = load_json(path, unique_keys=True)
    if not isinstance(data, dict) or not data:
        raise InputError("expected a non-empty JSON object keyed by PubMed id", file=path)
    gt_path = Path(ground_truth) if ground_truth is not None else path.with_name(GROUND_TRUTH_NAME)
    if ground_truth is not None and not gt_path.exists():
        raise InputError("ground-truth file not found", file=gt_path)
    truth = _read_ground_truth(gt_path, set(data)) if gt_path.exists() and gt_path != path else None
    collector = RecordCollector(path, on_error, record_kind="PMID")
    ids = UniqueIds()
    for pmid, record in data.items():
        item_split = ("test" if pmid in truth else "train") if truth is not None else (split or "train")
        if truth is not None and split is not None and item_split != split:
            continue
        collector.run(
            pmid,
            lambda p=pmid, r=record, s=item_split: _build(
                p, r, form=form, contexts_mode=contexts, split=s, truth=truth, ids=ids
            ),
        )
    return collector.result(ground_truth=str(gt_path) if truth is not None else None)
