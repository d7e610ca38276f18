"""A fine-tuning method with settings of its own, defined outside medtune as a plugin would define it.

``norm-subset`` trains only normalisation weights, like ``norm-only``, but its settings class decides which and
how they start: one module holds the settings class, the spec naming it, and the registration. Importing it
(``MEDTUNE_PLUGINS=medtune_test_norm_subset``) gives the training settings a ``norm_subset`` group:
``--norm-subset-skip-final`` / ``--norm-subset-scale`` on the command line, ``training: {norm_subset: {...}}`` in
a grid.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from medtune.errors import ConfigError
from medtune.settings import Settings
from medtune.training.methods import MethodSpec, register_method

# The settings each prepare() saw, in this process (what the tests compare with what they set).
SEEN: list[dict[str, Any]] = []


class NormSubsetSettings(Settings):
    """Which normalisation weights train, and what they start from."""

    skip_final: bool = Field(False, description="leave the final normalisation (before the head) frozen")
    scale: float = Field(1.0, gt=0, description="multiply the trained normalisation weights by this first")


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm | nn.RMSNorm) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


class NormSubset(MethodSpec):
    """Freeze everything, then unfreeze (and rescale) the chosen normalisation layers' own parameters."""

    def prepare(self, model: nn.Module, config: Any) -> nn.Module:
        settings = config.method_settings()
        assert isinstance(settings, NormSubsetSettings)
        SEEN.append(settings.model_dump())
        final = getattr(getattr(model, "model", model), "norm", None)
        chosen = {id(p) for mod in model.modules() if is_norm(mod) and not (settings.skip_final and mod is final)
                  for p in mod.parameters(recurse=False)}
        if not chosen:
            raise ConfigError(f"{type(model).__name__} has no normalisation layers to train")
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen)
            if id(p) in chosen:
                with torch.no_grad():
                    p.mul_(settings.scale)
        return model


NORM_SUBSET = register_method(NormSubset(
    name="norm-subset", summary="only (some) normalisation weights train; saves a full model/", is_adapter=False,
    settings=("optim",), settings_class=NormSubsetSettings,
))
