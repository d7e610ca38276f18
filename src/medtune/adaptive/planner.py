""":class:`AdaptivePlanner`: the :class:`medtune.training.planner.StepPlanner` of the adaptive strategies.

Every ``every`` optimizer steps (and at step 0) it scores what its strategy needs on the model being trained
(:mod:`medtune.training.scores`), builds the :class:`~medtune.adaptive.strategies.DecisionInputs`, lets the
strategy's pure ``decide`` choose ``every × B`` ids, appends the decision to ``decisions.jsonl`` and hands the
loop the next ``every`` steps. Its state between decisions — the ids used in the current pass, the reference
losses of ``rho``, each item's last score and when it was taken — is derived from the logged decisions only, so
on resume it is rebuilt from the log.

A decision re-scores ``rescore`` × the items it trains (:func:`~medtune.adaptive.strategies.rescore_count`; the
items that can still be drawn in this pass, longest unscored first:
:func:`~medtune.adaptive.strategies.rescore_positions`) and keeps the others' last scores, which is what bounds
the scoring overhead on a large pool; the first decision scores every item, ``rescore="all"`` every decision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medtune.adaptive.decisions import DECISIONS_NAME, append_decision, keep_decisions_before
from medtune.adaptive.replay import steps_of
from medtune.adaptive.strategies import (
    REFRESHED,
    AdaptiveStrategy,
    DecisionInputs,
    decision_rescore,
    decision_seed,
    estimate_theta,
    pass_state,
    rescore_count,
    scored_at_after,
)
from medtune.errors import ConfigError, InputError
from medtune.io import write_text_atomic
from medtune.schema import Item
from medtune.training import scores as sc
from medtune.training.data import PlannedStep


class AdaptivePlanner:
    """Decides the next ``every`` steps from the model being trained (see the module docstring)."""

    def __init__(self, strategy: AdaptiveStrategy, *, every: int, items: Mapping[str, Item], pool: Sequence[str],
                 total_steps: int, global_batch: int, run_seed: int, target: str, template: str,
                 difficulty: Mapping[str, float] | None = None, anchors: Sequence[Item] = (),
                 anchor_b: Sequence[float] = (), anchor_a: Sequence[float] | None = None,
                 theta_prior: Mapping[str, float] | None = None, anchor_mode: str = "option", score_batch: int = 16,
                 rescore: float | str = "all", reference_losses: Sequence[float] | None = None,
                 settings: Mapping[str, Any] | None = None) -> None:
        if every < 1:
            raise ConfigError("every must be at least 1")
        rescore_count(rescore, 1, 1)  # a bad value fails here, not at the first decision
        self.strategy, self.every, self.items, self.pool = strategy, every, items, list(pool)
        self.total, self.gb, self.run_seed = total_steps, global_batch, run_seed
        self.target, self.template, self.score_batch = target, template, score_batch
        self.chat: Any = None  # the run's chat format (medtune.chat_format), set by the training loop
        self.anchors, self.anchor_b, self.anchor_mode = list(anchors), [float(b) for b in anchor_b], anchor_mode
        self.anchor_a = None if anchor_a is None else [float(a) for a in anchor_a]
        default_sd = float(getattr(strategy.options, "prior_sd", 1.0))
        self.theta_prior = {"mean": 0.0, "sd": default_sd} if theta_prior is None else {
            "mean": float(theta_prior["mean"]), "sd": float(theta_prior["sd"])}
        self.rescore = rescore if rescore == "all" else float(rescore)
        self.settings = dict(settings or {})
        if "b" in strategy.needs:
            if difficulty is None:
                raise ConfigError(f"strategy '{strategy.name}' needs item difficulties (a difficulty file)")
            missing = [i for i in self.pool if difficulty.get(i) is None]
            if missing:
                raise ConfigError(f"{len(missing)} training items have no difficulty (e.g. '{missing[0]}')")
        if "theta" in strategy.needs and not self.anchors:
            raise ConfigError(f"strategy '{strategy.name}' estimates ability on anchor items: give --anchors")
        self.b = [float(difficulty[i]) for i in self.pool] if difficulty is not None and "b" in strategy.needs \
            else None
        self.path: Path | None = None
        self.records: list[dict[str, Any]] = []
        if reference_losses is not None and len(reference_losses) != len(self.pool):
            raise ConfigError(f"{len(reference_losses)} reference losses for a pool of {len(self.pool)} items")
        self.reference_losses = None if reference_losses is None else [float(v) for v in reference_losses]
        self.ref_loss: list[float] | None = None
        self.latest: dict[str, list[float]] = {}  # the last score of every pool item, per refreshable score
        self.scored_at: list[int] = [-1] * len(self.pool)  # the step each item was last scored at (-1: never)

    # -- StepPlanner --------------------------------------------------------------------------------------

    def total_steps(self) -> int:
        return self.total

    def candidate_ids(self) -> Sequence[str]:
        return list(self.pool)

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.strategy.name, "options": self.strategy.options.to_dict(), "every": self.every,
                "total_steps": self.total, "global_batch": self.gb, "candidates": list(self.pool),
                "anchors": [it.id for it in self.anchors], "anchor_mode": self.anchor_mode,
                "rescore": self.rescore, "decisions": DECISIONS_NAME, **self.settings}

    def resume(self, run_dir: Path, step: int) -> list[PlannedStep]:
        self.path = Path(run_dir) / DECISIONS_NAME
        if step == 0:
            if self.path.exists():
                write_text_atomic(self.path, "")
            self.records = []
            self.latest, self.scored_at, self.ref_loss = {}, [-1] * len(self.pool), None
            return []
        self.records = keep_decisions_before(self.path, step)
        if not self.records or int(self.records[-1]["first_step"]) + int(self.records[-1]["n_steps"]) - 1 < step:
            raise InputError(f"the decision log does not cover the checkpoint's step {step}", file=self.path)
        if "ref_loss" in self.strategy.needs:
            self.ref_loss = list(self.records[0]["scores"]["ref_loss"])
        self.scored_at = scored_at_after(self.records, self.pool)
        self.latest = {k: list(v) for k, v in (self.records[-1].get("scores") or {}).items() if k in REFRESHED}
        return [ps for ps in steps_of(self.records[-1]) if ps.step > step]

    def next_steps(self, model: Any, tokenizer: Any, step: int) -> list[PlannedStep]:
        if self.path is None:
            raise RuntimeError("AdaptivePlanner.resume(run_dir, step) must be called before next_steps")
        n_steps = min(self.every, self.total - step)
        n = n_steps * self.gb
        state = pass_state([(int(r["epoch"]), r["chosen"]) for r in self.records], len(self.pool), n,
                           self.strategy.options.replacement)
        seed = decision_seed(self.run_seed, step)
        rescored = self._rescore_positions(state.used, seed, n)
        t0 = time.perf_counter()
        scores, theta, se, anchors = self._score(model, tokenizer, rescored, step)
        score_s = time.perf_counter() - t0
        inputs = DecisionInputs(step=step, total_steps=self.total, n=n, candidates=tuple(self.pool),
                                used=state.used, scores=scores, theta=theta)
        t1 = time.perf_counter()
        chosen = self.strategy.decide(inputs, seed)
        decide_s = time.perf_counter() - t1
        record = {"decision": len(self.records), "step": step, "first_step": step + 1, "n_steps": n_steps,
                  "global_batch": self.gb, "strategy": self.strategy.name,
                  "options": self.strategy.options.to_dict(), "seed": seed, "epoch": state.epoch,
                  "theta": theta, "theta_se": se, "anchors": anchors, "scores": scores,
                  "candidates": list(self.pool), "used": sorted(state.used),
                  "rescored": [self.pool[i] for i in rescored] if set(self.strategy.needs) & REFRESHED else [],
                  "chosen": chosen,
                  "timing": {"score_seconds": round(score_s, 6), "decide_seconds": round(decide_s, 6)},
                  "wall": time.time()}
        append_decision(self.path, record)
        self.records.append(record)
        return steps_of(record)

    # -- scoring ------------------------------------------------------------------------------------------

    def _rescore_positions(self, used: frozenset[str], seed: int, n: int) -> list[int]:
        """The pool positions this decision re-scores (all of them at the first decision)."""
        if not set(self.strategy.needs) & REFRESHED:
            return []
        return decision_rescore(self.rescore, self.pool, self.scored_at, used, self.strategy.options.replacement, n,
                                seed)

    def _score(self, model: Any, tokenizer: Any, rescored: Sequence[int], step: int
               ) -> tuple[dict[str, list[float]], float | None, float | None, dict[str, Any] | None]:
        needs = self.strategy.needs
        scores: dict[str, list[float]] = {}
        theta = se = None
        anchors = None
        if self.b is not None:
            scores["b"] = list(self.b)
        if not set(needs) & {"theta", "loss", "p", "ref_loss"}:
            return scores, theta, se, anchors
        backend = sc.backend_for(model, tokenizer)
        items = [self.items[self.pool[i]] for i in rescored]
        if "theta" in needs:
            correct = sc.anchor_answers(backend, self.anchors, mode=self.anchor_mode, template=self.template,
                                        batch=self.score_batch, chat=self.chat)
            theta, se = estimate_theta(correct, self.anchor_b, self.theta_prior["sd"], a=self.anchor_a,
                                       prior_mean=self.theta_prior["mean"])
            anchors = {"ids": [it.id for it in self.anchors], "correct": correct, "b": list(self.anchor_b),
                       "a": self.anchor_a, "prior": dict(self.theta_prior)}
        fresh: dict[str, list[float]] = {}
        if "loss" in needs or "ref_loss" in needs:
            fresh["loss"] = sc.item_losses(backend, items, target=self.target, template=self.template,
                                           batch=self.score_batch, chat=self.chat)
        if "p" in needs:
            fresh["p"] = sc.answer_probabilities(backend, items, target=self.target, template=self.template,
                                                 batch=self.score_batch, chat=self.chat)
        for name, values in fresh.items():
            column = self.latest.setdefault(name, [math.nan] * len(self.pool))
            for i, v in zip(rescored, values, strict=True):
                column[i] = float(v)
            scores[name] = list(column)
        for i in rescored:
            self.scored_at[i] = step
        if "ref_loss" in needs:
            if self.ref_loss is None:  # the first decision: a reference model's losses, else the base model's
                self.ref_loss = list(self.reference_losses) if self.reference_losses is not None else list(
                    scores["loss"])
            scores["ref_loss"] = list(self.ref_loss)
        return scores, theta, se, anchors

