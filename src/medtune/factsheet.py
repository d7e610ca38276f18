"""The fact sheet beside an items file: ``<stem>.facts.json``, the knowledge base as (subject, relation, value).

Free-text answers about a known world can be checked fact by fact (:mod:`medtune.factcheck`) only against the
facts of that world, so sources that know them (the synthetic knowledge base) write them next to their items,
like the textbook: ``syn.parquet`` → ``syn.facts.json``. Every stage reads and writes it through these
functions, so the naming rule and the format live in one place. The file::

    {
      "format": "medtune.facts/1",
      "relations": ["symptoms", "cause", "test", "drug"],
      "subjects": {"Zarlosis": {"symptoms": ["cough", "wheezing"], "cause": ["Bemo virus"], ...}, ...}
    }

``relations`` names every relation a subject may have (a misspelt relation is an error, not a new relation);
``subjects`` maps each subject (a disease) to its relations and each relation to its values (non-empty strings,
no duplicates). A relation with several values (symptoms) lists each value once. Values are the exact strings a
checker looks for in an answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtune.errors import InputError
from medtune.io import drop_side_backups, resolve_side_file, side_files_record, write_json_atomic

SUFFIX = ".facts.json"
FORMAT = "medtune.facts/1"


@dataclass(frozen=True)
class FactSheet:
    """Subjects → relation → values; ``relations`` lists the relations in their display order."""

    relations: tuple[str, ...]
    subjects: Mapping[str, Mapping[str, tuple[str, ...]]]
    # value -> the relations it is a value of, over all subjects (derived; a value may serve several relations)
    _value_relations: dict[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, set[str]] = {}
        for facts in self.subjects.values():
            for relation, values in facts.items():
                for value in values:
                    index.setdefault(value, set()).add(relation)
        object.__setattr__(self, "_value_relations", {v: frozenset(r) for v, r in index.items()})

    @classmethod
    def from_facts(cls, relations: Iterable[str], subjects: Mapping[str, Mapping[str, Iterable[str]]]) -> FactSheet:
        """Build (and check) a sheet from plain containers."""
        return cls.from_dict({"format": FORMAT, "relations": list(relations),
                              "subjects": {s: {r: list(v) for r, v in facts.items()} for s, facts in subjects.items()}})

    @property
    def values(self) -> frozenset[str]:
        """Every value of every subject: the strings a checker counts as stated facts."""
        return frozenset(self._value_relations)

    def relations_of(self, value: str) -> frozenset[str]:
        """The relations ``value`` is a value of, for any subject (empty when it is no value of the sheet)."""
        return self._value_relations.get(value, frozenset())

    def values_of(self, subject: str, relation: str) -> tuple[str, ...]:
        """The values of ``subject`` for ``relation`` (empty when it has none); KeyError for an unknown subject."""
        return tuple(self.subjects[subject].get(relation, ()))

    def holds(self, subject: str, relation: str, value: str) -> bool:
        """Whether (subject, relation, value) is a fact of the sheet."""
        return value in self.subjects.get(subject, {}).get(relation, ())

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "relations": list(self.relations),
                "subjects": {s: {r: list(v) for r, v in facts.items()} for s, facts in self.subjects.items()}}

    @classmethod
    def from_dict(cls, data: Any, *, file: str | Path | None = None) -> FactSheet:
        """Validate the JSON object of a fact sheet; an :class:`InputError` names the file and the bad field."""

        def bad(message: str, where: str) -> InputError:
            return InputError(message, file=file, field=where)

        if not isinstance(data, dict):
            raise bad(f"expected a JSON object, got {type(data).__name__}", "format")
        if data.get("format") != FORMAT:
            raise bad(f"expected format '{FORMAT}', got {data.get('format')!r}", "format")
        unknown = sorted(set(data) - {"format", "relations", "subjects"})
        if unknown:
            raise bad(f"unknown key(s) {', '.join(unknown)} (known: format, relations, subjects)", unknown[0])
        relations = data.get("relations")
        if not isinstance(relations, list) or not relations or \
                not all(isinstance(r, str) and r.strip() for r in relations):
            raise bad("expected a non-empty list of relation names", "relations")
        if len(set(relations)) != len(relations):
            raise bad("a relation is listed twice", "relations")
        subjects = data.get("subjects")
        if not isinstance(subjects, dict) or not subjects:
            raise bad("expected a non-empty object of subjects", "subjects")
        out: dict[str, dict[str, tuple[str, ...]]] = {}
        for subject, facts in subjects.items():
            where = f"subjects.{subject}"
            if not subject.strip():
                raise bad("a subject name is empty", "subjects")
            if not isinstance(facts, dict):
                raise bad(f"expected an object of relations, got {type(facts).__name__}", where)
            out[subject] = {}
            for relation, values in facts.items():
                if relation not in relations:
                    raise bad(f"relation '{relation}' is not in relations ({', '.join(relations)})",
                              f"{where}.{relation}")
                if not isinstance(values, list) or not values:
                    raise bad("expected a non-empty list of values", f"{where}.{relation}")
                for i, value in enumerate(values):
                    if not isinstance(value, str) or not value.strip():
                        raise bad("expected a non-empty string", f"{where}.{relation}[{i}]")
                if len(set(values)) != len(values):
                    raise bad("a value is listed twice", f"{where}.{relation}")
                out[subject][relation] = tuple(values)
        return cls(relations=tuple(relations), subjects=out)


def factsheet_path(items_path: str | Path) -> Path:
    """Where the fact sheet of ``items_path`` lies: ``<stem>.facts.json`` in the same folder."""
    items_path = Path(items_path)
    return items_path.with_name(f"{items_path.stem}{SUFFIX}")


def read_factsheet(items_path: str | Path) -> FactSheet | None:
    """The fact sheet beside ``items_path``, or None when there is none; a bad file is an :class:`InputError`.

    Only the sheet the items were written with is read (:func:`medtune.io.resolve_side_file`): after a killed
    ``data load`` that is the old one, kept aside; one that belongs to other items is an error, not a silent mix.
    """
    path = resolve_side_file(factsheet_path(items_path), side_files_record(items_path), SUFFIX)
    if path is None:
        return None
    if path.is_dir():
        raise InputError("expected a fact sheet file (JSON), got a folder", file=path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8").removeprefix("\ufeff"))
    except UnicodeDecodeError as exc:
        raise InputError(f"invalid UTF-8 at byte {exc.start}", file=path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg}, column {exc.colno})", file=path, record=exc.lineno,
                         record_kind="line") from None
    return FactSheet.from_dict(data, file=path)


def write_factsheet(items_path: str | Path, sheet: FactSheet) -> Path:
    """Write ``sheet`` beside ``items_path`` atomically; returns the fact sheet's path."""
    path = factsheet_path(items_path)
    write_json_atomic(path, sheet.to_dict())
    drop_side_backups(path)  # written on its own: what a killed set replacement kept aside is no longer its own
    return path


def write_factsheet_file(path: str | Path, sheet: FactSheet) -> Path:
    """Write ``sheet`` to exactly ``path`` (not atomic): the temporary file of a set replacement."""
    path = Path(path)
    path.write_text(json.dumps(sheet.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


__all__ = ["FORMAT", "SUFFIX", "FactSheet", "factsheet_path", "read_factsheet", "write_factsheet",
           "write_factsheet_file"]
