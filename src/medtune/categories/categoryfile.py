"""categories.parquet: its one reader and writer, and the :class:`Categories` it holds.

One row per item (``id``, ``category``, ``probability``, ``name``) and the way the categories were made in the
file's metadata (key ``medtune.categories``: method, parameters, seed), so every stage that writes or reads the
file agrees on its columns; the format is described in docs/ARTIFACTS.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medtune.errors import InputError
from medtune.io import atomic_path, read_parquet_table

ARTIFACT = "categories.parquet"
METADATA_KEY = b"medtune.categories"
NOISE_CATEGORY = "noise"


@dataclass
class Categories:
    """One row per item plus the metadata stored with the file."""

    ids: list[str]
    category: list[str]
    probability: list[float]
    name: list[str]
    metadata: dict[str, Any]
    reduced: np.ndarray | None = None  # the clustering space, when clustered

    def names(self) -> dict[str, str]:
        return dict(zip(self.category, self.name, strict=True))


_SCHEMA = pa.schema([("id", pa.string()), ("category", pa.string()), ("probability", pa.float64()),
                     ("name", pa.string())])


def write_categories(cats: Categories, path: str | Path) -> Path:
    """Write ``cats`` to ``path`` atomically, so a reader never sees half a file."""
    path = Path(path)
    table = pa.Table.from_pydict({"id": cats.ids, "category": cats.category, "probability": cats.probability,
                                  "name": cats.name}, schema=_SCHEMA)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(cats.metadata, sort_keys=True).encode()})
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return path


def read_category_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a categories file as dicts, in file order, requiring only ``id`` and ``category``.

    What the order stage reads: a table assigning categories may come from elsewhere, without the
    ``probability`` and ``name`` columns :func:`read_categories` requires of the artifact.
    """
    path = Path(path)
    table = read_parquet_table(path)
    for col in ("id", "category"):
        if col not in table.column_names:
            raise InputError(f"not a categories file: no '{col}' column", file=path, field=col)
    return table.to_pylist()


def read_categories(path: str | Path) -> Categories:
    """The categories at ``path``; a file without the columns is an error naming the first one missing."""
    path = Path(path)
    table = read_parquet_table(path)
    missing = [c for c in _SCHEMA.names if c not in table.column_names]
    if missing:
        raise InputError(f"not a categories file: no '{missing[0]}' column", file=path, field=missing[0])
    md = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    d = table.to_pydict()
    return Categories(d["id"], d["category"], d["probability"], d["name"], md)
