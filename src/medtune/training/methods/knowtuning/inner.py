"""What trains inside KnowTuning's stages: LoRA on chosen layers (the authors' q_proj/v_proj), or every weight.

The KA stage is a run of the standard loop, so its method must be a registered spec that ``verify-order`` and
evaluation can read back from ``RUN_DIR/ka/config.json``. Plain ``lora`` adapts every linear layer; the authors
adapted only the attention's query and value projections, so the KA stage uses ``knowtuning-lora``: LoRA on the
layers named by ``knowtuning.lora_targets`` (every linear layer but the head when unset, exactly as ``lora``).
The KC stage hands TRL the same :func:`lora_config`, so both stages adapt the same layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from medtune.errors import ConfigError
from medtune.training.method_settings import LoraSettings
from medtune.training.methods.base import MethodSpec, find_target_modules, register_method
from medtune.training.methods.lora import LORA_SETTINGS

if TYPE_CHECKING:
    from medtune.training.config import TrainSettings

INNER_LORA = "knowtuning-lora"


def lora_target_names(model: nn.Module, targets: list[str] | None) -> list[str]:
    """Full names of the layers to adapt: every linear layer but the head, or those whose leaf name is a target."""
    names = find_target_modules(model)
    if targets is None:
        return names
    chosen = [n for n in names if n.rsplit(".", 1)[-1] in set(targets)]
    if not chosen:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ConfigError(f"knowtuning.lora_targets {targets} match no linear layer of {type(model).__name__} "
                          f"(its layers: {', '.join(leaves)})")
    return chosen


def lora_config(model: nn.Module, config: TrainSettings) -> Any:
    """The PEFT ``LoraConfig`` of both stages: the run's rank, alpha and dropout on :func:`lora_target_names`."""
    from peft import LoraConfig

    names = lora_target_names(model, config.knowtuning.lora_targets)
    return LoraConfig(
        r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
        # Full names, matched exactly, so the head is never caught by a suffix (as medtune's lora does).
        target_modules="^(" + "|".join(n.replace(".", r"\.") for n in names) + ")$",
        bias="none", task_type="CAUSAL_LM",
    )


@dataclass(frozen=True)
class KnowTuningLora(MethodSpec):
    """LoRA on ``knowtuning.lora_targets``: the adapter both KnowTuning stages train."""

    def prepare(self, model: nn.Module, config: TrainSettings) -> nn.Module:
        from peft import get_peft_model

        return get_peft_model(model, lora_config(model, config))


KNOWTUNING_LORA = register_method(KnowTuningLora(
    name=INNER_LORA, summary="LoRA on the layers named by knowtuning.lora_targets (KnowTuning's stages use it); "
                             "saves adapter/", is_adapter=True,
    settings=(*LORA_SETTINGS, "knowtuning"), settings_class=LoraSettings, settings_group="lora",
))
