"""The resolved configuration of one training run (written to ``RUN_DIR/config.json``).

Batch vocabulary, fixed so that runs with different strategies or process counts are comparable:

- ``batch_size`` items form one micro-batch (one forward/backward) in a single-process run;
- ``grad_accum`` micro-batches form one optimizer step;
- the *global batch* ``B = batch_size * grad_accum`` is the number of consecutive items of the order that
  one optimizer step sees. It never depends on the number of processes: with ``W`` processes, rank ``r``
  takes a fixed contiguous slice of the same ``B`` items (see :mod:`medtune.training.data`).

``packing=True`` turns each micro-batch into one padding-free row (items concatenated next-fit in order,
``position_ids`` restarting per item so attention stays within each item); ``packing=False`` pads the
micro-batch to its longest item. Both keep the order exactly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medtune.errors import ConfigError

Method = Literal["full", "lora", "dora", "qlora", "galore"]
METHODS: tuple[str, ...] = ("full", "lora", "dora", "qlora", "galore")
TARGETS: tuple[str, ...] = ("letter", "letter+explanation", "option", "option+explanation")
GALORE_OPTIMS: tuple[str, ...] = ("galore_adamw", "galore_adafactor", "galore_adamw_8bit")


@dataclass
class TrainConfig:
    """Everything that determines a run. Defaults suit the tiny model; presets adjust them for real models."""

    method: str = "lora"
    model: str = "tiny"
    epochs: int | None = None  # None: as many as the order file holds
    max_steps: int | None = None
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: Literal["constant", "linear", "cosine"] = "constant"
    max_grad_norm: float | None = 1.0
    dtype: Literal["fp32", "bf16"] = "fp32"
    packing: bool = True
    # Recompute each decoder layer's activations in the backward pass instead of keeping them: less memory
    # (what TRL's SFTConfig does by default), about a third more compute. Off: on CPU, RAM is rarely the limit.
    gradient_checkpointing: bool = False
    target: str = "letter"
    template: str = "paper"
    add_eos: bool = True
    seed: int = 0
    save_every: int | None = None
    keep_checkpoints: int | None = 2
    # LoRA / DoRA / QLoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    dora: bool = False
    # QLoRA optimizer: "paged_adamw_8bit" (the paper's) or "adamw"
    optim: str | None = None
    # GaLore
    galore_optim: str = "galore_adamw"
    galore_rank: int = 64
    galore_update_proj_gap: int = 200
    galore_scale: float = 0.25
    # Tiny model (``model="tiny"``) size overrides and tokenizer vocabulary
    tiny: dict[str, int] = field(default_factory=dict)
    tiny_vocab_size: int = 2048
    report_to: list[str] = field(default_factory=list)
    preset: str | None = None

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum

    def validate(self) -> TrainConfig:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method '{self.method}' (available: {', '.join(METHODS)})")
        if self.target not in TARGETS:
            raise ConfigError(f"unknown target '{self.target}' (available: {', '.join(TARGETS)})")
        if self.galore_optim not in GALORE_OPTIMS:
            raise ConfigError(f"unknown GaLore optimizer '{self.galore_optim}' (available: {', '.join(GALORE_OPTIMS)})")
        if self.dtype not in ("fp32", "bf16"):
            raise ConfigError(f"unknown dtype '{self.dtype}' (use fp32, or bf16 for mixed precision)")
        if self.scheduler not in ("constant", "linear", "cosine"):
            raise ConfigError(f"unknown scheduler '{self.scheduler}' (constant, linear or cosine)")
        for name in ("batch_size", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError("epochs must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("max_steps must be at least 1")
        if self.save_every is not None and self.save_every < 1:
            raise ConfigError("save_every must be at least 1")
        if self.lr <= 0:
            raise ConfigError("lr must be positive")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(**data).validate()

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls.from_dict(data.get("train", data))


# The orders study (Yang et al. 2024): QLoRA r 16, alpha 64, dropout 0.1, all linear layers but the head,
# paged 8-bit AdamW, max length 512, loss on the answer letter only, the paper's prompt.
PRESETS: dict[str, dict[str, Any]] = {
    "paper-qlora": {
        "method": "qlora",
        "lora_r": 16,
        "lora_alpha": 64,
        "lora_dropout": 0.1,
        "max_length": 512,
        "target": "letter",
        "template": "paper",
        "optim": "paged_adamw_8bit",
    },
}


def apply_preset(config: TrainConfig, name: str | None, explicit: set[str] | None = None) -> TrainConfig:
    """Overlay preset ``name`` on ``config``, leaving fields the user set explicitly (``explicit``) alone."""
    if not name:
        return config
    try:
        preset = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset '{name}' (available: {', '.join(PRESETS)})") from None
    explicit = explicit or set()
    for key, value in preset.items():
        if key not in explicit:
            setattr(config, key, value)
    config.preset = name
    return config
