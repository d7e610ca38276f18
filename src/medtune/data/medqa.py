"""MedQA-USMLE (Jin et al. 2020) in its published JSON-lines form.

Each line: ``question``, ``options`` (a dict keyed A-E, or A-D in the ``4_options`` variant), ``answer_idx``
(the gold letter), ``answer`` (the gold option's text), ``meta_info`` ("step1" / "step2&3"); the 4-option
files add ``metamap_phrases``. Both published variants read the same way.

Choices made here (and why):
- ``answer`` text must equal the option at ``answer_idx`` (after trimming outer whitespace): the two fields
  are redundant in the source, so a disagreement means a corrupted record and is reported, not guessed.
- ids are ``medqa-<split>-<line>`` (line number in the file, from 1): stable across runs and the same for
  the same question in the 5- and 4-option test files, which list the questions in the same order.
- ``category`` is ``meta_info``; the one original typo "stfep2&3" (4-option test file) is read as "step2&3"
  and the raw value kept in ``meta.meta_info``. The USMLE step is the natural category for per-step results.
- ``split`` comes from the ``split`` option, else from the file name (``test.jsonl``,
  ``phrases_no_exclude_train.jsonl``); a name without a split word is an error asking for the option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtune.data.parsing import (
    LETTERS,
    UniqueIds,
    iter_json_lines,
    letter_to_index,
    require_object,
    require_str,
    resolve_split,
)
from medtune.data.registry import LoadResult, OnError, RecordCollector, register_loader
from medtune.errors import InputError
from medtune.schema import MCQItem, make_item

SOURCE = "medqa"
_CATEGORY_FIXES = {"stfep2&3": "step2&3"}


def _options(record: dict[str, Any]) -> list[str]:
    opts = record.get("options")
    if opts is None:
        raise InputError("missing", field="options")
    if not isinstance(opts, dict) or not opts:
        raise InputError("expected a non-empty object keyed by letters (A, B, ...)", field="options")
    keys = sorted(opts)
    expected = list(LETTERS[: len(keys)])
    if keys != expected:
        missing = next((k for k in expected if k not in opts), None)
        if missing is not None:
            raise InputError(f"option {missing} is missing (keys: {', '.join(keys)})", field=f"options.{missing}")
        raise InputError(f"unexpected option keys {keys}", field="options")
    out = []
    for k in expected:
        v = opts[k]
        if not isinstance(v, str) or not v.strip():
            raise InputError("option is empty" if isinstance(v, str) or v is None else "option is not text",
                             field=f"options.{k}")
        out.append(v)
    return out


def _build(record: Any, lineno: int, split: str, ids: UniqueIds) -> MCQItem:
    rec = require_object(record)
    question = require_str(rec, "question")
    options = _options(rec)
    answer = letter_to_index(rec.get("answer_idx"), len(options), field="answer_idx")
    if "answer" in rec:
        text = require_str(rec, "answer")
        if text.strip() != options[answer].strip():
            raise InputError(
                f"answer text {text!r} differs from option {LETTERS[answer]} {options[answer]!r} (answer_idx)",
                field="answer",
            )
    raw_cat = rec.get("meta_info")
    category = _CATEGORY_FIXES.get(raw_cat, raw_cat) if isinstance(raw_cat, str) and raw_cat.strip() else None
    meta: dict[str, Any] = {"line": lineno}
    if raw_cat is not None:
        meta["meta_info"] = raw_cat
    if "metamap_phrases" in rec:
        meta["metamap_phrases"] = rec["metamap_phrases"]
    item_id = f"{SOURCE}-{split}-{lineno}"
    ids.claim(item_id, f"line {lineno}")
    return make_item(
        MCQItem,
        {
            "id": item_id,
            "question": question,
            "options": options,
            "answer": answer,
            "source": SOURCE,
            "split": split,
            "category": category,
            "meta": meta,
        },
    )


@register_loader("medqa", options=(),
                 description="MedQA-USMLE JSON lines (options dict A-E or A-D, answer_idx, meta_info)")
def load_medqa(path: Path, *, on_error: OnError = "raise", split: str | None = None, **options: Any) -> LoadResult:
    """Load a MedQA-USMLE ``.jsonl`` file (5-option or ``4_options`` variant). Ids: ``medqa-<split>-<line>``."""
    if options:
        raise InputError(f"unknown option(s) for medqa: {', '.join(sorted(options))}")
    path = Path(path)
    if path.is_dir():
        raise InputError("expected a MedQA .jsonl file, got a folder", file=path)
    split = resolve_split(path, split)
    collector = RecordCollector(path, on_error, record_kind="line")
    ids = UniqueIds()
    for lineno, record in iter_json_lines(path):
        collector.run(lineno, lambda r=record, n=lineno: _build(r, n, split, ids))
    return collector.result()
