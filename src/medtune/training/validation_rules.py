"""The rules of validation during training, as pure functions: which items are held out, which validation is the
best, when to stop.

They import no torch, so the training loop and ``verify-order`` (:mod:`medtune.adaptive.verify`) apply the same
rules: the check re-plans a run without its held-out items and replays the stop decision from the logged
validations, instead of trusting what the trainer wrote about them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from medtune.errors import ConfigError

# Record kinds of train_log.jsonl besides the optimizer steps (medtune.training.runlog).
VALIDATION_KIND = "validation"
STOP_KIND = "stop"


def held_out_share(epochs: Sequence[Sequence[str]], share: float, seed: int) -> list[str]:
    """A seeded ``share`` of the distinct ids of the planned epochs (at least one, and at least one left to train),
    sorted. It depends on the order's set of ids and ``seed`` only, not on the order's sequence: every strategy of
    one data set holds out the same items."""
    ids = sorted({i for epoch in epochs for i in epoch})
    if len(ids) < 2:
        raise ConfigError(f"validation.share: the order holds {len(ids)} item(s); holding out a share needs two")
    k = min(len(ids) - 1, max(1, round(share * len(ids))))
    return sorted(random.Random(seed).sample(ids, k))


def without_ids(epochs: Sequence[Sequence[str]], held_out: Iterable[str]) -> list[list[str]]:
    """The epochs with the held-out ids removed (the rest keep their order)."""
    drop = set(held_out)
    return [[i for i in epoch if i not in drop] for epoch in epochs]


def better(metric: str, value: float, best: float | None, min_delta: float) -> bool:
    """Whether ``value`` improves on ``best`` by more than ``min_delta`` (lower loss, higher accuracy)."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if metric == "val_loss" else value > best + min_delta


@dataclass
class EarlyStopping:
    """The best validation so far and the validations since it (what a checkpoint keeps for a resume)."""

    metric: str
    patience: int | None
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    bad: int = 0  # validations in a row without improvement

    def observe(self, step: int, value: float) -> bool:
        """Take the validation of ``step``; returns whether it is the new best."""
        if better(self.metric, value, self.best, self.min_delta):
            self.best, self.best_step, self.bad = float(value), step, 0
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience

    def reason(self) -> str:
        return (f"{self.metric} did not improve by more than {self.min_delta:g} in {self.bad} validations "
                f"(best {self.best:.6g} at step {self.best_step})")

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad}

    def restore(self, state: Mapping[str, Any] | None) -> None:
        if state:
            self.best, self.best_step, self.bad = state.get("best"), state.get("best_step"), int(state.get("bad", 0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def replay_stop(records: Iterable[Mapping[str, Any]], metric: str, patience: int | None,
                min_delta: float) -> tuple[int | None, EarlyStopping]:
    """The step at which the rules stop a run, given its validation records in order (``None``: they never stop),
    and the state after the last record taken."""
    state = EarlyStopping(metric, patience, min_delta)
    for rec in records:
        value = rec.get(metric)
        state.observe(int(rec["step"]), float("nan") if value is None else float(value))
        if state.should_stop:
            return int(rec["step"]), state
    return None, state
