"""Any table of questions (CSV, JSON lines / JSON array, Parquet, or a Hugging Face hub dataset) via a column mapping.

For sources without a dedicated loader. The mapping names the columns:

- ``question_col`` (default "question"), ``answer_col`` (default "answer");
- ``options_cols``: a list of columns, one option each (``["opa", "opb", "opc", "opd"]``, or a
  comma-separated string from the CLI), or a single column holding a list, or a dict keyed by letters
  (as MedQA's ``options``); in a CSV such a cell is JSON text;
- ``answer_format``: ``letter`` (A, B, ... or, for dict options, the key), ``index0``, ``index1``,
  ``text`` (must equal exactly one option, after trimming outer whitespace) or ``auto``, which decides once
  per file from all answer values: all letters → letter; all integers → index0 if any is 0, index1 if any
  equals its row's option count, else an error asking for the format (a file of 1s and 2s is ambiguous);
  anything else → text. The format used is reported in ``LoadResult.extras["answer_format"]``;
- optional ``id_col``, ``category_col``, ``subcategory_col``, ``explanation_col``, ``difficulty_col``
  (a number or easy/medium/hard), ``split_col``; ``meta_cols`` (default: every column not mapped above).
  Every column the mapping names must exist in the file (an optional one too: a misspelt ``category_col``
  is an error naming the column and the file, not items without categories).

``kind="qa"`` reads free-text items instead: ``question_col`` and ``answer_col`` (the reference answer).
``split``: ``split_col`` if given, else the ``split`` option, else the split word in the file name, else
"train". ``name``: the ``source`` of the items (default: the file's stem); ids are ``id_col`` values or
``<name>-<record number>`` (the line number in CSV and JSON-lines files, the 1-based row in Parquet).

The ``hf`` loader maps a hub dataset (``datasets.load_dataset(name, config, split=...)``) through the same
mapping. The hub is unreachable on offline machines: there it fails with an error saying so; export the
dataset where you are online and load the file with ``tabular``. Remote code is never run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medtune.data.parsing import (
    LETTERS,
    UniqueIds,
    as_int,
    iter_json_records,
    iter_parquet_records,
    json_clean,
    letter_to_index,
    parse_list_option,
    read_csv_dicts,
    require_object,
    split_from_name,
)
from medtune.data.registry import LoadResult, OnError, RecordCollector, register_loader
from medtune.errors import InputError
from medtune.schema import DIFFICULTY_LEVELS, Item, MCQItem, QAItem, make_item

AnswerFormat = Literal["auto", "letter", "index0", "index1", "text"]
ANSWER_FORMATS = ("auto", "letter", "index0", "index1", "text")


@dataclass
class ColumnMapping:
    kind: str = "mcq"
    question_col: str = "question"
    options_cols: list[str] | None = None
    answer_col: str = "answer"
    answer_format: str = "auto"
    id_col: str | None = None
    category_col: str | None = None
    subcategory_col: str | None = None
    explanation_col: str | None = None
    difficulty_col: str | None = None
    split_col: str | None = None
    meta_cols: list[str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("mcq", "qa"):
            raise InputError(f"kind must be 'mcq' or 'qa', got {self.kind!r}", field="kind")
        if self.answer_format not in ANSWER_FORMATS:
            raise InputError(f"answer_format must be one of {', '.join(ANSWER_FORMATS)}, got {self.answer_format!r}",
                             field="answer_format")
        self.options_cols = parse_list_option(self.options_cols)
        self.meta_cols = parse_list_option(self.meta_cols)
        if self.kind == "mcq" and not self.options_cols:
            raise InputError("options_cols is required for multiple-choice tables (kind='mcq')", field="options_cols")

    def mapped(self) -> list[str]:
        cols = [self.question_col, self.answer_col, *(self.options_cols or [])]
        cols += [c for c in (self.id_col, self.category_col, self.subcategory_col, self.explanation_col,
                             self.difficulty_col, self.split_col) if c]
        return cols

    def required(self) -> list[str]:
        return [self.question_col, self.answer_col, *(self.options_cols or [])]

    def named_columns(self) -> list[tuple[str, str]]:
        """(option, column) for every column the mapping names, the optional ones and ``meta_cols`` included."""
        pairs = [("question_col", self.question_col), ("answer_col", self.answer_col)]
        pairs += [("options_cols", c) for c in self.options_cols or []]
        for opt in ("id_col", "category_col", "subcategory_col", "explanation_col", "difficulty_col", "split_col"):
            if getattr(self, opt):
                pairs.append((opt, getattr(self, opt)))
        pairs += [("meta_cols", c) for c in self.meta_cols or []]
        return pairs


def check_mapped_columns(mapping: ColumnMapping, columns: Sequence[str], *, file: Path | str, where: str) -> None:
    """Every column the mapping names must exist in the table.

    A misspelt optional column (``category_col="subject"`` in a file whose column is ``topic``) would
    otherwise give items without categories and no error: the run would look fine and mean something else.
    """
    present = set(columns)
    missing = [(opt, col) for opt, col in mapping.named_columns() if col not in present]
    if missing:
        cols = ", ".join(dict.fromkeys(col for _, col in missing))
        opts = ", ".join(dict.fromkeys(opt for opt, _ in missing))
        raise InputError(f"column(s) {cols} not in the {where} ({', '.join(columns)}); check {opts}", file=file,
                         field=missing[0][1])


def _columns_of(records: Sequence[tuple[int, Any]]) -> list[str]:
    """Column names in the order first seen across the dict records (JSON lines may vary per record)."""
    seen: dict[str, None] = {}
    for _, row in records:
        if isinstance(row, dict):
            seen.update(dict.fromkeys(str(k) for k in row))
    return list(seen)


# ----------------------------------------------------------------------------------------------------------
# Cell conversions


def _cell(row: dict[str, Any], col: str) -> Any:
    if col not in row:
        raise InputError("column missing", field=col)
    return row[col]


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip()
    )


def _text(row: dict[str, Any], col: str, *, what: str = "empty") -> str:
    value = _cell(row, col)
    if _is_blank(value):
        raise InputError(what, field=col)
    if isinstance(value, (dict, list, tuple, bool)):
        # Numbers read as text (a CSV has nothing else); a JSON object or list in a text column is a mapping error.
        raise InputError(f"expected text, got {type(value).__name__}", field=col)
    return value if isinstance(value, str) else str(value)


def _optional_text(row: dict[str, Any], col: str | None) -> str | None:
    if not col:
        return None
    value = row.get(col)
    return None if _is_blank(value) else str(value)


def _decode_container(value: Any, col: str) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON list/object in the cell ({exc.msg})", field=col) from None
    return value


def _options(row: dict[str, Any], mapping: ColumnMapping) -> tuple[list[str], list[str] | None]:
    """(options, keys of a dict-valued options column or None)."""
    cols = mapping.options_cols or []
    if len(cols) == 1:
        col = cols[0]
        value = _decode_container(_cell(row, col), col)
        keys = None
        if isinstance(value, dict):
            keys = [str(k) for k in value]
            value = list(value.values())
        if not isinstance(value, list):
            raise InputError("expected a list or an object of options in this column", field=col)
        options = []
        for i, opt in enumerate(value):
            label = keys[i] if keys else str(i)
            if _is_blank(opt):
                raise InputError(f"option {label} is empty", field=f"{col}.{label}")
            options.append(str(opt))
        return options, keys
    options = [_text(row, col, what="option is empty") for col in cols]
    return options, None


def _answer_index(value: Any, fmt: str, options: list[str], keys: list[str] | None, col: str) -> int:
    n = len(options)
    if _is_blank(value):
        raise InputError("no answer", field=col)
    if fmt == "letter":
        if keys is not None and str(value) in keys:
            return keys.index(str(value))
        return letter_to_index(value, n, field=col)
    if fmt in ("index0", "index1"):
        idx = as_int(value, field=col) - (1 if fmt == "index1" else 0)
        if not 0 <= idx < n:
            lo = 0 if fmt == "index0" else 1
            raise InputError(f"answer index {value!r} is outside {lo}-{n - 1 + lo} ({fmt})", field=col)
        return idx
    text = str(value).strip()
    hits = [i for i, opt in enumerate(options) if opt.strip() == text]
    if len(hits) != 1:
        why = "matches no option" if not hits else f"matches {len(hits)} options"
        raise InputError(f"answer text {text!r} {why}", field=col)
    return hits[0]


def _as_int_or_none(value: Any) -> int | None:
    try:
        return as_int(value, field="")
    except InputError:
        return None


def infer_answer_format(samples: Sequence[tuple[Any, int]], file: Path | str | None = None) -> str:
    """Decide ``auto`` once per file from (answer value, option count) pairs (see the module docstring)."""
    values = [(v, n) for v, n in samples if not _is_blank(v)]
    if not values:
        raise InputError("no answer values to infer answer_format from; pass answer_format=", file=file)
    if all(isinstance(v, str) and len(v.strip()) == 1 and v.strip().upper() in LETTERS[:n] for v, n in values):
        return "letter"
    ints = [(_as_int_or_none(v), n) for v, n in values]
    if all(i is not None for i, _ in ints):
        if any(i == 0 for i, _ in ints):
            return "index0"
        if any(i == n for i, n in ints):
            return "index1"
        raise InputError(
            "answers are integers but it is unclear whether they count from 0 or 1 (no 0 and no value equal "
            "to the option count); pass answer_format=index0 or index1",
            file=file,
            field="answer_format",
        )
    return "text"


def _difficulty(value: Any, col: str) -> float | str | None:
    if _is_blank(value):
        return None
    if isinstance(value, str):
        v = value.strip().lower()
        if v in DIFFICULTY_LEVELS:
            return v
        try:
            return float(v)
        except ValueError:
            raise InputError(f"expected a number or one of {', '.join(DIFFICULTY_LEVELS)}, got {value!r}",
                             field=col) from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise InputError(f"expected a number or a level, got {value!r}", field=col)


# ----------------------------------------------------------------------------------------------------------
# Rows → items


def _build(
    row: Any,
    record: int,
    mapping: ColumnMapping,
    fmt: str,
    name: str,
    split: str,
    ids: UniqueIds,
    where: str,
) -> Item:
    row = require_object(row)
    question = _text(row, mapping.question_col, what="question is empty")
    item_id = _text(row, mapping.id_col, what="id is empty") if mapping.id_col else f"{name}-{record}"
    ids.claim(item_id, where, field=mapping.id_col or "id")
    item_split = _optional_text(row, mapping.split_col) or split
    mapped = set(mapping.mapped())
    meta_cols = mapping.meta_cols if mapping.meta_cols is not None else [c for c in row if c not in mapped]
    meta = json_clean({c: row.get(c) for c in meta_cols if c in row})
    common = {"id": item_id, "question": question, "source": name, "split": item_split,
              "category": _optional_text(row, mapping.category_col), "meta": meta}
    if mapping.kind == "qa":
        return make_item(QAItem, {**common, "answer": _text(row, mapping.answer_col, what="answer is empty")})
    options, keys = _options(row, mapping)
    answer = _answer_index(_cell(row, mapping.answer_col), fmt, options, keys, mapping.answer_col)
    return make_item(
        MCQItem,
        {**common, "options": options, "answer": answer,
         "subcategory": _optional_text(row, mapping.subcategory_col),
         "explanation": _optional_text(row, mapping.explanation_col),
         "human_difficulty": _difficulty(row.get(mapping.difficulty_col), mapping.difficulty_col)
         if mapping.difficulty_col else None},
    )


def rows_to_items(
    records: Iterable[tuple[int, Any]],
    *,
    file: Path | str,
    record_kind: str,
    mapping: ColumnMapping,
    on_error: OnError,
    name: str,
    split: str,
    columns: Sequence[str] | None = None,
    where: str = "file",
) -> LoadResult:
    """Map (record number, row dict or InputError) pairs to items under the error policy.

    ``columns``: the table's column names (a CSV header); by default those seen in the records. When no
    record could be read as an object, the per-record errors are reported instead of a column check.
    """
    records = list(records)
    columns = list(columns) if columns is not None else _columns_of(records)
    if columns:
        check_mapped_columns(mapping, columns, file=file, where=where)
    fmt = mapping.answer_format
    if mapping.kind == "mcq" and fmt == "auto":
        samples = []
        for _, row in records:
            if not isinstance(row, dict):
                continue
            try:
                opts, _ = _options(row, mapping)
            except InputError:
                continue  # reported per record below
            samples.append((row.get(mapping.answer_col), len(opts)))
        fmt = infer_answer_format(samples, file=file)
    collector = RecordCollector(file, on_error, record_kind=record_kind)
    ids = UniqueIds()
    for n, row in records:
        collector.run(n, lambda r=row, n=n: _build(r, n, mapping, fmt, name, split, ids, f"{record_kind} {n}"))
    return collector.result(answer_format=fmt if mapping.kind == "mcq" else None)


def _read_file(path: Path, fmt: str) -> tuple[str, list[tuple[int, Any]], list[str] | None]:
    """(record kind, records, the header's columns for a CSV or None)."""
    if fmt == "auto":
        suffix = path.suffix.lower()
        fmt = {".csv": "csv", ".parquet": "parquet", ".jsonl": "json", ".json": "json"}.get(suffix, "")
        if not fmt:
            raise InputError(f"cannot tell the format from the extension {suffix!r}; pass format=csv|json|parquet",
                             file=path)
    if fmt == "csv":
        columns, rows = read_csv_dicts(path)
        return "line", rows, columns
    if fmt == "parquet":
        return "row", list(iter_parquet_records(path)), None
    if fmt == "json":
        kind, it = iter_json_records(path)
        return kind, list(it), None
    raise InputError(f"format must be auto, csv, json or parquet, got {fmt!r}", field="format")


_MAPPING_KEYS = tuple(ColumnMapping.__dataclass_fields__)


def _mapping(options: dict[str, Any], loader: str) -> ColumnMapping:
    unknown = [k for k in options if k not in _MAPPING_KEYS]
    if unknown:
        raise InputError(f"unknown option(s) for {loader}: {', '.join(sorted(unknown))}")
    return ColumnMapping(**options)


@register_loader("tabular", options=_MAPPING_KEYS,
                 description="CSV / JSON lines / Parquet with a column mapping (options_cols=..., ...)")
def load_tabular(
    path: Path,
    *,
    on_error: OnError = "raise",
    split: str | None = None,
    format: str = "auto",
    name: str | None = None,
    **options: Any,
) -> LoadResult:
    """Load a generic table through a column mapping (see the module docstring for every option)."""
    path = Path(path)
    if path.is_dir():
        raise InputError("expected a CSV, JSON lines or Parquet file, got a folder", file=path)
    mapping = _mapping(options, "tabular")
    kind, records, columns = _read_file(path, format)
    return rows_to_items(records, file=path, record_kind=kind, mapping=mapping, on_error=on_error,
                         name=name or path.stem, split=split or split_from_name(path) or "train", columns=columns,
                         where="header" if columns is not None else "file")


@register_loader("hf", needs_path=False, options=_MAPPING_KEYS,
                 description="a Hugging Face hub dataset by name (online only) + mapping")
def load_hf(
    path: str | Path | None,
    *,
    on_error: OnError = "raise",
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    name: str | None = None,
    **options: Any,
) -> LoadResult:
    """Load ``datasets.load_dataset(path, config, split=split or "train")`` through the tabular column mapping."""
    if not path:
        raise InputError("the hf source needs a dataset name, e.g. openlifescienceai/medmcqa")
    dataset = str(path)
    mapping = _mapping(options, "hf")
    hub_split = split or "train"
    try:
        import datasets

        ds = datasets.load_dataset(dataset, config, split=hub_split, revision=revision)
    except Exception as exc:  # the hub client raises many types (offline, not found, auth); report one way
        raise InputError(
            f"could not load '{dataset}' (split {hub_split!r}) from the Hugging Face hub: {exc}. Offline machines "
            "cannot reach the hub: export the dataset where you are online and load the file with the "
            "'tabular' source",
            file=dataset,
        ) from None
    records = list(enumerate(ds, start=1))
    return rows_to_items(records, file=dataset, record_kind="row", mapping=mapping, on_error=on_error,
                         name=name or dataset.rsplit("/", 1)[-1], split=hub_split, where="dataset")
