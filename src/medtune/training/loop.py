"""The fine-tuning recipe: set up the model, the optimizer and the data; train in the planned order; save.

Why a lean loop of our own rather than transformers' ``Trainer`` / trl's ``SFTTrainer``: what this project needs
is awkward to bolt onto them — the loss computed from hidden states with the output head applied only at answer
positions (the vocabulary projection over every position is most of the waste), gradients weighted by *token
count over the whole global batch* so that any number of processes gives the same update, a log of the item ids
each optimizer step actually saw (gathered from every rank), and checkpoints that record the position in the
order. What the HF Trainer is good at — device placement, mixed precision, DDP, sharding — comes from the same
place it comes from there, accelerate, through :class:`medtune.training.placement.Placement`.

One optimizer step (``B`` = global batch, ``W`` processes, ``N`` = answer tokens of all ``B`` items):

1. the step's ids are the next ``B`` ids of the planned sequence (:func:`medtune.training.data.plan_steps`), or
   what the step planner decided (:mod:`medtune.training.hooks`);
2. rank ``r`` takes its fixed slice, splits it into micro-batches in order (packed or padded), and for each
   computes the summed cross-entropy over answer tokens and back-propagates ``W · sum / N`` (gradient sync only
   on the last micro-batch);
3. DDP / FSDP average gradients over ranks, so the update equals the 1-process one; the grad norm is clipped,
   the optimizer and scheduler step;
4. rank 0 appends ``step, epoch, ids, tokens, loss, lr, time`` to ``train_log.jsonl`` (ids gathered from all
   ranks in rank order), runs the hooks that are due (outside the step's timing) and every ``save_every`` steps
   every rank takes part in writing a checkpoint.

The recipe's steps are methods of :class:`FinetuneRecipe` — :meth:`~FinetuneRecipe.setup_model`,
:meth:`~FinetuneRecipe.setup_optimizer`, :meth:`~FinetuneRecipe.setup_data`, :meth:`~FinetuneRecipe.train`,
:meth:`~FinetuneRecipe.save` — so a variant overrides one step, not the loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medtune.chat_format import ChatFormat, chat_format, chat_record, known_model_names, resolve_chat
from medtune.errors import ConfigError, InputError
from medtune.hardware import world_size_from_env
from medtune.io import write_json_atomic
from medtune.schema import Item
from medtune.training import checkpoint as ckpt
from medtune.training.config import TrainSettings
from medtune.training.data import (
    IGNORE,
    Encoded,
    PlannedStep,
    check_ids_known,
    collate,
    encode_items,
    micro_batches,
    plan_steps,
    planned_epochs,
    rank_slice,
)
from medtune.training.hooks import StepHook, StepPlanner, check_next_steps
from medtune.training.memory import check_fits, plan_run
from medtune.training.methods import (
    build_optimizer,
    build_scheduler,
    find_target_modules,
    method_of,
    prepare_model,
)
from medtune.training.placement import Placement, choose_strategy
from medtune.training.reporting import Progress, Reporters
from medtune.training.result import TrainResult
from medtune.training.runlog import LOG_NAME, RunLog, truncate_log
from medtune.training.validation import Validation

log = logging.getLogger(__name__)

# The loader of the run's base model: (config, items, run_dir, *, model, tokenizer, textbook, placement) →
# (model on its device in the method's form, tokenizer, where the base weights live).
BaseLoader = Callable[..., tuple[nn.Module, Any, str]]


# ----------------------------------------------------------------------------------------------------------
# The loss on answer tokens only


def model_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, Any]:
    """(decoder, output head, config) of a causal LM, through a PEFT wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is None or head is None:
        raise ConfigError(f"cannot find the decoder and output head of {type(base).__name__}")
    return decoder, head, base.config


def _label_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions whose next token is a label, and those tokens (for batches collated without them)."""
    width = labels.shape[1]
    keep = labels[:, 1:] != IGNORE
    rows, cols = keep.nonzero(as_tuple=True)
    return rows * width + cols, labels[:, 1:][keep]


_ATTENTION_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


def answer_loss_sum(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over label positions, and their count.

    The decoder runs once; the output head (hidden → vocabulary) is applied only to the hidden states whose next
    token is a label, which on a multiple-choice prompt is one or two positions in hundreds.
    """
    decoder, head, config = model_parts(model)
    extra = {k: batch[k] for k in _ATTENTION_KWARGS if k in batch}
    out = decoder(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                  attention_mask=batch["attention_mask"], use_cache=False, **extra)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    if "label_index" in batch:
        index, targets = batch["label_index"], batch["label_targets"]
    else:
        index, targets = _label_positions(batch["labels"])
    n = int(index.numel())
    if n == 0:
        return hidden.sum() * 0.0, 0
    logits = head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)).float()
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, targets, reduction="sum"), n


class AnswerLoss(nn.Module):
    """The model being trained, with medtune's loss as its forward.

    DDP and FSDP synchronise through the forward of the module they wrap; the loss calls the decoder and the
    head directly (the head only at answer positions), so the wrapped module is this one, not the causal LM.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: Any) -> torch.Tensor:
        return answer_loss_sum(self.model, batch)[0]


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a causal LM (the unit FSDP shards and gathers one at a time)."""
    decoder, _, _ = model_parts(model)
    layers = getattr(decoder, "layers", None) or getattr(decoder, "h", None) or getattr(decoder, "blocks", None)
    if layers is None:
        raise ConfigError(f"cannot find the decoder layers of {type(decoder).__name__} to shard; "
                          "use distributed: ddp")
    return list(layers)


# ----------------------------------------------------------------------------------------------------------
# The recipe


@dataclass
class FinetuneRecipe:
    """One training run of the standard loop; see the module docstring for what each step guarantees."""

    config: TrainSettings
    items: Sequence[Item]
    order: dict[str, Any]
    run_dir: Path
    load_base: BaseLoader
    model: nn.Module | None = None
    tokenizer: Any = None
    textbook: Sequence[str] | None = None
    resume: bool = False
    progress: bool = False
    items_path: str | Path | None = None
    order_path: str | Path | None = None
    planner: StepPlanner | None = None
    hooks: Sequence[StepHook] = ()
    # set up by the steps below
    placement: Placement = field(init=False)
    net: nn.Module = field(init=False)  # the AnswerLoss module, as wrapped for the processes
    optimizer: Any = field(init=False)
    scheduler: Any = field(init=False)
    plan: list[PlannedStep] = field(init=False)
    n_steps: int = field(init=False)
    encoded: dict[str, Encoded] = field(init=False)
    start: int = field(init=False, default=0)
    meta: dict[str, Any] = field(init=False, default_factory=dict)
    chat: ChatFormat | None = field(init=False, default=None)  # the chat format the items are encoded in
    validation: Validation | None = field(init=False, default=None)  # held-out validation, early stopping
    stopped_early: tuple[int, str | None] | None = field(init=False, default=None)  # (step, reason)

    # -- set-up ------------------------------------------------------------------------------------------------

    def setup_processes(self) -> None:
        spec = method_of(self.config)
        precision = self.config.resolved_dtype()  # once: a bf16 request on a CPU without native bf16 warns here
        strategy = choose_strategy(self.config.distributed, trains_every_weight=not spec.is_adapter,
                                   standard_optimizer=spec.default_optim != "galore", world_size=world_size_from_env())
        self.placement = Placement.create(precision, strategy)
        if self.placement.sharded and (self.planner is not None or self.hooks):
            raise ConfigError("adaptive strategies and the anchor check score the model on one process, which a "
                              "sharded (fsdp) model cannot do; use distributed: ddp")
        v = self.config.validation
        if self.placement.sharded and v.enabled and v.metric == "val_accuracy":
            raise ConfigError("validation.metric val_accuracy scores the model on one process, which a sharded "
                              "(fsdp) model cannot do; use val_loss or distributed: ddp")

    def setup_plan(self) -> None:
        """The steps to train (the order file's, or the planner's count), checked before any model loads."""
        by_id = {it.id: it for it in self.items}
        epochs = planned_epochs(self.order, self.config.epochs)
        check_ids_known(epochs, set(by_id), file=self.order_path)
        candidates = set(self.planner.candidate_ids()) if self.planner is not None else None
        self.validation = Validation.plan(self.config, epochs, self.items, candidate_ids=candidates)
        if self.validation is not None:  # the held-out items leave the order before the steps are planned
            epochs = self.validation.training_epochs(epochs)
        self.plan = plan_steps(epochs, self.config.global_batch, self.config.max_steps)
        if not self.plan:
            raise InputError("the order plans no training step", file=self.order_path)
        self.n_steps = len(self.plan) if self.planner is None else self.planner.total_steps()
        if self.planner is not None:
            check_ids_known([sorted(self.planner.candidate_ids())], set(by_id), file=self.order_path)

    def setup_model(self) -> None:
        """Load the base in the method's form on this rank's device, make the method's parameters trainable."""
        p = self.placement
        memory = plan_run(self.config, model=self.model, world_size=p.world_size)
        check_fits(memory, where=f"training {self.config.model} with {self.config.method}")
        self.meta["memory_plan"] = memory.to_dict()
        torch.manual_seed(self.config.seed)
        kwargs = {"model": self.model, "tokenizer": self.tokenizer, "textbook": self.textbook, "placement": p}
        if p.main:
            base, tok, source = self.load_base(self.config, self.items, self.run_dir, **kwargs)
        p.barrier()
        if not p.main:  # other ranks load what rank 0 saved (or the same path / in-memory model)
            base, tok, source = self.load_base(self.config, self.items, self.run_dir, **kwargs)
        self.meta["target_modules"] = find_target_modules(base)
        self.meta["base_model"] = source
        torch.manual_seed(self.config.seed)  # LoRA initialisation is random: the same on every rank and on resume
        self.tokenizer = tok
        self.net = AnswerLoss(prepare_model(base, self.config))
        self.net.train()

    def setup_optimizer(self) -> None:
        """The method's optimizer over the (possibly sharded) trainable parameters; the model placed and wrapped."""
        p = self.placement
        if p.sharded:
            p.shard(self.net, decoder_layers(self.net.model))
        else:
            self.net.to(p.device)
        inner = self.net.model
        optimizer = build_optimizer(inner, self.config)
        self.scheduler = build_scheduler(optimizer, self.config, self.n_steps)
        self.net, self.optimizer = p.wrap(self.net, optimizer)
        trainable = [q for q in inner.parameters() if q.requires_grad]
        self.meta.update(trainable_parameters=sum(q.numel() for q in trainable), optimizer=type(optimizer).__name__)

    def setup_data(self) -> None:
        """Token ids of every item a step may hold, encoded once (in the chat template when ``chat`` resolves so)."""
        by_id = {it.id: it for it in self.items}
        needed = ({i for s in self.plan for i in s.ids} if self.planner is None
                  else set(self.planner.candidate_ids()))
        c = self.config
        names = known_model_names(self.tokenizer, c.model, self.meta.get("base_model"), model=self.inner)
        self.chat = chat_format(resolve_chat(c.chat, self.tokenizer, names), c.system_prompt)
        self.meta["chat"] = chat_record(self.tokenizer, self.chat)
        for user in (self.planner, *self.hooks):  # those that score the model do it in the run's chat format
            if user is not None and hasattr(user, "chat"):
                user.chat = self.chat
        self.encoded = encode_items([by_id[i] for i in sorted(needed)], self.tokenizer, target=c.target,
                                    template=c.template, max_length=c.max_length, add_eos=c.add_eos, chat=self.chat)
        if self.validation is not None:
            self.validation.encode(self.tokenizer, chat=self.chat)

    def restore(self) -> None:
        """Continue from the latest checkpoint (with ``resume``): weights, optimizer, schedule, RNG, position."""
        log_path = self.run_dir / LOG_NAME
        latest = ckpt.latest_checkpoint(self.run_dir) if self.resume else None
        state: dict[str, Any] = {}
        if latest is not None:
            state = ckpt.load_checkpoint(latest, self.inner, self.optimizer, self.scheduler, placement=self.placement,
                                         root=self.net)
            self.start = int(state["step"])
            if self.placement.main:
                truncate_log(log_path, self.start)
        elif self.resume and self.placement.main:
            truncate_log(log_path, 0)  # resuming before the first checkpoint: start over
        if self.validation is not None:  # the early-stopping state and best weights as they were at the checkpoint
            self.validation.resume(self.run_dir, self.start, state.get("validation"), main=self.placement.main)
        if self.placement.main:
            for hook in self.hooks:
                hook.resume(self.run_dir, self.start)

    def write_run_record(self) -> None:
        spec = method_of(self.config)
        meta = {
            "train": self.config.to_dict(),
            # What this run really computed in, and the base's form.
            "precision": {"dtype": self.placement.precision, "base_quantization": spec.base_quantization},
            "items": str(self.items_path) if self.items_path else None,
            "order": str(self.order_path) if self.order_path else None,
            "order_strategy": self.order.get("strategy"),
            "base_model": self.meta["base_model"],
            "world_size": self.placement.world_size,
            "distributed": self.placement.strategy if self.placement.world_size > 1 else None,
            "device": self.placement.device.type,
            "attn_implementation": self.config.attn_implementation,
            "target_modules": self.meta["target_modules"],
            "trainable_parameters": self.meta["trainable_parameters"],
            "optimizer": self.meta["optimizer"],
            "planned_steps": self.n_steps,
            "memory_plan": self.meta.get("memory_plan"),
            # Whether the prompts were in the chat template, with which system prompt and template (its sha256).
            "chat": self.meta.get("chat"),
        }
        if self.planner is not None:
            meta["adaptive"] = self.planner.describe()
        for hook in self.hooks:
            meta[hook.key] = hook.describe()
        if self.validation is not None:
            meta["validation"] = self.validation.describe()
        if self.placement.main:
            write_json_atomic(self.run_dir / "config.json", meta)
            write_json_atomic(self.run_dir / "order.json", self.order)

    @property
    def inner(self) -> nn.Module:
        """The causal LM being trained (a PEFT model for adapter methods), outside any process wrapper."""
        return self.placement.unwrap(self.net).model

    # -- training ------------------------------------------------------------------------------------------------

    def steps_to_train(self, decided: list[PlannedStep]) -> Iterator[PlannedStep]:
        """The fixed plan, or the planner's steps, asked for lazily: after the previous step (and its checkpoint)."""
        if self.planner is None:
            yield from self.plan[self.start:]
            return
        p = self.placement
        queue, done = list(decided), self.start
        while done < self.n_steps:
            if not queue:
                queue = self.planner.next_steps(self.inner, self.tokenizer, done) if p.main else []
                self.net.train()  # scoring switches to eval mode
                queue = check_next_steps(p.broadcast_object(queue), done, self.n_steps)
            ps = queue.pop(0)
            done = ps.step
            yield ps

    def train_step(self, ps: PlannedStep, pad_id: int) -> dict[str, Any]:
        """One optimizer step over the global batch ``ps.ids``; returns its log record (loss, tokens, ids)."""
        p, c = self.placement, self.config
        t0 = time.perf_counter()
        step_items = [self.encoded[i] for i in ps.ids]
        n_labels = sum(e.n_label_tokens for e in step_items)
        lo, hi = rank_slice(len(step_items), p.rank, p.world_size)
        mine = step_items[lo:hi]
        batches = self._micro_batches(step_items, mine)
        varlen = c.packing and c.attn_implementation.startswith("flash")
        loss_sum = torch.zeros((), dtype=torch.float64, device=p.device)
        tokens = 0
        for k, (mb, weight) in enumerate(batches):
            batch = p.to_device(collate(mb, packing=c.packing, pad_id=pad_id, varlen=varlen))
            with p.no_sync(self.net, sync=k == len(batches) - 1):
                with p.autocast():
                    lsum = self.net(**batch)
                loss = lsum / max(1, n_labels)
                if p.world_size > 1:
                    loss = loss * (p.loss_scale * weight)
                p.backward(loss)  # outside autocast, as accelerate and the HF Trainer run it
            if weight:
                loss_sum += lsum.detach().double()
                tokens += sum(e.n_tokens for e in mb)
        gathered = p.gather_objects(([e.id for e in mine], tokens))
        grad_norm = None
        if c.max_grad_norm:
            grad_norm = p.clip_grad_norm([q for q in self.net.parameters() if q.requires_grad], c.max_grad_norm)
        lr = float(self.optimizer.param_groups[-1]["lr"])
        self.optimizer.step()
        if not p.step_was_skipped(self.optimizer):
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if p.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(loss_sum)
        loss_value = float(loss_sum) / max(1, n_labels)  # the step's one host synchronisation (with the norm)
        return {"step": ps.step, "epoch": ps.epoch, "ids": [i for g in gathered for i in g[0]],
                "tokens": sum(g[1] for g in gathered), "label_tokens": n_labels, "loss": loss_value, "lr": lr,
                "time": round(time.perf_counter() - t0, 6),
                "grad_norm": float(grad_norm) if grad_norm is not None else None, "wall": time.time()}

    def _micro_batches(self, step_items: list[Encoded], mine: list[Encoded]) -> list[tuple[list[Encoded], float]]:
        """This rank's micro-batches of the step, each with its weight (1, or 0 for a pass that only keeps the
        processes in step).

        A rank whose slice is empty (a short last step on many processes) still joins the gradient sync with one
        zero-weighted pass. A sharded model gathers its layers in every forward, a collective every rank must
        join: there each rank runs as many passes as the busiest one (counted on the host, without talking).
        """
        p, c = self.placement, self.config

        def split(part: list[Encoded]) -> list[list[Encoded]]:
            return micro_batches(part, packing=c.packing, batch_size=c.batch_size,
                                 pack_tokens=c.batch_size * c.max_length)

        own: list[tuple[list[Encoded], float]] = [(mb, 1.0) for mb in split(mine)]
        passes = max(1, len(own))
        if p.sharded:
            slices = [rank_slice(len(step_items), r, p.world_size) for r in range(p.world_size)]
            passes = max(max(len(split(step_items[lo:hi])) for lo, hi in slices), 1)
        return own + [(step_items[:1], 0.0)] * (passes - len(own))

    def train(self) -> TrainResult:
        p, c = self.placement, self.config
        tok = self.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        reporters = Reporters(c.report_to, self.run_dir, c.to_dict()) if p.main else None
        bar = Progress(self.progress and p.main, self.n_steps, self.start)
        decided = self.planner.resume(self.run_dir, self.start) if self.planner is not None and p.main else []
        runlog = RunLog(self.run_dir / LOG_NAME) if p.main else None
        losses: list[float] = []
        total_tokens, total_time = 0, 0.0
        try:
            for ps in self.steps_to_train(decided):
                record = self.train_step(ps, pad_id)
                losses.append(record["loss"])
                total_tokens += record["tokens"]
                total_time += record["time"]
                dt = record["time"]
                if p.main:
                    assert runlog is not None and reporters is not None
                    runlog.write(record)
                    reporters.log(ps.step, {"loss": record["loss"], "lr": record["lr"],
                                            "tokens_per_s": record["tokens"] / dt if dt else 0.0})
                    bar.update(record["loss"], record["tokens"] / dt if dt else 0.0)
                if not math.isfinite(record["loss"]):
                    raise ConfigError(f"the loss became {record['loss']} at step {ps.step}; lower --lr or use "
                                      "--dtype fp32")
                stop = self._validate(ps, runlog, reporters, bar)
                if p.main:
                    # After the step's time was taken, before its checkpoint (which must not outlive the hook's line).
                    for hook in self.hooks:
                        if hook.due(ps.step, ps.step if stop else self.n_steps):
                            assert reporters is not None
                            reporters.log(ps.step, hook.tracked(hook.run(self.inner, tok, step=ps.step,
                                                                         epoch=ps.epoch)))
                            self.net.train()
                if stop:
                    break
                if c.save_every and ps.step % c.save_every == 0 and ps.step < self.n_steps:
                    position = {"epoch": ps.epoch, "next_index_in_epoch": ps.start + len(ps.ids)}
                    if self.validation is not None:
                        position["validation"] = self.validation.rules.state()
                    ckpt.save_checkpoint(self.run_dir, ps.step, self.inner, self.optimizer, self.scheduler,
                                         position, keep=c.keep_checkpoints, placement=p, root=self.net)
                    if self.validation is not None and p.main:
                        self.validation.prune_best()
        finally:
            bar.close()
            if runlog is not None:
                runlog.close()
            if reporters is not None:
                reporters.close()
        steps = self.stopped_early[0] if self.stopped_early is not None else self.n_steps
        return TrainResult(self.run_dir, self.inner, tok, steps, losses, total_tokens, total_time)

    def _validate(self, ps: PlannedStep, runlog: RunLog | None, reporters: Reporters | None, bar: Progress) -> bool:
        """The validation due after step ``ps`` (every process takes part); returns whether the run stops here."""
        if self.validation is None or not self.validation.due(ps.step, self.n_steps):
            return False
        p = self.placement
        record, stop, reason = self.validation.run(self.net, self.inner, self.tokenizer, p, step=ps.step,
                                                   epoch=ps.epoch)
        stop = stop and ps.step < self.n_steps  # patience running out at the last step stops nothing
        if p.main:
            assert runlog is not None and reporters is not None and record is not None
            runlog.write(record)
            reporters.log(ps.step, {k: float(record[k]) for k in ("val_loss", "val_accuracy")
                                    if record[k] is not None})
            bar.note(self.validation.summary_line(record))
            if stop:
                runlog.write(self.validation.stop_record(ps.step, reason, self.n_steps))
        if stop:
            self.stopped_early = (ps.step, reason)
            if p.main:
                log.warning("early stopping after step %d of %d: %s", ps.step, self.n_steps, reason)
        return stop

    def save(self, result: TrainResult) -> TrainResult:
        """The trained weights where the method keeps them (``adapter/`` or ``model/``), and the loss curve."""
        p = self.placement
        if self.validation is not None:  # with keep_best, the best validation's weights become the run's model
            self.validation.restore_best(self.inner, self.net, p)
        state = ckpt.full_model_state(self.net, p) if p.sharded else None  # every rank takes part in gathering
        if state is not None:  # a tied weight (embeddings = head) is saved once, as save_pretrained does
            tied = ({n for n, _ in self.inner.named_parameters(remove_duplicate=False)}
                    - {n for n, _ in self.inner.named_parameters()})
            state = {k: v for k, v in state.items() if k not in tied}
        if p.main:
            spec = method_of(self.config)
            result.output_dir = (spec.save(self.inner, self.tokenizer, self.run_dir) if state is None
                                 else spec.save(self.inner, self.tokenizer, self.run_dir, state_dict=state))
            if self.validation is not None:
                self._record_validation_outcome()
            try:
                from medtune.training.plots import plot_run

                plot_run(self.run_dir)
            except Exception as exc:  # a plot must never lose a finished run
                log.warning("could not draw the loss curve: %s", exc)
        p.barrier()
        self.inner.eval()
        return result

    def _record_validation_outcome(self) -> None:
        """The run record's ``validation`` gains the best step and where and why the run stopped early."""
        assert self.validation is not None
        from medtune.run_record import read_config_json

        meta = read_config_json(self.run_dir) or {}
        stopped, reason = self.stopped_early or (None, None)
        meta.setdefault("validation", self.validation.describe()).update(self.validation.outcome(stopped, reason))
        write_json_atomic(self.run_dir / "config.json", meta)

    # -- the whole recipe ----------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        self.setup_processes()
        p = self.placement
        log_path = self.run_dir / LOG_NAME
        if p.main:
            if not self.resume and log_path.exists() and log_path.stat().st_size > 0:
                raise InputError("the run folder already holds a training log; use --resume to continue it, "
                                 "or another output folder", file=self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        p.barrier()
        self.setup_plan()
        self.setup_model()
        self.setup_optimizer()
        self.setup_data()
        self.restore()
        self.write_run_record()
        return self.save(self.train())
