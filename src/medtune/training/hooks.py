"""What the training loop calls back into, as protocols: the loop imports no module that implements them.

Two kinds of callback exist. A :class:`~medtune.training.planner.StepPlanner` decides which items the next
optimizer steps hold (the adaptive curricula of :mod:`medtune.adaptive`). A :class:`StepHook` looks at the model
after some steps without changing it (the in-training anchor check of :mod:`medtune.anchors.check`). The
loop only knows these protocols; :func:`medtune.training.train` plugs the implementations in, so the loop stays
a recipe of named steps that any caller can extend without the loop importing scoring or estimation code.

``train`` finds the hooks a run's settings ask for by name, in :data:`SETTINGS_HOOKS`: a registry whose built-in
(the anchor check, ``eval_anchors``) is a ``"module:attribute"`` reference imported on first use, as every
registry's built-ins are. So nothing in ``medtune.training`` imports the anchor check, which sits above training
(it scores the model through :mod:`medtune.training.scores` and estimates with :mod:`medtune.anchors`), and
``train`` runs it for every caller alike: the stage, the CLI, the grid and a Python caller.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from medtune.registry import Registry
from medtune.training.planner import StepPlanner, check_next_steps

__all__ = ["SETTINGS_HOOKS", "StepHook", "StepPlanner", "check_next_steps", "settings_hooks"]


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


# name → a function (run settings, training item ids) → the hook those settings ask for, or None.
SettingsHook = Callable[..., "StepHook | None"]
SETTINGS_HOOKS: Registry[SettingsHook] = Registry(
    "step hook", builtins={"anchor_eval": "medtune.anchors.check:anchor_check_hook"},
    hint="a plugin registers more (SETTINGS_HOOKS.register)")


def settings_hooks(config: Any, *, training_ids: set[str] | None = None) -> list[StepHook]:
    """The hooks ``config`` asks for, built now (their inputs read and checked before any model loads)."""
    found = (factory(config, training_ids=training_ids) for _, factory in SETTINGS_HOOKS.items())
    return [hook for hook in found if hook is not None]
