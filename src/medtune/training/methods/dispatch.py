"""What the training loop calls: the run's method spec prepares the model and builds the optimizer.

These functions take the run's config and look its method up in the registry, so the loop itself never
branches on a method name. The learning-rate schedule does not depend on the method and is built here too.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from medtune.errors import ConfigError
from medtune.training.methods.base import MethodSpec, get_method, trainable_parameters

if TYPE_CHECKING:
    from medtune.training.config import TrainSettings


def method_of(config: TrainSettings) -> MethodSpec:
    """The spec of ``config.method``, checked to read only settings the config has (a plugin's typo fails here)."""
    spec = get_method(config.method)
    missing = [s for s in spec.settings if not hasattr(config, s)]
    if missing:
        raise ConfigError(f"method '{spec.name}' reads setting(s) {', '.join(missing)}, which the training "
                          "config does not have")
    return spec


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute decoder-layer activations in backward (non-reentrant, so frozen embeddings need no hook)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"{type(model).__name__} does not support gradient checkpointing")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name; the old one warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def prepare_model(model: nn.Module, config: TrainSettings) -> nn.Module:
    """Set which parameters train for ``config.method`` (the model is already loaded as the method needs)."""
    spec = method_of(config)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return spec.prepare(model, config)


def build_optimizer(model: nn.Module, config: TrainSettings) -> torch.optim.Optimizer:
    """The optimizer of ``config.method`` over the model's trainable parameters."""
    if not trainable_parameters(model):
        raise ConfigError("no parameter is trainable")
    return method_of(config).build_optimizer(model, config)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainSettings, total_steps: int):
    """Linear warm-up, then constant / linear / cosine decay to zero at ``total_steps``."""
    warm = max(0, config.warmup_steps)

    def factor(step: int) -> float:  # step = optimizer steps already taken
        if warm and step < warm:
            return (step + 1) / warm
        if config.scheduler == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if config.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
