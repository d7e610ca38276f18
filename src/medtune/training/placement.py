"""Where a run's tensors live and how its processes cooperate: the one place that decides it.

Everything device-, precision- and process-dependent in training goes through :class:`Placement`, which stands on
accelerate's ``Accelerator`` (the layer the HF Trainer stands on): the process group that ``torchrun`` /
``accelerate launch`` set up (NCCL on GPUs with each rank on ``cuda:LOCAL_RANK``, gloo on CPUs), the device every
batch is moved to, bf16 autocast (fp16 autocast with dynamic loss scaling on GPUs without bf16), the DDP wrapper,
gradient clipping that unscales first, and the RNG states a checkpoint must restore. A CPU run goes through the
same code: one process, no wrapper, fp32.

Sharding (FSDP2) is applied here with PyTorch's own ``fully_shard`` — each decoder layer, then the root — as
torchtune's recipes do, rather than through accelerate's plugin: accelerate turns FSDP off whenever it runs on a
CPU, and with ``fully_shard`` directly the same sharded code path runs on GPUs (NCCL) and in the CPU test suite
(gloo). Under FSDP, half precision is FSDP2's own mixed-precision policy (layers gathered in bf16, gradients
reduced in fp32, fp32 sharded master weights) beside the same autocast as everywhere else.

Gradients are *summed* over ranks in effect: DDP and FSDP average them over the ``W`` processes, so each rank
back-propagates its share of the global token-weighted loss multiplied by ``W`` (:attr:`Placement.loss_scale`).
The update then equals a one-process step over the whole global batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medtune.errors import ConfigError
from medtune.hardware import world_size_from_env

SHARDED = "fsdp"
REPLICATED = "ddp"




def choose_strategy(requested: str, *, trains_every_weight: bool, standard_optimizer: bool, world_size: int) -> str:
    """``ddp`` or ``fsdp`` for a run of ``world_size`` processes (a single process is neither, but says ``ddp``).

    ``auto`` shards only what gains from it and supports it: methods that train every weight with a standard
    optimizer (full fine-tuning of a 7–8B model needs ~16 bytes per parameter: only sharding fits it on 80 GB
    GPUs). Adapters keep a frozen base that DDP replicates cheaply; GaLore projects whole gradient matrices, which
    a sharded gradient does not hold.
    """
    if world_size <= 1:
        return REPLICATED
    if requested == "auto":
        return SHARDED if trains_every_weight and standard_optimizer else REPLICATED
    if requested == SHARDED and not standard_optimizer:
        raise ConfigError("distributed: fsdp shards gradients, which this method's optimizer (GaLore projects "
                          "whole gradient matrices) cannot take; use distributed: ddp")
    return requested


@dataclass(frozen=True)
class Placement:
    """One run's device, precision and process group; every loop step asks it rather than torch directly."""

    accelerator: Any
    precision: str  # fp32 | bf16 | fp16
    strategy: str  # ddp | fsdp

    @classmethod
    def create(cls, precision: str, strategy: str) -> Placement:
        """Join (or start) the process group and pick this rank's device.

        accelerate reads ``LOCAL_RANK`` / ``WORLD_SIZE`` from the launcher and sets ``cuda:LOCAL_RANK`` as the
        current device, so every rank of a node gets its own GPU.
        """
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import DistributedDataParallelKwargs

        if precision == "fp16" and strategy == SHARDED and world_size_from_env() > 1:
            raise ConfigError("fp16 loss scaling is not supported with distributed: fsdp; use bf16 GPUs, or "
                              "distributed: ddp with an adapter method")
        mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
        # Every parameter that trains takes part in each step's loss; DDP need not search for unused ones.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=False, broadcast_buffers=False)
        # accelerate keeps one precision per process; a later run in the same process (a grid cell, KnowTuning's
        # second stage, a test) may ask for another. The process group itself (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        accelerator = Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp],
                                  step_scheduler_with_optimizer=False)
        return cls(accelerator, precision, strategy)

    # -- processes ---------------------------------------------------------------------------------------------

    @property
    def rank(self) -> int:
        return int(self.accelerator.process_index)

    @property
    def local_rank(self) -> int:
        return int(self.accelerator.local_process_index)

    @property
    def world_size(self) -> int:
        return int(self.accelerator.num_processes)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def sharded(self) -> bool:
        return self.strategy == SHARDED and self.world_size > 1

    @property
    def loss_scale(self) -> float:
        """What each rank multiplies its share of the loss by, so that averaging over ranks gives the sum."""
        return float(self.world_size)

    def barrier(self) -> None:
        if self.world_size > 1:
            self.accelerator.wait_for_everyone()

    def gather_objects(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (one host round trip per call: once per optimizer step)."""
        if self.world_size <= 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (decisions made on rank 0, e.g. by an adaptive planner)."""
        if self.world_size <= 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # -- the model -----------------------------------------------------------------------------------------------

    def base_device_map(self) -> str:
        """Where a base model is loaded: this rank's device (``cuda:N`` on a GPU node, ``cpu`` otherwise)."""
        return str(self.device)

    def wrap(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, Any]:
        """Put ``model`` on the device (DDP-wrapped when several processes run) and wrap ``optimizer`` for mixed
        precision (the fp16 loss scaler). A sharded model (:meth:`shard`, before its optimizer was built over the
        sharded parameters) is already placed: only the optimizer is wrapped."""
        if self.sharded:
            return model, self.accelerator.prepare_optimizer(optimizer, device_placement=False)
        wrapped, opt = self.accelerator.prepare(model, optimizer)
        return wrapped, opt

    def shard(self, model: nn.Module, layers: list[nn.Module]) -> nn.Module:
        """FSDP2: shard each decoder layer, then the root (weights, gradients and optimizer states sharded).

        Layers are gathered one at a time in the forward and backward passes and resharded after use.
        """
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        model.to(self.device)
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        # In half precision the gathered layer is cast once to bf16/fp16 (half the all-gather traffic, and no
        # autocast copy of every weight kept for the backward); gradients are reduced and kept in fp32 beside the
        # fp32 sharded master weights.
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        policy = MixedPrecisionPolicy(param_dtype=half, reduce_dtype=torch.float32) if half else MixedPrecisionPolicy()
        for layer in layers:
            fully_shard(layer, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        return model

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model, keep_fp32_wrapper=False)

    def no_sync(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Skip the gradient all-reduce of a micro-batch that is not the last of its step (DDP and FSDP)."""
        if sync or self.world_size <= 1:
            return contextlib.nullcontext()
        if self.sharded:
            return _fsdp_no_sync(model)
        return self.accelerator.no_sync(model)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return self.accelerator.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def clip_grad_norm(self, params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
        """Unscale (fp16), clip and return the total norm as a plain tensor (sharded gradients included)."""
        if not self.sharded:
            return self.accelerator.clip_grad_norm_(params, max_norm)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def step_was_skipped(self, optimizer: Any) -> bool:
        """Whether fp16 loss scaling skipped the last optimizer step (inf/NaN gradients): the schedule waits too."""
        return bool(getattr(optimizer, "step_was_skipped", False))

    def to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """A micro-batch's tensors on this rank's device (asynchronously from pinned memory on a GPU)."""
        cuda = self.device.type == "cuda"
        out: dict[str, Any] = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                out[key] = (value.pin_memory() if cuda else value).to(self.device, non_blocking=cuda)
            else:
                out[key] = value
        return out

    # -- random states -------------------------------------------------------------------------------------------

    def rng_tensors(self) -> dict[str, torch.Tensor]:
        """This rank's torch RNG states: the CPU generator and, on a GPU, this rank's CUDA generator."""
        states = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def set_rng_tensors(self, states: Mapping[str, torch.Tensor]) -> None:
        torch.set_rng_state(states["torch"])
        if self.device.type == "cuda" and "cuda" in states:
            torch.cuda.set_rng_state(states["cuda"], self.device)


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module) -> Iterator[None]:
    model.set_requires_gradient_sync(False)  # type: ignore[operator]
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)  # type: ignore[operator]
