"""What a fine-tuning method is, and the registry that names them.

A method is one :class:`MethodSpec` object: which parameters train (:meth:`MethodSpec.prepare`), with which
optimizer (:meth:`MethodSpec.build_optimizer`), how the base is loaded (``base_quantization``), and what a run
keeps (``is_adapter``: a PEFT ``adapter/`` that needs the base to score or merge, or a full ``model/``). The
trainer and the export code ask the spec and never compare method names, so a new method is one module that
defines a spec and calls :func:`register_method` — inside medtune or in a plugin (:mod:`medtune.plugins`).

The helpers every method shares live here too: the layers to adapt (:func:`find_target_modules`, found from
the model, never hard-coded per architecture), the plain AdamW / 8-bit AdamW optimizers, and the atomic save.
"""

from __future__ import annotations

import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medtune.errors import ConfigError, UnsupportedOnThisMachine
from medtune.training import method_settings
from medtune.training.method_settings import METHODS

if TYPE_CHECKING:
    from medtune.settings import Settings
    from medtune.training.config import TrainSettings
    from medtune.training.result import TrainResult

# The optimizers :func:`standard_optimizer` builds (a method with its own, like GaLore, overrides the builder).
STANDARD_OPTIMS: tuple[str, ...] = ("adamw", "adamw_8bit", "paged_adamw_8bit")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class MethodSpec(ABC):
    """One fine-tuning method. Subclass it, implement :meth:`prepare`, and register an instance.

    ``settings_class`` is the schema of the method's own settings (a :class:`~medtune.settings.Settings`
    subclass), held in the training settings under ``settings_group`` (default: the method's name with ``_`` for
    ``-``): ``training: {<group>: {...}}`` in a grid, ``--<group>-<setting>`` on the command line, and
    ``config.settings_group(<group>)`` / ``config.method_settings()`` in the method's code. Methods of one family
    share a group (``lora``, ``dora`` and ``qlora`` read ``lora``). ``settings`` names the other
    :class:`~medtune.training.config.TrainSettings` fields the method reads (for help texts and to catch a spec
    that reads a field the config does not have).
    """

    name: str
    summary: str  # one line for --help and the docs
    is_adapter: bool  # saves adapter/ (PEFT) rather than model/; needs the base to score or merge
    base_quantization: str | None = None  # "4bit": how the base is loaded to train (and, if asked, to evaluate)
    default_optim: str = "adamw"  # used when config.optim is unset
    settings: tuple[str, ...] = ()
    settings_class: type[Settings] | None = None
    settings_group: str | None = None

    @property
    def group(self) -> str | None:
        """The name of the settings group this method reads (``None``: no settings of its own)."""
        if self.settings_class is None:
            return None
        return self.settings_group or method_settings.group_name_of(self.name)

    @property
    def output_name(self) -> str:
        """The folder of the run that holds the trained weights."""
        return "adapter" if self.is_adapter else "model"

    @property
    def keeps_base(self) -> bool:
        """Whether the run must keep its base in ``base/``: an adapter is useless without it, and a quantised
        training base is loaded from a saved full-precision copy."""
        return self.is_adapter or self.base_quantization is not None

    @abstractmethod
    def prepare(self, model: nn.Module, config: TrainSettings) -> nn.Module:
        """Decide which parameters train (wrap the model if needed); returns the model to train."""

    def build_optimizer(self, model: nn.Module, config: TrainSettings) -> torch.optim.Optimizer:
        """The optimizer over the trainable parameters: ``config.optim``, else this method's default."""
        params = [p for _, p in trainable_parameters(model)]
        return standard_optimizer(params, config.optim or self.default_optim, config)

    def save(self, model: nn.Module, tokenizer: Any, run_dir: Path, *,
             state_dict: dict[str, Any] | None = None) -> Path:
        """Write the trained weights (safetensors) and the tokenizer to ``run_dir/<output_name>``, atomically.

        ``state_dict``: the model's tensors gathered in full when the run was sharded over processes (the model's
        own parameters are then shards).
        """
        return save_pretrained_atomic(model, tokenizer, Path(run_dir) / self.output_name, state_dict=state_dict)

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold an adapter into its base weights (a full model is returned as it is)."""
        return model.merge_and_unload() if self.is_adapter else model

    def train_run(self, config: TrainSettings, items: Any, order: dict[str, Any], run_dir: Path, *,
                  loop: StandardLoop, **options: Any) -> TrainResult | None:
        """Run the whole training of a method that is more than one pass of the standard loop; ``None`` (the
        default) lets :func:`medtune.training.train` run its loop with :meth:`prepare` and :meth:`build_optimizer`.

        A multi-stage method (``knowtuning``) overrides this and returns the run's ``TrainResult``; it must leave
        ``run_dir`` looking like a run of this spec (``config.json`` with ``train``, and ``run_dir/<output_name>``)
        so evaluation reads it like any other. ``loop`` hands it the trainer's own loop and base loader (a method
        module cannot import the trainer, which imports this registry); ``options`` are the keyword arguments
        ``train`` was called with (``model``, ``tokenizer``, ``textbook``, ``resume``, ``progress``, ``items_path``,
        ``order_path``).
        """
        return None


@dataclass(frozen=True)
class StandardLoop:
    """What the trainer hands :meth:`MethodSpec.train_run`: its loop (``train``, same signature as
    :func:`medtune.training.train`), its base-model loader (``load_base_model``) and the class of what a run
    returns (``result_type``, :class:`medtune.training.trainer.TrainResult`)."""

    train: Callable[..., Any]
    load_base_model: Callable[..., Any]
    result_type: type


# ----------------------------------------------------------------------------------------------------------
# The registry (medtune.training.method_settings.METHODS: the settings schema reads it without importing this)


def register_method(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Make ``spec`` available under ``spec.name`` (to the config, the CLI and the grid); returns it.

    A second spec under a taken name is refused unless ``replace=True``, so two plugins cannot silently
    shadow each other (or a built-in). A spec with a ``settings_class`` adds its settings group.
    """
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"register_method takes a MethodSpec, got {type(spec).__name__}")
    if not _NAME.match(spec.name):
        raise ConfigError(f"method name '{spec.name}' must be lower-case letters, digits, '.', '_' or '-' "
                          "(it is typed on the command line)")
    cls = type(spec)
    # A built-in is named by its spec class (imported on first use): its own module registering it is no clash.
    builtin = method_settings.BUILTIN_METHODS.get(spec.name) == f"{cls.__module__}:{cls.__qualname__}"
    if spec.settings_class is not None:
        from medtune.training.config import TrainSettings

        if not replace and spec.name in METHODS and not builtin:
            METHODS.register(spec.name, spec, origin=spec)  # a clash is the registry's error, before the group
        assert spec.group is not None
        method_settings.register_settings_group(spec.group, spec.settings_class, method=spec.name,
                                                reserved=tuple(TrainSettings.model_fields), replace=replace)
    else:
        method_settings.forget_method(spec.name)
    METHODS.register(spec.name, spec, replace=replace, origin=cls if builtin else spec)
    return spec


# The registry under the name of the dict it replaced, for code that reaches for it (tests scope it).
_REGISTRY = METHODS


def get_method(name: str) -> MethodSpec:
    """The spec registered under ``name``; a :class:`ConfigError` listing the available names otherwise."""
    return METHODS.get(name)


def method_names() -> tuple[str, ...]:
    """Registered method names, built-ins first, in registration order."""
    return tuple(METHODS.names())


def method_help() -> str:
    """``name: summary`` for every method, one per line (for --help texts and docs)."""
    return "\n".join(f"{spec.name}: {spec.summary}" for spec in METHODS.values())


# ----------------------------------------------------------------------------------------------------------
# Shared helpers


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


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def train_every_parameter(model: nn.Module) -> nn.Module:
    """Full-parameter training: every weight gets a gradient."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def standard_optimizer(params: list[nn.Parameter], optim: str, config: TrainSettings) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' 8-bit AdamW (paged where a GPU makes paging meaningful).

    bitsandbytes falls back to the non-paged optimizer on CPU anyway, with a warning, so it is picked directly.
    """
    wd = config.weight_decay
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
    raise ConfigError(f"unknown optimizer '{optim}' ({', '.join(STANDARD_OPTIMS)})")


def save_pretrained_atomic(model: Any, tokenizer: Any, output: Path, *,
                           state_dict: dict[str, Any] | None = None) -> Path:
    """``save_pretrained`` (safetensors) + tokenizer into a temporary folder, then swapped in for ``output``.

    The previous folder is renamed away, the new one renamed into place, and only then is the old one removed, so
    an interrupted save leaves the previous folder (or, between the two renames, its renamed copy), never a
    half-written model; a failed save removes its temporary folder (:func:`medtune.io.atomic_folder`).
    """
    from medtune.io import atomic_folder

    output = Path(output)
    with atomic_folder(output) as tmp:
        kwargs = {"state_dict": state_dict} if state_dict is not None else {}
        model.save_pretrained(tmp, safe_serialization=True, **kwargs)
        tokenizer.save_pretrained(tmp)
    return output
