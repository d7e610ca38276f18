"""Continuous difficulty → easy / medium / hard: the one bucketing rule of the project.

The difficulty stage stores buckets in difficulty.parquet and the order stage re-buckets (IRT b, numeric
``human_difficulty``, a user's thresholds); both use :class:`Bucketing`, so a question at 0.66 is "easy"
in every artifact. The rule is easy ≤ t1 < medium ≤ t2 < hard, with (t1, t2) either fixed (the paper's
0.66 / 0.80 on MedQA) or the given quantiles of the observed values (terciles: buckets of about equal size
whatever the scale, which IRT b needs since it is not in [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from medtune.errors import InputError
from medtune.schema import DIFFICULTY_LEVELS

PAPER_THRESHOLDS: tuple[float, float] = (0.66, 0.80)
DEFAULT_QUANTILES: tuple[float, float] = (1 / 3, 2 / 3)
TERCILES: tuple[float, float] = DEFAULT_QUANTILES

EASY, MEDIUM, HARD = DIFFICULTY_LEVELS


def _pair(values: Sequence[float], name: str) -> tuple[float, float]:
    vals = tuple(float(v) for v in values)
    if len(vals) != 2 or not all(math.isfinite(v) for v in vals) or not vals[0] < vals[1]:
        raise InputError(f"{name} must be two increasing numbers, got {list(values)}", field=name)
    return vals  # type: ignore[return-value]


def parse_pair(text: str, name: str = "thresholds") -> tuple[float, float]:
    """Parse ``"0.66,0.80"`` (CLI syntax) into a validated increasing pair."""
    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        raise InputError(f"{name} must be two comma-separated numbers, got {text!r}", field=name) from None
    return _pair(values, name)


def cut(values: Sequence[float | None] | np.ndarray, t1: float, t2: float) -> list[str | None]:
    """easy ≤ t1 < medium ≤ t2 < hard for each value; None (or NaN) stays None."""
    out: list[str | None] = []
    for v in values:
        if v is None or v != v:  # None or NaN (of any float type)
            out.append(None)
        else:
            out.append(EASY if v <= t1 else MEDIUM if v <= t2 else HARD)
    return out


@dataclass(frozen=True)
class Bucketing:
    """How continuous difficulty becomes easy/medium/hard.

    ``fixed``: easy ≤ t1 < medium ≤ t2 < hard (the paper: 0.66 / 0.80 on MedQA). ``quantile``: the same
    rule with t1, t2 the given quantiles of the observed difficulties (terciles by default), so every
    dataset gets buckets of about equal size whatever its difficulty scale.
    """

    rule: Literal["fixed", "quantile"] = "fixed"
    thresholds: tuple[float, float] = PAPER_THRESHOLDS
    quantiles: tuple[float, float] = DEFAULT_QUANTILES

    @classmethod
    def fixed(cls, thresholds: Sequence[float] = PAPER_THRESHOLDS) -> Bucketing:
        return cls("fixed", thresholds=_pair(thresholds, "thresholds"))

    @classmethod
    def by_quantiles(cls, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Bucketing:
        q = _pair(quantiles, "quantiles")
        if not (0 < q[0] < q[1] < 1):
            raise InputError(f"quantiles must satisfy 0 < q1 < q2 < 1, got {q}", field="quantiles")
        return cls("quantile", quantiles=q)

    @classmethod
    def terciles(cls) -> Bucketing:
        return cls.by_quantiles(TERCILES)

    def resolve(self, difficulty: Sequence[float | None] | np.ndarray) -> tuple[float, float]:
        """The two cut points for this data (quantiles ignore missing values)."""
        if self.rule == "fixed":
            return self.thresholds
        values = np.asarray([np.nan if v is None else v for v in difficulty], dtype=float)
        values = values[~np.isnan(values)]
        if values.size == 0:
            raise InputError("cannot bucket by quantiles: no difficulty values")
        t1, t2 = np.quantile(values, self.quantiles)
        return float(t1), float(t2)

    def labels(self, difficulty: Sequence[float | None] | np.ndarray) -> list[str | None]:
        """The bucket of each value (None where it is missing); no values give no labels."""
        if len(difficulty) == 0:
            return []
        return cut(difficulty, *self.resolve(difficulty))

    def assign(self, difficulty: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Bucket labels (object array, None where difficulty is NaN) and the resolved rule as a dict."""
        t1, t2 = self.resolve(difficulty)
        labels = np.asarray(cut(np.asarray(difficulty, dtype=float).tolist(), t1, t2), dtype=object)
        return labels, self.describe((t1, t2))

    def describe(self, resolved: tuple[float, float]) -> dict[str, Any]:
        """The rule and its resolved cut points, as stored in an artifact's metadata."""
        info: dict[str, Any] = {"rule": self.rule, "thresholds": [resolved[0], resolved[1]]}
        if self.rule == "quantile":
            info["quantiles"] = list(self.quantiles)
        return info
