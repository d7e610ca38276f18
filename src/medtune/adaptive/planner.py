""":class:`AdaptivePlanner`: the :class:`medtune.training.planner.StepPlanner` of the adaptive strategies.

Every ``every`` optimizer steps (and at step 0) it scores what its strategy needs on the model being trained
(:mod:`medtune.adaptive.scores`), builds the :class:`~medtune.adaptive.strategies.DecisionInputs`, lets the
strategy's pure ``decide`` choose ``every × B`` ids, appends the decision to ``decisions.jsonl`` and hands the
loop the next ``every`` steps. Its state between decisions — the ids used in the current pass, the reference
losses of ``rho`` — is derived from the logged decisions only, so on resume it is rebuilt from the log.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medtune.adaptive import scores as sc
from medtune.adaptive.decisions import DECISIONS_NAME, append_decision, keep_decisions_before
from medtune.adaptive.replay import steps_of
from medtune.adaptive.strategies import AdaptiveStrategy, DecisionInputs, decision_seed, estimate_theta, pass_state
from medtune.errors import ConfigError, InputError
from medtune.io import write_text_atomic
from medtune.schema import Item
from medtune.training.data import PlannedStep


class AdaptivePlanner:
    """Decides the next ``every`` steps from the model being trained (see the module docstring)."""

    def __init__(self, strategy: AdaptiveStrategy, *, every: int, items: Mapping[str, Item], pool: Sequence[str],
                 total_steps: int, global_batch: int, run_seed: int, target: str, template: str,
                 difficulty: Mapping[str, float] | None = None, anchors: Sequence[Item] = (),
                 anchor_b: Sequence[float] = (), anchor_mode: str = "option", score_batch: int = 16,
                 settings: Mapping[str, Any] | None = None) -> None:
        if every < 1:
            raise ConfigError("every must be at least 1")
        self.strategy, self.every, self.items, self.pool = strategy, every, items, list(pool)
        self.total, self.gb, self.run_seed = total_steps, global_batch, run_seed
        self.target, self.template, self.score_batch = target, template, score_batch
        self.anchors, self.anchor_b, self.anchor_mode = list(anchors), [float(b) for b in anchor_b], anchor_mode
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
        self.ref_loss: list[float] | None = None

    # -- StepPlanner --------------------------------------------------------------------------------------

    def total_steps(self) -> int:
        return self.total

    def candidate_ids(self) -> Sequence[str]:
        return list(self.pool)

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.strategy.name, "options": self.strategy.options.to_dict(), "every": self.every,
                "total_steps": self.total, "global_batch": self.gb, "candidates": list(self.pool),
                "anchors": [it.id for it in self.anchors], "anchor_mode": self.anchor_mode,
                "decisions": DECISIONS_NAME, **self.settings}

    def resume(self, run_dir: Path, step: int) -> list[PlannedStep]:
        self.path = Path(run_dir) / DECISIONS_NAME
        if step == 0:
            if self.path.exists():
                write_text_atomic(self.path, "")
            self.records = []
            return []
        self.records = keep_decisions_before(self.path, step)
        if not self.records or int(self.records[-1]["first_step"]) + int(self.records[-1]["n_steps"]) - 1 < step:
            raise InputError(f"the decision log does not cover the checkpoint's step {step}", file=self.path)
        if "ref_loss" in self.strategy.needs:
            self.ref_loss = list(self.records[0]["scores"]["ref_loss"])
        return [ps for ps in steps_of(self.records[-1]) if ps.step > step]

    def next_steps(self, model: Any, tokenizer: Any, step: int) -> list[PlannedStep]:
        if self.path is None:
            raise RuntimeError("AdaptivePlanner.resume(run_dir, step) must be called before next_steps")
        n_steps = min(self.every, self.total - step)
        n = n_steps * self.gb
        state = pass_state([(int(r["epoch"]), r["chosen"]) for r in self.records], len(self.pool), n,
                           self.strategy.options.replacement)
        t0 = time.perf_counter()
        scores, theta, se, anchors = self._score(model, tokenizer)
        score_s = time.perf_counter() - t0
        seed = decision_seed(self.run_seed, step)
        inputs = DecisionInputs(step=step, total_steps=self.total, n=n, candidates=tuple(self.pool),
                                used=state.used, scores=scores, theta=theta)
        t1 = time.perf_counter()
        chosen = self.strategy.decide(inputs, seed)
        decide_s = time.perf_counter() - t1
        record = {"decision": len(self.records), "step": step, "first_step": step + 1, "n_steps": n_steps,
                  "global_batch": self.gb, "strategy": self.strategy.name,
                  "options": self.strategy.options.to_dict(), "seed": seed, "epoch": state.epoch,
                  "theta": theta, "theta_se": se, "anchors": anchors, "scores": scores,
                  "candidates": list(self.pool), "used": sorted(state.used), "chosen": chosen,
                  "timing": {"score_seconds": round(score_s, 6), "decide_seconds": round(decide_s, 6)},
                  "wall": time.time()}
        append_decision(self.path, record)
        self.records.append(record)
        return steps_of(record)

    # -- scoring ------------------------------------------------------------------------------------------

    def _score(self, model: Any, tokenizer: Any) -> tuple[dict[str, list[float]], float | None, float | None,
                                                          dict[str, Any] | None]:
        needs = self.strategy.needs
        scores: dict[str, list[float]] = {}
        theta = se = None
        anchors = None
        if self.b is not None:
            scores["b"] = list(self.b)
        if not set(needs) & {"theta", "loss", "p", "ref_loss"}:
            return scores, theta, se, anchors
        backend = sc.backend_for(model, tokenizer)
        pool_items = [self.items[i] for i in self.pool]
        if "theta" in needs:
            correct = sc.anchor_answers(backend, self.anchors, mode=self.anchor_mode, template=self.template,
                                        batch=self.score_batch)
            theta, se = estimate_theta(correct, self.anchor_b, self.strategy.options.prior_sd)
            anchors = {"ids": [it.id for it in self.anchors], "correct": correct, "b": list(self.anchor_b)}
        if "loss" in needs or "ref_loss" in needs:
            scores["loss"] = sc.item_losses(backend, pool_items, target=self.target, template=self.template,
                                            batch=self.score_batch)
        if "ref_loss" in needs:
            if self.ref_loss is None:  # the first decision, on the base model: the reference
                self.ref_loss = list(scores["loss"])
            scores["ref_loss"] = list(self.ref_loss)
        if "p" in needs:
            scores["p"] = sc.answer_probabilities(backend, pool_items, target=self.target, template=self.template,
                                                  batch=self.score_batch)
        return scores, theta, se, anchors
