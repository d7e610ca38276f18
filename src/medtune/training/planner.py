"""The hook that lets a run decide its next items during training: :class:`StepPlanner`.

Without a planner, :func:`medtune.training.train` trains the fixed plan of the order file. With one, the loop
asks the planner for the next optimizer steps at step 0 and whenever the steps it was given run out (every
``N`` steps for the planners of :mod:`medtune.adaptive`), passing the model as it is at that point; the planner
may score it (it must leave no gradients and consume no random numbers of torch, so the training itself is
unchanged by asking). Everything else — logging the realised ids, checkpoints, the learning-rate schedule —
stays the loop's.

Resume contract: decisions depend only on the run's seed, the model at the decision point and what the planner
logged. On ``--resume`` from the checkpoint of step ``S`` the loop calls :meth:`StepPlanner.resume` with ``S``:
the planner keeps the decisions it made before ``S`` (their model states are gone, their choices are logged),
drops any made at or after ``S`` (they are made again from the restored model, which is the same model) and
returns the steps after ``S`` that a kept decision already fixed. So a killed-and-resumed run makes the same
decisions, trains the same steps and ends with the same weights as an uninterrupted one.

This module is the loop's side of the contract only; it imports nothing of scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from medtune.training.data import PlannedStep


@runtime_checkable
class StepPlanner(Protocol):
    """What the training loop needs from something that chooses the next steps while training runs."""

    def total_steps(self) -> int:
        """The number of optimizer steps of the whole run (fixed up front: the schedule is built from it)."""
        ...

    def candidate_ids(self) -> Sequence[str]:
        """Every id a step may hold (the loop encodes these once)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able settings written under ``adaptive`` in ``config.json`` (``verify-order`` reads them)."""
        ...

    def resume(self, run_dir: Path, step: int) -> list[PlannedStep]:
        """Prepare to continue after ``step`` steps (0: a fresh run); return the steps already decided."""
        ...

    def next_steps(self, model: Any, tokenizer: Any, step: int) -> list[PlannedStep]:
        """Decide the steps after ``step``: at least one, numbered ``step + 1, step + 2, ...``."""
        ...


def check_next_steps(steps: Sequence[PlannedStep], done: int, total: int) -> list[PlannedStep]:
    """The planner's answer, checked: consecutive step numbers after ``done``, not past ``total``, each non-empty."""
    if not steps:
        raise RuntimeError(f"the step planner returned no step after step {done}")
    for k, ps in enumerate(steps, start=1):
        if ps.step != done + k or ps.step > total or not ps.ids:
            raise RuntimeError(f"the step planner returned step {ps.step} with {len(ps.ids)} ids after step "
                               f"{done + k - 1} (expected step {done + k} of {total}, with ids)")
    return list(steps)
