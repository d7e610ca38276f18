"""Whether a training run fits its GPU before any weight is loaded, and which settings would: the memory check.

A 13B model that does not fit should fail in a second with what to change, not after minutes of loading (or
hours into a grid). :func:`plan_memory` takes the estimate (:mod:`medtune.training.memory_estimate`, the formulas
and what they count) and judges it against the GPU: when it does not fit, it tries the changes a user would make
(gradient checkpointing, a smaller micro-batch, flash attention, qlora, FSDP) on the same estimate and keeps those
that fit. :func:`plan_run` plans a run from its settings alone, and :func:`check_fits` refuses a plan that exceeds
the GPU, naming the settings that would fit. The plan itself is :class:`medtune.training.memory_plan.MemoryPlan`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from medtune.errors import ConfigError, MedtuneError
from medtune.training.memory_estimate import estimate_memory, memory_method, planned_precision
from medtune.training.memory_plan import GIB, MemoryPlan
from medtune.training.model_shape import ModelShape, model_shape

if TYPE_CHECKING:

    from medtune.training.config import TrainSettings

FSDP_SIZES = (2, 4, 8)  # GPU counts a suggestion tries


def plan_memory(config: TrainSettings, shape: ModelShape, *, world_size: int = 1, gpu_bytes: int | None = None,
                precision: str | None = None) -> MemoryPlan:
    """The memory plan of ``config`` on a model of ``shape``, per GPU of ``world_size``, against ``gpu_bytes``.

    ``precision`` (fp32 | bf16 | fp16) overrides the precision planned for (default :func:`planned_precision`).
    When the plan does not fit, ``suggestions`` lists the changes that each would fit on their own, in order of
    preference: gradient checkpointing, a smaller micro-batch with more accumulation (same global batch), flash
    attention (no mask for packed rows), qlora instead of the method, FSDP over 2, 4 or 8 GPUs; when none does,
    the first of them taken together that fits. ``fixes`` holds each as settings and a GPU count.
    """
    precision = precision or planned_precision(config)
    plan = estimate_memory(config, shape, world_size=world_size, precision=precision)
    plan.gpu_bytes = gpu_bytes
    if gpu_bytes is None:
        return plan
    plan.fits = plan.total <= gpu_bytes
    if plan.fits:
        return plan

    def fits(settings: dict[str, Any], n: int) -> bool:
        # A fix of a method's setting names its group ({"knowtuning": {"inner_method": "lora"}}).
        update = {k: getattr(config, k).model_copy(update=v) if isinstance(v, dict) else v
                  for k, v in settings.items()}
        trial = config.model_copy(update=update)
        return estimate_memory(trial, shape, world_size=n, precision=precision).total <= gpu_bytes

    candidates = _candidate_fixes(config, plan, world_size)
    done: set[str] = set()
    for fix in candidates:
        group = fix.get("group")
        if group in done:
            continue  # only the largest micro-batch, the fewest GPUs
        if fits(fix["settings"], fix["world_size"]):
            plan.fixes.append({"settings": fix["settings"], "world_size": fix["world_size"]})
            if group:
                done.add(group)
    if not plan.fixes:  # no change fits alone: the fewest together, preferring the earlier ones
        plan.fixes.extend(_combined_fix(candidates, world_size, fits))
    plan.suggestions = [fix_text(f) for f in plan.fixes]
    return plan


def _combined_fix(candidates: list[dict[str, Any]], world_size: int, fits: Any) -> list[dict[str, Any]]:
    """The first combination of two or more kinds of change that fits: fewest kinds first, then the preferred
    kinds (itertools' order), then the mildest of each (largest micro-batch, fewest GPUs)."""
    import itertools

    kinds: list[list[dict[str, Any]]] = []
    for fix in candidates:
        group = fix.get("group")
        if group and kinds and kinds[-1][0].get("group") == group:
            kinds[-1].append(fix)
        else:
            kinds.append([fix])
    for size in range(2, len(kinds) + 1):
        for chosen in itertools.combinations(kinds, size):
            for options in itertools.product(*chosen):
                settings = {k: v for fix in options for k, v in fix["settings"].items()}
                n = max(fix["world_size"] for fix in options)
                if settings.get("method") == "qlora" and settings.get("distributed") == "fsdp":
                    continue  # a 4-bit base is not sharded
                if fits(settings, n):
                    return [{"settings": settings, "world_size": n}]
    return []


def _candidate_fixes(config: TrainSettings, plan: MemoryPlan, world_size: int) -> list[dict[str, Any]]:
    """Changes to try, in order of preference (``group``: alternatives of which the first that fits is kept)."""
    fixes: list[dict[str, Any]] = []
    one = {"world_size": world_size}
    if not config.gradient_checkpointing:
        fixes.append({"settings": {"gradient_checkpointing": True}, **one})
    b = config.batch_size
    for smaller in sorted((d for d in range(1, b) if b % d == 0), reverse=True):
        fixes.append({"settings": {"batch_size": smaller, "grad_accum": config.grad_accum * (b // smaller)},
                      "group": "batch", **one})
    if config.attn_implementation in ("sdpa", "eager") and config.batch_size > 1:
        fixes.append({"settings": {"attn_implementation": "flash_attention_2"}, **one})
    m = memory_method(config)
    if config.method == "knowtuning":
        if config.knowtuning.inner_method == "full":
            fixes.append({"settings": {"knowtuning": {"inner_method": "lora"}}, **one})
    elif m.kind in ("full", "galore", "lora") and config.method in ("full", "galore", "lora", "dora"):
        fixes.append({"settings": {"method": "qlora"}, **one})
    if m.kind in ("full", "galore") and config.method != "knowtuning":
        for n in sorted({*FSDP_SIZES, world_size}):
            if n > 1 and n >= world_size and not (n == world_size and plan.sharded):
                fixes.append({"settings": {"distributed": "fsdp"}, "world_size": n, "group": "fsdp"})
    return fixes


def fix_text(fix: dict[str, Any], *, style: str = "cli") -> str:
    """A fix as command-line options (``cli``) or as the grid's settings (``yaml``)."""
    settings = dict(fix["settings"])
    n = fix.get("world_size", 1)
    if style == "yaml":
        parts = []
        method = settings.pop("method", None)
        if method:
            parts.append(f"the {method} method")
        parts += [f"{k}: {json.dumps(v) if isinstance(v, bool | dict) else v}" for k, v in settings.items()]
        text = ", ".join(parts)
        return text + (f" with executor.num_gpus: {n}" if settings.get("distributed") == "fsdp" else "")
    parts = []
    flat = {f"{k}_{sub}" if isinstance(v, dict) else k: sv if isinstance(v, dict) else v
            for k, v in settings.items() for sub, sv in (v.items() if isinstance(v, dict) else [(None, v)])}
    for k, v in flat.items():
        flag = "--" + k.replace("_", "-")
        parts.append(flag if v is True else f"--no-{flag[2:]}" if v is False else f"{flag} {v}")
    text = " ".join(parts)
    if settings.get("distributed") == "fsdp":
        text += f" on {n} GPUs (torchrun --nproc-per-node {n})"
    return text


# ----------------------------------------------------------------------------------------------------------
# The run's plan and its check


def gpu_memory_bytes(config: TrainSettings) -> int | None:
    """Bytes per GPU to plan against: ``config.gpu_memory`` (GiB) when set, else this machine's current CUDA
    device, else None (a CPU machine without a stated GPU checks nothing)."""
    if config.gpu_memory is not None:
        return int(config.gpu_memory * GIB)
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    return None




def plan_run(config: TrainSettings, *, model: Any = None, world_size: int = 1) -> MemoryPlan:
    """The plan of a run before its model loads: the shape from ``model`` when it is in memory, else from
    ``config.model``'s config; a model whose config cannot be read gives a plan that says so (``fits`` None)."""
    gpu = gpu_memory_bytes(config)
    try:
        shape = model_shape(model if model is not None else config.model, config)
    except (MedtuneError, OSError, ValueError, KeyError, TypeError) as exc:
        return MemoryPlan.unknown(config, f"cannot read the model's config ({_one_line(exc)})", gpu, world_size)
    return plan_memory(config, shape, world_size=world_size, gpu_bytes=gpu)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("…" if len(text) > 200 else "")


def check_fits(plan: MemoryPlan, where: str) -> None:
    """Refuse a plan that does not fit (``fits`` False) unless its run turned the check off (``memory_check``)."""
    if plan.fits is not False or not plan.memory_check:
        return
    raise ConfigError(f"{where}: {plan_problem(plan)}; or turn the check off (--no-memory-check) to try anyway")


def plan_problem(plan: MemoryPlan, *, style: str = "cli") -> str:
    """One line: the estimate against the GPU and what would fit."""
    gpus = f" on each of {plan.world_size} GPUs" if plan.world_size > 1 else " per GPU"
    head = (f"{plan.method} on {plan.model} ({plan.precision}) needs ~{plan.total / GIB:.1f} GiB{gpus}, the GPU has "
            f"{(plan.gpu_bytes or 0) / GIB:.1f} GiB")
    if plan.stage:
        head += f" (peak in {plan.stage})"
    if plan.fixes:
        return head + "; would fit: " + "; ".join(fix_text(f, style=style) for f in plan.fixes)
    return head + "; no setting tried fits"


__all__ = ["FSDP_SIZES", "check_fits", "fix_text", "gpu_memory_bytes", "plan_memory", "plan_problem", "plan_run"]
