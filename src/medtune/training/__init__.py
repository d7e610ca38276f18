"""Fine-tuning in exactly the planned order (full, LoRA/DoRA, QLoRA, GaLore, plugins), with a verifiable run log.

Public API: :func:`run_training` (the stage: items + order → run folder), :func:`train` (Python, items in
memory), :class:`TrainSettings` (the settings schema), :func:`get_method` /
:func:`register_method` (the method registry). Modules: ``config`` (settings, presets), ``stage`` (the stage
function), ``data`` (order → steps → micro-batches, completion-only labels), ``methods`` (one spec per method),
``trainer`` (the loop), ``hooks`` (what it calls back into), ``scores`` (the model scored while it trains),
``tiny``, ``checkpoint``, ``runlog``, ``export``, ``pretrain``, ``plots``.

Names are imported on first use, so reading the settings schema (e.g. to validate a grid config in a driver
process) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PRESETS": "medtune.training.config",
    "TrainSettings": "medtune.training.config",
    "TrainConfig": "medtune.training.config",  # the previous release's name (a DeprecationWarning)
    "apply_preset": "medtune.training.config",
    "resolve_training_settings": "medtune.training.config",
    "run_training": "medtune.training.stage",
    "TrainResult": "medtune.training.trainer",
    "train": "medtune.training.trainer",
    "get_method": "medtune.training.methods",
    "register_method": "medtune.training.methods",
    "method_names": "medtune.training.methods",
}

__all__ = sorted(set(_EXPORTS) - {"TrainConfig"})


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medtune.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
