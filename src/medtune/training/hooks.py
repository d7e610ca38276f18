"""What the training loop calls back into, as protocols: the loop imports no module that implements them.

Two kinds of callback exist. A :class:`~medtune.training.planner.StepPlanner` decides which items the next
optimizer steps hold (the adaptive curricula of :mod:`medtune.adaptive`). A :class:`StepHook` looks at the model
after some steps without changing it (the in-training anchor check of :mod:`medtune.training.anchor_check`). The
loop only knows these protocols; :func:`medtune.training.train` plugs the implementations in, so the loop stays
a recipe of named steps that any caller can extend without the loop importing scoring or estimation code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from medtune.training.planner import StepPlanner, check_next_steps

__all__ = ["StepHook", "StepPlanner", "check_next_steps"]


@runtime_checkable
class StepHook(Protocol):
    """A check that runs on the main process after some optimizer steps, with the model as it is then.

    It must leave the model, its gradients and every random-number generator as it found them, so a run with the
    hook ends with the same weights as one without it; its time is kept out of the steps' timings.
    """

    key: str  # the key its settings are written under in RUN_DIR/config.json

    def describe(self) -> dict[str, Any]:
        """JSON-able settings for ``config.json``."""
        ...

    def resume(self, run_dir: Path, step: int) -> Any:
        """Prepare to continue after ``step`` steps (0: a fresh run): drop what it logged after ``step``."""
        ...

    def due(self, step: int, total_steps: int) -> bool:
        """Whether it runs after optimizer step ``step``."""
        ...

    def run(self, model: Any, tokenizer: Any, *, step: int, epoch: int) -> dict[str, Any]:
        """Look at the model; returns the record it logged."""
        ...

    def tracked(self, record: dict[str, Any]) -> dict[str, float]:
        """The values of ``record`` that go to the experiment trackers."""
        ...
