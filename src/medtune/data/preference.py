"""Preference pairs (``prompt``, ``chosen``, ``rejected``) for preference tuning (``--method dpo``).

A file of records with the three text fields, as TRL and most published preference sets write them: a JSON
array, JSON lines or Parquet. Each record becomes a :class:`~medtune.schema.QAItem` whose question is the prompt,
whose answer is the chosen answer, and whose ``meta["rejected"]`` is the rejected one. Kept as items, pairs go
through the rest of the pipeline like any other data: an order is built on their ids, training reads the pairs
back from the items (:func:`preference_pair`), and evaluation scores the trained model against the chosen answers.

Optional fields: ``id`` (else ``<name>-<record number>``), ``category``, ``split`` (else the ``split`` option,
else the split word in the file name, else "train"); other fields are kept in ``meta``. A pair whose chosen and
rejected answers are the same teaches nothing and is an error. A bad record is named by file, record and field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtune.data.parsing import (
    UniqueIds,
    iter_json_records,
    iter_parquet_records,
    json_clean,
    require_object,
    split_from_name,
)
from medtune.data.registry import LoadResult, OnError, RecordCollector, register_loader
from medtune.errors import InputError
from medtune.schema import Item, QAItem, make_item

PAIR_FIELDS = ("prompt", "chosen", "rejected")
# Where an item keeps its rejected answer.
REJECTED = "rejected"


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        raise InputError("missing", field=key)
    if not isinstance(value, str):
        raise InputError(f"expected text, got {type(value).__name__} (conversational pairs are not read; "
                         "write the prompt and the answers as text)", field=key)
    if not value.strip():
        raise InputError("empty", field=key)
    return value


def _optional(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InputError(f"expected text, got {type(value).__name__}", field=key)
    return str(value).strip()


def pair_item(row: Any, record: int, *, name: str, split: str, ids: UniqueIds, where: str) -> QAItem:
    """One preference record as an item (module docstring)."""
    row = require_object(row)
    prompt, chosen, rejected = (_text(row, k) for k in PAIR_FIELDS)
    if chosen.strip() == rejected.strip():
        raise InputError("the chosen and the rejected answer are the same", field="rejected")
    item_id = _optional(row, "id") or f"{name}-{record}"
    ids.claim(item_id, where, field="id")
    meta = json_clean({k: v for k, v in row.items() if k not in (*PAIR_FIELDS, "id", "category", "split")})
    meta[REJECTED] = rejected.strip()
    return make_item(QAItem, {"id": item_id, "question": prompt, "answer": chosen.strip(), "source": name,
                              "split": _optional(row, "split") or split, "category": _optional(row, "category"),
                              "meta": meta})


def preference_pair(item: Item, *, file: str | Path | None = None) -> tuple[str, str]:
    """``(chosen, rejected)`` of an item made by this loader; any other item is an error naming it."""
    rejected = item.meta.get(REJECTED) if isinstance(item, QAItem) else None
    if not isinstance(rejected, str) or not rejected.strip():
        raise InputError(f"not a preference pair (a free-text item with meta.{REJECTED}); load pairs with the "
                         "'preference' source", file=file, record=item.id, field=f"meta.{REJECTED}")
    return item.answer, rejected


@register_loader("preference", options=(),
                 description="preference pairs {prompt, chosen, rejected}: JSON array, JSON lines or Parquet")
def load_preference(path: Path, *, on_error: OnError = "raise", split: str | None = None,
                    name: str | None = None) -> LoadResult:
    """Load preference pairs as free-text items: prompt → question, chosen → answer, rejected → meta.rejected."""
    path = Path(path)
    if path.is_dir():
        raise InputError("expected a JSON, JSON lines or Parquet file, got a folder", file=path)
    name = name or path.stem
    split = split or split_from_name(path) or "train"
    if path.suffix.lower() == ".parquet":
        kind, records = "row", iter_parquet_records(path)
    else:
        kind, records = iter_json_records(path)
    collector = RecordCollector(path, on_error, record_kind=kind)
    ids = UniqueIds()
    for n, row in records:
        collector.run(n, lambda r=row, n=n: pair_item(r, n, name=name, split=split, ids=ids, where=f"{kind} {n}"))
    return collector.result()
