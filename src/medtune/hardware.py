"""What the machine can run fast: bf16 only where the hardware has native bf16 matrix units.

On a GPU with bf16 (Ampere and later) and on CPUs with bf16 instructions (Intel AMX, or AVX-512 BF16 as on AMD
Zen 4), bf16 mixed precision is 2–3× faster than fp32 (measured here: 436 vs 177 GFLOP/s on a Zen 4 EPYC, 612 vs
181 with AMX). On a CPU without them (AVX2 only), PyTorch emulates bf16 matmuls: measured 1.0 GFLOP/s against
158.5 in fp32 on an AVX2 EPYC — a 150× slowdown that turns minutes into hours. So medtune decides bf16
by what the hardware can do and falls back to fp32 with a warning where bf16 would be emulated.
``MEDTUNE_CPU_BF16=1`` / ``=0`` overrides the CPU check (e.g. after measuring on an unusual CPU).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from collections.abc import Iterator

log = logging.getLogger(__name__)
ENV_OVERRIDE = "MEDTUNE_CPU_BF16"
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.lru_cache(maxsize=1)
def cpu_capability() -> str:
    """PyTorch's view of the CPU's vector units (e.g. ``AVX2``, ``AVX512``, ``AMX``...)."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # older torch
        return "unknown"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """Whether bf16 matmuls run natively on this CPU (AMX or AVX-512 BF16 instructions), not emulated.

    Read from PyTorch's capability and the CPU flags (``amx_bf16``, ``avx512_bf16``); the environment variable
    :data:`ENV_OVERRIDE` wins when set.
    """
    forced = os.environ.get(ENV_OVERRIDE)
    if forced in ("0", "1"):
        return forced == "1"
    return "AMX" in cpu_capability().upper() or bool(NATIVE_BF16_FLAGS & _cpu_flags())


def gpu_has_bf16() -> bool:
    """Whether the GPU computes bf16 natively (Ampere and later). A T4 or V100 emulates it, several times slower
    than fp16, although ``torch.cuda.is_bf16_supported()`` says yes there unless emulation is excluded."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))


def on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def training_dtype(requested: str) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for a run that asked for ``requested`` (``auto``, ``fp32``, ``bf16``, ``fp16``).

    ``auto``: bf16 on a GPU that has it, fp16 on an older GPU, fp32 on a CPU (exact; what the tests compare
    against). ``bf16`` on a CPU without native bf16 falls back to fp32 with a warning naming the reason.
    """
    if requested == "fp32":
        return "fp32"
    if on_gpu():
        if requested == "fp16":
            return "fp16"
        # A GPU without bf16 (V100, T4) trains in fp16 with dynamic loss scaling, as the HF Trainer's fp16 does.
        return "bf16" if gpu_has_bf16() else "fp16"
    if requested == "auto":
        return "fp32"
    if requested == "fp16":
        warnings.warn("fp16 mixed precision needs a GPU (loss scaling on a CPU gains nothing); fp32 is used",
                      RuntimeWarning, stacklevel=2)
        return "fp32"
    if requested == "bf16" and not cpu_has_native_bf16():
        warnings.warn(
            f"bf16 requested, but this CPU ({cpu_capability()}) has no native bf16 instructions (AMX or AVX-512 "
            "BF16): bf16 would be emulated and run many times slower than fp32, so fp32 is used "
            "(set MEDTUNE_CPU_BF16=1 to force bf16)",
            RuntimeWarning, stacklevel=2)
        return "fp32"
    return requested


def quantized_compute_dtype() -> str:
    """Compute dtype of a 4-bit base: bf16 where it is native (GPU, AMX CPU), fp32 elsewhere."""
    if on_gpu():
        return "bf16" if gpu_has_bf16() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def set_threads(n: int | None) -> None:
    """Use ``n`` CPU threads for torch (None: leave torch's choice)."""
    if n:
        import torch

        torch.set_num_threads(n)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (None: as it is), then restore the caller's setting.

    Float sums differ with the thread count, so a grid cell (or a benchmark compared with one-thread processes)
    fixes it to get the same numbers under every executor.
    """
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def world_size_from_env() -> int:
    """The number of processes ``torchrun`` / ``accelerate launch`` started for this run (1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1
