"""``galore``: full-parameter training with the gradients of the target matrices projected to low rank.

galore-torch's ``GaLoreAdamW`` / ``GaLoreAdafactor`` project the gradients of every adapted linear layer's
weight (:func:`find_target_modules`) to rank ``galore.rank``; other parameters get the plain update inside the
same optimizer. ``galore_adamw_8bit`` calls CUDA unconditionally in galore-torch, so on a CPU-only machine it
raises :class:`UnsupportedOnThisMachine` naming the alternatives. The run keeps a full ``model/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medtune.errors import ConfigError, UnsupportedOnThisMachine
from medtune.training.method_settings import GaloreSettings
from medtune.training.methods.base import (
    MethodSpec,
    find_target_modules,
    register_method,
    train_every_parameter,
    trainable_parameters,
)

if TYPE_CHECKING:
    from medtune.training.config import TrainSettings

GALORE_OPTIMS: tuple[str, ...] = ("galore_adamw", "galore_adafactor", "galore_adamw_8bit")


def galore_groups(model: nn.Module, config: TrainSettings) -> list[dict[str, Any]]:
    """Parameter groups: the target matrices (projected) and everything else that trains (plain update)."""
    targets = set(find_target_modules(model))
    galore, regular = [], []
    for name, p in trainable_parameters(model):
        module = name.rsplit(".", 1)[0]
        (galore if module in targets and p.dim() == 2 else regular).append(p)
    groups: list[dict[str, Any]] = []
    if regular:
        groups.append({"params": regular})
    if galore:
        settings = config.galore
        groups.append({"params": galore, "rank": settings.rank, "update_proj_gap": settings.update_proj_gap,
                       "scale": settings.scale, "proj_type": "std"})
    return groups


class GaloreMethod(MethodSpec):
    """GaLore: the optimizer is the method (``config.optim`` does not apply; ``galore.optim`` chooses)."""

    def prepare(self, model: nn.Module, config: TrainSettings) -> nn.Module:
        return train_every_parameter(model)

    def build_optimizer(self, model: nn.Module, config: TrainSettings) -> torch.optim.Optimizer:
        wd = config.weight_decay
        optim = config.galore.optim
        if optim == "galore_adamw_8bit":
            if not torch.cuda.is_available():
                raise UnsupportedOnThisMachine(
                    "galore_adamw_8bit needs CUDA (galore-torch's 8-bit optimizer calls torch.cuda unconditionally); "
                    "on this machine use --galore-optim galore_adamw or galore_adafactor"
                )
            from galore_torch import GaLoreAdamW8bit

            return GaLoreAdamW8bit(galore_groups(model, config), lr=config.lr, weight_decay=wd)
        if optim == "galore_adafactor":
            from galore_torch import GaLoreAdafactor

            return GaLoreAdafactor(galore_groups(model, config), lr=config.lr, weight_decay=wd,
                                   relative_step=False, scale_parameter=False, warmup_init=False)
        if optim == "galore_adamw":
            from galore_torch import GaLoreAdamW

            return GaLoreAdamW(galore_groups(model, config), lr=config.lr, weight_decay=wd)
        raise ConfigError(f"unknown GaLore optimizer '{optim}' (available: {', '.join(GALORE_OPTIMS)})")


GALORE = register_method(GaloreMethod(
    name="galore", summary="full-parameter training with low-rank projected gradients (GaLore); saves model/",
    is_adapter=False, default_optim="galore",
    settings_class=GaloreSettings, settings_group="galore",
))
