"""A fine-tuning method defined outside medtune, as a plugin would: only the normalisation weights train.

Importing the module registers ``norm-only`` (``MEDTUNE_PLUGINS=medtune_test_method``). It saves a full
``model/`` and uses the generic optimizer (plain AdamW), so the trainer must take all of that from the spec.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medtune.errors import ConfigError
from medtune.training.methods import MethodSpec, register_method


def is_norm(module: nn.Module) -> bool:
    """LayerNorm and RMSNorm layers, including model-specific classes such as ``LlamaRMSNorm``."""
    return isinstance(module, nn.LayerNorm | nn.RMSNorm) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


def norm_parameter_names(model: nn.Module) -> set[str]:
    return {f"{mod_name}.{p_name}" if mod_name else p_name
            for mod_name, mod in model.named_modules() if is_norm(mod)
            for p_name, _ in mod.named_parameters(recurse=False)}


class NormOnly(MethodSpec):
    """Freeze everything, then unfreeze the normalisation layers' own parameters."""

    def prepare(self, model: nn.Module, config: Any) -> nn.Module:
        names = norm_parameter_names(model)
        if not names:
            raise ConfigError(f"{type(model).__name__} has no normalisation layers")
        for name, p in model.named_parameters():
            p.requires_grad_(name in names)
        return model


NORM_ONLY = register_method(NormOnly(
    name="norm-only", summary="only the normalisation weights train (AdamW); saves a full model/",
    is_adapter=False, settings=("optim",),
))
