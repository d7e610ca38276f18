"""Atomic file writes, durable JSON-lines logs and content hashes.

Every artifact is written to a temporary file in the destination folder and renamed into place, so an
interrupted job never leaves a half-written file that a later stage would trust. Logs that grow during a run
(decisions, in-training checks) are appended one fsynced line at a time: a kill leaves at most a cut last line,
which :func:`read_jsonl_log` skips, and on resume :func:`keep_jsonl_log` rewrites them atomically.
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


def append_jsonl_durable(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line, flushed and fsynced: complete on disk before the caller goes on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl_log(path: str | Path, required: tuple[str, ...], what: str) -> list[dict[str, Any]]:
    """The records of a JSON-lines log; a cut last line (a kill while writing) is skipped, any other bad line —
    not JSON, not an object, a ``required`` key missing — is an ``InputError`` naming the line (``what``: the
    record's name in the message, e.g. "a decision")."""
    from medtune.errors import InputError

    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                break
            raise InputError("not valid JSON", file=path, record=i, record_kind="line") from None
        if not isinstance(rec, dict):
            raise InputError(f"{what} must be a JSON object", file=path, record=i, record_kind="line")
        for key in required:
            if key not in rec:
                raise InputError(f"missing '{key}'", file=path, record=i, field=key, record_kind="line")
        records.append(rec)
    return records


def keep_jsonl_log(path: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rewrite a JSON-lines log atomically with ``records`` only (those still valid on resume); returns them."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return records
