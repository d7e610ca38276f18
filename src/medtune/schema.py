"""The record schema every loader produces: :class:`MCQItem` and :class:`QAItem`.

Letters (A, B, ...) are a prompt concern, not stored data: ``answer`` is an index into ``options`` and
options keep the source's order. Items are stored as Parquet (one row per item); ``meta`` is kept as a
JSON string column because sources carry heterogeneous extra fields that a fixed Parquet struct cannot
hold losslessly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias, get_args

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medtune.errors import InputError
from medtune.io import atomic_path, read_parquet_table

DifficultyLevel = Literal["easy", "medium", "hard"]
# The levels, easiest first: human_difficulty levels, difficulty buckets and curriculum order all use these.
DIFFICULTY_LEVELS: tuple[str, ...] = get_args(DifficultyLevel)
MIN_OPTIONS, MAX_OPTIONS = 2, 10


class _ItemBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)

    id: str = Field(min_length=1)
    question: str
    source: str = Field(min_length=1)
    split: str = Field(min_length=1)
    category: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question is empty")
        return v


class MCQItem(_ItemBase):
    """A multiple-choice question with one correct option."""

    kind: Literal["mcq"] = "mcq"
    options: list[str]
    answer: int
    subcategory: str | None = None
    human_difficulty: float | DifficultyLevel | None = None
    explanation: str | None = None

    @field_validator("options")
    @classmethod
    def _options_valid(cls, v: list[str]) -> list[str]:
        if not (MIN_OPTIONS <= len(v) <= MAX_OPTIONS):
            raise ValueError(f"needs {MIN_OPTIONS}-{MAX_OPTIONS} options, got {len(v)}")
        for i, opt in enumerate(v):
            if not isinstance(opt, str) or not opt.strip():
                raise ValueError(f"option {i} is empty")
        return v

    @field_validator("human_difficulty")
    @classmethod
    def _finite(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("human_difficulty must be finite")
        return v

    @model_validator(mode="after")
    def _answer_in_range(self) -> MCQItem:
        if not (0 <= self.answer < len(self.options)):
            raise ValueError(f"answer index {self.answer} is outside the {len(self.options)} options")
        return self

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]


class QAItem(_ItemBase):
    """A free-text question with a reference answer (e.g. MedQuAD, PubMedQA long answers)."""

    kind: Literal["qa"] = "qa"
    answer: str

    @field_validator("answer")
    @classmethod
    def _answer_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("answer is empty")
        return v


Item: TypeAlias = MCQItem | QAItem
ItemKind = Literal["mcq", "qa"]


def make_item(cls: type[MCQItem] | type[QAItem], data: dict[str, Any], **where: Any) -> Item:
    """Validate ``data`` into ``cls``; on failure raise :class:`InputError` naming the first bad field."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or None
        msg = err["msg"].removeprefix("Value error, ")
        raise InputError(msg, field=loc, **where) from None


def check_unique_ids(items: Sequence[Item], file: str | Path | None = None) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.id in seen:
            raise InputError(
                f"duplicate id '{item.id}' (first seen at record {seen[item.id]})",
                file=file,
                record=i,
                field="id",
            )
        seen[item.id] = i


# ----------------------------------------------------------------------------------------------------------
# Parquet storage

_MCQ_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("options", pa.list_(pa.string())),
        ("answer", pa.int32()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("category", pa.string()),
        ("subcategory", pa.string()),
        ("human_difficulty", pa.string()),
        ("explanation", pa.string()),
        ("meta", pa.string()),
    ]
)
_QA_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("category", pa.string()),
        ("meta", pa.string()),
    ]
)
_KIND_KEY = b"medtune.kind"


def _encode_difficulty(v: float | str | None) -> str | None:
    # Stored as text so that a level ("easy") and a number (0.42) share one column; repr keeps floats exact.
    if v is None:
        return None
    return v if isinstance(v, str) else repr(float(v))


def _decode_difficulty(v: str | None) -> float | str | None:
    if v is None:
        return None
    if v in DIFFICULTY_LEVELS:
        return v
    return float(v)


def items_to_table(items: Sequence[Item]) -> pa.Table:
    kinds = {item.kind for item in items}
    if len(kinds) > 1:
        raise InputError("cannot store MCQ and free-text items in one file")
    kind = kinds.pop() if kinds else "mcq"
    if kind == "mcq":
        rows = {name: [] for name in _MCQ_SCHEMA.names}
        for it in items:
            assert isinstance(it, MCQItem)
            rows["id"].append(it.id)
            rows["question"].append(it.question)
            rows["options"].append(list(it.options))
            rows["answer"].append(it.answer)
            rows["source"].append(it.source)
            rows["split"].append(it.split)
            rows["category"].append(it.category)
            rows["subcategory"].append(it.subcategory)
            rows["human_difficulty"].append(_encode_difficulty(it.human_difficulty))
            rows["explanation"].append(it.explanation)
            rows["meta"].append(json.dumps(it.meta, ensure_ascii=False, sort_keys=True))
        schema = _MCQ_SCHEMA
    else:
        rows = {name: [] for name in _QA_SCHEMA.names}
        for it in items:
            assert isinstance(it, QAItem)
            for name in _QA_SCHEMA.names:
                value = getattr(it, name)
                rows[name].append(json.dumps(value, ensure_ascii=False, sort_keys=True) if name == "meta" else value)
        schema = _QA_SCHEMA
    schema = schema.with_metadata({_KIND_KEY: kind.encode()})
    return pa.Table.from_pydict(rows, schema=schema)


def write_items(items: Sequence[Item], path: str | Path) -> Path:
    """Write items to Parquet atomically (a crash never leaves a partial file)."""
    path = Path(path)
    try:
        check_unique_ids(items)
        table = items_to_table(items)
    except InputError as exc:
        raise exc.located(file=path) from None
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return path


def _required_columns(kind: str) -> list[str]:
    names = _MCQ_SCHEMA.names if kind == "mcq" else _QA_SCHEMA.names
    optional = {"category", "subcategory", "human_difficulty", "explanation", "meta"}
    return [n for n in names if n not in optional]


def _check_columns(path: Path, kind: str, columns: list[str]) -> None:
    """An items file has the columns of its kind and no others (a difficulty or predictions file is not one)."""
    schema = _MCQ_SCHEMA if kind == "mcq" else _QA_SCHEMA
    missing = [c for c in _required_columns(kind) if c not in columns]
    if missing:
        raise InputError(f"not an items file: missing column(s) {', '.join(missing)} (has {', '.join(columns)}); "
                         "items files are written by `medtune data load`", file=path, field=missing[0])
    extra = [c for c in columns if c not in schema.names]
    if extra:
        raise InputError(f"unexpected column(s) {', '.join(extra)} for {kind} items (expected "
                         f"{', '.join(schema.names)})", file=path, field=extra[0])


def _row_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as :class:`MCQItem`/:class:`QAItem` fields: meta parsed, difficulty decoded."""
    row = {k: v for k, v in row.items() if v is not None or k in ("category",)}
    if "meta" in row:
        try:
            row["meta"] = json.loads(row["meta"]) if row["meta"] else {}
        except (TypeError, json.JSONDecodeError) as exc:
            raise InputError(f"expected a JSON object as text ({exc})", field="meta") from None
    if "human_difficulty" in row:
        try:
            row["human_difficulty"] = _decode_difficulty(row["human_difficulty"])
        except (TypeError, ValueError):
            raise InputError(f"expected a number or one of {', '.join(DIFFICULTY_LEVELS)}, got "
                             f"{row['human_difficulty']!r}", field="human_difficulty") from None
    options, answer = row.get("options"), row.get("answer")
    if isinstance(options, list) and isinstance(answer, int) and len(options) and not 0 <= answer < len(options):
        raise InputError(f"answer index {answer} is outside the {len(options)} options", field="answer")
    return row


def read_items(path: str | Path) -> list[Item]:
    """Read an items Parquet file written by :func:`write_items`, validating every record.

    Errors name the file, the row (1-based) and the field, like the loaders' messages.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError("expected an items Parquet file, got a folder", file=path)
    table = read_parquet_table(path)
    md = table.schema.metadata or {}
    kind = md.get(_KIND_KEY, b"mcq" if "options" in table.column_names else b"qa").decode(errors="replace")
    if kind not in ("mcq", "qa"):
        raise InputError(f"unknown item kind {kind!r} in the Parquet metadata (expected mcq or qa)", file=path,
                         field=_KIND_KEY.decode())
    _check_columns(path, kind, table.column_names)
    cls: type[MCQItem] | type[QAItem] = MCQItem if kind == "mcq" else QAItem
    items: list[Item] = []
    first_row: dict[str, int] = {}
    for n, row in enumerate(table.to_pylist(), start=1):
        try:
            item = make_item(cls, _row_fields(row))
            if item.id in first_row:
                raise InputError(f"duplicate id '{item.id}' (first seen at row {first_row[item.id]})", field="id")
        except InputError as exc:
            raise exc.located(file=path, record=n, record_kind="row") from None
        first_row[item.id] = n
        items.append(item)
    return items


def items_to_hf_dataset(items: Sequence[Item]):  # -> datasets.Dataset
    """The same table as a Hugging Face ``datasets.Dataset`` (meta stays a JSON string)."""
    import datasets

    return datasets.Dataset(items_to_table(items))


def item_source(item: Any) -> str | None:
    """The source an item counts under when sources are compared (blocks by source, accuracy per source): the
    part of a mixture it was drawn from (``meta.source``, see :mod:`medtune.data.mix`), else its own ``source``."""
    meta = getattr(item, "meta", None) or {}
    value = meta.get("source") if isinstance(meta, dict) else None
    return str(value) if value is not None else getattr(item, "source", None)


def items_kind(items: Iterable[Item]) -> ItemKind | None:
    kinds = {it.kind for it in items}
    return kinds.pop() if len(kinds) == 1 else None
