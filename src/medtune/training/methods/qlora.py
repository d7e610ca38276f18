"""``qlora``: LoRA on a base loaded in 4-bit NF4 with double quantisation, 8-bit AdamW.

bitsandbytes runs on this CPU. The optimizer is 8-bit AdamW, paged where a GPU makes paging meaningful
(:func:`medtune.training.methods.base.standard_optimizer`). LoRA goes on every ``Linear4bit`` but the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from medtune.errors import ConfigError
from medtune.training.method_settings import LoraSettings
from medtune.training.methods.base import register_method
from medtune.training.methods.lora import LORA_SETTINGS, LoraMethod

if TYPE_CHECKING:
    from medtune.training.config import TrainSettings


@dataclass(frozen=True)
class QLoraMethod(LoraMethod):
    """LoRA over a quantised base: the base is made trainable-through (peft's k-bit preparation) first."""

    def prepare(self, model: nn.Module, config: TrainSettings) -> nn.Module:
        from peft import prepare_model_for_kbit_training

        if not (getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)):
            raise ConfigError(f"{self.name} needs a model loaded in {self.base_quantization} "
                              "(load it through medtune.training.trainer)")
        # Gradient checkpointing was enabled before, when asked for (peft's own would switch to the reentrant
        # variant).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return super().prepare(model, config)


QLORA = register_method(QLoraMethod(
    name="qlora", summary="LoRA on a 4-bit NF4 base, 8-bit AdamW (paged on a GPU); saves adapter/",
    is_adapter=True, base_quantization="4bit", default_optim="paged_adamw_8bit", settings=LORA_SETTINGS,
    settings_class=LoraSettings, settings_group="lora",
))
