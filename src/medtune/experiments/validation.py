"""The validation items a sweep chooses its settings on: never the test set, never the items a cell trains on.

Choosing each arm's best setting by its test accuracy would report the best of several test draws as if it
were one: the chosen arm's test number is biased upwards, more so the more settings it had. So the choice reads
validation items only, and the test set is scored once per setting but read only at the chosen one.

Where the validation items come from, for each training set of a sweep grid:

- the data set's own validation split, when the training set is one split of its source (``split: train``) and
  the source has one (``validation.split``, or the first of ``dev``, ``validation``, ``val``, ``valid`` it has);
- otherwise a seeded share of the training items (``validation.share``, by a hash of each item's id and
  ``validation.seed``), which every cell of that training set then trains without.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pydantic import Field, field_validator

from medtune.schema import Item
from medtune.settings import Settings

VALIDATION_SPLITS = ("dev", "validation", "val", "valid")


class GridValidationSettings(Settings):
    """Where a sweep's validation items come from (used only by a grid with ``training.sweep``)."""

    split: str | None = Field(None, description="the training set's own validation split in its source (default: "
                              "the first of dev, validation, val, valid the source has, when the training set "
                              "is one split of it)")
    share: float = Field(0.2, gt=0, lt=1, description="without such a split: the share of the training items "
                         "held out for validation (the cells train on the rest)")
    seed: int = Field(0, description="seed of the id hash that picks the held-out share")
    limit: int | None = Field(None, ge=1, description="score at most this many validation items (the first ones; "
                              "every cell scores them, so a large dev split costs an evaluation per cell)")

    @field_validator("split")
    @classmethod
    def _not_the_test_split(cls, v: str | None) -> str | None:
        if v is not None and v.strip().lower() == "test":
            raise ValueError("the test split is never used to choose settings; name a validation split")
        return v


def held_out(item_id: str, share: float, seed: int) -> bool:
    """Whether the item with ``item_id`` is in the validation share (stable across runs, machines and file order;
    salted apart from the data stage's ``portion`` hash, so the two cuts are independent)."""
    digest = hashlib.sha256(f"validation:{seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def hold_out(items: Sequence[Item], share: float, seed: int) -> tuple[list[Item], list[Item]]:
    """The training items split into (the items cells train on, the validation items), in the items' order."""
    train = [it for it in items if not held_out(it.id, share, seed)]
    val = [it for it in items if held_out(it.id, share, seed)]
    return train, val
