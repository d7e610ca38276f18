"""Adaptive curriculum strategies: a registry (:data:`ADAPTIVE`) of pure ``decide(inputs, seed) -> ids`` functions.

Each strategy is a class with an options schema (a :class:`medtune.settings.Settings`, so unknown options are
rejected) and a **pure** :meth:`AdaptiveStrategy.decide`: the chosen ids depend only on the
:class:`DecisionInputs` (step, the candidate pool, the ids already used in this pass, the per-item scores or the
ability estimate) and the seed. That is what makes a run checkable after the fact: ``verify-order`` feeds each
logged decision's inputs back through ``decide`` (:mod:`medtune.adaptive.replay`) and must get the logged choice.

What each strategy needs scored at a decision point is declared by :attr:`AdaptiveStrategy.needs` and computed by
:mod:`medtune.training.scores`; this module imports neither torch nor the scorer, so the replay is cheap and
the training package may use it.

- ``ability`` (DDaCLAE, Lalor & Yu 2020): the model's ability θ is estimated from its 0/1 answers on a fixed
  anchor set of items with known IRT difficulty (:func:`estimate_theta`, 1PL MAP); the next items are drawn
  from those with ``b <= θ + δ`` (δ optionally paced over training); when fewer qualify, the easiest fill up.
- ``self-paced``: per-item training loss; items under the loss quantile ``q(t)`` (growing linearly from
  ``start_quantile`` to ``end_quantile`` over training) are drawn; the lowest losses fill up.
- ``learnability`` (LILO-style): the items whose current success probability ``p`` has the largest
  ``p(1 - p)``.
- ``rho`` (RHO-LOSS): the items with the largest current loss minus a reference model's loss (the base model's,
  scored at step 0, or a given model's, e.g. one fine-tuned on held-out data).

Every strategy shares ``replacement`` (False: a pass over the pool uses each item once before any repeats).
Pass bookkeeping (which ids are used, when a new pass starts) is :func:`pass_state`, also pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, overload

import numpy as np
from pydantic import Field

from medtune.errors import ConfigError
from medtune.registry import Registry
from medtune.settings import Settings, validate_settings

# The default decision interval (optimizer steps) and re-scoring budget (items scored per item trained): what the
# scoring overhead at decision points was measured at (README, "Adaptive curricula").
EVERY_DEFAULT = 16
RESCORE_DEFAULT = 0.5

# What a strategy may ask the decision point to score.
NEEDS = ("theta", "b", "loss", "p", "ref_loss")


@dataclass(frozen=True)
class DecisionInputs:
    """Everything a decision may depend on (all of it is written to ``decisions.jsonl``)."""

    step: int  # optimizer steps done when deciding
    total_steps: int
    n: int  # how many ids to choose (steps of this decision × global batch)
    candidates: tuple[str, ...]  # the pool, in the order file's order
    used: frozenset[str] = frozenset()  # drawn earlier in the current pass
    scores: Mapping[str, Sequence[float]] = field(default_factory=dict)  # per candidate, aligned with candidates
    theta: float | None = None

    def score(self, name: str) -> np.ndarray:
        if name not in self.scores:
            raise ConfigError(f"decision at step {self.step} lacks the '{name}' scores")
        values = np.asarray(self.scores[name], dtype=float)
        if values.shape != (len(self.candidates),):
            raise ConfigError(f"decision at step {self.step}: '{name}' has {values.size} values for "
                              f"{len(self.candidates)} candidates")
        return values


class AdaptiveOptionSettings(Settings):
    """Options every adaptive strategy shares."""

    replacement: bool = Field(False, description="draw items already used in this pass again (False: each item "
                                                 "once per pass over the pool)")


def decision_seed(run_seed: int, step: int) -> int:
    """The seed of the decision taken after ``step`` steps: fixed by the run's seed, so a resumed run draws alike."""
    return (int(run_seed) * 1_000_003 + int(step) * 7_919 + 17) % (2**32)


def progress(inputs: DecisionInputs) -> float:
    """Training progress in [0, 1] at the decision (for pacing)."""
    return min(1.0, inputs.step / max(1, inputs.total_steps))


def available_mask(inputs: DecisionInputs, replacement: bool) -> np.ndarray:
    """Which candidates may be drawn: all with replacement, else those not used in this pass."""
    if replacement:
        return np.ones(len(inputs.candidates), dtype=bool)
    return np.array([c not in inputs.used for c in inputs.candidates], dtype=bool)


def _fill(ranked: Sequence[int], n: int) -> list[int]:
    """The first ``n`` of ``ranked``, cycling when it is shorter (a pool smaller than the decision)."""
    if not ranked:
        return []
    reps = -(-n // len(ranked))
    return (list(ranked) * reps)[:n]


def choose(eligible: np.ndarray, fallback_key: np.ndarray, available: np.ndarray, n: int, seed: int) -> list[int]:
    """Indices: ``n`` drawn at random from ``eligible`` when it holds enough; otherwise all of ``eligible`` and the
    available items of smallest ``fallback_key`` (ties by position), in a seeded random order."""
    rng = np.random.default_rng(seed)
    elig = np.flatnonzero(eligible & available)
    if len(elig) >= n:
        picked = rng.choice(elig, size=n, replace=False).tolist()
        return [int(i) for i in picked]
    rest = [int(i) for i in np.flatnonzero(available & ~eligible)]
    rest.sort(key=lambda i: (fallback_key[i], i))
    picked = [int(i) for i in elig] + rest
    picked = _fill(picked, n)
    order = rng.permutation(len(picked))
    return [picked[k] for k in order]


def top_n(key: np.ndarray, available: np.ndarray, n: int, seed: int) -> list[int]:
    """The ``n`` available indices with the largest ``key`` (ties broken by a seeded random order), shuffled."""
    rng = np.random.default_rng(seed)
    tie = rng.permutation(len(key))
    idx = [int(i) for i in np.flatnonzero(available)]
    idx.sort(key=lambda i: (-key[i], tie[i]))
    picked = _fill(idx, n)
    return [picked[k] for k in rng.permutation(len(picked))]


class AdaptiveStrategy:
    """Base class: ``options`` validated by ``Options``; subclasses implement :meth:`pick`."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[AdaptiveOptionSettings]] = AdaptiveOptionSettings
    needs: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = validate_settings(self.Options, dict(options or {}), f"adaptive options of '{self.name}'")

    def decide(self, inputs: DecisionInputs, seed: int) -> list[str]:
        """The ids to train on next (``inputs.n`` of them, from ``inputs.candidates``). Pure."""
        if inputs.n <= 0 or not inputs.candidates:
            return []
        available = available_mask(inputs, self.options.replacement)
        if not available.any():
            available = np.ones(len(inputs.candidates), dtype=bool)
        return [inputs.candidates[i] for i in self.pick(inputs, available, seed)]

    def pick(self, inputs: DecisionInputs, available: np.ndarray, seed: int) -> list[int]:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------------
# ability


class AbilityOptionSettings(AdaptiveOptionSettings):
    delta: float = Field(0.0, description="margin: items with b <= theta + delta qualify (at the end of the "
                                          "pacing)")
    delta_start: float | None = Field(None, description="delta at step 0 (default: delta); paced to delta")
    pacing: Literal["constant", "linear"] = Field("constant", description="how delta moves from delta_start to "
                                                                          "delta over training")
    prior_sd: float = Field(1.0, gt=0, description="sd of the N(0, sd) prior of the theta estimate")


def delta_at(opts: AbilityOptionSettings, t: float) -> float:
    start = opts.delta if opts.delta_start is None else opts.delta_start
    if opts.pacing == "constant":
        return opts.delta
    return start + (opts.delta - start) * t


class Ability(AdaptiveStrategy):
    name = "ability"
    Options = AbilityOptionSettings
    needs = ("theta", "b")
    description = "items with IRT difficulty b <= theta + delta, theta estimated from anchor answers (DDaCLAE)"

    def pick(self, inputs: DecisionInputs, available: np.ndarray, seed: int) -> list[int]:
        if inputs.theta is None:
            raise ConfigError(f"decision at step {inputs.step}: the ability strategy needs theta")
        b = inputs.score("b")
        limit = inputs.theta + delta_at(self.options, progress(inputs))  # type: ignore[arg-type]
        return choose(b <= limit, b, available, inputs.n, seed)


def estimate_theta(correct: Sequence[float], b: Sequence[float], prior_sd: float = 1.0, iterations: int = 50, *,
                   a: Sequence[float] | None = None, prior_mean: float = 0.0) -> tuple[float, float]:
    """θ and its standard error from 0/1 answers on items of difficulty ``b`` (and discrimination ``a``: 1 each
    when not given, the 1PL), MAP with a ``N(prior_mean, prior_sd)`` prior.

    Newton's method on the log posterior (concave), steps capped at one logit, so the estimate is finite even
    when every answer is right or wrong; the se is ``1 / sqrt(information + 1/sd²)``. With an anchor set's
    ``a``, ``b`` and prior it is the estimate of :func:`medtune.anchors.estimate_ability`. Pure and
    deterministic (the replay recomputes it).
    """
    y = np.asarray(correct, dtype=float)
    bb = np.asarray(b, dtype=float)
    aa = np.ones_like(bb) if a is None else np.asarray(a, dtype=float)
    if y.shape != bb.shape or aa.shape != bb.shape:
        raise ConfigError(f"{y.size} anchor answers for {bb.size} anchor difficulties ({aa.size} discriminations)")
    inv_var = 1.0 / prior_sd**2
    theta = float(prior_mean)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-aa * (theta - bb)))
        grad = float((aa * (y - p)).sum()) - (theta - prior_mean) * inv_var
        info = float((aa**2 * p * (1 - p)).sum()) + inv_var
        step = max(-1.0, min(1.0, grad / info))
        theta += step
        if abs(step) < 1e-10:
            break
    p = 1.0 / (1.0 + np.exp(-aa * (theta - bb)))
    info = float((aa**2 * p * (1 - p)).sum())
    return float(theta), float(1.0 / math.sqrt(info + inv_var))


def check_rescore(value: float | str) -> float | str:
    """``value`` if it is a valid ``rescore`` (a positive multiple or "all"), else ``ValueError`` (for validators)."""
    if value != "all" and not float(value) > 0:
        raise ValueError("rescore must be a positive number or 'all'")
    return value


def rescore_count(rescore: float | str, n_pool: int, n_decision: int) -> int:
    """How many items a decision re-scores: ``rescore`` × the items it trains (at least 1, at most the pool), or
    the whole pool for ``"all"``.

    Tied to the items a decision trains rather than to the pool, so the scoring overhead stays about
    ``rescore × (cost of scoring an item) / (cost of training on one)`` whatever the pool's size or ``every``.
    """
    if rescore == "all":
        return n_pool
    if isinstance(rescore, str) or not float(rescore) > 0:
        raise ConfigError(f"rescore must be a positive number or 'all', got {rescore!r}")
    return min(n_pool, max(1, math.ceil(float(rescore) * n_decision)))


def rescore_positions(scored_at: Sequence[int], available: Sequence[bool], m: int, seed: int) -> list[int]:
    """Which candidates a decision re-scores (positions, ascending): every item never scored (all of them at the
    first decision), else ``m``: the items still available in this pass before the used ones, the longest
    unscored first, ties in a seeded order.

    A decision re-scoring only part of the pool keeps the other items' last scores: the cost of a decision is
    ``m`` forward passes instead of the whole pool's, and since items used in this pass cannot be drawn again
    in it, their scores can wait. Pure: the planner and the replay both call it.
    """
    n = len(scored_at)
    never = [i for i in range(n) if scored_at[i] < 0]
    if never:
        return never
    if m >= n:
        return list(range(n))
    tie = np.random.default_rng([int(seed), 0x5EC0]).permutation(n)
    ranked = sorted(range(n), key=lambda i: (not available[i], scored_at[i], int(tie[i])))
    return sorted(ranked[:m])


def decision_rescore(rescore: float | str, pool: Sequence[str], scored_at: Sequence[int], used: frozenset[str],
                     replacement: bool, n: int, seed: int) -> list[int]:
    """The pool positions a decision of ``n`` ids re-scores under the rule ``rescore`` (:func:`rescore_count`,
    :func:`rescore_positions`), given when each item was last scored and the ids used in this pass. The planner
    and the replay both call it."""
    inputs = DecisionInputs(step=0, total_steps=1, n=0, candidates=tuple(pool), used=used)
    available = available_mask(inputs, replacement).tolist()
    return rescore_positions(scored_at, available, rescore_count(rescore, len(pool), n), seed)


# Scores that change as the model trains (and are re-scored at decisions); b and ref_loss stay fixed.
REFRESHED = frozenset({"loss", "p"})


def scored_at_after(records: Sequence[Mapping[str, Any]], pool: Sequence[str]) -> list[int]:
    """The step each pool item was last scored at, after the logged decisions ``records`` (-1: never)."""
    position = {c: i for i, c in enumerate(pool)}
    out = [-1] * len(pool)
    for rec in records:
        for c in rec.get("rescored") or ():
            out[position[c]] = int(rec["step"])
    return out


# ----------------------------------------------------------------------------------------------------------
# self-paced


class SelfPacedOptionSettings(AdaptiveOptionSettings):
    start_quantile: float = Field(0.3, gt=0, le=1, description="loss quantile admitted at step 0")
    end_quantile: float = Field(1.0, gt=0, le=1, description="loss quantile admitted at the last step")


class SelfPaced(AdaptiveStrategy):
    name = "self-paced"
    Options = SelfPacedOptionSettings
    needs = ("loss",)
    description = "items whose current loss is under a quantile threshold that grows over training"

    def pick(self, inputs: DecisionInputs, available: np.ndarray, seed: int) -> list[int]:
        loss = inputs.score("loss")
        o: SelfPacedOptionSettings = self.options  # type: ignore[assignment]
        q = o.start_quantile + (o.end_quantile - o.start_quantile) * progress(inputs)
        threshold = float(np.quantile(loss[available], q))
        return choose(loss <= threshold, loss, available, inputs.n, seed)


# ----------------------------------------------------------------------------------------------------------
# learnability, rho


class Learnability(AdaptiveStrategy):
    name = "learnability"
    needs = ("p",)
    description = "items whose current success probability p has the largest p(1 - p)"

    def pick(self, inputs: DecisionInputs, available: np.ndarray, seed: int) -> list[int]:
        p = inputs.score("p")
        return top_n(p * (1 - p), available, inputs.n, seed)


class Rho(AdaptiveStrategy):
    name = "rho"
    needs = ("loss", "ref_loss")
    description = ("items with the largest current loss minus a reference model's loss (RHO-LOSS; the base model "
                   "by default)")

    def pick(self, inputs: DecisionInputs, available: np.ndarray, seed: int) -> list[int]:
        return top_n(inputs.score("loss") - inputs.score("ref_loss"), available, inputs.n, seed)


# ----------------------------------------------------------------------------------------------------------
# Registry and pass bookkeeping

ADAPTIVE: Registry[type[AdaptiveStrategy]] = Registry(
    "adaptive strategy", hint="a plugin module named in MEDTUNE_PLUGINS can register more")


@overload
def register_adaptive(cls: type[AdaptiveStrategy], *, replace: bool = False) -> type[AdaptiveStrategy]: ...
@overload
def register_adaptive(cls: None = None, *,
                      replace: bool = False) -> Callable[[type[AdaptiveStrategy]], type[AdaptiveStrategy]]: ...


def register_adaptive(cls: type[AdaptiveStrategy] | None = None, *, replace: bool = False) -> Any:
    """Register a strategy class under its ``name`` (a decorator: ``@register_adaptive`` or
    ``@register_adaptive(replace=True)``); a taken name is refused unless ``replace=True``."""
    if cls is None:
        return lambda c: register_adaptive(c, replace=replace)
    if not cls.name or not isinstance(cls.name, str):
        raise ConfigError(f"adaptive strategy {cls.__name__} needs a name")
    unknown = set(cls.needs) - set(NEEDS)
    if unknown:
        raise ConfigError(f"adaptive strategy '{cls.name}' needs unknown scores {sorted(unknown)} (known: "
                          f"{', '.join(NEEDS)})")
    return ADAPTIVE.register(cls.name, cls, replace=replace)


for _cls in (Ability, SelfPaced, Learnability, Rho):
    register_adaptive(_cls)


def adaptive_names() -> list[str]:
    return sorted(ADAPTIVE.names())


def get_adaptive(name: str, options: Mapping[str, Any] | None = None) -> AdaptiveStrategy:
    """An instance of strategy ``name`` with ``options`` validated."""
    return ADAPTIVE.get(name)(options)


@dataclass(frozen=True)
class PassState:
    epoch: int  # passes over the pool completed before this decision
    used: frozenset[str]  # ids drawn in the current pass


def pass_state(previous: Sequence[tuple[int, Sequence[str]]], n_candidates: int, n: int,
               replacement: bool) -> PassState:
    """The pass a decision of ``n`` ids falls in, from the earlier decisions' ``(epoch, chosen ids)``.

    Without replacement a new pass begins when fewer than ``n`` unused candidates are left; with replacement the
    pass counts pool-sizes of items drawn. Pure: the planner and the replay both call it.
    """
    if not previous:
        return PassState(0, frozenset())
    epoch = previous[-1][0]
    used = frozenset(i for e, ids in previous if e == epoch for i in ids)
    if replacement:
        drawn = sum(len(ids) for _, ids in previous)
        return PassState(drawn // max(1, n_candidates), frozenset())
    if n_candidates - len(used) < min(n, n_candidates) or len(used) >= n_candidates:
        return PassState(epoch + 1, frozenset())
    return PassState(epoch, used)
