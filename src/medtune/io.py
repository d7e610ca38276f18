"""Atomic file writes and content hashes.

Every artifact is written to a temporary file in the destination folder and renamed into place, so an
interrupted job never leaves a half-written file that a later stage would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=False) + "\n")


def write_figure_png_svg(fig: Any, path: str | Path, *, dpi: int = 150) -> list[Path]:
    """Save a matplotlib figure as ``path`` with a ``.png`` suffix and beside it as ``.svg``, each atomically.

    SVG text stays text (searchable, editable, small) rather than glyph outlines. Closes the figure.
    """
    import matplotlib.pyplot as plt

    png = Path(path).with_suffix(".png")
    written = []
    for target, fmt in [(png, "png"), (png.with_suffix(".svg"), "svg")]:
        with atomic_path(target, suffix=f".{fmt}") as tmp, plt.rc_context({"svg.fonttype": "none"}):
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable object, independent of dict key order."""
    payload = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()[:length]


def read_parquet_table(path: str | Path):  # -> pyarrow.Table
    """Read a Parquet artifact, turning a missing or unreadable file into an error that names it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medtune.errors import InputError

    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=path)
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable Parquet file ({exc})", file=path) from None
