"""What is scored and how it is loaded: :class:`ModelRef` (a base spec, plus an adapter or a fine-tuned full model,
and how it was trained) and :func:`load_model` (the scoring backend for it, under :class:`ModelLoadSettings`).

The evaluation stage scores a :class:`ModelRef`, and the adaptive training stage scores ``rho``'s reference model
with one; both load it here, below the stages, so that neither stage imports the other and a reference model is
loaded exactly as the evaluation loads it. :class:`ModelLoadSettings` holds the loading settings (backend,
precision, device, vLLM's options) once: :class:`medtune.evaluation_stage.EvalSettings` derives from it, so they
keep their keys and command-line options there. A run folder is read through :mod:`medtune.run_record`; of
training, only the settings schema and the method registry are imported, to say what a record's settings mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medtune.errors import ConfigError, InputError
from medtune.scoring.vllm_backend import (
    VllmEnforceEager,
    VllmGpuMemoryUtilization,
    VllmMaxModelLen,
    VllmTensorParallelSize,
    vllm_options,
)
from medtune.settings import Settings, validate_settings


class ModelLoadSettings(Settings):
    """How a model is loaded to be scored: backend, precision, device and vLLM's engine options."""

    backend: str | None = Field(None, description="scoring backend (hf, openai, vllm or a plugin's); default: "
                                "the model spec's prefix, else hf")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="weights' precision; auto: bf16 on a GPU that has it, fp32 on a CPU")
    quantization: Literal["auto", "none", "4bit", "8bit"] = Field(
        "auto", description="base weights' quantization (bitsandbytes); auto: as the model was trained (4bit for "
        "qlora), else none")
    device: str = Field("auto", description="auto, cpu or cuda[:N]")
    vllm_gpu_memory_utilization: VllmGpuMemoryUtilization = None
    vllm_max_model_len: VllmMaxModelLen = None
    vllm_tensor_parallel_size: VllmTensorParallelSize = None
    vllm_enforce_eager: VllmEnforceEager = False


def _trained_quantization(method: str | None) -> str | None:
    """How ``method`` loads its base to train (e.g. ``"4bit"`` for qlora), from the method registry."""
    if method is None:
        return None
    from medtune.training.methods import get_method

    return get_method(method).base_quantization


@dataclass(frozen=True)
class ModelRef:
    """The weights to score: a base ``spec`` alone, with an ``adapter``, or a fine-tuned full model (``model_dir``).

    ``method``, ``train_dtype``, ``train_template`` and ``train_chat`` record how it was trained (``train_chat``: the
    run record's ``chat``: ``{"enabled", "system_prompt", "template_sha256"}``, see
    :func:`medtune.chat_format.chat_record`);
    ``base_quantization`` is how the base was loaded to train (``None`` with a ``method``: looked up in the method
    registry).
    """

    spec: str
    adapter: Path | None = None
    model_dir: Path | None = None
    method: str | None = None
    train_dtype: str | None = None
    base_quantization: str | None = None
    train_template: str | None = None
    train_chat: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def weights(self) -> str:
        """The spec the backend loads: the fine-tuned model's folder, or the base."""
        return str(self.model_dir) if self.model_dir is not None else self.spec

    @property
    def trained_quantization(self) -> str | None:
        """How the scored base was quantized in training (only an adapter's base was; a full model is saved whole)."""
        if self.model_dir is not None:
            return None
        if self.base_quantization is not None:
            return self.base_quantization
        return _trained_quantization(self.method) if self.adapter is not None else None

    @classmethod
    def from_run(cls, run_dir: str | Path) -> ModelRef:
        """The model a training run folder holds (``config.json``: ``train`` and ``base_model``; docs/ARTIFACTS.md),
        read through the run-record reader; training's schema and method registry only say what its settings mean."""
        from medtune.run_record import RUN_RECORD, read_config_json
        from medtune.training.config import TrainSettings
        from medtune.training.methods import get_method

        run_dir = Path(run_dir)
        meta = read_config_json(run_dir)
        record = meta.get("train") if meta is not None else None
        if not isinstance(record, dict) or "method" not in record:
            raise InputError("not a training run folder (no config.json with training settings); "
                             "evaluate a model folder with --model", file=run_dir)
        try:  # read as the training schema reads it, so records of earlier versions keep working
            spec = get_method(TrainSettings.from_run_record(record).method)
        except ConfigError as exc:
            raise InputError(f"the run's training settings cannot be used here: {exc}",
                             file=run_dir / RUN_RECORD) from None
        train = meta["train"]
        weights = run_dir / spec.output_name
        if not (weights.is_dir() and any(weights.iterdir())):
            raise InputError(f"the run has no {spec.output_name}/ (did training finish?)", file=run_dir)
        # The precision the run really computed in (recorded since runs resolve ``auto``), else what it asked for.
        trained_in = (meta.get("precision") or {}).get("dtype") or train.get("dtype")
        # The chat format the run trained with (recorded since training resolves ``chat: auto``), else its setting.
        chat = meta.get("chat") if isinstance(meta.get("chat"), dict) else _chat_from_settings(train)
        common = {"method": spec.name, "train_dtype": trained_in, "train_template": train.get("template"),
                  "train_chat": chat}
        if not spec.is_adapter:
            return cls(spec=str(weights), model_dir=weights, **common)
        base = run_dir / "base"
        if (base / "config.json").exists():
            base_spec = str(base)
        else:
            base_spec = str(meta.get("base_model") or "")
            if base_spec in ("", "memory"):
                raise InputError("cannot find the base model of this run (no base/ folder and no base_model)",
                                 file=run_dir / "config.json", field="base_model")
        return cls(spec=base_spec, adapter=weights, base_quantization=spec.base_quantization, **common)

    def describe(self) -> dict[str, Any]:
        return {"model": self.spec, "adapter": str(self.adapter) if self.adapter else None,
                "model_dir": str(self.model_dir) if self.model_dir else None, "method": self.method,
                "train_dtype": self.train_dtype}


def _chat_from_settings(train: dict[str, Any]) -> dict[str, Any] | None:
    """A run record without ``chat`` (written before training resolved it): its explicit setting, else unknown."""
    choice = train.get("chat")
    if isinstance(choice, bool):
        return {"enabled": choice, "system_prompt": train.get("system_prompt"), "template_sha256": None}
    if "chat" not in train:  # runs of earlier versions never used a chat template
        return {"enabled": False, "system_prompt": None, "template_sha256": None}
    return None


def as_model_ref(model: ModelRef | str | Path) -> ModelRef:
    return model if isinstance(model, ModelRef) else ModelRef(spec=str(model))


def resolve_dtype_for(settings: ModelLoadSettings, ref: ModelRef) -> str:
    """``auto`` scores a fine-tuned model in the precision it was trained in; a base model by the machine's rule.

    The training precision is resolved again here (bf16 only where native, :mod:`medtune.hardware`), so a model
    trained in bf16 on a GPU and scored on a CPU without bf16 is scored in fp32 rather than emulated.
    """
    if settings.dtype != "auto" or ref.train_dtype in (None, "auto"):
        return settings.dtype
    from medtune.hardware import training_dtype

    return training_dtype(ref.train_dtype)


def resolve_quantization(settings: ModelLoadSettings, ref: ModelRef) -> str | None:
    if settings.quantization == "auto":
        return ref.trained_quantization
    return None if settings.quantization == "none" else settings.quantization


def load_model(model: ModelRef | str | Path, settings: ModelLoadSettings | dict[str, Any]) -> Any:
    """The backend that scores ``model`` under ``settings`` (reusable across test sets: pass it as ``loaded``).

    ``settings`` is the model-loading part of a stage's settings (the evaluation's :class:`EvalSettings` is one),
    so every stage that scores a model loads it the same way.
    """
    from medtune.scoring.backends import load_backend

    settings = validate_settings(ModelLoadSettings, settings, "evaluation")
    ref = as_model_ref(model)
    return load_backend(ref.weights, backend=settings.backend, dtype=resolve_dtype_for(settings, ref),
                        device=settings.device,
                        quantization=resolve_quantization(settings, ref), adapter=ref.adapter,
                        vllm=vllm_options(settings))
