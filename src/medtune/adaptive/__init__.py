"""Adaptive curricula: the next training items decided during training from the model being trained.

Public API: :func:`run_training_stage` (the training stage, plain or adaptive: items + order + settings, with
:class:`AdaptiveSettings` for an adaptive run → run folder; what ``medtune train`` and the grid call),
:func:`run_adaptive_training` (its adaptive half),
:class:`AdaptivePlanner` (the :class:`medtune.training.planner.StepPlanner` it hands the loop), the strategy
registry (:func:`register_adaptive`, :func:`get_adaptive`, :func:`adaptive_names`, :class:`AdaptiveStrategy`,
:class:`DecisionInputs`), :func:`replay_run` (what ``verify-order`` checks an adaptive run with) and
:func:`verify_run` (``verify-order``: a run's log against its plan, fixed or replayed). Modules:
``strategies`` (pure decisions), ``decisions`` (the log), ``replay`` (pure), ``verify``, ``scores`` (scoring at
decision points through :mod:`medtune.scoring.backends`), ``planner``, ``stage``.

Names are imported on first use, so the replay (which ``verify-order`` imports) loads neither torch nor the scorer.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AdaptiveStrategy": "medtune.adaptive.strategies",
    "DecisionInputs": "medtune.adaptive.strategies",
    "adaptive_names": "medtune.adaptive.strategies",
    "get_adaptive": "medtune.adaptive.strategies",
    "register_adaptive": "medtune.adaptive.strategies",
    "replay_run": "medtune.adaptive.replay",
    "VerifyResult": "medtune.adaptive.verify",
    "verify_run": "medtune.adaptive.verify",
    "AdaptivePlanner": "medtune.adaptive.planner",
    "AdaptiveSettings": "medtune.adaptive.stage",
    "run_adaptive_training": "medtune.adaptive.stage",
    "run_training_stage": "medtune.adaptive.stage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medtune.adaptive' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
