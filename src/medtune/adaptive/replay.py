"""Replay an adaptive run's decisions from their logged inputs, and the steps they imply.

``verify-order`` on an adaptive run (``config.json`` has an ``adaptive`` section) calls
:func:`replay_run`: each record of ``decisions.jsonl`` is checked against the run's settings (strategy, options,
the seed derived from the run's seed, the candidate pool, the decision points every ``N`` steps), its pass
bookkeeping and ability estimate are recomputed, and its logged inputs are fed back through the strategy's pure
``decide``, which must return the logged choice. The replayed steps are then compared with ``train_log.jsonl`` by
:mod:`medtune.adaptive.verify` like a fixed plan. This module imports neither torch nor the scorer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtune.adaptive.decisions import read_decisions
from medtune.adaptive.strategies import (
    REFRESHED,
    DecisionInputs,
    decision_rescore,
    decision_seed,
    estimate_theta,
    get_adaptive,
    pass_state,
    scored_at_after,
)
from medtune.run_record import read_run_record
from medtune.training.data import PlannedStep


def inputs_of(record: Mapping[str, Any], total_steps: int) -> DecisionInputs:
    """A logged decision's inputs, as ``decide`` was given them."""
    return DecisionInputs(step=int(record["step"]), total_steps=total_steps,
                          n=int(record["n_steps"]) * int(record["global_batch"]),
                          candidates=tuple(record["candidates"]), used=frozenset(record.get("used") or ()),
                          scores={k: list(v) for k, v in (record.get("scores") or {}).items()},
                          theta=record.get("theta"))


def steps_of(record: Mapping[str, Any]) -> list[PlannedStep]:
    """The optimizer steps a decision fixes: consecutive global batches of its chosen ids."""
    b, chosen = int(record["global_batch"]), list(record["chosen"])
    first = int(record["first_step"])
    return [PlannedStep(first + k, int(record.get("epoch", 0)), k * b, tuple(chosen[k * b:(k + 1) * b]))
            for k in range(int(record["n_steps"]))]


@dataclass
class Replay:
    steps: list[PlannedStep]
    bad_step: int | None = None
    message: str = ""


def replay_decisions(records: Sequence[Mapping[str, Any]], adaptive: Mapping[str, Any], run_seed: int) -> Replay:
    """Check every decision and return the steps they fix; the first failing decision names its first step."""
    strategy = get_adaptive(adaptive["strategy"], adaptive.get("options"))
    every, total, gb = int(adaptive["every"]), int(adaptive["total_steps"]), int(adaptive["global_batch"])
    pool = list(adaptive["candidates"])
    steps: list[PlannedStep] = []
    previous: list[tuple[int, list[str]]] = []
    first_loss: list[float] | None = None
    expected_step = 0
    for k, rec in enumerate(records):
        first = int(rec.get("first_step", expected_step + 1))
        where = f"step {first} (decision {k} after step {rec.get('step')})"

        def bad(msg: str, first: int = first, where: str = where, done: list[PlannedStep] = steps) -> Replay:
            return Replay(done, first, f"{where}: {msg}")

        if int(rec["decision"]) != k or int(rec["step"]) != expected_step or first != expected_step + 1:
            return Replay(steps, expected_step + 1, f"step {expected_step + 1}: decision {k} of the log is "
                          f"numbered {rec['decision']} and taken after step {rec['step']}, expected after step "
                          f"{expected_step} (a decision is missing, repeated or moved)")
        n_steps = min(every, total - expected_step)
        if int(rec["n_steps"]) != n_steps or int(rec.get("global_batch", -1)) != gb:
            return bad(f"the decision covers {rec['n_steps']} steps of {rec.get('global_batch')} items, the run's "
                       f"settings give {n_steps} of {gb}")
        if rec["strategy"] != adaptive["strategy"] or dict(rec.get("options") or {}) != dict(
                adaptive.get("options") or {}):
            return bad(f"logged strategy {rec['strategy']} {rec.get('options')}, the run's is "
                       f"{adaptive['strategy']} {adaptive.get('options')}")
        if int(rec["seed"]) != decision_seed(run_seed, expected_step):
            return bad(f"seed {rec['seed']} is not the one the run's seed gives "
                       f"({decision_seed(run_seed, expected_step)})")
        if list(rec["candidates"]) != pool:
            return bad("the candidate ids differ from the run's pool (the order file's ids)")
        state = pass_state(previous, len(pool), n_steps * gb, strategy.options.replacement)
        if int(rec.get("epoch", 0)) != state.epoch or set(rec.get("used") or ()) != set(state.used):
            return bad(f"the logged pass (epoch {rec.get('epoch')}, {len(rec.get('used') or ())} used ids) is not "
                       f"what the earlier decisions give (epoch {state.epoch}, {len(state.used)} used ids)")
        scores = rec.get("scores") or {}
        if "theta" in strategy.needs:
            anchors = rec.get("anchors") or {}
            prior = anchors.get("prior") or {"mean": 0.0, "sd": strategy.options.prior_sd}
            try:
                theta, _ = estimate_theta(anchors["correct"], anchors["b"], float(prior["sd"]), a=anchors.get("a"),
                                          prior_mean=float(prior["mean"]))
            except (KeyError, TypeError):
                return bad("the ability decision lacks its anchor answers (anchors.correct, anchors.b)")
            if rec.get("theta") is None or not math.isclose(theta, float(rec["theta"]), rel_tol=1e-9, abs_tol=1e-9):
                return bad(f"logged theta {rec.get('theta')}, the anchor answers give {theta}")
        if set(strategy.needs) & REFRESHED:
            problem = _check_rescoring(rec, records[k - 1] if k else None, records[:k], pool, adaptive, strategy,
                                       state.used)
            if problem:
                return bad(problem)
        if "ref_loss" in strategy.needs:
            if first_loss is None:
                first_loss = list(scores.get("ref_loss") or ())
            if list(scores.get("ref_loss") or ()) != first_loss:
                return bad("the reference losses changed between decisions")
        missing = [n for n in strategy.needs if n != "theta" and n not in scores]
        if missing:
            return bad(f"the decision lacks the scores {missing}")
        replayed = strategy.decide(inputs_of(rec, total), int(rec["seed"]))
        if replayed != list(rec["chosen"]):
            diff = next((i for i, (a, b) in enumerate(zip(replayed, rec["chosen"], strict=False)) if a != b),
                        min(len(replayed), len(rec["chosen"])))
            return bad(f"replaying the decision from its logged inputs chooses a different item at position {diff} "
                       f"({len(replayed)} ids replayed, {len(rec['chosen'])} logged)")
        steps.extend(steps_of(rec))
        previous.append((int(rec.get("epoch", 0)), list(rec["chosen"])))
        expected_step += n_steps
    return Replay(steps)


def _check_rescoring(rec: Mapping[str, Any], previous: Mapping[str, Any] | None,
                     earlier: Sequence[Mapping[str, Any]], pool: list[str], adaptive: Mapping[str, Any],
                     strategy: Any, used: frozenset[str]) -> str:
    """Why a decision's re-scored ids or carried-over scores are not what the run's rule gives ('' when they are).

    Logs written before partial re-scoring have no ``rescored`` field: every item was scored at every decision.
    """
    if "rescored" not in rec:
        return ""
    rule = adaptive.get("rescore", "all")
    n = int(rec["n_steps"]) * int(rec["global_batch"])
    expected = [pool[i] for i in decision_rescore(rule, pool, scored_at_after(earlier, pool), used,
                                                  strategy.options.replacement, n, int(rec["seed"]))]
    if list(rec["rescored"]) != expected:
        return (f"the re-scored items are not the {len(expected)} the rule picks (rescore {rule}: those still "
                "available in this pass that were scored longest ago)")
    if previous is None:
        return ""
    fresh = set(rec["rescored"])
    for name in REFRESHED & set(rec.get("scores") or {}):
        now, before = rec["scores"][name], (previous.get("scores") or {}).get(name)
        if before is None:
            return f"the previous decision has no '{name}' scores to carry over"
        stale = next((c for i, c in enumerate(pool) if c not in fresh and now[i] != before[i]), None)
        if stale is not None:
            return f"item '{stale}' was not re-scored but its '{name}' changed since the previous decision"
    return ""


def replay_run(run_dir: str | Path) -> Replay:
    """Replay the decisions of the adaptive run in ``run_dir`` (its ``config.json`` and ``decisions.jsonl``)."""
    run_dir = Path(run_dir)
    meta = read_run_record(run_dir)
    return replay_decisions(read_decisions(run_dir), meta["adaptive"], int(meta["train"].get("seed", 0)))
