"""Small parsing helpers shared by the source loaders (medqa, medmcqa, lek, mmlu, pubmedqa, medquad, tabular).

Each helper raises :class:`~medtune.errors.InputError` naming the field it checks, so that a loader's
``RecordCollector`` only has to add the file and record; the loaders stay short and their error messages
uniform ("file, line 12, field 'answer_idx': ...").
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from medtune.data.registry import (
    UTF8_BOM,
    LoadResult,
    OnError,
    RecordCollector,
    iter_jsonl,
    read_bytes,
    read_text_utf8,
)
from medtune.errors import InputError
from medtune.prompts import LETTERS as LETTERS
from medtune.schema import Item

SPLIT_WORDS = ("train", "dev", "val", "validation", "test")


def require_str(obj: dict[str, Any], key: str, *, allow_empty: bool = False, field: str | None = None) -> str:
    """``obj[key]`` as a string; missing, non-string or (unless allowed) blank values are errors naming ``key``."""
    field = field or key
    if key not in obj or obj[key] is None:
        raise InputError("missing", field=field)
    value = obj[key]
    if not isinstance(value, str):
        raise InputError(f"expected text, got {type(value).__name__}", field=field)
    if not allow_empty and not value.strip():
        raise InputError("empty", field=field)
    return value


def optional_str(obj: dict[str, Any], key: str) -> str | None:
    """``obj[key]`` if it is a non-blank string, else None (sources write missing text as null or "")."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"expected text, got {type(value).__name__}", field=key)
    return value if value.strip() else None


def require_object(obj: Any) -> dict[str, Any]:
    if isinstance(obj, InputError):
        raise obj
    if not isinstance(obj, dict):
        raise InputError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def letter_to_index(value: Any, n_options: int, *, field: str) -> int:
    """Map an answer letter (``"C"``) to its 0-based index among ``n_options`` options."""
    if not isinstance(value, str) or len(value.strip()) != 1 or value.strip().upper() not in LETTERS:
        raise InputError(f"expected an answer letter, got {value!r}", field=field)
    idx = LETTERS.index(value.strip().upper())
    if idx >= n_options:
        raise InputError(
            f"answer letter {value.strip()!r} is outside the options {LETTERS[0]}-{LETTERS[n_options - 1]}", field=field
        )
    return idx


def as_int(value: Any, *, field: str) -> int:
    """An integer answer index given as a number or digit string (bools and floats with fractions are errors)."""
    if isinstance(value, bool):
        raise InputError(f"expected an integer, got {value!r}", field=field)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise InputError(f"expected an integer, got {value!r}", field=field)


def split_from_name(path: Path) -> str | None:
    """The split word in a file name (``test.jsonl``, ``anatomy_val.csv``, ``train-00000-of-00001.parquet``)."""
    tokens = re.split(r"[^a-z]+", path.name.lower())
    found = [t for t in tokens if t in SPLIT_WORDS]
    return found[-1] if found else None


def resolve_split(path: Path, split: str | None) -> str:
    """The split given as an option, else the one in the file name; an error if neither says."""
    if split:
        return split
    found = split_from_name(path)
    if found is None:
        raise InputError(
            f"cannot tell the split from the file name (none of {', '.join(SPLIT_WORDS)}); pass split=...",
            file=path,
        )
    return found


def _reject_duplicate_keys(path: Path):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise InputError(f"duplicate key '{key}' in a JSON object", file=path, field=key)
            out[key] = value
        return out

    return hook


def load_json(path: Path, *, unique_keys: bool = False) -> Any:
    """Parse a whole JSON document, naming line and column of a syntax error.

    ``unique_keys``: a key repeated in an object is an error (plain ``json`` keeps the last one silently,
    which would drop a record of a file keyed by id).
    """
    text = read_text_utf8(path)
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys(path) if unique_keys else None)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"invalid JSON ({exc.msg}, column {exc.colno}); truncated file?", file=path, record=exc.lineno,
            record_kind="line",
        ) from None


def iter_json_records(path: Path) -> tuple[str, Iterator[tuple[int, Any]]]:
    """Records of a JSON-lines file, or of a JSON array file (``[...]``), with the record kind for messages.

    JSON lines: (line number, object or InputError); JSON array: (1-based element number, object).
    """
    head = read_bytes(path)[:4096].removeprefix(UTF8_BOM).lstrip()
    if head.startswith(b"["):
        data = load_json(path)
        if not isinstance(data, list):
            raise InputError("expected a JSON array of records", file=path)
        return "record", iter(enumerate(data, start=1))
    return "line", iter_jsonl(path)


def iter_json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """Records of a file that must be JSON lines; a JSON array (``[...]``, one document) is refused by name.

    Without this a pretty-printed array fails at its first line with a puzzling syntax error.
    """
    head = read_bytes(path)[:4096].removeprefix(UTF8_BOM).lstrip()
    if head.startswith(b"["):
        raise InputError("expected JSON lines (one object per line), got a JSON array", file=path, record=1,
                         record_kind="line")
    return iter_jsonl(path)


def iter_parquet_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Rows of a Parquet file as dicts, numbered from 1."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.is_dir():
        raise InputError("expected a Parquet file, got a folder", file=path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable Parquet file ({exc})", file=path) from None
    if table.num_rows == 0:
        raise InputError("file is empty (no rows)", file=path)
    return iter(enumerate(table.to_pylist(), start=1))


def read_csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """CSV rows as (line number where the row starts, cells). Invalid UTF-8 and empty files are errors."""
    text = read_text_utf8(path)  # without the byte-order mark spreadsheet exports often start with
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row or all(not c.strip() for c in row):
                continue
            yield line, row
    except csv.Error as exc:
        raise InputError(f"malformed CSV ({exc})", file=path, record=reader.line_num, record_kind="line") from None


def read_csv_dicts(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str] | InputError]]]:
    """A CSV with a header row: (column names, [(line, row dict or the error for a row of the wrong width)])."""
    rows = read_csv_rows(path)
    try:
        _, columns = next(rows)
    except StopIteration:
        raise InputError("file is empty", file=path) from None
    columns = [c.strip() for c in columns]
    out: list[tuple[int, dict[str, str] | InputError]] = []
    for line, cells in rows:
        if len(cells) != len(columns):
            out.append((line, InputError(f"row has {len(cells)} columns, the header has {len(columns)}",
                                         field="columns")))
        else:
            out.append((line, dict(zip(columns, cells, strict=True))))
    if not out:
        raise InputError("file has a header but no rows", file=path)
    return columns, out


class UniqueIds:
    """Reject a second record with an id already seen, naming where the first one was."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def claim(self, item_id: str, where: str, *, field: str = "id") -> None:
        if item_id in self._seen:
            raise InputError(f"duplicate id '{item_id}' (first seen at {self._seen[item_id]})", field=field)
        self._seen[item_id] = where


def collect_json_records(path: Path, kind: str, records: Iterable[tuple[int, Any]], on_error: OnError,
                         build: Callable[..., Item | None], **fields: Any) -> LoadResult:
    """Build one item per record with ``build(row, n, ids=..., where=..., **fields)`` under ``on_error``.

    The loop every record-per-item loader shares: one :class:`UniqueIds` for the file, and each record's error
    located at its ``kind`` and number (``line 3``, ``record 2``) by :class:`RecordCollector`.
    """
    collector = RecordCollector(path, on_error, record_kind=kind)
    ids = UniqueIds()
    for n, row in records:
        collector.run(n, lambda r=row, n=n: build(r, n, ids=ids, where=f"{kind} {n}", **fields))
    return collector.result()


def json_clean(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples → lists, keys → str, odd types → str): meta round-trips exactly."""
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


def merge_results(results: Iterable[LoadResult]) -> LoadResult:
    merged = LoadResult([], [], {})
    for res in results:
        merged.items.extend(res.items)
        merged.skipped.extend(res.skipped)
        merged.extras.update(res.extras)
    return merged


def parse_list_option(value: str | Sequence[str] | None) -> list[str] | None:
    """An option given as a list or a comma-separated string (the CLI passes strings)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]
