"""Validation during training: the held-out loss (and accuracy) every ``every`` steps, early stopping, and the best
checkpoint as the run's model (``TrainSettings.validation``, :mod:`medtune.training.validation_settings`).

What one validation after optimizer step ``s`` does:

- the **loss** is the training loss on the validation items — the same prompts, completions, labels, packing and
  answer-only head (the loop's :class:`~medtune.training.loop.AnswerLoss` module, in eval mode, without
  gradients): the summed cross-entropy over every answer token of the validation items divided by their number.
  Every process computes its contiguous slice of the items and the sums are added up, so any number of processes
  gives the same value (a sharded model runs as many passes on every rank as the busiest one needs, as a step does);
- the **accuracy** of the multiple-choice items is scored on the main process the way the anchor check and an
  adaptive decision score the model being trained (:mod:`medtune.training.scores`: the letter, or the option text
  for an option target) — not on a sharded model, which no one process holds;
- the main process takes the value of ``metric`` into the early-stopping rules
  (:mod:`medtune.training.validation_rules`), appends a ``validation`` record to ``train_log.jsonl`` (and a
  ``stop`` record when the rules stop the run), reports to the trackers and the console, and broadcasts its
  decision, so every process stops after the same step;
- with ``keep_best``, a new best validation's trainable weights go to ``RUN_DIR/best/step-S.safetensors``
  (gathered in full from a sharded model); at the end they are put back into the model before it is saved, so the
  run's ``adapter/`` or ``model/`` holds the best weights.

Training is unchanged by a validation: no gradients, modules put back in train mode, torch's random generators
restored. A checkpoint keeps the rules' state (best value, best step, validations without improvement) and the
best weights it refers to, so a resumed run stops where an uninterrupted one would.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtune.errors import ConfigError, InputError
from medtune.schema import Item, MCQItem
from medtune.training import checkpoint as ckpt
from medtune.training.data import Encoded, collate, encode_items, micro_batches, rank_slice
from medtune.training.scores import untouched
from medtune.training.validation_rules import (
    STOP_KIND,
    VALIDATION_KIND,
    EarlyStopping,
    held_out_share,
    without_ids,
)

log = logging.getLogger(__name__)

BEST_DIR = "best"
SCORE_BATCH = 16  # items per scoring batch of the accuracy (as the anchor check scores)


@dataclass
class Validation:
    """The validation items of a run and the early-stopping state (built before any model loads)."""

    config: Any  # TrainSettings
    items: list[Item]
    held_out: list[str]  # ids taken out of the training order
    source: str  # the items file, or "share"
    rules: EarlyStopping = field(init=False)
    encoded: list[Encoded] = field(init=False, default_factory=list)
    pad_id: int = field(init=False, default=0)
    chat: Any = field(init=False, default=None)  # the run's chat format (medtune.chat_format), set by encode
    run_dir: Path | None = None

    def __post_init__(self) -> None:
        v = self.config.validation
        self.rules = EarlyStopping(v.metric, v.patience, v.min_delta)

    @property
    def settings(self) -> Any:
        return self.config.validation

    # -- set-up ------------------------------------------------------------------------------------------------

    @classmethod
    def plan(cls, config: Any, epochs: Sequence[Sequence[str]], items: Sequence[Item], *,
             candidate_ids: set[str] | None = None) -> Validation | None:
        """The validation ``config`` asks for (``None`` without one), its items read and checked now.

        ``epochs`` are the planned epochs (the share is drawn from their ids); ``candidate_ids`` the pool of an
        adaptive planner, which decides its own steps: a share cannot be taken out of it, and validation items from
        a file must not be in it.
        """
        v = config.validation
        if not v.enabled:
            return None
        planned = {i for epoch in epochs for i in epoch}
        if v.share is not None:
            if candidate_ids is not None:
                raise ConfigError("validation.share holds items out of a fixed order; an adaptive run decides its "
                                  "own items: give validation.items (a file of items outside its pool)")
            held = held_out_share(epochs, v.share, v.seed)
            by_id = {it.id: it for it in items}
            val_items, source = [by_id[i] for i in held], "share"
        else:
            from medtune.schema import read_items

            path = Path(v.items).expanduser()
            val_items = [it for it in read_items(path) if v.split is None or it.split == v.split]
            if not val_items:
                raise InputError(f"no validation items{f' in split {v.split!r}' if v.split else ''}", file=path,
                                 field="split" if v.split else None)
            val_ids = {it.id for it in val_items}
            if candidate_ids is not None and val_ids & candidate_ids:
                first = sorted(val_ids & candidate_ids)[0]
                raise ConfigError(f"validation.items: item '{first}' is also in the adaptive run's pool; validate "
                                  "on items it cannot train on")
            held, source = sorted(val_ids & planned), str(path)
            if held:
                log.warning("%d validation items are also in the training order (first: %r): they are held out of "
                            "training", len(held), held[0])
        if v.max_items is not None:
            val_items = val_items[:v.max_items]
        if v.metric == "val_accuracy" and not any(isinstance(it, MCQItem) for it in val_items):
            raise ConfigError("validation.metric val_accuracy needs multiple-choice validation items; use val_loss")
        return cls(config, list(val_items), held, source)

    def training_epochs(self, epochs: Sequence[Sequence[str]]) -> list[list[str]]:
        """The planned epochs without the held-out items."""
        out = without_ids(epochs, self.held_out)
        if not any(out):
            raise ConfigError("validation holds out every item of the order: nothing is left to train on")
        return out

    def encode(self, tokenizer: Any, chat: Any = None) -> None:
        """Token ids and labels of the validation items, by the training rule (target, template, length, EOS, and
        the run's chat format ``chat``, which the accuracy is scored in too)."""
        c = self.config
        self.chat = chat
        by_id = encode_items(self.items, tokenizer, target=c.target, template=c.template, max_length=c.max_length,
                             add_eos=c.add_eos, chat=chat)
        self.encoded = [by_id[it.id] for it in self.items]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    def describe(self) -> dict[str, Any]:
        """What ``config.json`` records under ``validation``: the settings, the items, the held-out ids."""
        return {**self.settings.to_dict(), "source": self.source, "n_items": len(self.items),
                "n_mcq": sum(isinstance(it, MCQItem) for it in self.items), "ids": [it.id for it in self.items],
                "held_out": list(self.held_out)}

    def outcome(self, stopped_at: int | None, reason: str | None) -> dict[str, Any]:
        """What the run's record adds at the end: the best validation, where and why it stopped early."""
        return {"best_step": self.rules.best_step, "best": self.rules.best,
                "stopped_early": None if stopped_at is None else {"step": stopped_at, "reason": reason},
                "weights": "best" if self.settings.keep_best else "last"}

    # -- resume ------------------------------------------------------------------------------------------------

    def resume(self, run_dir: Path, step: int, state: dict[str, Any] | None, *, main: bool = True) -> None:
        """Continue after ``step`` steps (0: a fresh run): the rules' state of the checkpoint, and only the best
        weights that existed then (a best file written after the checkpoint belongs to steps that will run again)."""
        self.run_dir = Path(run_dir)
        self.rules = EarlyStopping(self.settings.metric, self.settings.patience, self.settings.min_delta)
        self.rules.restore(state)
        if not main:
            return
        for step_of, path in list(_best_files(self.run_dir)):
            if step_of > step:
                path.unlink(missing_ok=True)

    # -- one validation ----------------------------------------------------------------------------------------

    def due(self, step: int, total_steps: int) -> bool:
        every = self.settings.every
        return step == total_steps or (every is not None and step % every == 0)

    def run(self, net: nn.Module, inner: nn.Module, tokenizer: Any, placement: Any, *, step: int,
            epoch: int) -> tuple[dict[str, Any] | None, bool, str | None]:
        """Validate after ``step`` (every process calls it); returns the record (main process only), whether the run
        stops here, and why."""
        p = placement
        t0 = time.perf_counter()
        loss_sum, n_labels = self._loss_sum(net if p.sharded else p.unwrap(net), p)
        accuracy, n_mcq = None, 0
        if p.main and not p.sharded:
            accuracy, n_mcq = self._accuracy(inner, tokenizer)
        decision: tuple[bool, bool, str | None, dict[str, Any]] = (False, False, None, {})
        record = None
        if p.main:
            val_loss = loss_sum / max(1, n_labels)
            values = {"val_loss": val_loss, "val_accuracy": accuracy}
            value = values[self.settings.metric]
            improved = self.rules.observe(step, float("nan") if value is None else value)
            stop = self.rules.should_stop
            record = {"kind": VALIDATION_KIND, "step": step, "epoch": epoch, "val_loss": val_loss,
                      "val_accuracy": accuracy, "n_items": len(self.encoded), "n_mcq": n_mcq,
                      "label_tokens": n_labels, "metric": self.settings.metric, "improved": improved,
                      "best_step": self.rules.best_step, "bad_validations": self.rules.bad,
                      "seconds": round(time.perf_counter() - t0, 6), "wall": time.time()}
            decision = (improved, stop, self.rules.reason() if stop else None, self.rules.state())
        improved, stop, reason, state = p.broadcast_object(decision)
        if not p.main:
            self.rules.restore(state)
        if improved and self.settings.keep_best:
            self._save_best(step, inner, net, p)
        return record, stop, reason

    def summary_line(self, record: dict[str, Any]) -> str:
        """The console line of a validation."""
        acc = record["val_accuracy"]
        return (f"validation after step {record['step']}: val_loss {record['val_loss']:.4f}"
                + (f", val_accuracy {acc:.3f}" if acc is not None else "")
                + (" (best)" if record["improved"] else f" (best: step {record['best_step']})"))

    def stop_record(self, step: int, reason: str | None, planned_steps: int) -> dict[str, Any]:
        return {"kind": STOP_KIND, "step": step, "reason": reason, "planned_steps": planned_steps,
                "best_step": self.rules.best_step, "wall": time.time()}

    def _loss_sum(self, module: nn.Module, p: Any) -> tuple[float, int]:
        c = self.config
        lo, hi = rank_slice(len(self.encoded), p.rank, p.world_size)

        def split(part: list[Encoded]) -> list[list[Encoded]]:
            return micro_batches(part, packing=c.packing, batch_size=c.batch_size,
                                 pack_tokens=c.batch_size * c.max_length)

        own = [(mb, 1.0) for mb in split(self.encoded[lo:hi])]
        if p.sharded:  # every rank joins each layer's gather: as many passes as the busiest rank
            passes = max(len(split(self.encoded[a:b])) for a, b in
                         (rank_slice(len(self.encoded), r, p.world_size) for r in range(p.world_size)))
            own += [(self.encoded[:1], 0.0)] * (passes - len(own))
        varlen = c.packing and c.attn_implementation.startswith("flash")
        total = torch.zeros((), dtype=torch.float64, device=p.device)
        with untouched(module), torch.no_grad():
            module.eval()
            for mb, weight in own:
                batch = p.to_device(collate(mb, packing=c.packing, pad_id=self.pad_id, varlen=varlen))
                with p.autocast():
                    lsum = module(**batch)
                if weight:
                    total += lsum.detach().double()
        if p.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(total)
        return float(total), sum(e.n_label_tokens for e in self.encoded)

    def _accuracy(self, inner: nn.Module, tokenizer: Any) -> tuple[float | None, int]:
        from medtune.training.scores import anchor_answers, backend_for, scoring_mode

        mcq = [it for it in self.items if isinstance(it, MCQItem)]
        if not mcq:
            return None, 0
        with untouched(inner), torch.inference_mode():
            answers = anchor_answers(backend_for(inner, tokenizer), mcq, mode=scoring_mode(self.config.target),
                                     template=self.config.template, batch=SCORE_BATCH, chat=self.chat)
        return sum(answers) / len(answers), len(mcq)

    # -- the best weights --------------------------------------------------------------------------------------

    def _save_best(self, step: int, inner: nn.Module, net: nn.Module, p: Any) -> None:
        if not (p.main or p.sharded):
            return
        weights = ckpt.trainable_weights(inner, placement=p, root=net)  # collective when sharded
        if not p.main:
            return
        assert self.run_dir is not None
        folder = self.run_dir / BEST_DIR
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"step-{step}.safetensors"
        tmp = folder / f".tmp-step-{step}-{os.getpid()}.safetensors"
        ckpt.save_weights(weights, tmp)
        os.replace(tmp, final)
        self.prune_best()

    def prune_best(self) -> None:
        """Remove the best-weight files no one needs: all but the current best and those a checkpoint refers to."""
        assert self.run_dir is not None
        keep = {self.rules.best_step} | {s for s in (ckpt.checkpoint_position(c).get("validation", {}).get(
            "best_step") for c in ckpt.list_checkpoints(self.run_dir)) if s is not None}
        for step_of, path in list(_best_files(self.run_dir)):
            if step_of not in keep:
                path.unlink(missing_ok=True)

    def best_weights_path(self) -> Path | None:
        if self.run_dir is None or self.rules.best_step is None:
            return None
        path = self.run_dir / BEST_DIR / f"step-{self.rules.best_step}.safetensors"
        return path if path.exists() else None

    def restore_best(self, inner: nn.Module, net: nn.Module, p: Any) -> int | None:
        """Put the best validation's weights back into the model (every process calls it); returns the best step."""
        if not self.settings.keep_best or self.rules.best_step is None:
            return None
        p.barrier()  # the main process has written the file the others read
        path = self.run_dir / BEST_DIR / f"step-{self.rules.best_step}.safetensors" if self.run_dir else None
        if path is None or not path.exists():
            raise InputError(f"the best weights of step {self.rules.best_step} are missing", file=path)
        ckpt.load_trainable(path, inner, placement=p, root=net)
        return self.rules.best_step


def _best_files(run_dir: Path) -> Iterator[tuple[int, Path]]:
    folder = Path(run_dir) / BEST_DIR
    if not folder.is_dir():
        return
    for path in folder.glob("*.safetensors"):
        if path.name.startswith(".tmp-"):
            path.unlink(missing_ok=True)
            continue
        try:
            yield int(path.stem.removeprefix("step-")), path
        except ValueError:
            continue
