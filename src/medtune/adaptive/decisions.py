"""``RUN_DIR/decisions.jsonl``: one JSON object per decision of an adaptive run, the inputs and the choice.

A record holds everything :func:`medtune.adaptive.strategies.AdaptiveStrategy.decide` was given — the step, the
strategy and its options, the seed, the candidate pool, the ids already used in the pass, the per-item scores or
the ability estimate (with the anchor answers it came from) — the chosen ids, and the timing of the scoring pass.
Lines are appended, flushed and fsynced one at a time (a kill leaves at most a cut last line, which readers skip);
on resume the file is rewritten atomically with the decisions taken before the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtune.errors import InputError
from medtune.io import append_jsonl_durable, keep_jsonl_log, read_jsonl_log

DECISIONS_NAME = "decisions.jsonl"
REQUIRED = ("decision", "step", "first_step", "n_steps", "strategy", "seed", "candidates", "chosen")


def append_decision(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record durably (the line is complete on disk before training uses the choice)."""
    append_jsonl_durable(path, record)


def read_decisions(path: str | Path) -> list[dict[str, Any]]:
    """The records of a decision log (a folder means its ``decisions.jsonl``); a cut last line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / DECISIONS_NAME
    if not path.exists():
        raise InputError("decision log not found (an adaptive run writes one)", file=path)
    return read_jsonl_log(path, REQUIRED, "a decision")


def keep_decisions_before(path: str | Path, step: int) -> list[dict[str, Any]]:
    """Keep the decisions taken after fewer than ``step`` steps (rewritten atomically); returns them."""
    path = Path(path)
    if not path.exists():
        return []
    return keep_jsonl_log(path, [r for r in read_decisions(path) if int(r["step"]) < step])
