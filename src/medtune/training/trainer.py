"""The training loop: exactly the planned order, one optimizer step per global batch, provably.

Why a lean loop of our own rather than transformers' ``Trainer`` / trl's ``SFTTrainer``: the things this
project needs are all awkward to bolt onto them — the loss computed from hidden states with the output
head applied only at answer positions (the vocabulary projection over every position is most of the
waste on CPU), gradients averaged by *token count over the whole global batch* so that any number of
processes gives the same update, a log of the item ids each optimizer step actually saw (gathered from
every rank), and checkpoints that record the position in the order. With the Trainer each of those is
an override of a private method; here each is a few lines (measured against TRL in
benchmarks/bench_training.py).

One optimizer step (``B`` = global batch, ``W`` processes, ``N`` = answer tokens of all ``B`` items):

1. the step's ids are the next ``B`` ids of the planned sequence (:func:`medtune.training.data.plan_steps`);
2. rank ``r`` takes its fixed slice, splits it into micro-batches in order (packed or padded), and for each
   computes the summed cross-entropy over answer tokens and back-propagates ``sum / N``;
3. gradients are summed over ranks (``all_reduce``), so the update equals the 1-process one; the grad
   norm is clipped, the optimizer and scheduler step;
4. rank 0 appends ``step, epoch, ids, tokens, loss, lr, time`` to ``train_log.jsonl`` (ids gathered from
   all ranks in rank order) and every ``save_every`` steps writes a checkpoint; with ``eval_anchors`` it first
   estimates the test accuracy from anchor items every ``eval_every`` steps (:mod:`medtune.training.anchor_check`).

bf16 (``dtype="bf16"``, or ``auto`` on a GPU with bf16) is mixed precision: fp32 master weights and optimizer
state, matmuls under autocast in bf16, the loss in fp32 — used only where the hardware runs bf16 natively
(:mod:`medtune.hardware`); elsewhere the run computes in fp32 and says so (``config.json``'s ``precision``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medtune.errors import ConfigError, InputError
from medtune.io import write_json_atomic
from medtune.schema import Item
from medtune.training import checkpoint as ckpt
from medtune.training.anchor_check import AnchorCheck
from medtune.training.config import TrainConfig
from medtune.training.data import (
    IGNORE,
    Encoded,
    check_ids_known,
    collate,
    encode_items,
    micro_batches,
    plan_steps,
    planned_epochs,
    rank_slice,
)
from medtune.training.methods import (
    MethodSpec,
    StandardLoop,
    build_optimizer,
    build_scheduler,
    find_target_modules,
    method_of,
    prepare_model,
)
from medtune.training.planner import StepPlanner, check_next_steps
from medtune.training.runlog import LOG_NAME, RunLog, truncate_log

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    model: Any
    tokenizer: Any
    steps: int
    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    output_dir: Path | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


# ----------------------------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group torchrun/accelerate set up (gloo on CPU); a single process needs none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    return Dist(dist.get_rank(), dist.get_world_size())


# ----------------------------------------------------------------------------------------------------------
# Loss on answer tokens only


def model_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, Any]:
    """(decoder, output head, config) of a causal LM, through a PEFT wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is None or head is None:
        raise ConfigError(f"cannot find the decoder and output head of {type(base).__name__}")
    return decoder, head, base.config


def answer_loss_sum(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over label positions, and their count.

    The decoder runs once; the output head (hidden → vocabulary) is applied only to the hidden states
    whose next token is a label, which on a multiple-choice prompt is one or two positions in hundreds.
    """
    decoder, head, config = model_parts(model)
    out = decoder(
        input_ids=batch["input_ids"],
        position_ids=batch["position_ids"],
        attention_mask=batch["attention_mask"],
        use_cache=False,
    )
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    labels = batch["labels"]
    targets = labels[:, 1:]
    keep = targets != IGNORE
    n = int(keep.sum())
    if n == 0:
        return hidden.sum() * 0.0, 0
    logits = head(hidden[:, :-1][keep]).float()
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, targets[keep], reduction="sum"), n


def autocast_for(dtype: str):
    """bf16 autocast for a run whose resolved precision is bf16 (see :meth:`TrainConfig.resolved_dtype`)."""
    if dtype == "bf16":
        return torch.autocast("cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------------------
# Model loading


def _save_base(model: nn.Module, tokenizer: Any, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def load_base_model(config: TrainConfig, items: Sequence[Item], run_dir: Path, *,
                    model: nn.Module | None = None, tokenizer: Any = None,
                    textbook: Sequence[str] | None = None) -> tuple[nn.Module, Any, str]:
    """The base model in the form the method needs (its ``base_quantization``), and where its base weights live.

    The tiny model, and models handed in memory when the method keeps its base (adapters, quantised bases), are
    saved to ``RUN_DIR/base/`` first: merging an adapter, scoring and resuming all need the exact base, and a
    quantised training base is loaded from there.
    """
    from medtune.models import load_pretrained, local_model_path
    from medtune.training.base_model import build_tiny_for

    spec = method_of(config)
    base_dir = run_dir / "base"
    if (base_dir / "config.json").exists() and model is None:
        source: Path | str = base_dir  # resume, or a re-run in the same folder: the saved base is the truth
    elif model is not None:
        if tokenizer is None:
            raise ConfigError("a model passed in memory needs its tokenizer too")
        if spec.keeps_base:
            _save_base(model, tokenizer, base_dir)
        if spec.base_quantization is None:
            return model.float(), tokenizer, str(base_dir) if spec.keeps_base else "memory"
        source = base_dir
    elif config.model == "tiny":
        torch.manual_seed(config.seed)
        model, tokenizer = build_tiny_for(items, textbook, vocab_size=config.tiny_vocab_size, seed=config.seed,
                                          sizes=config.tiny)
        _save_base(model, tokenizer, base_dir)
        if spec.base_quantization is None:
            return model, tokenizer, str(base_dir)
        source = base_dir
    else:
        source = local_model_path(config.model)
    loaded = load_pretrained(source, dtype="fp32", device="cpu" if not torch.cuda.is_available() else "auto",
                             quantization=spec.base_quantization)
    return loaded.model, loaded.tokenizer, str(source)


# ----------------------------------------------------------------------------------------------------------
# Reporting


class Reporters:
    """Optional experiment trackers named in ``report_to`` (tensorboard, mlflow, wandb), if installed."""

    def __init__(self, names: Sequence[str], run_dir: Path, config: dict[str, Any]) -> None:
        self.sinks: list[Any] = []
        for name in names:
            if name in ("none", ""):
                continue
            try:
                if name == "tensorboard":
                    from torch.utils.tensorboard import SummaryWriter

                    self.sinks.append(("tensorboard", SummaryWriter(str(run_dir / "tensorboard"))))
                elif name == "mlflow":
                    import mlflow

                    mlflow.start_run(run_name=run_dir.name)
                    mlflow.log_params({k: str(v) for k, v in config.items()})
                    self.sinks.append(("mlflow", mlflow))
                elif name == "wandb":
                    import wandb

                    self.sinks.append(("wandb", wandb.init(name=run_dir.name, config=config, dir=str(run_dir))))
                else:
                    raise ConfigError(f"unknown report_to '{name}' (tensorboard, mlflow, wandb)")
            except ImportError as exc:
                raise ConfigError(f"report_to {name} needs the '{name}' package, which is not installed "
                                  f"({exc.name}); install it or drop --report-to {name}") from None

    def log(self, step: int, values: dict[str, float]) -> None:
        for kind, sink in self.sinks:
            if kind == "tensorboard":
                for k, v in values.items():
                    sink.add_scalar(f"train/{k}", v, step)
            elif kind == "mlflow":
                sink.log_metrics(values, step=step)
            else:
                sink.log(values, step=step)

    def close(self) -> None:
        for kind, sink in self.sinks:
            if kind == "tensorboard":
                sink.close()
            elif kind == "mlflow":
                sink.end_run()
            else:
                sink.finish()


class _Progress:
    """A rich progress bar with loss and tokens/s (rank 0 only; silent when disabled)."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:.0f} tok/s"),
                            TimeRemainingColumn(), transient=False)
        self.task = self.bar.add_task("train", total=total, completed=done, loss=float("nan"), tps=0.0)
        self.bar.start()

    def update(self, loss: float, tps: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=loss, tps=tps)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# ----------------------------------------------------------------------------------------------------------
# The run


def _sync_gradients(params: list[nn.Parameter], dist_info: Dist) -> None:
    if dist_info.world_size <= 1:
        return
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).to(g.dtype)
        offset += n


def _broadcast_parameters(model: nn.Module, dist_info: Dist) -> None:
    if dist_info.world_size <= 1:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for p in model.parameters():
            if p.dtype.is_floating_point:
                dist.broadcast(p.data, src=0)


def _gather(obj: Any, dist_info: Dist) -> list[Any]:
    if dist_info.world_size <= 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(out, obj)
    return out


def _broadcast(obj: Any, dist_info: Dist) -> Any:
    """Rank 0's ``obj`` on every rank (the planner decides on rank 0 only)."""
    if dist_info.world_size <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier(dist_info: Dist) -> None:
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def train(
    config: TrainConfig,
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
    if planner is not None and type(method_of(config)).train_run is not MethodSpec.train_run:
        raise ConfigError(f"method '{config.method}' runs its own stages and cannot take a step planner")
    if config.eval_anchors is not None and type(method_of(config)).train_run is not MethodSpec.train_run:
        raise ConfigError(f"method '{config.method}' runs its own stages and cannot take the anchor check "
                          "(eval_anchors)")
    # A multi-stage method (e.g. knowtuning) runs its own stages, each through this loop; the rest use it directly.
    staged = method_of(config).train_run(
        config, items, order, run_dir, loop=StandardLoop(train, load_base_model, TrainResult),
        model=model, tokenizer=tokenizer, textbook=textbook, resume=resume, progress=progress,
        items_path=items_path, order_path=order_path)
    if staged is not None:
        return staged
    dist_info = init_distributed()
    log_path = run_dir / LOG_NAME
    latest = ckpt.latest_checkpoint(run_dir) if resume else None
    if latest is not None and planner is None and "adaptive" in dump_config(run_dir):
        raise ConfigError("this run decided its items adaptively: resume it with the same --adaptive settings")
    if dist_info.main:
        if not resume and log_path.exists() and log_path.stat().st_size > 0:
            raise InputError("the run folder already holds a training log; use --resume to continue it, "
                             "or another output folder", file=run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    _barrier(dist_info)

    by_id = {it.id: it for it in items}
    epochs = planned_epochs(order, config.epochs)
    check_ids_known(epochs, set(by_id), file=order_path)
    plan = plan_steps(epochs, config.global_batch, config.max_steps)
    if not plan:
        raise InputError("the order plans no training step", file=order_path)
    n_steps = len(plan) if planner is None else planner.total_steps()
    # Read and checked on every rank before the model loads (a bad anchors file fails everywhere at once).
    anchor_check = AnchorCheck.from_config(config, training_ids=set(by_id))

    precision = config.resolved_dtype()  # once: a bf16 request on a CPU without native bf16 warns here
    torch.manual_seed(config.seed)
    if dist_info.main:
        base_model, tok, base_source = load_base_model(config, items, run_dir, model=model, tokenizer=tokenizer,
                                                       textbook=textbook)
    _barrier(dist_info)
    if not dist_info.main:  # other ranks load what rank 0 saved (or the same path / in-memory model)
        base_model, tok, base_source = load_base_model(config, items, run_dir, model=model, tokenizer=tokenizer,
                                                       textbook=textbook)
    targets = find_target_modules(base_model)
    torch.manual_seed(config.seed)  # LoRA initialisation is random: the same on every rank and on resume
    model_ = prepare_model(base_model, config)
    _broadcast_parameters(model_, dist_info)
    model_.train()
    params = [p for p in model_.parameters() if p.requires_grad]
    optimizer = build_optimizer(model_, config)
    scheduler = build_scheduler(optimizer, config, n_steps)

    needed = {i for s in plan for i in s.ids} if planner is None else set(planner.candidate_ids())
    if planner is not None:
        check_ids_known([sorted(needed)], set(by_id), file=order_path)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    encoded: dict[str, Encoded] = encode_items([by_id[i] for i in sorted(needed)], tok, target=config.target,
                                               template=config.template, max_length=config.max_length,
                                               add_eos=config.add_eos)

    start = 0
    if latest is not None:
        state = ckpt.load_checkpoint(latest, model_, optimizer, scheduler)
        start = int(state["step"])
        if dist_info.main:
            truncate_log(log_path, start)
    elif resume and dist_info.main:
        truncate_log(log_path, 0)  # resuming before the first checkpoint: start over
    if anchor_check is not None and dist_info.main:
        anchor_check.resume(run_dir, start)

    n_trainable = sum(p.numel() for p in params)
    meta = {
        "train": config.to_dict(),
        # What this run really computed in (dtype auto or bf16 resolved for this machine), and the base's form.
        "precision": {"dtype": precision, "base_quantization": method_of(config).base_quantization},
        "items": str(items_path) if items_path else None,
        "order": str(order_path) if order_path else None,
        "order_strategy": order.get("strategy"),
        "base_model": base_source,
        "world_size": dist_info.world_size,
        "target_modules": targets,
        "trainable_parameters": n_trainable,
        "optimizer": type(optimizer).__name__,
        "planned_steps": n_steps,
    }
    if planner is not None:
        meta["adaptive"] = planner.describe()
    if anchor_check is not None:
        meta["anchor_eval"] = anchor_check.describe()
    if dist_info.main:
        write_json_atomic(run_dir / "config.json", meta)
        write_json_atomic(run_dir / "order.json", order)

    reporters = Reporters(config.report_to, run_dir, config.to_dict()) if dist_info.main else None
    bar = _Progress(progress and dist_info.main, n_steps, start)
    decided = planner.resume(run_dir, start) if planner is not None and dist_info.main else []

    def steps_to_train():
        """The fixed plan, or the planner's steps, asked for lazily: after the previous step (and its checkpoint)."""
        if planner is None:
            yield from plan[start:]
            return
        queue, done = list(decided), start
        while done < n_steps:
            if not queue:
                queue = planner.next_steps(model_, tok, done) if dist_info.main else []
                model_.train()  # scoring switches to eval mode
                queue = check_next_steps(_broadcast(queue, dist_info), done, n_steps)
            ps = queue.pop(0)
            done = ps.step
            yield ps

    runlog = RunLog(log_path) if dist_info.main else None
    losses: list[float] = []
    total_tokens, total_time = 0, 0.0
    pack_tokens = config.batch_size * config.max_length
    try:
        for ps in steps_to_train():
            t0 = time.perf_counter()
            step_items = [encoded[i] for i in ps.ids]
            n_labels = sum(e.n_label_tokens for e in step_items)
            lo, hi = rank_slice(len(step_items), dist_info.rank, dist_info.world_size)
            mine = step_items[lo:hi]
            loss_sum, tokens = 0.0, 0
            for mb in micro_batches(mine, packing=config.packing, batch_size=config.batch_size,
                                    pack_tokens=pack_tokens):
                batch = collate(mb, packing=config.packing, pad_id=pad_id)
                with autocast_for(precision):
                    lsum, _ = answer_loss_sum(model_, batch)
                (lsum / max(1, n_labels)).backward()
                loss_sum += float(lsum.detach())
                tokens += sum(e.n_tokens for e in mb)
            _sync_gradients(params, dist_info)
            gathered = _gather((list(e.id for e in mine), loss_sum, tokens), dist_info)
            realised_ids = [i for g in gathered for i in g[0]]
            loss_sum = sum(g[1] for g in gathered)
            tokens = sum(g[2] for g in gathered)
            grad_norm = None
            if config.max_grad_norm:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
            lr = float(optimizer.param_groups[-1]["lr"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            loss = loss_sum / max(1, n_labels)
            losses.append(loss)
            total_tokens += tokens
            total_time += dt
            if dist_info.main:
                record = {"step": ps.step, "epoch": ps.epoch, "ids": realised_ids, "tokens": tokens,
                          "label_tokens": n_labels, "loss": loss, "lr": lr, "time": round(dt, 6),
                          "grad_norm": grad_norm, "wall": time.time()}
                assert runlog is not None and reporters is not None
                runlog.write(record)
                reporters.log(ps.step, {"loss": loss, "lr": lr, "tokens_per_s": tokens / dt if dt else 0.0})
                bar.update(loss, tokens / dt if dt else 0.0)
            if not math.isfinite(loss):
                raise ConfigError(f"the loss became {loss} at step {ps.step}; lower --lr or use --dtype fp32")
            if anchor_check is not None and dist_info.main and anchor_check.due(ps.step, n_steps):
                # After the step's time was taken, before its checkpoint (which must not outlive the check's line).
                check = anchor_check.run(model_, tok, step=ps.step, epoch=ps.epoch)
                assert reporters is not None
                reporters.log(ps.step, {"anchor_estimate": check["estimate"]})
            if config.save_every and ps.step % config.save_every == 0 and ps.step < n_steps:
                if dist_info.main:
                    ckpt.save_checkpoint(run_dir, ps.step, model_, optimizer, scheduler,
                                         {"epoch": ps.epoch, "next_index_in_epoch": ps.start + len(ps.ids)},
                                         keep=config.keep_checkpoints)
                _barrier(dist_info)
    finally:
        bar.close()
        if runlog is not None:
            runlog.close()
        if reporters is not None:
            reporters.close()

    out_dir = None
    if dist_info.main:
        out_dir = save_trained(model_, tok, run_dir, config)
        try:
            from medtune.training.plots import plot_run

            plot_run(run_dir)
        except Exception as exc:  # a plot must never lose a finished run
            log.warning("could not draw the loss curve: %s", exc)
    _barrier(dist_info)
    model_.eval()
    return TrainResult(run_dir, model_, tok, n_steps, losses, total_tokens, total_time, out_dir)


def save_trained(model: nn.Module, tokenizer: Any, run_dir: Path, config: TrainConfig) -> Path:
    """The trained weights, where and how the run's method keeps them (``adapter/`` or ``model/``)."""
    return method_of(config).save(model, tokenizer, run_dir)


def dump_config(path: Path) -> dict[str, Any]:
    return json.loads((path / "config.json").read_text(encoding="utf-8"))
