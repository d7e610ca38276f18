"""``RUN_DIR/decisions.jsonl``: one JSON object per decision of an adaptive run, the inputs and the choice.

A record holds everything :func:`medtune.adaptive.strategies.AdaptiveStrategy.decide` was given — the step, the
strategy and its options, the seed, the candidate pool, the ids already used in the pass, the per-item scores or
the ability estimate (with the anchor answers it came from) — the chosen ids, and the timing of the scoring pass.
Lines are appended, flushed and fsynced one at a time (a kill leaves at most a cut last line, which readers skip);
on resume the file is rewritten atomically with the decisions taken before the checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medtune.errors import InputError
from medtune.io import write_text_atomic

DECISIONS_NAME = "decisions.jsonl"
REQUIRED = ("decision", "step", "first_step", "n_steps", "strategy", "seed", "candidates", "chosen")


def append_decision(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record durably (the line is complete on disk before training uses the choice)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_decisions(path: str | Path) -> list[dict[str, Any]]:
    """The records of a decision log (a folder means its ``decisions.jsonl``); a cut last line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / DECISIONS_NAME
    if not path.exists():
        raise InputError("decision log not found (an adaptive run writes one)", file=path)
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
            raise InputError("a decision must be a JSON object", file=path, record=i, record_kind="line")
        for key in REQUIRED:
            if key not in rec:
                raise InputError(f"missing '{key}'", file=path, record=i, field=key, record_kind="line")
        records.append(rec)
    return records


def keep_decisions_before(path: str | Path, step: int) -> list[dict[str, Any]]:
    """Keep the decisions taken after fewer than ``step`` steps (rewritten atomically); returns them."""
    path = Path(path)
    if not path.exists():
        return []
    keep = [r for r in read_decisions(path) if int(r["step"]) < step]
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
    return keep
