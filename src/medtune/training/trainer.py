"""``train()``: one fine-tuning run in exactly the planned order — the entry that the stage, the CLI, the grid,
KnowTuning's stages and the cross-fitted difficulty runs all call.

It checks what can be checked before a model loads, lets a multi-stage method (KnowTuning) run its own stages
through this same entry, plugs the in-training anchor check in as a hook, and runs the recipe of
:mod:`medtune.training.loop` (set up processes, plan, model, optimizer, data; restore; train; save). The base
model is loaded here, on the device and in the form its method needs (:func:`load_base_model`):

- full fine-tuning and GaLore keep fp32 master weights and compute under bf16 autocast (fp16 with loss scaling on
  GPUs without bf16);
- LoRA and DoRA keep the frozen base in the run's half precision (bf16 on a bf16 GPU: 2 bytes per parameter
  instead of 4), their adapters in fp32;
- QLoRA loads the base in 4-bit NF4 with bf16 compute.

On a CPU every form is fp32 unless bf16 is asked for and native (:mod:`medtune.hardware`), so CPU results are
exact and comparable across machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtune.errors import ConfigError
from medtune.run_record import read_config_json
from medtune.schema import Item
from medtune.training import checkpoint as ckpt
from medtune.training.config import TrainSettings
from medtune.training.hooks import settings_hooks
from medtune.training.loop import AnswerLoss, FinetuneRecipe, answer_loss_sum, model_parts
from medtune.training.methods import MethodSpec, StandardLoop, method_of
from medtune.training.placement import Placement
from medtune.training.planner import StepPlanner
from medtune.training.reporting import Progress, Reporters
from medtune.training.result import TrainResult

__all__ = ["AnswerLoss", "Progress", "Reporters", "TrainResult", "answer_loss_sum", "base_dtype",
           "load_base_model", "model_parts", "save_trained", "train"]


# ----------------------------------------------------------------------------------------------------------
# Model loading


def base_dtype(config: TrainSettings, precision: str) -> str:
    """The dtype a run keeps its base weights in: half precision for a frozen adapter base, fp32 master
    weights for methods that train every weight (autocast computes in half precision either way)."""
    spec = method_of(config)
    if spec.is_adapter and precision in ("bf16", "fp16"):
        return precision
    return "fp32"


def _save_base(model: nn.Module, tokenizer: Any, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def load_base_model(config: TrainSettings, items: Sequence[Item], run_dir: Path, *,
                    model: nn.Module | None = None, tokenizer: Any = None,
                    textbook: Sequence[str] | None = None,
                    placement: Placement | None = None) -> tuple[nn.Module, Any, str]:
    """The base model in the form the method needs, on this rank's device, and where its base weights live.

    The tiny model, and models handed in memory when the method keeps its base (adapters, quantised bases), are
    saved to ``RUN_DIR/base/`` first: merging an adapter, scoring and resuming all need the exact base, and a
    quantised training base is loaded from there. ``placement`` gives the device and precision (default: this
    machine's first device and the run's resolved precision).
    """
    from medtune.models import load_pretrained, local_model_path
    from medtune.training.tiny import build_tiny_for

    spec = method_of(config)
    precision = placement.precision if placement is not None else config.resolved_dtype()
    device = str(placement.device) if placement is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = base_dtype(config, precision)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]

    def placed(net: nn.Module) -> nn.Module:
        return _with_attention(net.to(device=device, dtype=torch_dtype), config.attn_implementation)

    base_dir = run_dir / "base"
    if (base_dir / "config.json").exists() and model is None:
        source: Path | str = base_dir  # resume, or a re-run in the same folder: the saved base is the truth
    elif model is not None:
        if tokenizer is None:
            raise ConfigError("a model passed in memory needs its tokenizer too")
        if spec.keeps_base:
            _save_base(model, tokenizer, base_dir)
        if spec.base_quantization is None:
            return placed(model), tokenizer, str(base_dir) if spec.keeps_base else "memory"
        source = base_dir
    elif config.model == "tiny":
        torch.manual_seed(config.seed)
        model, tokenizer = build_tiny_for(items, textbook, vocab_size=config.tiny_vocab_size, seed=config.seed,
                                          sizes=config.tiny)
        _save_base(model, tokenizer, base_dir)
        if spec.base_quantization is None:
            return placed(model), tokenizer, str(base_dir)
        source = base_dir
    else:
        source = local_model_path(config.model)
    loaded = load_pretrained(source, dtype=dtype, device=device, quantization=spec.base_quantization,
                             attn_implementation=config.attn_implementation)
    return loaded.model, loaded.tokenizer, str(source)


def _with_attention(model: nn.Module, implementation: str) -> nn.Module:
    """A model built or handed in memory switched to the run's attention implementation (if it is not already)."""
    current = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if current != implementation and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(implementation)
    return model


# ----------------------------------------------------------------------------------------------------------
# The run


def train(
    config: TrainSettings,
    items: Sequence[Item],
    order: dict[str, Any],
    run_dir: str | Path,
    *,
    model: nn.Module | None = None,
    tokenizer: Any = None,
    textbook: Sequence[str] | None = None,
    resume: bool = False,
    progress: bool = False,
    items_path: str | Path | None = None,
    order_path: str | Path | None = None,
    planner: StepPlanner | None = None,
) -> TrainResult:
    """Train ``config.method`` on ``items`` in exactly the order of ``order`` and write ``run_dir``.

    ``model``/``tokenizer`` may be given in memory (e.g. a tiny model pretrained on a textbook); otherwise
    ``config.model`` is loaded (``tiny`` is built from a config with a tokenizer trained on the items and
    ``textbook``). With ``resume`` the latest checkpoint in ``run_dir`` is restored and training continues
    at the next step. Returns the trained model (a PEFT model for adapter methods).

    ``planner`` (:class:`medtune.training.planner.StepPlanner`, e.g. from :mod:`medtune.adaptive`) decides the
    steps during training instead: at step 0 and whenever its steps run out the loop asks it for the next ones,
    given the model as it is then. ``None`` trains the order file's fixed plan.
    """
    config.validate()
    run_dir = Path(run_dir)
    _check_staged_method(config, planner)
    # A multi-stage method (e.g. knowtuning) runs its own stages, each through this entry; the rest use the loop.
    staged = method_of(config).train_run(
        config, items, order, run_dir, loop=StandardLoop(train, load_base_model, TrainResult),
        model=model, tokenizer=tokenizer, textbook=textbook, resume=resume, progress=progress,
        items_path=items_path, order_path=order_path)
    if staged is not None:
        return staged
    _check_resume(run_dir, resume=resume, planner=planner)
    # The hooks the settings ask for (the anchor check), read and checked before the model loads (a bad anchors
    # file fails on every rank at once).
    hooks = settings_hooks(config, training_ids={it.id for it in items})
    recipe = FinetuneRecipe(config, items, order, run_dir, load_base_model, model=model, tokenizer=tokenizer,
                            textbook=textbook, resume=resume, progress=progress, items_path=items_path,
                            order_path=order_path, planner=planner, hooks=hooks)
    return recipe.run()


def _check_staged_method(config: TrainSettings, planner: StepPlanner | None) -> None:
    """Refuse what a method running its own stages cannot take, before any of them runs: a step planner and the
    anchor check both hook into the one standard loop, which such a method does not run as a whole."""
    if type(method_of(config)).train_run is MethodSpec.train_run:
        return
    if planner is not None:
        raise ConfigError(f"method '{config.method}' runs its own stages and cannot take a step planner")
    if config.eval_anchors is not None:
        raise ConfigError(f"method '{config.method}' runs its own stages and cannot take the anchor check "
                          "(eval_anchors)")
    if config.validation.enabled:
        raise ConfigError(f"method '{config.method}' runs its own stages and cannot take validation during "
                          "training (validation.items / validation.share)")


def _check_resume(run_dir: Path, *, resume: bool, planner: StepPlanner | None) -> None:
    """Refuse to resume without a planner a run whose items were decided adaptively: its order file is only the
    candidate pool, so training on it would not continue the run it resumes."""
    if resume and planner is None and ckpt.latest_checkpoint(run_dir) is not None \
            and "adaptive" in read_run_config(run_dir):
        raise ConfigError("this run decided its items adaptively: resume it with the same --adaptive settings")


def save_trained(model: nn.Module, tokenizer: Any, run_dir: Path, config: TrainSettings) -> Path:
    """The trained weights, where and how the run's method keeps them (``adapter/`` or ``model/``)."""
    return method_of(config).save(model, tokenizer, run_dir)


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.json`` (empty when it has none yet)."""
    return read_config_json(run_dir) or {}
