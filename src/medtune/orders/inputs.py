"""Turn items (+ optional categories.parquet / difficulty.parquet) into the :class:`OrderItem` strategies see.

Category comes from the categories file when given, else from the item's ``category``. Difficulty comes from
the difficulty file when given (its ``difficulty`` and ``bucket`` columns), else from the item's
``human_difficulty``: a level ("easy"/"medium"/"hard") is a bucket, a number is a continuous difficulty that
is bucketed by :mod:`medtune.bucketing` (the paper's easy ≤ 0.66 < medium ≤ 0.80 < hard by default, or terciles).

A table row whose id is not an item of the items file is an error, not silently skipped: it means the table
was made for another items file (or the items file changed since), and the order would quietly miss what the
table says. A table may still cover *more* items than are ordered, because the order takes one split of the
file while difficulty and categories are usually computed over all of it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import numpy as np

from medtune.bucketing import PAPER_THRESHOLDS, Bucketing
from medtune.errors import ConfigError, InputError
from medtune.orders.strategies import BUCKETS, OrderItem
from medtune.schema import item_source

__all__ = ["BUCKETINGS", "PAPER_THRESHOLDS", "Lookup", "bucket_by_thresholds", "bucket_values", "check_ids",
           "make_bucketing", "order_items", "read_categories_table", "read_difficulty_table",
           "tercile_thresholds"]

BUCKETINGS: tuple[str, ...] = ("thresholds", "terciles")


def make_bucketing(bucketing: str | Bucketing, thresholds: Sequence[float] = PAPER_THRESHOLDS) -> Bucketing:
    """The :class:`Bucketing` named by ``bucketing`` ("thresholds" uses ``thresholds``), or the one given."""
    if isinstance(bucketing, Bucketing):
        return bucketing
    if bucketing == "thresholds":
        return Bucketing.fixed(thresholds)
    if bucketing == "terciles":
        return Bucketing.terciles()
    raise ConfigError(f"bucketing must be one of {', '.join(BUCKETINGS)}, got {bucketing!r}")


def bucket_by_thresholds(values: Sequence[float], thresholds: Sequence[float] = PAPER_THRESHOLDS) -> list[str]:
    """easy ≤ t1 < medium ≤ t2 < hard (the paper's MedQA rule with t = 0.66, 0.80)."""
    return Bucketing.fixed(thresholds).labels(values)  # type: ignore[return-value]


def tercile_thresholds(values: Sequence[float]) -> tuple[float, float]:
    """The 1/3 and 2/3 quantiles: bucketing by them gives three buckets of (near) equal size."""
    return Bucketing.terciles().resolve(values)


def bucket_values(values: Sequence[float], bucketing: str | Bucketing = "thresholds",
                  thresholds: Sequence[float] = PAPER_THRESHOLDS) -> list[str]:
    """The bucket of each value under ``bucketing`` (see :func:`make_bucketing`)."""
    return make_bucketing(bucketing, thresholds).labels(values)  # type: ignore[return-value]


@dataclass
class Lookup:
    """A per-id table read from an artifact file, remembering the file and each id's row (1-based, as the
    items file counts rows) for error messages."""

    file: Path
    rows: dict[str, dict[str, Any]]
    row_numbers: dict[str, int] = dataclass_field(default_factory=dict)

    def error(self, message: str, item_id: str, field: str) -> InputError:
        """An error at ``item_id``'s row of this file (at the id itself when the row is not known)."""
        row = self.row_numbers.get(item_id)
        if row is None:
            return InputError(message, file=self.file, record=item_id, field=field)
        return InputError(message, file=self.file, record=row, record_kind="row", field=field)


def _lookup(path: str | Path, table_rows: Sequence[Mapping[str, Any]]) -> Lookup:
    """The rows read by the file's owner, by id; an id seen twice is an error at its second row."""
    path = Path(path)
    rows: dict[str, dict[str, Any]] = {}
    row_numbers: dict[str, int] = {}
    for n, row in enumerate(table_rows, start=1):
        if row["id"] in rows:
            raise InputError(f"duplicate id '{row['id']}' (first seen at row {row_numbers[row['id']]})", file=path,
                             record=n, record_kind="row", field="id")
        rows[row["id"]] = dict(row)
        row_numbers[row["id"]] = n
    return Lookup(path, rows, row_numbers)


def read_categories_table(path: str | Path) -> Lookup:
    """A categories file by id, read by its owner (:mod:`medtune.categories.categoryfile`)."""
    from medtune.categories.categoryfile import read_category_rows

    return _lookup(path, read_category_rows(path))


def read_difficulty_table(path: str | Path, column: str = "difficulty") -> Lookup:
    """A difficulty.parquet by id (read by its owner, :mod:`medtune.difficulty`), with ``column`` (e.g.
    ``irt_b``) as each row's ``difficulty``.

    The file's ``bucket`` column belongs to its ``difficulty`` column, so it is dropped when another
    column is read: those values are bucketed by the order stage instead.
    """
    from medtune.difficulty import read_difficulty_rows

    lookup = _lookup(path, read_difficulty_rows(path, column))
    rows = {i: {**r, "difficulty": _difficulty_value(r[column], lookup, i, column)} for i, r in lookup.rows.items()}
    if column != "difficulty":
        rows = {i: {**r, "bucket": None} for i, r in rows.items()}
    return Lookup(lookup.file, rows, lookup.row_numbers)


def _difficulty_value(value: Any, lookup: Lookup, item_id: str, column: str) -> float | None:
    """A difficulty as a float (None when missing); anything else is an error at its row, because a
    strategy sorting by it would otherwise fail far from the file."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise lookup.error(f"difficulty must be a number, got {value!r}", item_id, column) from None
    if not math.isfinite(number):
        raise lookup.error(f"difficulty must be a finite number, got {value!r}", item_id, column)
    return number


def check_ids(lookup: Lookup, ids: Collection[str]) -> None:
    """Raise at the first row of ``lookup`` whose id is not in ``ids`` (every id of the items file)."""
    known = set(ids)
    for item_id in lookup.rows:
        if item_id not in known:
            raise lookup.error(f"id '{item_id}' is not an item of the items file (a table made for other items?)",
                               item_id, "id")


def _missing(lookup: Lookup, item_id: str, field: str) -> InputError:
    return InputError(f"item '{item_id}' has no row in this file", file=lookup.file, record=item_id, field=field)


def order_items(
    items: Sequence[Any],
    *,
    categories: Lookup | Mapping[str, str] | None = None,
    difficulty: Lookup | None = None,
    bucketing: str | Bucketing | None = None,
    thresholds: Sequence[float] = PAPER_THRESHOLDS,
    file_ids: Collection[str] | None = None,
) -> list[OrderItem]:
    """Build :class:`OrderItem` s from schema items (anything with ``id``, ``category``, ``human_difficulty``).

    ``bucketing`` None keeps a difficulty file's own ``bucket`` column when it has one and otherwise buckets
    by ``thresholds``; "thresholds", "terciles" or a :class:`~medtune.bucketing.Bucketing` re-bucket every
    continuous difficulty. ``file_ids``: every id of the items file ``items`` were taken from (``items`` may
    be one split of it); a categories or difficulty row with another id is an error. None skips that check.
    """
    if file_ids is not None:
        known = set(file_ids)
        for table in (categories, difficulty):
            if isinstance(table, Lookup):
                check_ids(table, known)
    cats: list[str | None] = []
    diffs: list[float | None] = []
    given_buckets: list[str | None] = []
    for it in items:
        if categories is None:
            cats.append(it.category)
        elif isinstance(categories, Lookup):
            row = categories.rows.get(it.id)
            if row is None:
                raise _missing(categories, it.id, "category")
            cats.append(None if row["category"] is None else str(row["category"]))
        else:
            cats.append(categories.get(it.id))
        if difficulty is not None:
            row = difficulty.rows.get(it.id)
            if row is None:
                raise _missing(difficulty, it.id, "difficulty")
            diffs.append(_difficulty_value(row["difficulty"], difficulty, it.id, "difficulty"))
            b = row.get("bucket")
            if b is not None and b not in BUCKETS:
                raise InputError(f"bucket must be one of {', '.join(BUCKETS)}, got {b!r}", file=difficulty.file,
                                 record=it.id, field="bucket")
            given_buckets.append(b if bucketing is None else None)
        else:
            hd = getattr(it, "human_difficulty", None)
            if isinstance(hd, str):
                if hd not in BUCKETS:
                    raise InputError(f"human_difficulty level must be one of {', '.join(BUCKETS)}, got {hd!r}",
                                     record=it.id, field="human_difficulty")
                diffs.append(None)
                given_buckets.append(hd)
            else:
                diffs.append(None if hd is None else float(hd))
                given_buckets.append(None)
    numeric = [d for d, b in zip(diffs, given_buckets, strict=True) if d is not None and b is None]
    computed = iter(bucket_values(numeric, bucketing or "thresholds", thresholds) if numeric else [])
    buckets = [b if b is not None else (next(computed) if d is not None else None)
               for d, b in zip(diffs, given_buckets, strict=True)]
    sources = [item_source(it) for it in items]
    return [OrderItem(it.id, c, d, b, src)
            for it, c, d, b, src in zip(items, cats, diffs, buckets, sources, strict=True)]

