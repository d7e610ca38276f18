"""The training stage's settings: one schema, one default per field (written to ``RUN_DIR/config.json``).

``medtune train`` builds one command-line option per field from this class, the grid's ``training:`` section is
this class plus the grid's axes, and :func:`resolve_training_settings` is the one place where a preset, the grid's
shared settings, a model's own settings and explicit values are layered — so a default or a precedence rule
lands once.

Batch vocabulary, fixed so that runs with different strategies or process counts are comparable:

- ``batch_size`` items form one micro-batch (one forward/backward) in a single-process run;
- ``grad_accum`` micro-batches form one optimizer step;
- the *global batch* ``B = batch_size * grad_accum`` is the number of consecutive items of the order that
  one optimizer step sees. It never depends on the number of processes: with ``W`` processes, rank ``r``
  takes a fixed contiguous slice of the same ``B`` items (see :mod:`medtune.training.data`).

A method's own settings are a group, one schema per method family (:mod:`medtune.training.method_settings`):
``lora``, ``galore``, ``knowtuning`` are fields here, a plugin method's group is held beside them and written at
the same level (``training: {lora: {r: 16}, norm_only: {final: false}}``). The flat keys of earlier versions
(``lora_r``) are read into their groups with a DeprecationWarning, for one release.

``packing=True`` turns each micro-batch into one padding-free row (items concatenated next-fit in order,
``position_ids`` restarting per item so attention stays within each item); ``packing=False`` pads the
micro-batch to its longest item. Both keep the order exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_serializer, model_validator

from medtune.chat_format import CHAT_DESCRIPTION, SYSTEM_PROMPT_DESCRIPTION, ChatChoice
from medtune.errors import ConfigError
from medtune.settings import Settings, format_validation_error, renamed_names, validate_settings
from medtune.training.method_settings import (
    BUILTIN_GROUPS,
    FLAT_KEYS,
    GaloreSettings,
    KnowTuningSettings,
    LoraSettings,
    check_method_name,
    merge_settings_layers,
    method_group,
    nest_flat_keys,
    plugin_settings_groups,
)
from medtune.training.method_settings import GENERATOR_STEPS as GENERATOR_STEPS  # kept importable from here
from medtune.training.method_settings import GaloreOptim as GaloreOptim
from medtune.training.validation_settings import ValidationSettings

TARGETS: tuple[str, ...] = ("letter", "letter+explanation", "option", "option+explanation")
Target = Literal["letter", "letter+explanation", "option", "option+explanation"]
Optim = Literal["adamw", "adamw_8bit", "paged_adamw_8bit"]

# The anchor estimators (medtune.anchors.estimate.ESTIMATORS, spelled out so reading the schema imports no numpy).
Estimator = Literal["weighted", "pirt", "gpirt"]

# Fields that a grid sets per cell (its axes) rather than in its shared ``training:`` section.
CELL_FIELDS: tuple[str, ...] = ("method", "model", "seed")


class TrainSettings(Settings):
    """Everything that determines a training run. Defaults suit the tiny model; presets adjust them for real models."""

    method: str = Field("lora", description="fine-tuning method (a registered name: full, lora, dora, qlora, "
                                            "galore, or a plugin's)")
    model: str = Field("tiny", description="base model: tiny, smollm2, a local folder, a .gguf file or a hub name")
    epochs: int | None = Field(None, ge=1, description="epochs (default: as many as the order file holds)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(4, ge=1, description="items per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_length: int = Field(512, ge=2, description="max tokens per item (the prompt's start is cut first)")
    lr: float = Field(3e-4, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="learning-rate schedule after warm-up (linear/cosine decay to 0 at the last step)")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the gradient norm (None: no clipping)")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 mixed precision on a GPU with bf16, fp16 with loss scaling on one without "
                            "(V100, T4), fp32 on a CPU; bf16: mixed precision (used only where the hardware runs "
                            "bf16 natively, else fp32 with a warning); fp16: GPUs only")
    attn_implementation: Literal["sdpa", "flash_attention_2", "flash_attention_3", "eager"] = Field(
        "sdpa", description="attention kernel: sdpa (PyTorch's), flash_attention_2/3 (where installed: packed rows "
                            "then run as variable-length sequences without a mask), eager")
    distributed: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="with several processes: ddp (each holds the model) or fsdp (FSDP2: weights, gradients "
                            "and optimizer states sharded); auto: fsdp for methods that train every weight, ddp "
                            "for adapters")
    gpu_memory: float | None = Field(
        None, gt=0, description="GiB of memory per GPU to plan against (default: read from this machine's GPU; "
                                "on a CPU machine no limit is checked unless this is set)")
    memory_check: bool = Field(
        True, description="refuse a run whose memory plan does not fit the GPU before it starts")
    packing: bool = Field(True, description="padding-free order-preserving packing")
    # Recompute each decoder layer's activations in the backward pass instead of keeping them: less memory
    # (what TRL's SFTConfig does by default), about a third more compute. Off: on CPU, RAM is rarely the limit.
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in backward: less memory, about a third more compute")
    target: Target = Field("letter", description="what the loss is on: the answer letter or option text "
                                                 "(+ the explanation)")
    template: str = Field("paper", description="prompt template (as for scoring)")
    chat: ChatChoice = Field("auto", description=CHAT_DESCRIPTION + " (the run records what it used)")
    system_prompt: str | None = Field(None, description=SYSTEM_PROMPT_DESCRIPTION)
    add_eos: bool = Field(True, description="append EOS to the completion (trained on, like the answer)")
    seed: int = Field(0, description="seed (initialisation, dropout)")
    save_every: int | None = Field(None, ge=1, description="checkpoint every N steps")
    keep_checkpoints: Annotated[int, Field(ge=1)] | Literal["all"] | None = Field(
        2, description="checkpoints kept on disk (all, or None: every one)")
    # In-training accuracy check on anchor items (medtune.anchors.check): every eval_every steps and at
    # the end, the model being trained answers the anchors of an anchors.json and the full-test accuracy they
    # estimate is appended to RUN_DIR/anchor_eval.jsonl. Scoring consumes no random numbers: training is unchanged.
    eval_anchors: str | None = Field(None, description="anchors.json (medtune evaluate anchors choose): estimate "
                                                       "test accuracy from its anchor items during training")
    eval_items: str | None = Field(None, description="items file holding the anchor items (e.g. the test split's "
                                                     "items.parquet); needed with eval_anchors")
    eval_split: str | None = Field(None, description="split of eval_items the anchors are in (default: every item)")
    eval_every: int | None = Field(None, ge=1, description="anchor check every N optimizer steps (default: only "
                                                           "after the last step)")
    eval_estimator: Estimator = Field("gpirt", description="anchor estimate reported (weighted, pirt, gpirt; "
                                                           "the others are recorded beside it)")
    optim: Optim | None = Field(None, description="optimizer (default: the method's own: paged 8-bit AdamW for "
                                                  "qlora, AdamW otherwise)")
    # The methods' own settings, one group each (medtune.training.method_settings); a plugin method's group is
    # held beside them (see settings_group) and written at the same level.
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA / DoRA / QLoRA adapter")
    galore: GaloreSettings = Field(default_factory=GaloreSettings, description="GaLore optimizer")
    knowtuning: KnowTuningSettings = Field(default_factory=KnowTuningSettings, description="KnowTuning stages")
    # Held-out validation every N steps, early stopping and the best checkpoint (medtune.training.validation).
    validation: ValidationSettings = Field(default_factory=ValidationSettings,
                                           description="held-out validation, early stopping, best checkpoint")
    # Tiny model (``model="tiny"``) size overrides and tokenizer vocabulary
    tiny: dict[str, int] = Field(default_factory=dict, description="size of --model tiny, e.g. hidden_size=64 "
                                                                   "(keys of medtune.models.TINY_DEFAULTS)")
    tiny_vocab_size: int = Field(2048, ge=64, description="tokenizer vocabulary of --model tiny")
    report_to: list[str] = Field(default_factory=list, description="experiment trackers: tensorboard | mlflow | "
                                                                   "wandb (repeatable)")
    preset: str | None = Field(None, description="named settings applied under explicit ones, e.g. paper-qlora")

    @field_validator("keep_checkpoints", mode="after")
    @classmethod
    def _all_checkpoints(cls, v: int | str | None) -> int | None:
        # "all" is how a grid config says None: there a null means "not set here", i.e. the default
        return None if v == "all" else v  # type: ignore[return-value]

    # A plugin method's settings group, by name (the built-in groups are the fields above).
    _plugin_groups: dict[str, Settings] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _settings_groups(cls, data: Any, handler: Any) -> TrainSettings:
        """Flat keys of earlier versions into their groups, and the groups of plugin methods validated by their
        own schemas (the fields of this class cannot list them: plugins register them at run time)."""
        if not isinstance(data, Mapping):
            return handler(data)
        data = nest_flat_keys(data)
        plugin = plugin_settings_groups()
        given = {k: data.pop(k) for k in list(data) if k in plugin and k not in cls.model_fields}
        groups: dict[str, Settings] = {}
        for name, value in given.items():
            schema = plugin[name]
            try:
                groups[name] = value if isinstance(value, schema) else schema.model_validate(
                    value.model_dump() if isinstance(value, Settings) else value)
            except ValidationError as exc:  # one message naming the group's key path (training.<group>.<key>)
                raise ValueError(format_validation_error(exc, name)) from None
        config = handler(data)
        own = method_group(config.method)
        if own in plugin and own not in groups:
            groups[own] = plugin[own]()  # the record shows the settings the method ran with
        config._plugin_groups = groups
        return config

    @model_serializer(mode="wrap")
    def _dump_groups(self, handler: Any, info: Any) -> dict[str, Any]:
        """Plugin groups at the level of the built-in ones, as they are written in a config."""
        out = handler(self)
        mode = "json" if info.mode_is_json() else "python"
        include, exclude = info.include, info.exclude
        out.update({name: group.model_dump(mode=mode) for name, group in self._plugin_groups.items()
                    if (include is None or name in include) and not (exclude and name in exclude)})
        return out

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        try:
            check_method_name(v)  # the method registry (method_settings.METHODS): imports no method
        except Exception as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("tiny")
    @classmethod
    def _known_tiny_keys(cls, v: dict[str, int]) -> dict[str, int]:
        from medtune.models import TINY_DEFAULTS

        unknown = sorted(set(v) - set(TINY_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown tiny model key(s) {unknown} (use {', '.join(TINY_DEFAULTS)})")
        return v

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        if v is not None and v not in PRESETS:
            raise ValueError(f"unknown preset '{v}' (available: {', '.join(PRESETS)})")
        return v

    @model_validator(mode="after")
    def _anchor_check_settings(self) -> TrainSettings:
        """The anchor check's settings come together: items without anchors (or anchors without items) would
        silently check nothing, or fail only after the model has been loaded."""
        if self.eval_anchors is None:
            stray = [f for f in ("eval_items", "eval_split", "eval_every") if getattr(self, f) is not None]
            if stray:
                raise ValueError(f"{', '.join(stray)} set without eval_anchors (the anchors.json to check "
                                 "the model on)")
        elif self.eval_items is None:
            raise ValueError("eval_anchors needs eval_items: the items file holding the anchor items")
        return self

    def settings_group(self, name: str) -> Settings:
        """The settings group ``name`` (``lora``, ``galore``, ``knowtuning`` or a plugin method's): as given, else
        its schema's defaults."""
        if name in BUILTIN_GROUPS:
            return getattr(self, name)
        if name in self._plugin_groups:
            return self._plugin_groups[name]
        schema = plugin_settings_groups().get(name)
        if schema is None:
            raise ConfigError(f"no settings group '{name}' (groups: "
                              f"{', '.join([*BUILTIN_GROUPS, *plugin_settings_groups()])})")
        return schema()

    def method_settings(self) -> Settings | None:
        """The settings of this run's method (its spec's ``settings_class``), or ``None`` for a method without."""
        group = method_group(self.method)
        return self.settings_group(group) if group is not None else None

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum

    def validate(self) -> TrainSettings:
        """Kept for callers of the former dataclass: a pydantic model is validated on creation and assignment."""
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "training") -> TrainSettings:
        return validate_settings(cls, dict(data), where)

    @classmethod
    def from_run_record(cls, data: Mapping[str, Any]) -> TrainSettings:
        """The settings stored in a run folder's ``config.json``, also from runs written by earlier versions
        (their flat ``lora_r``-style keys are read into the groups)."""
        data = dict(data)
        if data.pop("dora", False) and data.get("method") == "lora":
            data["method"] = "dora"  # DoRA was once a flag on the lora method
        return cls.from_dict(data, where="config.json: train")

    @classmethod
    def load(cls, path: str | Path) -> TrainSettings:
        from medtune.run_record import read_json_object

        data = read_json_object(path)
        return cls.from_run_record(data.get("train", data))

    def resolved_dtype(self) -> str:
        """The precision this run really uses here: ``fp32`` or ``bf16`` (see :mod:`medtune.hardware`)."""
        from medtune.hardware import training_dtype

        return training_dtype(self.dtype)


def _flat_alias(key: str, group: str, field: str) -> property:
    """``config.lora_r`` of earlier versions: reads and sets ``config.lora.r``, with a DeprecationWarning."""
    import warnings

    def warn() -> None:
        warnings.warn(f"TrainSettings.{key} is deprecated: use TrainSettings.{group}.{field}", DeprecationWarning,
                      stacklevel=3)

    def get(self: TrainSettings) -> Any:
        warn()
        return getattr(getattr(self, group), field)

    def set_(self: TrainSettings, value: Any) -> None:
        warn()
        old = getattr(self, group)  # a new group object: a copy of this config may share the old one
        setattr(self, group, type(old).model_validate({**old.model_dump(), field: value}))

    return property(get, set_, doc=f"Deprecated: {group}.{field}")


for _key, (_group, _field) in FLAT_KEYS.items():  # for one release, like the flat keys in configs
    setattr(TrainSettings, _key, _flat_alias(_key, _group, _field))


# The orders study (Yang et al. 2024): QLoRA r 16, alpha 64, dropout 0.1, all linear layers but the head,
# paged 8-bit AdamW, max length 512, loss on the answer letter only, the paper's prompt.
# The QLoRA recipe of Yang et al. 2024: r 16, α 64, dropout 0.1 on every linear layer, paged 8-bit AdamW,
# 512 tokens, loss on the answer letter.
_PAPER_QLORA: dict[str, Any] = {
    "method": "qlora",
    "lora": {"r": 16, "alpha": 64, "dropout": 0.1},
    "max_length": 512,
    "target": "letter",
    "template": "paper",
    "optim": "paged_adamw_8bit",
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper-qlora": _PAPER_QLORA,
    # The authors' protocol, setting by setting (docs/reproducing-yang2024.md gives where each comes from): the
    # recipe above with the Trainer's default schedule (linear decay to 0, no warm-up), their prompt, and no EOS
    # (the completion-only collator trains on what follows "Answer:", and nothing is appended). Learning rate
    # and batch are per model: set them on each model of the grid.
    # Their chat checkpoints were trained on the raw prompt text, never under a chat template.
    "yang2024": {**_PAPER_QLORA, "template": "yang2024", "add_eos": False, "scheduler": "linear",
                 "warmup_steps": 0, "chat": False},
    # KnowTuning as its authors ran it (their LLaMA-Factory scripts for MedQuAD): LoRA on q_proj/v_proj in both
    # stages, KA lr 1e-4 for 3 epochs, KC (DPO, beta 0.1, SFT weight 0.2) lr 1e-5 for 1 epoch, cosine schedule.
    # Their batch sizes (32 for KA, 16 for KC, per device) depend on the hardware: set batch_size / grad_accum.
    "knowtuning": {"method": "knowtuning", "knowtuning": {
        "inner_method": "lora", "lora_targets": ["q_proj", "v_proj"], "ka_lr": 1e-4, "ka_epochs": 3, "kc_lr": 1e-5,
        "kc_epochs": 1, "beta": 0.1, "sft_weight": 0.2, "ka_share": 0.5}, "scheduler": "cosine"},
}


def resolve_training_settings(*layers: Mapping[str, Any] | None, preset: str | None = None,
                              where: str = "training") -> TrainSettings:
    """The one precedence rule: defaults < preset < each layer in turn (later wins), validated once.

    A preset fills only what no layer sets explicitly, so ``--lr`` on the command line or ``lr:`` in a grid always
    wins over the preset's value. ``preset`` may also come from a layer's ``preset`` key.
    """
    merged = merge_settings_layers(*(nest_flat_keys(layer or {}, where) for layer in layers))
    name = merged.get("preset", preset) or preset
    if name is not None:
        if name not in PRESETS:
            raise ConfigError(f"{where}.preset: unknown preset '{name}' (available: {', '.join(PRESETS)})")
        merged = {**merge_settings_layers(PRESETS[name], merged), "preset": name}
    return TrainSettings.from_dict(merged, where)


def apply_preset(config: TrainSettings, name: str | None, explicit: Iterable[str] | None = None) -> TrainSettings:
    """Overlay preset ``name`` on ``config``, leaving the fields named in ``explicit`` as they are."""
    if not name:
        return config
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (available: {', '.join(PRESETS)})")
    dumped = config.model_dump()
    keep: dict[str, Any] = {}
    for key in explicit or ():  # a field, or one setting of a group ("lora.r", or the flat "lora_r")
        group, _, field = key.replace("_", ".", 1).partition(".") if key in FLAT_KEYS else key.partition(".")
        if field:
            keep.setdefault(group, {})[field] = dumped[group][field]
        else:
            keep[key] = dumped[key]
    return TrainSettings.from_dict({**merge_settings_layers(dumped, PRESETS[name], keep), "preset": name})


# Names of the previous release, kept with a DeprecationWarning for one more.
__getattr__ = renamed_names(__name__, {'TrainConfig': 'TrainSettings'}, globals())
