"""``dpo``: preference tuning (Rafailov et al., 2023) on prompt / chosen / rejected pairs, by TRL's DPOTrainer.

The pairs are an items file made by the ``preference`` loader (:mod:`medtune.data.preference`: question = prompt,
answer = chosen, ``meta.rejected``), so an order is built on their ids like on any items. **The planned order of
pairs** is that order file read as for any run: its epochs (``epochs`` of them, repeated or cut as the file's
``epoch_policy`` says), cut into steps of the global batch (``batch_size`` × ``grad_accum`` pairs; the last step of
an epoch may be short), ``max_steps`` at most. Each optimizer step trains exactly its step's pairs, in one
micro-batch, with no sampler and no shuffling, and ``train_log.jsonl`` records the ids of each step's pairs from
the batch itself, so ``medtune verify-order`` checks a DPO run as any other.

What trains is a LoRA adapter on every linear layer but the head (the ``lora`` settings, as ``--method lora``); the
reference is the base model, i.e. the policy with its adapter disabled, so no second copy is held. The prompt is
the free-text prompt the evaluation renders (:func:`medtune.prompts.qa_prompt`), so the model is scored on what
it was tuned on. The run folder is an adapter run's (``adapter/``, ``base/``, ``config.json`` with method
``dpo``, ``order.json``, ``train_log.jsonl``), evaluated like any other; ``preference_logprobs.jsonl`` holds the
first ``dpo.check_pairs`` pairs' log-probabilities of the chosen and the rejected answer under the policy before
and after training and under the reference, and ``config.json``'s ``dpo`` section their mean margins.

DPO runs in one process and keeps no checkpoints (``--resume`` is refused: train again into a new folder).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from medtune.errors import ConfigError, InputError
from medtune.training.method_settings import DpoSettings
from medtune.training.methods.base import MethodSpec, StandardLoop, register_method
from medtune.training.methods.lora import apply_lora

if TYPE_CHECKING:
    from medtune.training.config import TrainSettings
    from medtune.training.methods.preference import PreferenceLoss, PreferencePair
    from medtune.training.result import TrainResult

# The TrainSettings fields ``dpo`` reads besides its own group (``dpo``: DpoSettings): the adapter it trains.
DPO_SETTINGS: tuple[str, ...] = ("lora",)
LOGPROBS_NAME = "preference_logprobs.jsonl"


@dataclass(frozen=True)
class DpoMethod(MethodSpec):
    """A LoRA adapter trained by DPO on preference pairs in the planned order."""

    def prepare(self, model: nn.Module, config: TrainSettings) -> nn.Module:
        return apply_lora(model, config)

    def train_run(self, config: TrainSettings, items: Any, order: dict[str, Any], run_dir: Path, *,
                  loop: StandardLoop, **options: Any) -> TrainResult:
        return run_dpo(config, items, order, Path(run_dir), loop=loop, **options)


def dpo_loss(settings: DpoSettings) -> PreferenceLoss:
    """The loss TRL computes: ``loss_type`` with ``beta``, plus ``sft_weight`` times the chosen answers' NLL."""
    from medtune.training.methods.preference import PreferenceLoss

    if settings.sft_weight > 0:
        return PreferenceLoss((settings.loss_type, "sft"), (1.0, settings.sft_weight), settings.beta)
    return PreferenceLoss((settings.loss_type,), (1.0,), settings.beta)


def planned_pairs(items: Any, order: dict[str, Any], config: TrainSettings, *,
                  items_path: Any = None, order_path: Any = None) -> tuple[list[PreferencePair], list[Any]]:
    """(the pairs the plan trains, each once, in order of first use; the planned steps) — checked before any model
    loads: every planned id must be an item, and every such item a preference pair."""
    from medtune.data.preference import preference_pair
    from medtune.prompts import qa_prompt
    from medtune.training.data import check_ids_known, plan_steps, planned_epochs
    from medtune.training.methods.preference import PreferencePair

    by_id = {it.id: it for it in items}
    epochs = planned_epochs(order, config.epochs)
    check_ids_known(epochs, set(by_id), file=order_path)
    plan = plan_steps(epochs, config.global_batch, config.max_steps)
    if not plan:
        raise InputError("the order plans no training step", file=order_path)
    pairs: dict[str, PreferencePair] = {}
    for step in plan:
        for item_id in step.ids:
            if item_id not in pairs:
                item = by_id[item_id]
                chosen, rejected = preference_pair(item, file=items_path)
                pairs[item_id] = PreferencePair(item_id, qa_prompt(item), chosen, rejected)
    return list(pairs.values()), plan


def step_batches(pairs: list[PreferencePair], plan: list[Any]) -> list[list[int]]:
    """Each planned step's pairs as positions in ``pairs``: the batches the trainer runs, in order."""
    position = {p.id: k for k, p in enumerate(pairs)}
    return [[position[i] for i in step.ids] for step in plan]


def _check_run(config: TrainSettings, run_dir: Path, resume: bool) -> None:
    if config.optim not in (None, "adamw"):
        raise ConfigError(f"dpo trains with TRL's AdamW; optim '{config.optim}' does not apply (leave it unset)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("dpo runs in one process (TRL's DPOTrainer); run it without torchrun")
    if resume:
        raise ConfigError("dpo runs keep no checkpoints and cannot be resumed; train again into a new folder")
    done = [p for p in (run_dir / "train_log.jsonl", run_dir / "adapter") if p.exists()]
    if done:
        raise InputError("the run folder already holds a run; choose another output folder", file=run_dir)


def _mean_margin(rows: list[dict[str, Any]]) -> float | None:
    return sum(r["margin"] for r in rows) / len(rows) if rows else None


def run_dpo(config: TrainSettings, items: Any, order: dict[str, Any], run_dir: Path, *, loop: StandardLoop,
            model: Any = None, tokenizer: Any = None, textbook: Any = None, resume: bool = False,
            progress: bool = False, items_path: Any = None, order_path: Any = None) -> TrainResult:
    """Train the adapter on the planned pairs and write the run folder (module docstring)."""
    import json

    import torch

    from medtune.io import write_json_atomic, write_text_atomic
    from medtune.training.methods.base import find_target_modules, get_method, trainable_parameters
    from medtune.training.methods.preference import (
        PreferenceSchedule,
        build_preference_trainer,
        log_history,
        policy_logprobs,
        reference_logprobs,
    )

    t0 = time.perf_counter()
    _check_run(config, run_dir, resume)
    settings = config.settings_group("dpo")
    assert isinstance(settings, DpoSettings)
    pairs, plan = planned_pairs(items, order, config, items_path=items_path, order_path=order_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    base, tok, source = loop.load_base_model(config, items, run_dir, model=model, tokenizer=tokenizer,
                                             textbook=textbook)
    targets = find_target_modules(base)
    # The precision the run computes in: that of its frozen base (half precision on a GPU, with autocast).
    dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(next(base.parameters()).dtype, "fp32")
    torch.manual_seed(config.seed)  # the adapter's initialisation
    policy = apply_lora(base, config)
    loss = dpo_loss(settings)
    # One micro-batch per planned step: the step's pairs, however many (the last step of an epoch may be short).
    schedule = PreferenceSchedule(lr=config.lr, epochs=1, max_steps=len(plan), batch_size=config.global_batch,
                                  grad_accum=1)
    trainer = build_preference_trainer(
        config, pairs, policy, tok, run_dir, loss, schedule, batches=step_batches(pairs, plan),
        epochs=[s.epoch for s in plan], progress=progress, file=items_path)
    checked = pairs[: settings.check_pairs]
    before = policy_logprobs(trainer, checked)
    result = trainer.train()
    after = policy_logprobs(trainer, checked)
    reference = reference_logprobs(trainer, checked)
    rows = [{"id": b["id"], "before": {k: b[k] for k in ("chosen", "rejected", "margin")},
             "after": {k: a[k] for k in ("chosen", "rejected", "margin")},
             "reference": {k: r[k] for k in ("chosen", "rejected")}}
            for b, a, r in zip(before, after, reference, strict=True)]
    write_text_atomic(run_dir / LOGPROBS_NAME, "".join(json.dumps(r) + "\n" for r in rows))
    trained = trainer.model
    trained.eval()
    spec = get_method(config.method)
    output = spec.save(trained, tok, run_dir)
    history = log_history(trainer)
    losses = [float(h["loss"]) for h in history if "loss" in h]
    steps = int(trainer.state.global_step)
    summary = {
        "pairs": len(pairs), "steps": steps, "loss": loss.to_dict(),
        "reference": "the base model (the policy with its adapter disabled)",
        "final_loss": losses[-1] if losses else None,
        "train_runtime": float(result.metrics.get("train_runtime", 0.0)),
        "checked_pairs": len(rows), "mean_margin_before": _mean_margin(before),
        "mean_margin_after": _mean_margin(after),
    }
    device = next(trained.parameters()).device.type
    meta = {
        "train": config.to_dict(),
        "precision": {"dtype": dtype, "base_quantization": None},
        "items": str(items_path) if items_path else None,
        "order": str(order_path) if order_path else None,
        "order_strategy": order.get("strategy"),
        "base_model": source,
        "world_size": 1,
        "device": device,
        "attn_implementation": config.attn_implementation,
        "target_modules": targets,
        "trainable_parameters": sum(p.numel() for _, p in trainable_parameters(trained)),
        "optimizer": "AdamW (TRL)",
        "planned_steps": len(plan),
        "dpo": summary,
    }
    write_json_atomic(run_dir / "config.json", meta)
    write_json_atomic(run_dir / "order.json", order)
    tokens = int(max((h.get("num_tokens", 0) for h in history), default=0))  # TRL's running count
    return loop.result_type(run_dir, trained, tok, steps, losses, tokens, time.perf_counter() - t0, output)


DPO = register_method(DpoMethod(
    name="dpo", summary="DPO on preference pairs (prompt / chosen / rejected) in the planned order: a LoRA adapter "
                        "against the base model as reference; saves adapter/",
    is_adapter=True, settings=DPO_SETTINGS, settings_class=DpoSettings, settings_group="dpo",
))

__all__ = ["DPO", "DPO_SETTINGS", "DpoMethod", "dpo_loss", "planned_pairs", "run_dpo", "step_batches"]
