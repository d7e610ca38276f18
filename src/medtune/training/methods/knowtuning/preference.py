"""KnowTuning's second stage, coarse-grained knowledge comparison (KC): DPO on the triples, by TRL's DPOTrainer.

The loss is DPO plus a supervised term on the chosen answer, as the authors ran it (LLaMA-Factory's
``pref_ftx`` / ``dpo_ftx``, 0.2 in their scripts). TRL 1.x expresses that as a list of losses with weights:
``loss_type=["sigmoid", "sft"]``, ``loss_weights=[1, knowtuning.sft_weight]`` — the sigmoid DPO loss with
``beta``, plus ``w`` times the mean per-token negative log-likelihood of the chosen answers of the batch (TRL's
``sft`` term; with one pair per batch it is exactly the per-answer length-normalised NLL LLaMA-Factory adds).
TRL 1.x has no ``rpo_alpha`` any more; the list form is its replacement.

The reference model is the KA model. With LoRA, the KC adapter is a *new* adapter on the merged KA weights, so
the adapter-disabled model — what DPOTrainer uses as reference when it is given no ``ref_model`` — is the KA
model itself. With full training, the reference is a second, frozen copy loaded from the same merged folder.
:func:`reference_backend` exposes that reference through medtune's scoring interface, so the run can record
(and a test can check) that its log-probabilities are the KA model's.

CPU-friendly settings (fp32 on a CPU; on a GPU the run's bf16/fp16 mixed precision, frozen weights in half
precision), no gradient checkpointing unless asked, no checkpoints (``save_strategy="no"``), no
trackers (``report_to=[]``), and the triples in file order (``train_sampling_strategy="sequential"``), so a seed
fixes the run.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medtune.training.methods.knowtuning.corruption import Triple

if TYPE_CHECKING:
    from medtune.training.config import TrainSettings

LOG_NAME = "train_log.jsonl"
METRICS_NAME = "metrics.json"


def dpo_arguments(config: TrainSettings, out: Path, *, progress: bool = False) -> Any:
    """The ``DPOConfig`` of the KC stage, from the run's settings (module docstring)."""
    from trl import DPOConfig

    epochs = config.knowtuning.kc_epochs or config.epochs or 1
    with warnings.catch_warnings():  # TRL sets transformers' deprecated gradient_checkpointing alias itself
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
        return _dpo_config(DPOConfig, config, out, epochs, progress)


def _dpo_config(cls: Any, config: TrainSettings, out: Path, epochs: int, progress: bool) -> Any:
    return cls(
        output_dir=str(out), learning_rate=config.knowtuning.kc_lr or config.lr, num_train_epochs=float(epochs),
        max_steps=config.max_steps or -1, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_steps, weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm if config.max_grad_norm else 0.0, max_length=config.max_length,
        beta=config.knowtuning.beta, loss_type=["sigmoid", "sft"], loss_weights=[1.0, config.knowtuning.sft_weight],
        seed=config.seed, data_seed=config.seed, train_sampling_strategy="sequential",
        # The run's resolved precision (bf16 mixed precision on a bf16 GPU, fp16 with loss scaling on an older one,
        # fp32 on a CPU), as the KA stage's loop computes.
        bf16=config.resolved_dtype() == "bf16" and torch.cuda.is_available(),
        fp16=config.resolved_dtype() == "fp16", use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=config.gradient_checkpointing, report_to=[], save_strategy="no", logging_steps=1,
        disable_tqdm=not progress, dataloader_num_workers=0, push_to_hub=False, trust_remote_code=False,
    )


class _LogCallback:
    """Appends each logged step of the DPO trainer to ``kc/train_log.jsonl`` (built lazily: transformers' base
    class is imported only when the stage runs)."""

    @staticmethod
    def make(path: Path) -> Any:
        from transformers import TrainerCallback

        from medtune.training.runlog import RunLog

        class LogCallback(TrainerCallback):
            def __init__(self) -> None:
                self.log = RunLog(path)

            def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                       **kwargs: Any) -> None:
                if logs and "loss" in logs:
                    self.log.write({"step": state.global_step, "epoch": state.epoch,
                                    **{k: v for k, v in logs.items() if isinstance(v, int | float)}})

            def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                self.log.close()

        return LogCallback()


def build_kc_trainer(config: TrainSettings, triples: Sequence[Triple], ka_model_dir: Path, out: Path, *,
                     progress: bool = False) -> Any:
    """A ``DPOTrainer`` whose policy starts from, and whose reference is, the merged KA model in ``ka_model_dir``."""
    from datasets import Dataset
    from trl import DPOTrainer

    from medtune.models import load_pretrained
    from medtune.training.methods.knowtuning.inner import lora_config

    out.mkdir(parents=True, exist_ok=True)
    (out / LOG_NAME).unlink(missing_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # A frozen reference (and a LoRA policy's frozen base) needs no fp32 master copy: half precision on a GPU.
    precision = config.resolved_dtype()
    frozen = precision if precision in ("bf16", "fp16") and device == "cuda" else "fp32"
    policy_dtype = frozen if config.knowtuning.inner_method == "lora" else "fp32"
    policy = load_pretrained(ka_model_dir, dtype=policy_dtype, device=device,
                             attn_implementation=config.attn_implementation)
    data = Dataset.from_list([{"prompt": t.prompt, "chosen": t.chosen, "rejected": t.rejected} for t in triples])
    kwargs: dict[str, Any] = {}
    if config.knowtuning.inner_method == "lora":
        kwargs["peft_config"] = lora_config(policy.model, config)
    else:
        kwargs["ref_model"] = load_pretrained(ka_model_dir, dtype=frozen, device=device,
                                              attn_implementation=config.attn_implementation).model
    torch.manual_seed(config.seed)
    import datasets

    bars = datasets.is_progress_bar_enabled()
    if not progress:  # the trainer's dataset preparation draws a bar per step; a grid's log needs none of them
        datasets.disable_progress_bars()
    try:
        trainer = DPOTrainer(model=policy.model, args=dpo_arguments(config, out, progress=progress),
                             train_dataset=data, processing_class=policy.tokenizer,
                             callbacks=[_LogCallback.make(out / LOG_NAME)], **kwargs)
    finally:
        if bars:
            datasets.enable_progress_bars()
    if not progress:  # without a progress bar the Trainer prints every logged step; kc/train_log.jsonl has them
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


@contextlib.contextmanager
def reference_backend(trainer: Any) -> Iterator[Any]:
    """The trainer's reference model as a medtune scoring backend, exactly as DPOTrainer computes its reference:
    the policy with its adapter disabled (LoRA), or its ``ref_model`` (full)."""
    from medtune.models import LoadedModel
    from medtune.scoring.backends import as_backend

    model = trainer.model
    was_training = model.training
    tok = trainer.processing_class
    try:
        if trainer.ref_model is None:
            with model.disable_adapter():
                yield as_backend(LoadedModel(model, tok, "kc-reference", model.dtype, str(model.device)))
        else:
            ref = trainer.ref_model
            yield as_backend(LoadedModel(ref, tok, "kc-reference", ref.dtype, str(ref.device)))
    finally:
        model.train(was_training)


def reference_logprobs(trainer: Any, triples: Sequence[Triple]) -> list[dict[str, Any]]:
    """The reference's log-likelihood of each triple's chosen and rejected answer (medtune's prompt split)."""
    pairs = [(t.prompt, x) for t in triples for x in (t.chosen, t.rejected)]
    with reference_backend(trainer) as backend:
        results = backend.loglikelihood(pairs)
    return [{"id": t.id, "chosen": results[2 * k][0], "rejected": results[2 * k + 1][0]}
            for k, t in enumerate(triples)]


def run_kc(config: TrainSettings, triples: Sequence[Triple], ka_model_dir: Path, out: Path, *,
           progress: bool = False, check_pairs: int = 4) -> tuple[Any, Any, dict[str, Any]]:
    """Train KC; returns the merged KC model, its tokenizer, and a summary (also written to ``out/metrics.json``).

    After training, the reference's log-probabilities of the first ``check_pairs`` triples are written to
    ``out/reference_logprobs.jsonl``: read against the KA model, they show the reference was the KA model.
    """
    from medtune.io import write_json_atomic, write_text_atomic

    trainer = build_kc_trainer(config, triples, ka_model_dir, out, progress=progress)
    result = trainer.train()
    checks = reference_logprobs(trainer, triples[:check_pairs])
    write_text_atomic(out / "reference_logprobs.jsonl", "".join(json.dumps(c) + "\n" for c in checks))
    model = trainer.model
    if config.knowtuning.inner_method == "lora":
        model = model.merge_and_unload()
    model.eval()
    history = [h for h in trainer.state.log_history if "loss" in h]
    losses = [float(h["loss"]) for h in history]
    summary = {
        "steps": int(trainer.state.global_step), "triples": len(triples),
        "final_loss": losses[-1] if losses else None, "train_runtime": float(result.metrics.get("train_runtime", 0)),
        "loss": {"type": ["sigmoid", "sft"], "weights": [1.0, config.knowtuning.sft_weight],
                 "beta": config.knowtuning.beta},
        "reference": "KA model with the KC adapter disabled" if config.knowtuning.inner_method == "lora"
        else "a frozen copy of the KA model",
        "log_history": [{k: v for k, v in h.items() if isinstance(v, int | float) and math.isfinite(v)}
                        for h in trainer.state.log_history],
    }
    write_json_atomic(out / METRICS_NAME, summary)
    return model, trainer.processing_class, summary
