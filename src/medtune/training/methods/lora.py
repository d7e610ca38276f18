"""``lora`` and ``dora``: PEFT LoRA on every linear layer but the output head; the run keeps ``adapter/``.

DoRA (weight-decomposed LoRA) is the same adapter with PEFT's ``use_dora``: one spec class, two registered
instances. The target layers are found from the model (:func:`find_target_modules`) and matched by full name,
so the head is never caught by a suffix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from medtune.training.method_settings import LoraSettings
from medtune.training.methods.base import MethodSpec, find_target_modules, register_method

if TYPE_CHECKING:
    from medtune.training.config import TrainSettings

# The TrainSettings fields the LoRA family reads besides its own group (``lora``: LoraSettings).
LORA_SETTINGS: tuple[str, ...] = ("optim",)


def apply_lora(model: nn.Module, config: TrainSettings, *, use_dora: bool = False) -> nn.Module:
    """Wrap ``model`` in a PEFT LoRA (DoRA with ``use_dora``) model; only the adapter weights train."""
    from peft import LoraConfig, get_peft_model

    targets = find_target_modules(model)
    lora = config.lora
    lcfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        # Full names, matched exactly (a regex anchored at both ends), so the head is never caught by a suffix.
        target_modules="^(" + "|".join(n.replace(".", r"\.") for n in targets) + ")$",
        use_dora=use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lcfg)


@dataclass(frozen=True)
class LoraMethod(MethodSpec):
    """A LoRA-family adapter; ``use_dora`` makes it DoRA."""

    use_dora: bool = False

    def prepare(self, model: nn.Module, config: TrainSettings) -> nn.Module:
        return apply_lora(model, config, use_dora=self.use_dora)


LORA = register_method(LoraMethod(
    name="lora", summary="LoRA adapters on every linear layer but the head; saves adapter/", is_adapter=True,
    settings=LORA_SETTINGS, settings_class=LoraSettings, settings_group="lora",
))
DORA = register_method(LoraMethod(
    name="dora", summary="DoRA (weight-decomposed LoRA) adapters; saves adapter/", is_adapter=True,
    settings=LORA_SETTINGS, settings_class=LoraSettings, settings_group="lora", use_dora=True,
))
