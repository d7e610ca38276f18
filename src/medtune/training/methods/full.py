"""``full``: every weight trains, AdamW (or ``--optim``); the run keeps a full ``model/``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from medtune.training.methods.base import MethodSpec, register_method, train_every_parameter

if TYPE_CHECKING:
    from medtune.training.config import TrainSettings


class FullMethod(MethodSpec):
    """Full-parameter fine-tuning."""

    def prepare(self, model: nn.Module, config: TrainSettings) -> nn.Module:
        return train_every_parameter(model)


FULL = register_method(FullMethod(
    name="full", summary="every weight trains (AdamW); saves a full model/", is_adapter=False,
    settings=("optim",),
))
