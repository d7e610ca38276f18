"""Fine-tuning methods: one :class:`MethodSpec` per method, looked up by name in a registry.

Built in: ``full`` (every weight, AdamW), ``lora`` / ``dora`` (PEFT adapters on every linear layer but the
head), ``qlora`` (LoRA on a 4-bit NF4 base, 8-bit AdamW), ``galore`` (full training with low-rank projected
gradients), ``knowtuning`` (two stages: knowledge augmentation, then DPO knowledge comparison; its stages
train ``knowtuning-lora`` or ``full``) and ``dpo`` (a LoRA adapter tuned by DPO on preference pairs in the planned
order; :mod:`.preference` is the TRL stage it shares with KnowTuning). A plugin adds a method by defining a spec
and calling :func:`register_method` when imported::

    class NormOnly(MethodSpec):
        def prepare(self, model, config): ...

    register_method(NormOnly(name="norm-only", summary="...", is_adapter=False))

Importing this package registers the built-ins, so ``get_method`` always knows them.
"""

# Importing registers the built-ins, in the order method_names() lists them (full, lora, dora, qlora, galore,
# knowtuning-lora, knowtuning, dpo).
from medtune.training.methods import full, lora, qlora, galore, knowtuning, dpo  # noqa: F401  # isort: skip
from medtune.training.methods.base import (
    STANDARD_OPTIMS,
    MethodSpec,
    StandardLoop,
    find_target_modules,
    get_method,
    method_help,
    method_names,
    register_method,
    save_pretrained_atomic,
    standard_optimizer,
    target_module_suffixes,
    train_every_parameter,
    trainable_parameters,
)
from medtune.training.methods.dispatch import (
    build_optimizer,
    build_scheduler,
    enable_gradient_checkpointing,
    method_of,
    prepare_model,
)
from medtune.training.methods.galore import GALORE_OPTIMS
from medtune.training.methods.lora import apply_lora

__all__ = [
    "GALORE_OPTIMS", "STANDARD_OPTIMS", "MethodSpec", "StandardLoop", "apply_lora", "build_optimizer",
    "build_scheduler", "enable_gradient_checkpointing", "find_target_modules", "get_method", "method_help",
    "method_names", "method_of", "prepare_model", "register_method", "save_pretrained_atomic", "standard_optimizer",
    "target_module_suffixes", "train_every_parameter", "trainable_parameters",
]
