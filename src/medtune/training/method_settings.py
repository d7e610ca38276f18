"""The settings of fine-tuning methods: one schema per method family, nested in the training settings by group name.

A method with settings of its own declares them as one :class:`~medtune.settings.Settings` class (as TRL has one
config class per algorithm) and names it in its spec (``MethodSpec.settings_class``). The training settings hold
each group under its name — ``training: {lora: {r: 16}}`` in a grid, ``TrainSettings(lora={"r": 16})`` in Python,
``--lora-r 16`` on the command line — so a method's settings are declared in one place, and a plugin's method gets
a group, options and YAML keys exactly like a built-in.

This module imports no torch and nothing of :mod:`medtune.training.methods`: the settings schema
(:mod:`medtune.training.config`) and the method specs both import it, so neither imports the other. It holds the
method registry itself (:data:`METHODS`, a :class:`medtune.registry.Registry` whose built-ins are named by
reference and imported on first use), so the schema checks a method name without importing any method. The
built-in groups (``lora``, ``galore``, ``knowtuning``) are declared here and are typed fields of ``TrainSettings``;
``dpo`` is declared here too but held beside those fields, as a plugin's group is (:data:`BESIDE_GROUPS`), and a
plugin's group is added by ``register_method`` through :func:`register_settings_group`.

Until the flat keys of earlier versions (``lora_r``, ``galore_rank``, ``knowtuning_beta``, ...) are removed,
:func:`nest_flat_keys` maps them to their group, with a :class:`DeprecationWarning` naming the new key.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from medtune.errors import ConfigError
from medtune.registry import Registry
from medtune.settings import Settings

GaloreOptim = Literal["galore_adamw", "galore_adafactor", "galore_adamw_8bit"]
# The KnowTuning steps a generation backend can do instead of the offline rules (knowtuning/generator.py).
# (A list of plain strings checked below: the command line cannot parse a list of Literal values.)
GENERATOR_STEPS: tuple[str, ...] = ("facts", "rewrite", "revise")


class LoraSettings(Settings):
    """The adapter of ``lora``, ``dora``, ``qlora`` and KnowTuning's ``knowtuning-lora``: one shape, one schema."""

    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA alpha")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")


class GaloreSettings(Settings):
    """GaLore's optimizer and projection (the optimizer is the method, so ``optim`` does not apply)."""

    optim: GaloreOptim = Field("galore_adamw", description="GaLore optimizer")
    rank: int = Field(64, ge=1, description="GaLore projection rank")
    update_proj_gap: int = Field(200, ge=1, description="steps between GaLore projection updates")
    scale: float = Field(0.25, gt=0, description="GaLore update scale")


class KnowTuningSettings(Settings):
    """KnowTuning (``method="knowtuning"``): knowledge augmentation (KA) by the standard loop, then knowledge
    comparison (KC) by TRL's DPOTrainer; docs/EXTENDING.md gives each setting's meaning and the authors' values."""

    inner_method: Literal["lora", "full"] = Field(
        "lora", description="what trains in both KnowTuning stages: LoRA adapters (merged after each stage) or "
                            "every weight")
    ka_share: float = Field(
        0.5, gt=0, le=1, description="share of each answer's facts, hardest first (perplexity under the base "
                                     "model), rewritten into KA question-answer pairs")
    ka_lr: float | None = Field(None, gt=0, description="KA stage learning rate (default: lr)")
    ka_epochs: int | None = Field(None, ge=1, description="KA stage epochs (default: epochs)")
    kc_lr: float | None = Field(None, gt=0, description="KC (DPO) stage learning rate (default: lr)")
    kc_epochs: int | None = Field(None, ge=1, description="KC (DPO) stage epochs (default: epochs, else 1)")
    beta: float = Field(0.1, gt=0, description="KC DPO beta (deviation from the KA reference)")
    sft_weight: float = Field(0.2, ge=0, description="KC weight of the NLL of the chosen answer added to the DPO "
                                                     "loss")
    lora_targets: list[str] | None = Field(
        None, description="layer names the KnowTuning LoRA adapts, e.g. q_proj (repeatable; default: every "
                          "linear layer but the head)")
    generator: str | None = Field(
        None, description="model spec of a generation backend for KnowTuning's fact splitting, KA rewriting and KC "
                          "revision, e.g. openai:http://127.0.0.1:8000/v1#MODEL (default: offline rules)")
    generator_steps: list[str] = Field(
        default_factory=lambda: list(GENERATOR_STEPS),
        description="which steps the generator does: facts | rewrite | revise (repeatable; default: all)")

    @field_validator("lora_targets")
    @classmethod
    def _lora_target_names(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("give at least one layer name (or leave it unset for every linear layer)")
        bad = [t for t in v if not t.strip() or not t.replace("_", "").replace(".", "").isalnum()]
        if bad:
            raise ValueError(f"layer names are module names such as q_proj, got {bad}")
        return list(dict.fromkeys(t.strip() for t in v))

    @field_validator("generator")
    @classmethod
    def _generator_spec(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("name a model spec such as openai:http://127.0.0.1:8000/v1#MODEL, or leave it unset "
                             "for the offline rules")
        return v.strip() if v is not None else v

    @field_validator("generator_steps")
    @classmethod
    def _generator_steps(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one step (facts, rewrite, revise), or leave knowtuning.generator unset")
        unknown = [x for x in v if x not in GENERATOR_STEPS]
        if unknown:
            raise ValueError(f"unknown step(s) {unknown} (use {', '.join(GENERATOR_STEPS)})")
        return list(dict.fromkeys(v))


# TRL's DPO losses (trl.DPOConfig.loss_type) a ``dpo`` run can take; its ``sft`` term is ``sft_weight``.
DPO_LOSSES: tuple[str, ...] = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
                               "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")
DpoLoss = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm"]


class DpoSettings(Settings):
    """Preference tuning (``method="dpo"``) by TRL's DPOTrainer on prompt / chosen / rejected pairs: a LoRA adapter
    (``lora``) trained against the base model (the policy with its adapter disabled) as the reference."""

    beta: float = Field(0.1, gt=0, description="DPO beta: how far the policy may move from the reference (lower: "
                                               "further)")
    loss_type: DpoLoss = Field("sigmoid", description="TRL's DPO loss: sigmoid (DPO), ipo, hinge, robust, ... "
                                                      "(trl.DPOConfig.loss_type)")
    sft_weight: float = Field(0.0, ge=0, description="weight of the chosen answers' NLL added to the DPO loss (0: "
                                                     "none; RPO-style regularisation)")
    check_pairs: int = Field(8, ge=0, description="pairs whose log-probabilities under the reference and the policy "
                                                  "(before and after training) the run records")


# The groups that are typed fields of TrainSettings (cfg.lora, cfg.galore, cfg.knowtuning).
BUILTIN_GROUPS: dict[str, type[Settings]] = {
    "lora": LoraSettings, "galore": GaloreSettings, "knowtuning": KnowTuningSettings,
}

# ----------------------------------------------------------------------------------------------------------
# The groups of plugin methods, and which group each method reads

# The fine-tuning methods by name (medtune.training.methods.register_method / get_method). The built-ins are
# named by their spec class and imported on first lookup: importing medtune.training.methods registers them all.
BUILTIN_METHODS: dict[str, str] = {
    "full": "medtune.training.methods.full:FullMethod",
    "lora": "medtune.training.methods.lora:LoraMethod",
    "dora": "medtune.training.methods.lora:LoraMethod",
    "qlora": "medtune.training.methods.qlora:QLoraMethod",
    "galore": "medtune.training.methods.galore:GaloreMethod",
    "knowtuning-lora": "medtune.training.methods.knowtuning.inner:KnowTuningLora",
    "knowtuning": "medtune.training.methods.knowtuning:KnowTuningMethod",
    "dpo": "medtune.training.methods.dpo:DpoMethod",
}
# (Registry[MethodSpec]: the spec class lives in medtune.training.methods.base, which imports this module.)
METHODS: Registry[Any] = Registry(
    "method", builtins=BUILTIN_METHODS,
    hint="a plugin's methods need the plugin loaded, see MEDTUNE_PLUGINS or a grid's `plugins:`")

_GROUP_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PLUGIN_GROUPS: dict[str, type[Settings]] = {}
_METHOD_GROUPS: dict[str, str] = {}


# Built-in groups held beside the fields of TrainSettings, as a plugin's are (``dpo``): in a run record only when the
# run's method reads them or they are given, so the records (and the grid store's keys) of other runs stay as they
# were. Their methods are linked to them here, before the method modules are imported.
BESIDE_GROUPS: dict[str, type[Settings]] = {"dpo": DpoSettings}
_PLUGIN_GROUPS.update(BESIDE_GROUPS)
_METHOD_GROUPS.update({"dpo": "dpo"})


def group_name_of(method: str) -> str:
    """The default group name of a method: its name as a Python identifier (``scaled-lora`` → ``scaled_lora``)."""
    return re.sub(r"[^a-z0-9_]", "_", method)


def register_settings_group(group: str, cls: type[Settings], *, method: str | None = None,
                            reserved: tuple[str, ...] = (), replace: bool = False) -> None:
    """Make ``cls`` the schema of the settings group ``group`` (and, with ``method``, that method's settings).

    A built-in group may be named again with its own class (``dora`` reads ``lora``); a new group must not take
    the name of a training setting (``reserved``) or of another group with a different schema, so two plugins
    cannot silently read each other's keys.
    """
    if not (isinstance(cls, type) and issubclass(cls, Settings)):
        raise TypeError(f"a settings group's schema is a medtune.settings.Settings subclass, got {cls!r}")
    if not _GROUP_NAME.match(group):
        raise ConfigError(f"settings group name '{group}' must be lower-case letters, digits or '_' (it is a "
                          "YAML key and part of the command-line options' names)")
    builtin = BUILTIN_GROUPS.get(group)
    if builtin is not None:
        if builtin is not cls and not _same_class(builtin, cls):
            raise ConfigError(f"settings group '{group}' is built in ({builtin.__name__}): a method with other "
                              "settings needs a group of its own (MethodSpec.settings_group)")
    elif group in reserved:
        raise ConfigError(f"settings group '{group}' has the name of a training setting; choose another "
                          "(MethodSpec.settings_group)")
    else:
        known = _PLUGIN_GROUPS.get(group)
        if known is not None and known is not cls and not replace and not _same_class(known, cls):
            raise ConfigError(f"settings group '{group}' is already registered with {known.__module__}."
                              f"{known.__qualname__}; pass replace=True to override it")
        _PLUGIN_GROUPS[group] = cls
    if method is not None:
        _METHOD_GROUPS[method] = group


def _same_class(a: type, b: type) -> bool:
    """True when ``b`` is ``a`` defined again by re-importing its module (a plugin loaded twice)."""
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def forget_method(method: str) -> None:
    """Drop ``method``'s link to its group (its spec was removed from the registry)."""
    _METHOD_GROUPS.pop(method, None)


def plugin_settings_groups() -> dict[str, type[Settings]]:
    """The groups held beside the fields of ``TrainSettings``, by name: plugin methods' and :data:`BESIDE_GROUPS`."""
    return dict(_PLUGIN_GROUPS)


def settings_groups() -> dict[str, type[Settings]]:
    """Every settings group, built-ins first."""
    return {**BUILTIN_GROUPS, **_PLUGIN_GROUPS}


def method_group(method: str) -> str | None:
    """The settings group ``method`` reads (``None``: a method without settings of its own, or unknown)."""
    return _METHOD_GROUPS.get(method)


def check_method_name(name: str) -> None:
    """Raise the registry's unknown-name error when no method ``name`` is registered (imports no method)."""
    if name not in METHODS:
        raise METHODS.unknown(name)


# ----------------------------------------------------------------------------------------------------------
# The flat keys of earlier versions

FLAT_KEYS: dict[str, tuple[str, str]] = {
    f"{group}_{field}": (group, field) for group, cls in BUILTIN_GROUPS.items() for field in cls.model_fields
}


def nest_flat_keys(data: Mapping[str, Any], where: str = "training") -> dict[str, Any]:
    """``data`` with each flat key of an earlier version (``lora_r``) moved into its group (``lora: {r: ...}``).

    Warns once per key (:class:`DeprecationWarning`, naming the new key); the flat keys are accepted for one
    release. A key given both ways with different values is refused: which one was meant cannot be known.
    """
    flat = [k for k in data if k in FLAT_KEYS]
    if not flat:
        return dict(data)
    out = {k: v for k, v in data.items() if k not in FLAT_KEYS}
    for key in flat:
        group, field = FLAT_KEYS[key]
        warnings.warn(f"{where}.{key} is deprecated: use {where}.{group}.{field} (`{group}: {{{field}: ...}}`; "
                      f"on the command line --{group}-{field.replace('_', '-')})", DeprecationWarning, stacklevel=4)
        current = out.get(group)
        if current is None:
            current = {}
        elif isinstance(current, Settings):
            current = current.model_dump()
        elif not isinstance(current, Mapping):
            continue  # the group's own value is wrong: its validation says so
        current = dict(current)
        if field in current and current[field] != data[key]:
            raise ConfigError(f"{where}.{key}: given as {data[key]!r} and as {where}.{group}.{field} = "
                              f"{current[field]!r}; keep {where}.{group}.{field} only")
        current[field] = data[key]
        out[group] = current
    return out


def flatten_builtin_groups(data: Mapping[str, Any]) -> dict[str, Any]:
    """The built-in groups of a settings dict written flat again (``lora: {r: 16}`` → ``lora_r: 16``), keys in
    the order of the former flat schema's fields within each group. What identifies a stored training run in a
    grid's store is computed from this form, so runs stored by earlier versions keep their keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in BUILTIN_GROUPS and isinstance(value, Mapping):
            out.update({f"{key}_{field}": v for field, v in value.items()})
        else:
            out[key] = value
    return out


# The training schema's settings groups that belong to no method (held-out validation): merged key by key too.
OTHER_GROUPS: tuple[str, ...] = ("validation",)


def merge_settings_layers(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Layers of training settings merged, later ones winning — key by key inside a settings group too, so a
    model's ``lora: {alpha: 64}`` keeps the grid's ``lora: {r: 8}`` (as the flat keys did)."""
    groups = {*settings_groups(), *OTHER_GROUPS}
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, Settings):
                value = value.model_dump()
            old = merged.get(key)
            if key in groups and isinstance(value, Mapping) and isinstance(old, Mapping):
                merged[key] = {**old, **value}
            else:
                merged[key] = dict(value) if key in groups and isinstance(value, Mapping) else value
    return merged
