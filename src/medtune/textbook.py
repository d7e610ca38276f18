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
from medtune.io import write_text_atomic

SUFFIX = ".textbook.txt"


def textbook_path(items_path: str | Path) -> Path:
    """Where the textbook of ``items_path`` lies: ``<stem>.textbook.txt`` in the same folder."""
    items_path = Path(items_path)
    return items_path.with_name(f"{items_path.stem}{SUFFIX}")


def read_textbook(items_path: str | Path) -> list[str] | None:
    """The sentences of the textbook beside ``items_path`` (blank lines dropped), or None when there is none."""
    path = textbook_path(items_path)
    if not path.exists():
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
    lines = list(sentences)
    for i, sentence in enumerate(lines):
        if "\n" in sentence or "\r" in sentence:
            raise ValueError(f"textbook sentence {i} contains a line break: {sentence[:60]!r}")
    path = textbook_path(items_path)
    write_text_atomic(path, "".join(f"{s}\n" for s in lines))
    return path
