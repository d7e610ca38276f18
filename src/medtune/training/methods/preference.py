"""Preference tuning through TRL's ``DPOTrainer``: the one stage that the ``dpo`` method and KnowTuning's knowledge
comparison (KC) both run.

What it adds to TRL:

- **the order.** ``batches`` (lists of pair positions, one list per optimizer step) replace TRL's sampler: each
  step trains exactly its pairs, in one micro-batch, so a step of the plan is a step of the run (the ``dpo``
  method passes the planned steps of its order file). Without ``batches`` the pairs run in their given order
  (``train_sampling_strategy="sequential"``, KnowTuning's KC).
- **the log.** Every step is appended to ``train_log.jsonl`` with the ids of the pairs whose loss it computed,
  taken from the batch itself (each pair's position travels through the collator beside its tokens), not copied
  from the plan, so the log is evidence of the realised order as the standard loop's log is.
- **no pair silently dropped.** TRL drops a pair whose prompt alone fills ``max_length``; here that is an error
  naming the pair.
- **the reference as a scorer.** :func:`reference_backend` exposes the trainer's reference model (the policy with
  its adapter disabled, or the frozen ``ref_model``) through medtune's scoring interface, so a run can record, and a
  test check, which model the reference was.

The loss is a list of TRL losses with weights (:class:`PreferenceLoss`): DPO's ``sigmoid`` with ``beta``, plus, with
a weight, TRL's ``sft`` term (the mean per-token negative log-likelihood of the chosen answers).

CPU-friendly settings (fp32 on a CPU; on a GPU the run's bf16/fp16 mixed precision), no gradient checkpointing
unless asked, no checkpoints (``save_strategy="no"``), no trackers (``report_to=[]``), so a seed fixes the run.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from medtune.errors import InputError

if TYPE_CHECKING:
    from medtune.training.config import TrainSettings

LOG_NAME = "train_log.jsonl"
# The dataset column (and batch key) holding each pair's position in the list the trainer was given.
PAIR_INDEX = "pair_index"


class Pair(Protocol):
    """A preference pair: ``chosen`` preferred over ``rejected`` as the answer to ``prompt`` (the prompt as the
    model reads it)."""

    id: str
    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class PreferencePair:
    id: str
    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class PreferenceLoss:
    """TRL's ``loss_type`` list, its ``loss_weights`` and ``beta``."""

    types: tuple[str, ...]
    weights: tuple[float, ...]
    beta: float

    def to_dict(self) -> dict[str, Any]:
        return {"type": list(self.types), "weights": list(self.weights), "beta": self.beta}


@dataclass(frozen=True)
class PreferenceSchedule:
    """How long and how fast the stage trains, and how many pairs one micro-batch holds."""

    lr: float
    epochs: int
    max_steps: int | None
    batch_size: int
    grad_accum: int


def preference_arguments(config: TrainSettings, out: Path, loss: PreferenceLoss, schedule: PreferenceSchedule, *,
                         progress: bool = False) -> Any:
    """The ``DPOConfig`` of a preference stage: the run's settings, with the stage's loss and schedule."""
    from trl import DPOConfig

    with warnings.catch_warnings():  # TRL sets transformers' deprecated gradient_checkpointing alias itself
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
        return DPOConfig(
            output_dir=str(out), learning_rate=schedule.lr, num_train_epochs=float(schedule.epochs),
            max_steps=schedule.max_steps or -1, per_device_train_batch_size=schedule.batch_size,
            gradient_accumulation_steps=schedule.grad_accum, lr_scheduler_type=config.scheduler,
            warmup_steps=config.warmup_steps, weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm if config.max_grad_norm else 0.0, max_length=config.max_length,
            beta=loss.beta, loss_type=list(loss.types), loss_weights=list(loss.weights),
            seed=config.seed, data_seed=config.seed, train_sampling_strategy="sequential",
            # The run's resolved precision (bf16 mixed precision on a bf16 GPU, fp16 with loss scaling on an older
            # one, fp32 on a CPU), as the standard loop computes.
            bf16=config.resolved_dtype() == "bf16" and torch.cuda.is_available(),
            fp16=config.resolved_dtype() == "fp16", use_cpu=not torch.cuda.is_available(),
            gradient_checkpointing=config.gradient_checkpointing, report_to=[], save_strategy="no", logging_steps=1,
            disable_tqdm=not progress, dataloader_num_workers=0, push_to_hub=False, trust_remote_code=False,
        )


# ----------------------------------------------------------------------------------------------------------
# The trainer (classes built on first use: TRL and transformers are imported only when a stage runs)


@functools.cache
def _ordered_trainer_class() -> type:
    from torch.utils.data import DataLoader
    from trl import DPOTrainer

    class OrderedDPOTrainer(DPOTrainer):
        """DPOTrainer that trains given batches in order and reports the pairs of each step's loss."""

        planned_batches: list[list[int]] | None = None
        seen: list[int]

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if PAIR_INDEX not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, PAIR_INDEX]

        def get_train_dataloader(self) -> Any:
            if self.planned_batches is None:
                return super().get_train_dataloader()
            dataset = self._remove_unused_columns(self.train_dataset, description="training")
            loader = DataLoader(dataset, batch_sampler=self.planned_batches, collate_fn=self.data_collator,
                                num_workers=0)
            return self.accelerator.prepare(loader)

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            index = inputs.pop(PAIR_INDEX, None)
            if index is not None and model.training:
                self.seen.extend(int(i) for i in index.tolist())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return OrderedDPOTrainer


class _IndexedCollator:
    """TRL's collator, with each pair's position carried beside its tokens into the batch."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        index = [int(e.pop(PAIR_INDEX)) for e in examples]
        batch = self.inner(examples)
        batch[PAIR_INDEX] = torch.tensor(index)
        return batch


def _log_callback(path: Path, trainer: Any, ids: Sequence[str], epochs: Sequence[int] | None) -> Any:
    """Appends each optimizer step to ``path``: step, epoch, the ids of the step's pairs, and TRL's numbers."""
    from transformers import TrainerCallback

    from medtune.training.runlog import RunLog

    class LogCallback(TrainerCallback):
        def __init__(self) -> None:
            self.log = RunLog(path)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if not logs or "loss" not in logs:
                return
            step = int(state.global_step)
            epoch = epochs[step - 1] if epochs is not None and step <= len(epochs) else state.epoch
            numbers = {k: v for k, v in logs.items() if isinstance(v, int | float) and k not in ("step", "epoch")}
            self.log.write({"step": step, "epoch": epoch, "ids": [ids[i] for i in trainer.seen], **numbers})
            trainer.seen.clear()

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.log.close()

    return LogCallback()


def build_preference_trainer(config: TrainSettings, pairs: Sequence[Pair], model: Any, tokenizer: Any, out: Path,
                             loss: PreferenceLoss, schedule: PreferenceSchedule, *,
                             batches: Sequence[Sequence[int]] | None = None, epochs: Sequence[int] | None = None,
                             ref_model: Any = None, peft_config: Any = None, progress: bool = False,
                             file: str | Path | None = None) -> Any:
    """A ``DPOTrainer`` on ``pairs`` that logs to ``out/train_log.jsonl`` (module docstring).

    ``model`` is the policy (a PEFT model: its adapter disabled is the reference; or give ``ref_model``, or
    ``peft_config`` for TRL to add the adapter). ``batches``: the pairs of each step, by position in ``pairs``, in
    training order (``epochs``: each step's epoch, for the log). ``file`` names the pairs in errors.
    """
    import datasets
    from datasets import Dataset

    out.mkdir(parents=True, exist_ok=True)
    (out / LOG_NAME).unlink(missing_ok=True)
    data = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, PAIR_INDEX: k}
                              for k, p in enumerate(pairs)])
    kwargs: dict[str, Any] = {}
    if ref_model is not None:
        kwargs["ref_model"] = ref_model
    if peft_config is not None:
        kwargs["peft_config"] = peft_config
    torch.manual_seed(config.seed)
    bars = datasets.is_progress_bar_enabled()
    if not progress:  # the trainer's dataset preparation draws a bar per step; a grid's log needs none of them
        datasets.disable_progress_bars()
    try:
        trainer = _ordered_trainer_class()(
            model=model, args=preference_arguments(config, out, loss, schedule, progress=progress),
            train_dataset=data, processing_class=tokenizer, **kwargs)
    finally:
        if bars:
            datasets.enable_progress_bars()
    _check_none_dropped(trainer.train_dataset, pairs, config.max_length, file)
    trainer.seen = []
    trainer.planned_batches = [list(b) for b in batches] if batches is not None else None
    trainer.data_collator = _IndexedCollator(trainer.data_collator)
    trainer.add_callback(_log_callback(out / LOG_NAME, trainer, [p.id for p in pairs], epochs))
    if not progress:  # without a progress bar the Trainer prints every logged step; train_log.jsonl has them
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def _check_none_dropped(dataset: Any, pairs: Sequence[Pair], max_length: int, file: str | Path | None) -> None:
    """TRL drops a pair whose prompt alone fills ``max_length``; here the first such pair is an error."""
    if len(dataset) == len(pairs):
        return
    kept = set(dataset[PAIR_INDEX])
    first = next(k for k in range(len(pairs)) if k not in kept)
    raise InputError(f"the prompt alone fills max_length ({max_length} tokens), so this pair would teach nothing; "
                     "raise --max-length or shorten the prompt", file=file, record=pairs[first].id, field="prompt")


# ----------------------------------------------------------------------------------------------------------
# The reference and the policy as scorers


@contextlib.contextmanager
def reference_backend(trainer: Any) -> Iterator[Any]:
    """The trainer's reference model as a medtune scoring backend, exactly as DPOTrainer computes its reference:
    the policy with its adapter disabled (PEFT), or its ``ref_model``."""
    from medtune.models import LoadedModel
    from medtune.scoring.backends import as_backend

    model = trainer.model
    was_training = model.training
    tok = trainer.processing_class
    try:
        if trainer.ref_model is None:
            with model.disable_adapter():
                yield as_backend(LoadedModel(model, tok, "preference-reference", model.dtype, str(model.device)))
        else:
            ref = trainer.ref_model
            yield as_backend(LoadedModel(ref, tok, "preference-reference", ref.dtype, str(ref.device)))
    finally:
        model.train(was_training)


def pair_logprobs(backend: Any, pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """Each pair's log-likelihood of its chosen and of its rejected answer under ``backend`` (medtune's prompt
    split, as evaluation scores), and their difference (``margin``)."""
    results = backend.loglikelihood([(p.prompt, x) for p in pairs for x in (p.chosen, p.rejected)])
    rows = []
    for k, p in enumerate(pairs):
        chosen, rejected = float(results[2 * k][0]), float(results[2 * k + 1][0])
        rows.append({"id": p.id, "chosen": chosen, "rejected": rejected, "margin": chosen - rejected})
    return rows


def reference_logprobs(trainer: Any, pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """The reference's log-likelihood of each pair's chosen and rejected answer."""
    with reference_backend(trainer) as backend:
        return [{k: r[k] for k in ("id", "chosen", "rejected")} for r in pair_logprobs(backend, pairs)]


def policy_logprobs(trainer: Any, pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """The policy's (the model being trained, adapter on) log-likelihoods and margins of ``pairs``."""
    from medtune.models import LoadedModel
    from medtune.scoring.backends import as_backend

    model = trainer.model
    was_training = model.training
    try:
        backend = as_backend(LoadedModel(model, trainer.processing_class, "preference-policy", model.dtype,
                                         str(model.device)))
        return pair_logprobs(backend, pairs)
    finally:
        model.train(was_training)


def log_history(trainer: Any) -> list[dict[str, Any]]:
    """TRL's log history with only its finite numbers (JSON-able)."""
    import math

    return [{k: v for k, v in h.items() if isinstance(v, int | float) and math.isfinite(v)}
            for h in trainer.state.log_history]
