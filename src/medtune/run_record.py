"""Reading a run folder's ``config.json`` (its training record) in one place.

Every command that opens a run folder (``verify-order``, ``export``, ``evaluate run --run``, resume, plots, the
adaptive replay) reads the record through here, so a cut-short or hand-edited file stops them all with the same
one-line :class:`~medtune.errors.InputError` naming the file and the place, never a ``JSONDecodeError``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medtune.errors import InputError

RUN_RECORD = "config.json"


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; an :class:`InputError` naming the file (and line) when it is not one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the file: {exc}", file=path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg}, column {exc.colno}; cut short?)", file=path,
                         record=exc.lineno, record_kind="line") from None
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object, got {type(data).__name__}", file=path)
    return data


def read_config_json(run_dir: str | Path) -> dict[str, Any] | None:
    """The folder's ``config.json`` as an object, or ``None`` when there is none (a folder may be a plain model's,
    whose own ``config.json`` has no ``train``: callers that need a run use :func:`read_run_record`)."""
    path = Path(run_dir) / RUN_RECORD
    if not path.is_file():
        return None
    return read_json_object(path)


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    """The training record of a run folder: its ``config.json``, which must hold the ``train`` settings."""
    run_dir = Path(run_dir)
    data = read_config_json(run_dir)
    if data is None:
        raise InputError(f"{RUN_RECORD} not found: not a training run folder", file=run_dir)
    if not isinstance(data.get("train"), dict):
        raise InputError("no training settings (an object): not a training run record", file=run_dir / RUN_RECORD,
                         field="train")
    return data
