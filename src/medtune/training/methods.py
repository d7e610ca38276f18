"""Fine-tuning methods: which parameters train, and with which optimizer.

- ``full``: every weight trains, AdamW.
- ``lora`` / ``dora``: PEFT LoRA (DoRA with ``use_dora``) on every linear layer but the output head.
- ``qlora``: the base is loaded in 4-bit NF4 with double quantisation (bitsandbytes, which runs on this
  CPU), LoRA on every ``Linear4bit`` but the head, 8-bit AdamW — paged where a GPU makes paging meaningful
  (bitsandbytes falls back to the non-paged optimizer on CPU anyway, with a warning, so we pick it directly).
- ``galore``: full-parameter training where the gradients of the target matrices are projected to rank
  ``galore_rank`` (galore-torch's ``GaLoreAdamW`` / ``GaLoreAdafactor``; other parameters get the plain
  update inside the same optimizer). ``galore_adamw_8bit`` calls CUDA unconditionally in galore-torch, so
  on a CPU-only machine it raises :class:`UnsupportedOnThisMachine` naming the alternatives.

Target modules are found from the model (every ``nn.Linear`` or bitsandbytes linear except the module
returned by ``get_output_embeddings()``), never hard-coded per architecture.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch
from torch import nn

from medtune.errors import ConfigError, UnsupportedOnThisMachine
from medtune.training.config import TrainConfig

log = logging.getLogger(__name__)


def _linear_types() -> tuple[type, ...]:
    types: list[type] = [nn.Linear]
    # A model can only hold bitsandbytes layers if bitsandbytes is loaded; importing it costs seconds.
    bnb = sys.modules.get("bitsandbytes")
    if bnb is not None:
        types += [bnb.nn.Linear4bit, bnb.nn.Linear8bitLt]
    return tuple(types)


def find_target_modules(model: nn.Module) -> list[str]:
    """Full names of the linear layers to adapt: all ``nn.Linear``/bnb linears except the output head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear = _linear_types()
    names = [name for name, mod in model.named_modules()
             if isinstance(mod, linear) and mod is not head and name]
    if not names:
        raise ConfigError("the model has no linear layers to adapt besides its output head")
    return names


def target_module_suffixes(model: nn.Module) -> list[str]:
    """The distinct leaf names of :func:`find_target_modules` (compact, for configs and logs)."""
    return sorted({n.rsplit(".", 1)[-1] for n in find_target_modules(model)})


def apply_lora(model: nn.Module, config: TrainConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = find_target_modules(model)
    lcfg = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        # Full names, matched exactly (a regex anchored at both ends), so the head is never caught by a suffix.
        target_modules="^(" + "|".join(n.replace(".", r"\.") for n in targets) + ")$",
        use_dora=config.dora or config.method == "dora",
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lcfg)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute decoder-layer activations in backward (non-reentrant, so frozen embeddings need no hook)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"{type(model).__name__} does not support gradient checkpointing")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name; the old one warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def prepare_model(model: nn.Module, config: TrainConfig) -> nn.Module:
    """Set which parameters train for ``config.method`` (the model is already loaded, 4-bit for qlora)."""
    method = config.method
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if method == "full" or method == "galore":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if method in ("lora", "dora"):
        return apply_lora(model, config)
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        if not (getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)):
            raise ConfigError("qlora needs a model loaded in 4-bit (load it through medtune.training.trainer)")
        # Checkpointing was enabled above when asked for (peft's own would switch to the reentrant variant).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return apply_lora(model, config)
    raise ConfigError(f"unknown method '{method}'")


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _galore_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    targets = set(find_target_modules(model))
    galore, regular = [], []
    for name, p in trainable_parameters(model):
        module = name.rsplit(".", 1)[0]
        (galore if module in targets and p.dim() == 2 else regular).append(p)
    groups: list[dict[str, Any]] = []
    if regular:
        groups.append({"params": regular})
    if galore:
        groups.append({"params": galore, "rank": config.galore_rank, "update_proj_gap": config.galore_update_proj_gap,
                       "scale": config.galore_scale, "proj_type": "std"})
    return groups


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for _, p in trainable_parameters(model)]
    if not params:
        raise ConfigError("no parameter is trainable")
    wd = config.weight_decay
    if config.method == "galore":
        if config.galore_optim == "galore_adamw_8bit":
            if not torch.cuda.is_available():
                raise UnsupportedOnThisMachine(
                    "galore_adamw_8bit needs CUDA (galore-torch's 8-bit optimizer calls torch.cuda unconditionally); "
                    "on this machine use --galore-optim galore_adamw or galore_adafactor"
                )
            from galore_torch import GaLoreAdamW8bit

            return GaLoreAdamW8bit(_galore_groups(model, config), lr=config.lr, weight_decay=wd)
        if config.galore_optim == "galore_adafactor":
            from galore_torch import GaLoreAdafactor

            return GaLoreAdafactor(_galore_groups(model, config), lr=config.lr, weight_decay=wd,
                                   relative_step=False, scale_parameter=False, warmup_init=False)
        from galore_torch import GaLoreAdamW

        return GaLoreAdamW(_galore_groups(model, config), lr=config.lr, weight_decay=wd)
    optim = config.optim or ("paged_adamw_8bit" if config.method == "qlora" else "adamw")
    if optim in ("paged_adamw_8bit", "adamw_8bit"):
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise UnsupportedOnThisMachine(
                f"{optim} needs bitsandbytes (pip install bitsandbytes); or use --optim adamw") from exc
        paged = optim.startswith("paged") and torch.cuda.is_available()
        cls = bnb.optim.PagedAdamW8bit if paged else bnb.optim.AdamW8bit
        return cls(params, lr=config.lr, weight_decay=wd)
    if optim == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=wd)
    raise ConfigError(f"unknown optimizer '{optim}' (adamw, adamw_8bit or paged_adamw_8bit)")


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """Linear warm-up, then constant / linear / cosine decay to zero at ``total_steps``."""
    import math

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
