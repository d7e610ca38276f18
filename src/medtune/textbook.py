"""The textbook beside an items file: ``<stem>.textbook.txt``, one sentence per line.

Sources that come with background text (the synthetic knowledge base) write it next to their items, where
pretraining and the demo find it without another option: ``syn.parquet`` → ``syn.textbook.txt``,
``items.parquet`` → ``items.textbook.txt``. Every stage reads and writes it through these three functions, so
the naming rule and the line format live in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from medtune.errors import InputError
from medtune.io import drop_side_backups, resolve_side_file, side_files_record, write_text_atomic

SUFFIX = ".textbook.txt"


def textbook_path(items_path: str | Path) -> Path:
    """Where the textbook of ``items_path`` lies: ``<stem>.textbook.txt`` in the same folder."""
    items_path = Path(items_path)
    return items_path.with_name(f"{items_path.stem}{SUFFIX}")


def read_textbook(items_path: str | Path) -> list[str] | None:
    """The sentences of the textbook beside ``items_path`` (blank lines dropped), or None when there is none.

    Only the textbook the items were written with is read (:func:`medtune.io.resolve_side_file`): after a killed
    ``data load`` that is the old one, kept aside; one that belongs to other items is an error, not a silent mix.
    """
    path = resolve_side_file(textbook_path(items_path), side_files_record(items_path), SUFFIX)
    if path is None:
        return None
    if path.is_dir():
        raise InputError("expected a textbook file (one sentence per line), got a folder", file=path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"invalid UTF-8 at byte {exc.start}", file=path, record=line, record_kind="line") from None
    return [line for line in text.splitlines() if line.strip()]


def write_textbook(items_path: str | Path, sentences: Iterable[str]) -> Path:
    """Write ``sentences`` (one per line) beside ``items_path`` atomically; returns the textbook's path.

    A sentence holding a line break would read back as two, so it is refused rather than silently split.
    """
    path = textbook_path(items_path)
    text = _textbook_text(sentences)
    write_text_atomic(path, text)
    drop_side_backups(path)  # written on its own: what a killed set replacement kept aside is no longer its own
    return path


def write_textbook_file(path: str | Path, sentences: Iterable[str]) -> Path:
    """Write ``sentences`` to exactly ``path`` (not atomic): the temporary file of a set replacement."""
    path = Path(path)
    path.write_text(_textbook_text(sentences), encoding="utf-8")
    return path


def _textbook_text(sentences: Iterable[str]) -> str:
    """One sentence per line; a sentence holding a line break would read back as two, so it is refused."""
    lines = list(sentences)
    for i, sentence in enumerate(lines):
        if "\n" in sentence or "\r" in sentence:
            raise ValueError(f"textbook sentence {i} contains a line break: {sentence[:60]!r}")
    return "".join(f"{s}\n" for s in lines)
