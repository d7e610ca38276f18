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

The trainer, its log (``kc/train_log.jsonl``, with the ids of each step's triples) and the reference check are the
preference stage the ``dpo`` method runs too (:mod:`medtune.training.methods.preference`); here the triples train
in file order (``train_sampling_strategy="sequential"``) in micro-batches of ``batch_size`` with ``grad_accum``,
frozen weights in half precision on a GPU, so a seed fixes the run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medtune.training.methods.knowtuning.corruption import Triple
from medtune.training.methods.preference import (
    LOG_NAME,
    PreferenceLoss,
    PreferenceSchedule,
    build_preference_trainer,
    log_history,
    preference_arguments,
    reference_logprobs,
)

if TYPE_CHECKING:
    from medtune.training.config import TrainSettings

__all__ = ["LOG_NAME", "METRICS_NAME", "build_kc_trainer", "dpo_arguments", "kc_loss", "kc_schedule", "run_kc"]

METRICS_NAME = "metrics.json"


def kc_loss(config: TrainSettings) -> PreferenceLoss:
    """Sigmoid DPO with ``knowtuning.beta`` plus ``knowtuning.sft_weight`` times the chosen answer's NLL."""
    return PreferenceLoss(("sigmoid", "sft"), (1.0, config.knowtuning.sft_weight), config.knowtuning.beta)


def kc_schedule(config: TrainSettings) -> PreferenceSchedule:
    """The KC learning rate and epochs (``knowtuning.kc_*``, else the run's), the run's batch and step limit."""
    return PreferenceSchedule(lr=config.knowtuning.kc_lr or config.lr,
                              epochs=config.knowtuning.kc_epochs or config.epochs or 1,
                              max_steps=config.max_steps, batch_size=config.batch_size, grad_accum=config.grad_accum)


def dpo_arguments(config: TrainSettings, out: Path, *, progress: bool = False) -> Any:
    """The ``DPOConfig`` of the KC stage, from the run's settings (module docstring)."""
    return preference_arguments(config, out, kc_loss(config), kc_schedule(config), progress=progress)


def build_kc_trainer(config: TrainSettings, triples: Sequence[Triple], ka_model_dir: Path, out: Path, *,
                     progress: bool = False) -> Any:
    """A ``DPOTrainer`` whose policy starts from, and whose reference is, the merged KA model in ``ka_model_dir``."""
    from medtune.models import load_pretrained
    from medtune.training.methods.knowtuning.inner import lora_config

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # A frozen reference (and a LoRA policy's frozen base) needs no fp32 master copy: half precision on a GPU.
    precision = config.resolved_dtype()
    frozen = precision if precision in ("bf16", "fp16") and device == "cuda" else "fp32"
    policy_dtype = frozen if config.knowtuning.inner_method == "lora" else "fp32"
    policy = load_pretrained(ka_model_dir, dtype=policy_dtype, device=device,
                             attn_implementation=config.attn_implementation)
    kwargs: dict[str, Any] = {}
    if config.knowtuning.inner_method == "lora":
        kwargs["peft_config"] = lora_config(policy.model, config)
    else:
        kwargs["ref_model"] = load_pretrained(ka_model_dir, dtype=frozen, device=device,
                                              attn_implementation=config.attn_implementation).model
    return build_preference_trainer(config, triples, policy.model, policy.tokenizer, out, kc_loss(config),
                                    kc_schedule(config), progress=progress, file=out / "triples.jsonl", **kwargs)


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
        "loss": kc_loss(config).to_dict(),
        "reference": "KA model with the KC adapter disabled" if config.knowtuning.inner_method == "lora"
        else "a frozen copy of the KA model",
        "log_history": log_history(trainer),
    }
    write_json_atomic(out / METRICS_NAME, summary)
    return model, trainer.processing_class, summary
