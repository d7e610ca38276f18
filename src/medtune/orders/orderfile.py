"""The order file (``medtune.order/1``, docs/ARTIFACTS.md): one reader, one writer, one validation.

The order stage writes it, training trains on it, ``verify-order`` re-plans from it and the order plot draws
it; all of them go through :class:`OrderFile`, so a file one of them accepts is never refused (or read
differently) by another. Only ``format`` and ``epochs`` are required — the rest describes how the order was
made and has defaults — so a hand-made order (a list of ids per epoch) is a valid plan too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtune.errors import InputError
from medtune.io import write_text_atomic

FORMAT = "medtune.order/1"
EPOCH_POLICIES: tuple[str, ...] = ("repeat", "reshuffle")
# The keys in the order they are written (and were always written), so files stay byte-identical.
FIELDS: tuple[str, ...] = ("format", "strategy", "seed", "options", "epoch_policy", "epochs", "n_items",
                           "segments", "input_hashes")


@dataclass(frozen=True)
class OrderFile:
    """A planned training sequence: ``epochs[e]`` is the list of item ids epoch ``e`` trains on, in order.

    ``n_items`` is the number of items the strategy ordered (ids may repeat in pacing and spaced-repetition
    sequences, and some may never be drawn); ``segments`` mark where the strategy's structure changes in
    epoch 0 (for plots); ``input_hashes`` are SHA-256 hashes of the files the order was planned from.
    """

    epochs: list[list[str]]
    strategy: str | None = None
    seed: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    epoch_policy: str = "repeat"
    n_items: int | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)
    input_hashes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_items is None:  # hand-made orders: every distinct id is an item
            object.__setattr__(self, "n_items", len({i for ids in self.epochs for i in ids}))

    # ------------------------------------------------------------------------------------------ dict / JSON

    @classmethod
    def from_dict(cls, data: Any, *, file: str | Path | None = None) -> OrderFile:
        """Validate ``data`` (a parsed order file); an :class:`InputError` names the file and the field."""
        return cls(**_validated(data, file))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in the file's order."""
        return {
            "format": FORMAT,
            "strategy": self.strategy,
            "seed": self.seed,
            "options": dict(self.options),
            "epoch_policy": self.epoch_policy,
            "epochs": [list(ids) for ids in self.epochs],
            "n_items": self.n_items,
            "segments": [dict(s) for s in self.segments],
            "input_hashes": dict(self.input_hashes),
        }

    # ------------------------------------------------------------------------------------------ files

    @classmethod
    def read(cls, path: str | Path) -> OrderFile:
        """Read and validate an order file."""
        path = Path(path)
        if not path.is_file():
            raise InputError("order file not found" if not path.exists() else "expected an order file, got a folder",
                             file=path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"not a JSON file ({exc})", file=path) from None
        return cls.from_dict(data, file=path)

    def write(self, path: str | Path) -> Path:
        """Write atomically: one field per line and one line per epoch, so the file stays readable and
        diffable at thousands of ids."""
        path = Path(path)
        parts = []
        for key, value in self.to_dict().items():
            if key == "epochs":
                body = ",\n".join("  " + json.dumps(ids, ensure_ascii=False) for ids in value)
                parts.append(f' "epochs": [\n{body}\n ]')
            else:
                parts.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
        write_text_atomic(path, "{\n" + ",\n".join(parts) + "\n}\n")
        return path


def read_order(path: str | Path) -> dict[str, Any]:
    """Read and check an order file; raises :class:`InputError` naming the file and the bad field. Returns its JSON
    object with the optional fields filled in."""
    return OrderFile.read(path).to_dict()


# ----------------------------------------------------------------------------------------------------------
# The validation


def _validated(data: Any, file: str | Path | None) -> dict[str, Any]:
    """The constructor arguments of a valid order object (defaults left out); raises naming the field."""

    def bad(message: str, key: str) -> InputError:
        return InputError(message, file=file, field=key)

    if not isinstance(data, Mapping):
        raise InputError("an order file holds a JSON object", file=file)
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise bad(f"unknown field (an order file has {', '.join(FIELDS)})", str(unknown[0]))
    if "format" not in data:
        raise bad("missing field", "format")
    if data["format"] != FORMAT:
        raise bad(f"unsupported format {data['format']!r} (expected {FORMAT!r})", "format")
    if "epochs" not in data:
        raise bad("missing field", "epochs")
    out: dict[str, Any] = {"epochs": _epochs(data["epochs"], bad)}
    for key, check in _OPTIONAL.items():
        if key in data and data[key] is not None:
            out[key] = check(data[key], key, bad)
    return out


def _epochs(value: Any, bad: Any) -> list[list[str]]:
    if not isinstance(value, list) or not value:
        raise bad("needs a non-empty list of epochs (one list of item ids each)", "epochs")
    for e, ids in enumerate(value):
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise bad(f"epoch {e} is not a list of id strings", f"epochs.{e}")
        if not ids:
            raise bad(f"epoch {e} is empty", f"epochs.{e}")
    return [list(ids) for ids in value]


def _str(value: Any, key: str, bad: Any) -> str:
    if not isinstance(value, str) or not value:
        raise bad(f"expected a non-empty string, got {value!r}", key)
    return value


def _count(value: Any, key: str, bad: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad(f"expected a non-negative integer, got {value!r}", key)
    return value


def _policy(value: Any, key: str, bad: Any) -> str:
    if value not in EPOCH_POLICIES:
        raise bad(f"unknown epoch_policy {value!r} ({' or '.join(EPOCH_POLICIES)})", key)
    return str(value)


def _object(value: Any, key: str, bad: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad(f"expected a JSON object, got {type(value).__name__}", key)
    return dict(value)


def _hashes(value: Any, key: str, bad: Any) -> dict[str, str]:
    value = _object(value, key, bad)
    for name, digest in value.items():
        if not isinstance(digest, str):
            raise bad(f"the hash of '{name}' is not a string", f"{key}.{name}")
    return value


def _segments(value: Any, key: str, bad: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise bad("expected a list of {start, label} objects", key)
    for k, seg in enumerate(value):
        if (not isinstance(seg, dict) or isinstance(seg.get("start"), bool) or not isinstance(seg.get("start"), int)
                or seg["start"] < 0 or "label" not in seg):
            raise bad(f"segment {k} is not a {{start: position, label}} object", f"{key}.{k}")
    return [dict(s) for s in value]


_OPTIONAL = {"strategy": _str, "seed": _count, "options": _object, "epoch_policy": _policy, "n_items": _count,
             "segments": _segments, "input_hashes": _hashes}
