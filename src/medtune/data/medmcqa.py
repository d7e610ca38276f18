"""MedMCQA (Pal et al. 2022) in its official record format.

Records: ``id, question, opa, opb, opc, opd, cop, choice_type, exp, subject_name, topic_name``. Read from
JSON lines (the official ``train.json`` / ``dev.json`` / ``test.json`` are JSON lines despite the name), a
JSON array, or Parquet (the Hugging Face hub copy's data files).

How ``cop`` (the correct option) is indexed differs between the published forms:
- the original release (GitHub / Google Drive / Kaggle files) is **1-based**: 1-4 = a-d. The hub's old
  loading script (huggingface/datasets ``datasets/medmcqa/medmcqa.py``) converted it with ``int(cop) - 1``;
- the Hugging Face hub copy (``openlifescienceai/medmcqa``) is therefore **0-based**: 0-3, a ``ClassLabel``
  named a-d (its dataset card still says "1,2,3,4", reported as medmcqa/medmcqa issue #9); its test split
  has ``cop = -1`` and an empty ``exp`` (no public answers).

So the loader takes an explicit ``cop_base``: ``1`` (default, the original files), ``0`` (the hub form), or
``"auto"``, which infers it from the whole file: any 0 means 0-based, any 4 means 1-based, both is an error
(a mixed file), neither is an error asking for the option (a small file can hold only 1-3). A value outside
the chosen base's range is reported with a hint at the other base, so reading a hub export with the default
fails loudly instead of shifting every answer by one. Records without an answer (``cop`` missing, null or
-1: the test split) are errors, or skipped and reported with ``on_error="skip"``.

Mapping: subject_name → category, topic_name → subcategory, exp → explanation; ``choice_type``
("single"/"multi"; any other value is an error) and the record's own id are kept in ``meta``. Ids are ``medmcqa-<id>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from medtune.data.parsing import (
    UniqueIds,
    as_int,
    iter_json_records,
    iter_parquet_records,
    optional_str,
    require_object,
    require_str,
    resolve_split,
)
from medtune.data.registry import LoadResult, OnError, RecordCollector, register_loader
from medtune.errors import InputError
from medtune.schema import MCQItem, make_item

SOURCE = "medmcqa"
OPTION_FIELDS = ("opa", "opb", "opc", "opd")
CopBase = Literal[0, 1, "auto"]
CHOICE_TYPES = ("single", "multi")


def _cop_value(rec: dict[str, Any]) -> int | None:
    """The raw ``cop`` as an int, or None for an unlabelled record (missing, null, -1)."""
    raw = rec.get("cop")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    value = as_int(raw, field="cop")
    return None if value == -1 else value


def infer_cop_base(values: list[int], file: Path | str | None = None) -> int:
    """0 or 1 from the ``cop`` values of a whole file (see the module docstring)."""
    has0, has4 = 0 in values, 4 in values
    if has0 and has4:
        raise InputError("cop values include both 0 and 4: the file mixes 0- and 1-based answers", file=file,
                         field="cop")
    if has0:
        return 0
    if has4:
        return 1
    raise InputError(
        "cannot infer how cop is indexed (no 0 and no 4 among the values); pass cop_base=1 for the original "
        "MedMCQA files or cop_base=0 for the Hugging Face hub copy",
        file=file,
        field="cop",
    )


def _parse_cop_base(cop_base: Any) -> int | str:
    if cop_base in ("auto", 0, 1):
        return cop_base
    if isinstance(cop_base, str) and cop_base.strip() in ("0", "1"):
        return int(cop_base)
    raise InputError(f"cop_base must be 0, 1 or 'auto', got {cop_base!r}", field="cop_base")


def _build(record: Any, where: str, split: str, base: int, ids: UniqueIds) -> MCQItem:
    rec = require_object(record)
    source_id = rec.get("id")
    if source_id is None or not str(source_id).strip():
        raise InputError("missing", field="id")
    source_id = str(source_id)
    question = require_str(rec, "question")
    options = [require_str(rec, f) for f in OPTION_FIELDS]
    cop = _cop_value(rec)
    if cop is None:
        raise InputError("no answer (cop missing or -1: an unlabelled record, e.g. the test split)", field="cop")
    lo, hi = base, base + len(options) - 1
    if not lo <= cop <= hi:
        hint = " (the Hugging Face copy is 0-based: pass cop_base=0)" if base == 1 and cop == 0 else ""
        hint = hint or (" (the original files are 1-based: pass cop_base=1)" if base == 0 and cop == 4 else "")
        raise InputError(f"cop {cop} is outside {lo}-{hi} (cop_base={base}){hint}", field="cop")
    item_id = f"{SOURCE}-{source_id}"
    ids.claim(item_id, where)
    meta: dict[str, Any] = {"source_id": source_id, "cop": cop, "cop_base": base}
    choice_type = rec.get("choice_type")
    if choice_type is not None:
        # Only these two are published; anything else is a damaged or foreign file, not a third kind of question.
        if choice_type not in CHOICE_TYPES:
            raise InputError(f"{choice_type!r} is not one of {', '.join(CHOICE_TYPES)}", field="choice_type")
        meta["choice_type"] = choice_type
    return make_item(
        MCQItem,
        {
            "id": item_id,
            "question": question,
            "options": options,
            "answer": cop - base,
            "source": SOURCE,
            "split": split,
            "category": optional_str(rec, "subject_name"),
            "subcategory": optional_str(rec, "topic_name"),
            "explanation": optional_str(rec, "exp"),
            "meta": meta,
        },
    )


def _check_columns(path: Path, row: dict[str, Any]) -> None:
    """A Parquet file has one schema: a missing column is a file error, not one error per row."""
    missing = [c for c in ("id", "question", *OPTION_FIELDS, "cop") if c not in row]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)} (has {', '.join(row)}); expected MedMCQA's "
                         "id, question, opa..opd, cop", file=path, field=missing[0])


@register_loader("medmcqa", options=(),
                 description="MedMCQA official records (opa..opd, cop; cop_base=1 original, 0 hub)")
def load_medmcqa(
    path: Path,
    *,
    on_error: OnError = "raise",
    split: str | None = None,
    cop_base: CopBase | str = 1,
    **options: Any,
) -> LoadResult:
    """Load MedMCQA records (JSON lines / JSON array / Parquet). ``cop_base``: 1 (original), 0 (hub) or "auto"."""
    if options:
        raise InputError(f"unknown option(s) for medmcqa: {', '.join(sorted(options))}")
    path = Path(path)
    if path.is_dir():
        raise InputError("expected a MedMCQA file (train.json, dev.json, ...), got a folder", file=path)
    base = _parse_cop_base(cop_base)
    split = resolve_split(path, split)
    if path.suffix.lower() == ".parquet":
        kind, records = "row", list(iter_parquet_records(path))
        _check_columns(path, records[0][1])
    else:
        kind, it = iter_json_records(path)
        records = list(it)
    if base == "auto":
        values = []
        for _, rec in records:
            if isinstance(rec, dict):
                try:
                    v = _cop_value(rec)
                except InputError:
                    continue  # reported per record below
                if v is not None:
                    values.append(v)
        base = infer_cop_base(values, file=path)
    collector = RecordCollector(path, on_error, record_kind=kind)
    ids = UniqueIds()
    for n, rec in records:
        collector.run(n, lambda r=rec, n=n: _build(r, f"{kind} {n}", split, int(base), ids))
    return collector.result(cop_base=base)
