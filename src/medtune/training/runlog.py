"""The run log: one JSON object per optimizer step (``step, epoch, ids, tokens, loss, lr, time``).

It is the evidence of the realised order: ``ids`` are the items the step's gradient was computed on, as
gathered from every process (not copied from the plan). Lines are flushed and fsynced per step; after a
resume the log is cut back to the checkpoint's step first, so each step appears exactly once.

A run with validation also writes records of other kinds between the steps, each with a ``kind`` key and the step
it follows: ``validation`` (the held-out loss and accuracy after that step) and ``stop`` (early stopping ended the
run after that step, and why). :func:`read_log` returns the optimizer steps only, so every reader of the steps
reads them as before; :func:`read_log_records` returns the records of one other kind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medtune.errors import InputError

LOG_NAME = "train_log.jsonl"


class RunLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the whole run

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


STEP_KIND = "step"  # the kind of a record without a ``kind`` key


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The optimizer steps of a run log (a run folder means its ``train_log.jsonl``), in order."""
    return [r for r in _read_records(path) if r.get("kind", STEP_KIND) == STEP_KIND]


def read_log_records(path: str | Path, kind: str) -> list[dict[str, Any]]:
    """The records of ``kind`` (``validation``, ``stop``) of a run log, in order."""
    return [r for r in _read_records(path) if r.get("kind", STEP_KIND) == kind]


def _read_records(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.exists():
        raise InputError("run log not found", file=path)
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            # A kill can cut the last line short; anything else is corruption.
            if i == len(path.read_text(encoding="utf-8").splitlines()):
                break
            raise InputError("not valid JSON", file=path, record=i, record_kind="line") from None
        if not isinstance(rec, dict):
            raise InputError("not a JSON object", file=path, record=i, record_kind="line")
        for key in ("step", "ids") if rec.get("kind", STEP_KIND) == STEP_KIND else ("step",):
            if key not in rec:
                raise InputError(f"missing '{key}'", file=path, record=i, field=key, record_kind="line")
        records.append(rec)
    return records


def truncate_log(path: str | Path, last_step: int) -> None:
    """Keep only the records of steps ``<= last_step``, of every kind (used when resuming from a checkpoint)."""
    path = Path(path)
    if not path.exists():
        return
    keep = [r for r in _read_records(path) if r["step"] <= last_step]
    from medtune.io import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
