"""Stream scored rows to disk so an interrupted run resumes where it stopped.

Rows are appended batch by batch to a JSON-lines *part file* beside the output (``.NAME.part.jsonl``),
each write flushed and fsynced. The first line records the run's settings; a part file from different
settings is refused rather than silently mixed. A process killed mid-write leaves at most one partial last
line, which is cut off on restart. When every item is done the final file is written atomically and the
part file removed. JSON floats round-trip exactly, so a resumed run's output equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medtune.errors import InputError
from medtune.io import atomic_path

HEADER_KEY = "__medtune_scoring__"


def part_path(output: Path) -> Path:
    return output.parent / f".{output.name}.part.jsonl"


class ScoredRowStore:
    """Append-only store of scored rows keyed by item id (see module docstring)."""

    def __init__(self, output: str | Path, settings: dict[str, Any]) -> None:
        self.output = Path(output)
        self.part = part_path(self.output)
        self.settings = settings
        self.rows: dict[str, dict[str, Any]] = {}
        self.output.parent.mkdir(parents=True, exist_ok=True)
        if self.part.exists():
            self._load()
        else:
            self._write_lines([{HEADER_KEY: 1, "settings": settings}], create=True)

    def _load(self) -> None:
        raw = self.part.read_bytes()
        end = raw.rfind(b"\n") + 1
        if end < len(raw):  # a write cut short by a kill: drop the partial line
            with open(self.part, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
            raw = raw[:end]
        lines = raw.decode("utf-8").splitlines()
        if not lines:
            self._write_lines([{HEADER_KEY: 1, "settings": self.settings}], create=True)
            return
        header = self._parse(lines[0], 1)
        if header.get(HEADER_KEY) != 1:
            raise InputError("not a medtune scoring part file", file=self.part)
        if header.get("settings") != self.settings:
            raise InputError(
                f"an unfinished scoring run with different settings exists ({header.get('settings')}); "
                "delete it to start over, or rerun with the same settings to resume",
                file=self.part,
            )
        for number, line in enumerate(lines[1:], start=2):
            row = self._parse(line, number)
            if "id" not in row:
                raise InputError("a scored row without an id", file=self.part, record=number, record_kind="line",
                                 field="id")
            self.rows[row["id"]] = row

    def _parse(self, line: str, number: int) -> dict[str, Any]:
        """One complete line of the part file as an object; a damaged one (edited, or another file under this name)
        names the file and line, so the user knows what to delete to start over."""
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg}); delete the file to score from the start", file=self.part,
                             record=number, record_kind="line") from None
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}", file=self.part, record=number,
                             record_kind="line")
        return obj

    def _write_lines(self, objs: Iterable[dict[str, Any]], create: bool = False) -> None:
        data = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs).encode("utf-8")
        with open(self.part, "wb" if create else "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def done(self) -> set[str]:
        return set(self.rows)

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        self._write_lines(rows)
        for row in rows:
            self.rows[row["id"]] = row

    def finish(self, frame: pd.DataFrame) -> None:
        write_predictions(frame, self.output)
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()


def predictions_table(frame: pd.DataFrame) -> pa.Table:
    """The scorer's DataFrame as an Arrow table with explicit list types (null-only columns stay typed)."""
    fields = []
    for name in frame.columns:
        if name in ("scores", "probs", "scores_norm"):
            typ = pa.list_(pa.float64())
        elif name in ("permutation", "sample_preds"):
            typ = pa.list_(pa.int64())
        elif name == "samples":
            typ = pa.list_(pa.string())
        elif name in ("id", "mode", "generated"):
            typ = pa.string()
        elif name == "correct":
            typ = pa.bool_()
        elif name in ("pred",):
            typ = pa.int64()
        elif name == "answer":
            typ = pa.string() if frame[name].map(lambda v: isinstance(v, str)).any() else pa.int64()
        else:
            typ = None
        fields.append((name, typ))
    arrays = {}
    for name, typ in fields:
        values = [None if (v is None or v is pd.NA or (isinstance(v, float) and v != v)) else v
                  for v in frame[name].tolist()]
        arrays[name] = pa.array(values, type=typ)
    return pa.table(arrays)


def write_predictions(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write scorer rows atomically: Parquet, or JSON lines if the name ends in ``.jsonl``."""
    path = Path(path)
    if path.suffix == ".jsonl":
        with atomic_path(path, suffix=".jsonl") as tmp:
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
    else:
        with atomic_path(path, suffix=".parquet") as tmp:
            pq.write_table(predictions_table(frame), tmp)
    return path
