"""The memory plan of a training run as a record: bytes per GPU by part, the GPU they are compared against, whether
they fit and what would, and how it reads for people (:meth:`MemoryPlan.describe`) and files
(:meth:`MemoryPlan.to_dict`).

The record is kept apart from the formulas that fill it (:mod:`medtune.training.memory_estimate`) and the fit check
that judges it (:mod:`medtune.training.memory`), so a caller that only shows a plan, or a report that reads one back,
needs neither.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:

    from medtune.training.config import TrainSettings

GIB = 2**30


@dataclass
class MemoryPlan:
    """Bytes per GPU at the training loop's peak, what they are compared against, and what would fit."""

    model: str
    method: str
    precision: str
    world_size: int = 1
    sharded: bool = False
    tokens: int = 0  # per micro-batch
    weights: int = 0  # stored (frozen base, or everything on fp32 runs) + half-precision working copies
    master: int = 0  # fp32 master weights under mixed precision
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    scratch: int = 0  # the optimizer step's own buffers (not at the same time as activations)
    overhead: int = 0
    total: int = 0
    gpu_bytes: int | None = None
    fits: bool | None = None
    peak: str = "forward/backward"
    suggestions: list[str] = field(default_factory=list)
    fixes: list[dict[str, Any]] = field(default_factory=list)  # each suggestion as settings (+ world_size)
    stage: str | None = None  # which stage is the peak of a multi-stage method
    n_params: int | None = None
    trainable: int | None = None
    notes: dict[str, str] = field(default_factory=dict)
    note: str | None = None  # why there is no estimate
    memory_check: bool = True

    @property
    def allocated(self) -> int:
        """What ``torch.cuda.max_memory_allocated()`` should show: the total less the overhead."""
        return self.total - self.overhead

    @classmethod
    def unknown(cls, config: TrainSettings, why: str, gpu_bytes: int | None, world_size: int = 1) -> MemoryPlan:
        return cls(model=config.model, method=config.method, precision="?", world_size=world_size,
                   gpu_bytes=gpu_bytes, fits=None, note=why, memory_check=config.memory_check)

    def describe(self) -> str:
        """A few lines for people: each part in GiB and whether it fits."""
        gpus = f"{self.world_size} GPU{'s' if self.world_size > 1 else ''}" + (" (FSDP)" if self.sharded else "")
        if self.note is not None:
            return f"memory plan for {self.model} ({self.method}): no estimate: {self.note}"
        size = f"{count_text(self.n_params)} parameters"
        trained = f", {count_text(self.trainable)} trained" if self.trainable is not None else ""
        lines = [f"memory plan: {self.model}, {self.method}, {self.precision}, {gpus} ({size}{trained}; "
                 f"{self.tokens} tokens per micro-batch)" + (f"; peak in {self.stage}" if self.stage else "")]
        for name in ("weights", "master", "gradients", "optimizer", "activations", "scratch", "overhead"):
            value = getattr(self, name)
            if value or name in ("weights", "activations"):
                note = self.notes.get(name)
                lines.append(f"  {name:<12}{_gib(value):>8}" + (f"  {note}" if note else ""))
        verdict = ""
        if self.gpu_bytes is not None:
            verdict = f"; the GPU has {_gib(self.gpu_bytes)}: " + ("fits" if self.fits else "does not fit")
        lines.append(f"  {'total':<12}{_gib(self.total):>8}  per GPU, peak in the {self.peak}{verdict}")
        if self.fits is False:
            lines.append("  would fit: " + ("; ".join(self.suggestions) if self.suggestions else "no setting tried"))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["allocated"] = self.allocated
        out["total_gib"] = round(self.total / GIB, 2)
        return out


def _gib(n: int | float) -> str:
    return f"{n / GIB:.1f} GiB"


def count_text(n: int | None) -> str:
    """A parameter count for people: ``6.74 B``, ``4.2 M``, ``12,288``; ``?`` when unknown."""
    if n is None:
        return "?"
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"

