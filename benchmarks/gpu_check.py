"""One command that checks and times medtune on a GPU machine, and runs the same path on a CPU in the test suite.

    python benchmarks/gpu_check.py --out gpu_check.json            # GPU machine, no network: < 8 min on an H100
    python benchmarks/gpu_check.py --out gpu_check.json --quick    # 4 of TinyLlama's 22 layers, fewer steps
    python benchmarks/gpu_check.py --out gpu_check.json --cpu      # tiny shapes, fp32 (what tests/ runs)

Why one script: a GPU is lent rarely and briefly, so everything that can only be seen there (device placement,
bf16, 4-bit NF4 layers, peak memory against the memory plan, speed against TRL and lm-evaluation-harness) is
checked in one run that writes every figure into one JSON; the CPU mode (``--cpu``, implied without CUDA) runs
the very same code on tiny shapes, so the script cannot rot between loans. Exit status 1 lists the failed checks.

Parts (each timed; a part that raises fails its checks, the others still run):

- ``models``: a TinyLlama-1.1B-shaped Llama (hidden 2048, 22 layers, 32 heads, 4 KV heads, FFN 5632, vocab 32000)
  and a small one (hidden 512, 4 layers), random weights from a config, saved with ``save_pretrained`` beside a
  tokenizer trained by :func:`medtune.models.train_tokenizer` on the synthetic data set's text (the model's
  vocabulary is at least the tokenizer's). ``--cpu``: the ``tiny`` default sizes and smaller.
- ``methods``: full, lora, dora, qlora and galore for a few steps through :func:`medtune.training.train` on the
  large model: loss finite, every parameter and buffer on the run's device, the base in the method's dtype
  (frozen bf16 base for lora/dora on a GPU, NF4 ``Linear4bit`` for qlora, fp32 master weights for full/galore);
  tokens/s, peak memory (``torch.cuda.max_memory_allocated``, reset per method) and the memory plan's estimate
  (``medtune.training.memory.plan_run``, when that module exists) with their ratio.
- ``packing``: packed rows vs one padded row per item, same items and seed: per-step losses within 1e-3 relative
  in bf16, 1e-5 in fp32 (full fine-tuning, which has no dropout to draw differently).
- ``resume``: ``medtune train --save-every`` in a subprocess, SIGKILLed once a checkpoint exists, ``--resume``d,
  and compared with an uninterrupted run: same items per step, and the same adapter weights (exactly in fp32 on
  a CPU; in bf16 on a GPU within 1 % relative Frobenius norm, see :data:`BF16_RUN_TOLERANCE`).
- ``torchrun``: ``torchrun --nproc-per-node 2 ... medtune train`` against a one-process run of the same settings
  (NCCL where there are >= 2 GPUs, else skipped; two gloo processes in CPU mode).
- ``scoring``: letter, option and generate scoring of the small model in bf16 against fp32 on the CPU.
- ``qlora_eval``: the qlora run's base loaded in 4-bit with its adapter (``load_backend(..., quantization="4bit",
  adapter=...)``), scored, and compared with the trained model the run returned.
- ``trl``: TRL's ``SFTTrainer`` (``SFTConfig`` defaults) on the same model, items, micro-batch, max length,
  precision, learning rate and steps, with LoRA and with QLoRA: tokens/s and peak memory ratios.
- ``lm_eval``: lm-evaluation-harness's ``HFLM`` ``loglikelihood`` over the same letter continuations as
  medtune's letter mode: questions/s ratio and prediction agreement.
- ``workflow``: the newer training and evaluation paths on the device, on the small model: one LoRA run with a
  ChatML template (BOS written by the template) and validation (a quarter held out, every step, patience 1,
  keep_best) gives ``workflow.chat_one_bos`` (training prompt ids == scoring prompt ids, one BOS, letter scores
  under chat on the device) and ``workflow.validation_stop`` (finite val_loss every step, stopped or completed,
  the best step's weights saved and in the returned model on the device, verify-order passes);
  ``workflow.dpo_margin``: DPO (LoRA) on pairs made from the questions, in the run's precision: finite losses, the
  mean chosen-minus-rejected margin rises, the adapter scores on the device; ``workflow.sampling_seeded``: 3
  seeded samples per question, all together vs one question per batch (identical in fp32, the greedy-text rule in
  bf16), the same batching twice identical, votes = the samples' majority; ``workflow.harness_task``:
  mmlu_anatomy 5-shot in bf16 on the device vs fp32 on the CPU under the scoring part's tolerances.

Targets printed beside the ratios (checks on a GPU, reported only in CPU mode): LoRA tokens/s >= 1.5x TRL at no
more peak memory, QLoRA >= 1.2x, scoring q/s >= 2x lm-eval's hf model, memory estimate within 25 % of the peak.
Optional packages missing on the machine (trl, lm-eval, bitsandbytes, galore-torch) make their checks "skipped"
with the reason; benchmarks/gpu_wheels.sh downloads them for a machine without network.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import io
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Progress bars of loading, saving and dataset mapping would bury the summary (also in the subprocesses).
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

FORMAT = "medtune.gpu_check/1"
METHODS = ("full", "lora", "dora", "qlora", "galore")
# In the order they run: the subprocess parts last, so in CPU mode they can run beside the others (see Launched).
PARTS = ("models", "methods", "packing", "scoring", "qlora_eval", "trl", "lm_eval", "workflow", "resume",
         "torchrun")
WORKFLOW_CHECKS = tuple(f"workflow.{c}" for c in ("chat_one_bos", "validation_stop", "dpo_margin", "sampling_seeded",
                                                   "harness_task"))
MEDTUNE_MAIN = "import sys; from medtune.cli import main; sys.exit(main(sys.argv[1:]))"

# The TinyLlama-1.1B shape (its config.json), and the small model the scoring and process checks use.
TINYLLAMA = {"hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
             "intermediate_size": 5632, "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
             "tie_word_embeddings": False}
SMALL = {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4,
         "intermediate_size": 1408, "max_position_embeddings": 2048, "tie_word_embeddings": False}
# CPU mode: the ``tiny`` default sizes (medtune.models.TINY_DEFAULTS) with grouped KV heads, and smaller.
CPU_LARGE = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 512, "max_position_embeddings": 1024, "tie_word_embeddings": False}
CPU_SMALL = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
             "intermediate_size": 128, "max_position_embeddings": 1024, "tie_word_embeddings": True}

# Tolerances, and why.
# Packed vs per-item losses: the same arithmetic on differently shaped matmuls, so only the summation order
# differs — fp32 rounding (~1e-7 per operation) stays far below 1e-5; bf16 keeps 8 significant bits, whose
# rounding (~4e-3 per value) mostly averages out in the summed loss: 1e-3 relative.
PACKING_TOLERANCE = {"fp32": 1e-5, "bf16": 1e-3}
# A resumed or multi-process bf16 run on a GPU restores fp32 master weights, optimizer state and RNG exactly, so
# what can still differ is the GPU's own non-determinism (atomics in attention backward, split-K reductions): bf16
# rounding of some gradient elements (2^-8 relative), which Adam turns into update differences of the same relative
# order. Over a few dozen steps that stays well under 1 % of the weights' norm; a lost RNG state (other dropout
# masks) or optimizer state changes the update by O(1) relative, which this bound catches.
BF16_RUN_TOLERANCE = 1e-2
# bf16 vs fp32 scoring: per log-probability |bf16 - fp32| <= atol + rtol * |fp32|. rtol 2^-6 (four bf16 roundings
# of the result's own size) and atol 0.05 nats (the logits' accumulated rounding through the layers, measured on
# these random-weight models at well under half of it). Predictions may still flip where a random-weight model's
# options are near ties, hence agreement >= 95 %, and for greedy text (one near-tie changes every later token)
# the same text on most items (> 50 %).
SCORE_RTOL, SCORE_ATOL = 2.0**-6, 0.05
MIN_AGREEMENT = 0.95
MIN_SAME_TEXT = 0.5
# Targets: ratios of figures measured in the same run, on the same machine.
TARGETS = {"lora_vs_trl_tokens_per_s": 1.5, "qlora_vs_trl_tokens_per_s": 1.2, "scoring_vs_lm_eval_q_per_s": 2.0,
           "memory_estimate_within": 0.25}


class Skip(Exception):
    """A check that cannot run here (an optional package, a second GPU); recorded as skipped with the reason."""


# ----------------------------------------------------------------------------------------------------------
# What a run records


@dataclass
class Report:
    """Checks (passed / failed / skipped with a detail), per-part figures and targets; written as one JSON."""

    mode: str
    quick: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str = "", **figures: Any) -> bool:
        self.checks[name] = {"status": "passed" if ok else "failed", "detail": detail, **figures}
        return bool(ok)

    def skip(self, name: str, reason: str) -> None:
        self.checks[name] = {"status": "skipped", "detail": reason}

    def target(self, name: str, measured: float | None, goal: str, met: bool | None) -> None:
        """A performance target: a check on a GPU; in CPU mode only reported (tiny shapes say nothing of speed)."""
        asserted = self.mode == "gpu"
        self.targets[name] = {"target": goal, "measured": measured, "met": met, "asserted": asserted}
        if asserted and met is not None:
            self.check(f"target.{name}", met, f"{goal}: measured {_fmt(measured)}")

    def failed(self) -> list[str]:
        return [n for n, c in self.checks.items() if c["status"] == "failed"]

    def to_dict(self, started: str, wall: float, argv: list[str]) -> dict[str, Any]:
        return {"format": FORMAT, "command": argv, "mode": self.mode, "quick": self.quick, "started_utc": started,
                "wall_seconds": round(wall, 2), "environment": self.environment, "settings": self.settings,
                "parts": self.parts, "checks": self.checks, "targets": self.targets, "failed": self.failed(),
                "passed": not self.failed()}


def _fmt(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _error_text(exc: BaseException) -> str:
    tail = traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:]
    return f"{type(exc).__name__}: {exc}\n" + "".join(tail)[-2500:]


def requires(module: str, package: str | None = None) -> Any:
    """Import an optional package, or :class:`Skip` with the reason (not installed / fails to import)."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # an ImportError, or a package that breaks on import (a version mismatch)
        raise Skip(f"{package or module} not available: {type(exc).__name__}: {exc}") from None


# ----------------------------------------------------------------------------------------------------------
# The run's settings and shared state


@dataclass
class Ctx:
    """What the parts share: mode, sizes, data, model folders, and results later parts compare with."""

    mode: str  # gpu | cpu
    quick: bool
    work: Path
    device: str = "cpu"
    precision: str = "fp32"
    large_shape: dict[str, Any] = field(default_factory=dict)
    small_shape: dict[str, Any] = field(default_factory=dict)
    tokenizer_vocab: int = 512
    steps: int = 3
    batch: int = 2
    max_length: int = 256
    lr: float = 2e-4
    galore_rank: int = 16
    n_score: int = 24
    n_lm_eval: int = 24
    n_qlora_eval: int = 8  # bitsandbytes' 4-bit matmul on a CPU is slow (a few questions/s even for a tiny model)
    resume_steps: int = 16
    save_every: int = 4
    packing_steps: int = 3
    gen_tokens: int = 8
    lm_eval_batch: int = 8
    subprocess_timeout: int = 240
    n_harness: int = 8  # questions of the workflow part's harness task (5-shot)
    n_sampling: int = 3  # questions sampled 3 times each, three times over (two batchings)
    sample_tokens: int = 4
    validation_items: int = 8  # a quarter held out, the rest trained in steps of `batch`
    dpo_pairs: int = 4
    dpo_steps: int = 2
    train_items: list[Any] = field(default_factory=list)
    test_items: list[Any] = field(default_factory=list)
    large_dir: Path | None = None
    small_dir: Path | None = None
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> figures, for the TRL comparison
    qlora_run: Path | None = None
    qlora_scores: Any = None  # the trained qlora model's letter scores (DataFrame), for qlora_eval
    launched: dict[str, Launched] = field(default_factory=dict)  # subprocess parts started ahead (CPU mode)

    @property
    def gpu(self) -> bool:
        return self.mode == "gpu"

    def settings(self) -> dict[str, Any]:
        keys = ("device", "precision", "large_shape", "small_shape", "tokenizer_vocab", "steps", "batch",
                "max_length", "lr", "galore_rank", "n_score", "n_lm_eval", "n_qlora_eval", "resume_steps", "save_every",
                "packing_steps", "gen_tokens", "lm_eval_batch", "n_harness", "n_sampling", "sample_tokens",
                "validation_items", "dpo_pairs", "dpo_steps")
        return {k: getattr(self, k) for k in keys}


def make_ctx(mode: str, quick: bool, work: Path) -> Ctx:
    ctx = Ctx(mode=mode, quick=quick, work=work)
    if mode == "gpu":
        ctx.device, ctx.precision = "cuda", "bf16"
        ctx.large_shape = dict(TINYLLAMA, num_hidden_layers=4) if quick else dict(TINYLLAMA)
        ctx.small_shape = dict(SMALL)
        ctx.tokenizer_vocab = 4096
        ctx.steps, ctx.batch, ctx.max_length = (6, 8, 256) if quick else (12, 8, 256)
        ctx.galore_rank = 64
        ctx.n_score, ctx.n_lm_eval = (96, 128) if quick else (200, 256)
        ctx.n_qlora_eval = 64
        ctx.resume_steps, ctx.save_every = 60, 10
        ctx.packing_steps, ctx.gen_tokens, ctx.lm_eval_batch = 6, 16, 32
        ctx.subprocess_timeout = 420
        ctx.n_harness, ctx.n_sampling, ctx.sample_tokens = 32, 16, 16
        ctx.validation_items, ctx.dpo_pairs, ctx.dpo_steps = 44, 16, 4
    else:
        ctx.large_shape, ctx.small_shape = dict(CPU_LARGE), dict(CPU_SMALL)
    return ctx


# ----------------------------------------------------------------------------------------------------------
# Helpers


def cuda_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    """Free what earlier parts left and start a fresh peak-memory count (GPU only: on a CPU the collection costs
    seconds and measures nothing)."""
    import torch

    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_bytes() -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated())


def order_for(ids: list[str]) -> dict[str, Any]:
    """An order file that trains ``ids`` once, in this order (as benchmarks/bench_training.py writes it)."""
    return {"format": "medtune.order/1", "strategy": "file", "seed": 0, "epoch_policy": "repeat",
            "epochs": [list(ids)], "n_items": len(ids), "segments": []}


def tensor_devices(model: Any) -> dict[str, int]:
    """How many parameters and buffers live on each device type."""
    import itertools

    return dict(Counter(t.device.type for t in itertools.chain(model.parameters(), model.buffers())))


def steady_tokens_per_s(tokens: list[int], seconds: list[float]) -> float | None:
    """Tokens/s over all steps but the first (kernel selection, allocator warm-up), or all when there is one."""
    if len(tokens) > 1:
        tokens, seconds = tokens[1:], seconds[1:]
    total = sum(seconds)
    return sum(tokens) / total if total > 0 else None


def subprocess_env(threads: int | None = None) -> dict[str, str]:
    """The environment of a ``medtune`` subprocess: this medtune first on the path, offline, quiet."""
    import medtune

    src = str(Path(medtune.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([src, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def fp32_and_bf16(ctx: Ctx) -> tuple[Any, Any]:
    """The small model in fp32 on the CPU (the reference) and in bf16 on the device (on a CPU: cast directly, since
    the loader falls back to fp32 on a CPU without native bf16)."""
    import torch

    from medtune.models import LoadedModel, load_pretrained

    ref = load_pretrained(ctx.small_dir, dtype="fp32", device="cpu")
    if ctx.gpu:
        return ref, load_pretrained(ctx.small_dir, dtype="bf16", device=ctx.device)
    net = load_pretrained(ctx.small_dir, dtype="fp32", device="cpu").model.to(torch.bfloat16)
    return ref, LoadedModel(net, ref.tokenizer, str(ctx.small_dir), torch.bfloat16, "cpu")


def memory_plan(config: Any) -> dict[str, Any]:
    """The memory plan's estimate for ``config`` (``medtune.training.memory.plan_run``), if that module exists.

    ``compare_bytes`` is what the measured ``torch.cuda.max_memory_allocated`` is held against: the plan's
    ``allocated`` (its total less the fixed overhead the caching allocator never sees: CUDA context, cuBLAS
    workspaces) where the plan has it, else its total.
    """
    try:
        from medtune.training.memory import plan_run
    except ImportError as exc:
        return {"available": False, "note": f"memory plan: not available ({exc})"}
    try:
        plan = plan_run(config, world_size=1)
    except Exception as exc:
        return {"available": False, "note": f"memory plan failed: {type(exc).__name__}: {exc}"}
    as_dict = plan.to_dict() if hasattr(plan, "to_dict") else {}

    def number(*names: str) -> int | None:
        for name in names:
            value = getattr(plan, name, None)
            if value is None and isinstance(as_dict, dict):
                value = as_dict.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                return int(value)
        return None

    total = number("total_bytes", "total", "estimate_bytes")
    allocated = number("allocated_bytes", "allocated")
    return {"available": total is not None, "total_bytes": total, "allocated_bytes": allocated,
            "compare_bytes": allocated or total, "compared_with": "allocated" if allocated else "total",
            "plan": as_dict}


# ----------------------------------------------------------------------------------------------------------
# Parts


def part_environment(ctx: Ctx, report: Report) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    from medtune.hardware import cpu_capability

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        **{d: version(d) for d in ("transformers", "accelerate", "peft", "trl", "datasets", "lm-eval",
                                   "bitsandbytes", "galore-torch", "pydantic", "medtune")},
        "cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({cpu_capability()})",
        "cpu_capability": cpu_capability(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update({"gpu_memory_gib": round(props.total_memory / 2**30, 2),
                    "compute_capability": f"{props.major}.{props.minor}",
                    "bf16_supported": torch.cuda.is_bf16_supported()})
    report.environment = env
    return {}


def part_models(ctx: Ctx, report: Report) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    from medtune.data.synthetic_questions import generate_synthetic
    from medtune.models import train_tokenizer
    from medtune.training.tiny import tokenizer_texts

    ds = generate_synthetic(seed=0)
    need_train = max(ctx.steps * ctx.batch, ctx.resume_steps * 2, ctx.packing_steps * 4)
    ctx.train_items = [it for it in ds.items if it.split == "train"][:need_train]
    ctx.test_items = [it for it in ds.items if it.split == "test"][:max(ctx.n_score, ctx.n_lm_eval)]
    tok = train_tokenizer(tokenizer_texts(ctx.train_items + ctx.test_items, ds.textbook),
                          vocab_size=ctx.tokenizer_vocab)
    out: dict[str, Any] = {"train_items": len(ctx.train_items), "test_items": len(ctx.test_items),
                           "tokenizer_size": len(tok)}
    for name, shape in (("large", ctx.large_shape), ("small", ctx.small_shape)):
        shape = dict(shape)
        if "vocab_size" not in shape:  # the tokenizer's own size, rounded up to a multiple of 64 (never smaller)
            shape["vocab_size"] = -(-len(tok) // 64) * 64
        folder = ctx.work / f"model-{name}"
        cfg = LlamaConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
        t0 = time.perf_counter()
        torch.manual_seed(0)
        with torch.device(ctx.device):  # initialised on the GPU: a 1.1B model takes minutes to initialise on a CPU
            model = LlamaForCausalLM(cfg)
        n_params = sum(p.numel() for p in model.parameters())
        # The large model is stored in bf16 on a GPU machine (half the bytes to write and read five times); it is
        # loaded in the precision each method asks for.
        save_dtype = torch.bfloat16 if ctx.gpu and name == "large" else torch.float32
        model.to(save_dtype).save_pretrained(folder, safe_serialization=True)
        tok.save_pretrained(folder)
        del model
        reset_peak()
        back = AutoConfig.from_pretrained(folder)
        ok = (back.vocab_size >= len(tok) and back.hidden_size == shape["hidden_size"]
              and back.num_hidden_layers == shape["num_hidden_layers"] and any(folder.glob("*.safetensors")))
        report.check(f"models.{name}", ok, f"{n_params / 1e6:.1f} M parameters, vocab {back.vocab_size} >= "
                     f"tokenizer {len(tok)}, saved {str(save_dtype).replace('torch.', '')}")
        out[name] = {"parameters": n_params, "shape": shape, "saved_dtype": str(save_dtype).replace("torch.", ""),
                     "seconds": round(time.perf_counter() - t0, 2),
                     "bytes_on_disk": sum(p.stat().st_size for p in folder.glob("*.safetensors"))}
        setattr(ctx, f"{name}_dir", folder)
    return out


def train_config(ctx: Ctx, method: str, model_dir: Path, **overrides: Any) -> Any:
    from medtune.training import resolve_training_settings

    settings: dict[str, Any] = {
        "method": method, "model": str(model_dir), "batch_size": ctx.batch, "max_length": ctx.max_length,
        "lr": ctx.lr, "dtype": ctx.precision, "seed": 0, "packing": True,
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05}, "galore": {"rank": ctx.galore_rank}, "max_grad_norm": 1.0,
    }
    return resolve_training_settings(settings, overrides)  # a group in overrides changes only the keys it names


def dtype_check(method: str, model: Any, precision: str) -> tuple[bool, str, dict[str, Any]]:
    """Whether the trained model holds its weights as ``method`` should: the frozen base's dtype, fp32 trainables."""
    frozen = Counter(str(p.dtype).replace("torch.", "") for p in model.parameters() if not p.requires_grad)
    trainable = Counter(str(p.dtype).replace("torch.", "") for p in model.parameters() if p.requires_grad)
    figures: dict[str, Any] = {"frozen_dtypes": dict(frozen), "trainable_dtypes": dict(trainable)}
    if set(trainable) != {"float32"}:
        return False, f"trainable parameters should be fp32 master weights, are {dict(trainable)}", figures
    if method in ("full", "galore"):
        ok = not frozen
        return ok, "every weight trains, in fp32" if ok else f"frozen parameters in a {method} run: {dict(frozen)}", \
            figures
    if method in ("lora", "dora"):
        want = "bfloat16" if precision == "bf16" else "float32"
        ok = set(frozen) == {want}
        return ok, f"frozen base {dict(frozen)} (expected {want} for a {precision} run)", figures
    if method == "qlora":
        import bitsandbytes as bnb

        layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        kinds = Counter(getattr(m.weight, "quant_type", None) or getattr(getattr(m.weight, "quant_state", None),
                                                                          "quant_type", None) for m in layers)
        figures.update({"linear4bit_layers": len(layers), "quant_types": {str(k): v for k, v in kinds.items()}})
        ok = bool(layers) and set(kinds) == {"nf4"}
        return ok, f"{len(layers)} Linear4bit layers, quant types {dict(kinds)}", figures
    return True, "no expectation for this method", figures


def part_methods(ctx: Ctx, report: Report) -> dict[str, Any]:
    from medtune.training import train
    from medtune.training.runlog import read_log

    assert ctx.large_dir is not None
    items = ctx.train_items[:ctx.steps * ctx.batch]
    order = order_for([it.id for it in items])
    out: dict[str, Any] = {}
    for method in METHODS:
        name = f"train.{method}"
        figures: dict[str, Any] = {}
        out[method] = figures
        res = model = None
        try:
            if method == "qlora":
                requires("bitsandbytes")
            if method == "galore":
                requires("galore_torch", "galore-torch")
            cfg = train_config(ctx, method, ctx.large_dir)
            plan = memory_plan(cfg)
            run_dir = ctx.work / f"run-{method}"
            reset_peak()
            t0 = time.perf_counter()
            res = train(cfg, items, order, run_dir)
            cuda_sync()
            figures["wall_seconds"] = round(time.perf_counter() - t0, 2)
            peak = peak_bytes()
            log = read_log(run_dir)
            losses = [float(x) for x in res.losses]
            figures.update({
                "steps": res.steps, "losses": losses, "tokens": res.tokens, "train_seconds": round(res.seconds, 3),
                "tokens_per_s": res.tokens / res.seconds if res.seconds else None,
                "steady_tokens_per_s": steady_tokens_per_s([r["tokens"] for r in log], [r["time"] for r in log]),
                "peak_bytes": peak, "memory_plan": plan,
            })
            if plan.get("compare_bytes") and peak:
                figures["peak_over_plan"] = peak / plan["compare_bytes"]
            model = res.model
            devices = tensor_devices(model)
            figures["tensor_devices"] = devices
            report.check(f"{name}.loss_finite", len(losses) == ctx.steps and all(map(math.isfinite, losses)),
                         f"{len(losses)} of {ctx.steps} steps, losses {[round(x, 4) for x in losses]}")
            report.check(f"{name}.device", set(devices) == {ctx.device.split(':')[0]},
                         f"parameters and buffers by device: {devices} (expected all on {ctx.device})")
            ok, detail, dtypes = dtype_check(method, model, ctx.precision)
            figures.update(dtypes)
            report.check(f"{name}.dtype", ok, detail)
            if method == "qlora":
                ctx.qlora_run = run_dir
                ctx.qlora_scores = letter_scores_of(model, res.tokenizer, ctx.test_items[:ctx.n_qlora_eval], ctx.device,
                                                    "qlora run (in memory)")
            ctx.runs[method] = figures
            if not (run_dir / "adapter").exists():  # full/galore saved a whole model: its disk is not needed again
                import shutil

                shutil.rmtree(run_dir / "model", ignore_errors=True)
        except Skip as s:
            for sub in ("loss_finite", "device", "dtype"):
                report.skip(f"{name}.{sub}", str(s))
            figures["skipped"] = str(s)
        except Exception as exc:
            report.check(f"{name}.loss_finite", False, _error_text(exc))
            figures["error"] = _error_text(exc)
        finally:
            res = model = None  # the next method's peak must not include this model
        reset_peak()
    for method, figures in out.items():
        plan_bytes = (figures.get("memory_plan") or {}).get("compare_bytes")
        if figures.get("peak_bytes") and plan_bytes:
            ratio = figures["peak_bytes"] / plan_bytes
            report.target(f"memory_estimate.{method}", ratio, "estimate within 25 % of the measured peak "
                          "(peak / estimate in [0.75, 1.25])", abs(ratio - 1) <= TARGETS["memory_estimate_within"])
        elif figures.get("peak_bytes"):
            report.target(f"memory_estimate.{method}", None, "memory plan: not available", None)
    return out


def letter_scores_of(model: Any, tokenizer: Any, items: list[Any], device: str, spec: str) -> Any:
    import torch

    from medtune.models import LoadedModel
    from medtune.scoring import score_items

    dtype = next((p.dtype for p in model.parameters() if p.dtype.is_floating_point), torch.float32)
    was_training = model.training
    frame = score_items(LoadedModel(model, tokenizer, spec, dtype, device), items, mode="letter", progress=False)
    model.train(was_training)
    return frame


def part_packing(ctx: Ctx, report: Report) -> dict[str, Any]:
    from medtune.training import train
    from medtune.training.runlog import read_log

    assert ctx.small_dir is not None
    items = ctx.train_items[:ctx.packing_steps * 4]
    order = order_for([it.id for it in items])
    logs = {}
    for packing in (True, False):
        cfg = train_config(ctx, "full", ctx.small_dir, packing=packing, batch_size=4, lr=1e-4)
        run_dir = ctx.work / f"packing-{'packed' if packing else 'per-item'}"
        train(cfg, items, order, run_dir)
        logs[packing] = read_log(run_dir)
    packed, single = logs[True], logs[False]
    tol = PACKING_TOLERANCE[ctx.precision]
    rel = [abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-12) for a, b in zip(packed, single, strict=True)]
    same_steps = [r["ids"] for r in packed] == [r["ids"] for r in single] and \
        [r["tokens"] for r in packed] == [r["tokens"] for r in single]
    ok = same_steps and len(packed) == ctx.packing_steps and max(rel) <= tol
    report.check("packing.equal", ok, f"max relative loss difference {max(rel):.2e} (tolerance {tol:g}, "
                 f"{ctx.precision}) over {len(rel)} steps; same ids and tokens per step: {same_steps}")
    return {"packed_losses": [r["loss"] for r in packed], "per_item_losses": [r["loss"] for r in single],
            "max_relative_difference": max(rel), "tolerance": tol}


def cli_train_args(ctx: Ctx, items_path: Path, order_path: Path, out: Path, *, dropout: float) -> list[str]:
    assert ctx.small_dir is not None
    args = ["train", "--items", str(items_path), "--order", str(order_path), "-o", str(out), "--method", "lora",
            "--lora-dropout", str(dropout), "--batch-size", "2", "--lr", "1e-3", "--save-every", str(ctx.save_every),
            "--no-progress", "--model", str(ctx.small_dir), "--max-length", str(ctx.max_length),
            "--dtype", ctx.precision, "--seed", "0"]
    return args


def _run_items(ctx: Ctx) -> tuple[Path, Path]:
    """The items file and order file the subprocess runs train on (written once)."""
    from medtune.schema import write_items

    items_path, order_path = ctx.work / "cli-items.parquet", ctx.work / "cli-order.json"
    if not items_path.exists():
        items = ctx.train_items[:ctx.resume_steps * 2]
        write_items(items, items_path)
        order_path.write_text(json.dumps(order_for([it.id for it in items])), encoding="utf-8")
    return items_path, order_path


def _adapter_weights(run_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def compare_weights(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Bitwise equality, the largest element difference and the relative Frobenius distance of two state dicts."""
    import torch

    if a.keys() != b.keys() or not a:
        return {"same_keys": False, "bitwise_equal": False, "max_abs_difference": None, "relative_frobenius": None}
    diff2 = norm2 = 0.0
    biggest = 0.0
    for k in a:
        x, y = a[k].double(), b[k].double()
        diff2 += float(((x - y) ** 2).sum())
        norm2 += float((y**2).sum())
        biggest = max(biggest, float((x - y).abs().max()) if x.numel() else 0.0)
    return {"same_keys": True, "bitwise_equal": all(torch.equal(a[k], b[k]) for k in a),
            "max_abs_difference": biggest, "relative_frobenius": math.sqrt(diff2 / norm2) if norm2 else 0.0}


def _wait(proc: subprocess.Popen, timeout: float, what: str) -> None:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"{what} did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        text = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
        raise RuntimeError(f"{what} exited with {proc.returncode}:\n{text[-3000:]}")


@dataclass
class Launched:
    """Subprocess work of a part (the killed and resumed runs, torchrun), possibly started ahead of the part.

    In CPU mode the parts' subprocesses start right after the models are built and run beside the in-process
    parts: a tiny model keeps about one core busy, so the second core does the subprocesses' imports and steps
    for free. On a GPU they start when their part does, so they never share the GPU with a timed part.
    """

    thread: threading.Thread
    info: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None

    def join(self, timeout: float) -> dict[str, Any]:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"the subprocesses did not finish in {timeout:.0f} s")
        if self.error is not None:
            raise self.error
        return self.info


def _launch(target: Callable[[dict[str, Any]], None]) -> Launched:
    launched = Launched(thread=threading.Thread(daemon=True))

    def body() -> None:
        try:
            target(launched.info)
        except BaseException as exc:
            launched.error = exc

    launched.thread = threading.Thread(target=body, daemon=True)
    launched.thread.start()
    return launched


def start_resume(ctx: Ctx) -> Launched:
    """Start a CLI run, SIGKILL it once a checkpoint exists, then ``--resume`` it to the end (in a thread)."""
    from medtune.training.checkpoint import latest_checkpoint
    from medtune.training.runlog import read_log

    items_path, order_path = _run_items(ctx)
    run = ctx.work / "resume-run"
    env = subprocess_env(None if ctx.gpu else 1)  # one thread: as the in-process reference runs (same sums)
    # LoRA with dropout: resuming must restore the RNG too, or the dropout masks (and the weights) would differ.
    cmd = [sys.executable, "-c", MEDTUNE_MAIN, *cli_train_args(ctx, items_path, order_path, run, dropout=0.1)]

    def drive(info: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # The kill comes from a process of its own: a thread of this busy process can wait long for the GIL and
        # a core, and a tiny model's run finishes every step in well under a second.
        watcher = subprocess.Popen([sys.executable, "-c", KILL_WATCHER, str(proc.pid), str(run / "checkpoints"),
                                    str(ctx.subprocess_timeout)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=ctx.subprocess_timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError("no checkpoint appeared in time") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if watcher.poll() is None:
                watcher.kill()
            seen, _ = watcher.communicate()
        if proc.returncode != -signal.SIGKILL:
            raise RuntimeError(f"the run to kill ended by itself (exit {proc.returncode}) before the watcher saw a "
                               "checkpoint:\n" + err.decode(errors="replace")[-3000:])
        info["kill_seen_checkpoint"] = seen.decode().strip() or None
        info["killed_returncode"] = proc.returncode
        info["killed_after_steps"] = len(read_log(run)) if (run / "train_log.jsonl").exists() else 0
        info["finished_before_kill"] = (run / "adapter").exists()
        checkpoint = latest_checkpoint(run)
        info["checkpoint"] = checkpoint.name if checkpoint else None
        info["killed_run_seconds"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        resumed = subprocess.Popen([*cmd, "--resume"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait(resumed, ctx.subprocess_timeout, "the resumed run")
        info["resumed_run_seconds"] = round(time.perf_counter() - t0, 2)

    return _launch(drive)


# Run by its own Python (no imports beyond the standard library, so it starts in milliseconds): SIGKILL process PID
# as soon as a complete checkpoint (a step-N folder with its state.json, published by a rename) is in ROOT.
KILL_WATCHER = """
import os, signal, sys, time
pid, root, deadline = int(sys.argv[1]), sys.argv[2], time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    try:
        names = [n for n in os.listdir(root) if n.startswith("step-")]
    except FileNotFoundError:
        names = []
    done = [n for n in names if os.path.exists(os.path.join(root, n, "state.json"))]
    if done:
        os.kill(pid, signal.SIGKILL)
        print(done[0])
        sys.exit(0)
    time.sleep(0.002)
"""


def part_resume(ctx: Ctx, report: Report) -> dict[str, Any]:
    from medtune.adaptive.verify import verify_run
    from medtune.hardware import torch_threads
    from medtune.training.runlog import read_log
    from medtune.training.stage import run_training

    launched = ctx.launched.pop("resume", None) or start_resume(ctx)
    items_path, order_path = _run_items(ctx)
    ref, run = ctx.work / "resume-reference", ctx.work / "resume-run"
    # The uninterrupted run, in this process with the settings the command line gives (what `medtune train` runs).
    t0 = time.perf_counter()
    cfg = train_config(ctx, "lora", ctx.small_dir, lora={"dropout": 0.1}, batch_size=2, lr=1e-3,
                       save_every=ctx.save_every, max_length=ctx.max_length)
    with torch_threads(None if ctx.gpu else 1):
        run_training(cfg, items_path, order_path, ref)
    reference_s = time.perf_counter() - t0
    info = launched.join(ctx.subprocess_timeout * 2)
    ref_log, run_log = read_log(ref), read_log(run)
    steps_ok = [r["step"] for r in run_log] == list(range(1, ctx.resume_steps + 1)) and \
        [r["ids"] for r in run_log] == [r["ids"] for r in ref_log]
    weights = compare_weights(_adapter_weights(run), _adapter_weights(ref))
    loss_rel = max(abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-12) for a, b in zip(run_log, ref_log,
                                                                                         strict=True))
    if ctx.precision == "fp32" and not ctx.gpu:
        equal = weights["bitwise_equal"] and loss_rel == 0.0
        rule = "exact (fp32 on a CPU)"
    else:
        rel = weights["relative_frobenius"]
        equal = weights["same_keys"] and rel is not None and rel <= BF16_RUN_TOLERANCE and loss_rel <= \
            BF16_RUN_TOLERANCE
        rule = f"relative Frobenius distance and per-step loss within {BF16_RUN_TOLERANCE:g} ({ctx.precision})"
    killed_at = info["killed_after_steps"]
    mid_run = 0 < killed_at < ctx.resume_steps and not info["finished_before_kill"] and \
        info["killed_returncode"] == -signal.SIGKILL
    report.check("resume.killed_mid_run", mid_run, f"SIGKILL after {killed_at} of {ctx.resume_steps} logged steps "
                 f"(checkpoint {info['checkpoint']})")
    report.check("resume.same_steps", steps_ok, "steps 1..N with the uninterrupted run's items")
    report.check("resume.equal", equal and steps_ok, f"{rule}: bitwise {weights['bitwise_equal']}, max |diff| "
                 f"{_fmt(weights['max_abs_difference'])}, relative Frobenius {_fmt(weights['relative_frobenius'])}, "
                 f"max relative loss difference {loss_rel:.2e}")
    verified = verify_run(run)
    report.check("resume.verify_order", verified.ok, str(getattr(verified, "message", "")))
    return {"steps": ctx.resume_steps, "save_every": ctx.save_every, **info, "reference_seconds": round(reference_s, 2),
            "weights": weights, "max_relative_loss_difference": loss_rel, "rule": rule}


def start_torchrun(ctx: Ctx) -> Launched:
    """``torchrun --nproc-per-node 2`` of ``medtune train`` (in a thread); :class:`Skip` on a 1-GPU machine."""
    import torch

    if ctx.gpu and torch.cuda.device_count() < 2:
        raise Skip(f"skipped: {torch.cuda.device_count()} GPU (torchrun --nproc-per-node 2 needs 2)")
    items_path, order_path = _run_items(ctx)
    # Without dropout: each process draws its own masks, so only a dropout-free run can equal a one-process one.
    args = cli_train_args(ctx, items_path, order_path, ctx.work / "torchrun-2", dropout=0.0)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "--no-python", sys.executable, "-c", MEDTUNE_MAIN]

    def drive(info: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*launcher, *args], env=subprocess_env(None if ctx.gpu else 1),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait(proc, ctx.subprocess_timeout, "torchrun --nproc-per-node 2")
        info["torchrun_seconds"] = round(time.perf_counter() - t0, 2)

    return _launch(drive)


def part_torchrun(ctx: Ctx, report: Report) -> dict[str, Any]:
    from medtune.training.runlog import read_log
    from medtune.training.stage import run_training

    launched = ctx.launched.pop("torchrun", None) or start_torchrun(ctx)
    items_path, order_path = _run_items(ctx)
    multi, single = ctx.work / "torchrun-2", ctx.work / "torchrun-1"
    # The one-process reference, in this process, with the settings the command line gives.
    cfg = train_config(ctx, "lora", ctx.small_dir, lora={"dropout": 0.0}, batch_size=2, lr=1e-3,
                       save_every=ctx.save_every, max_length=ctx.max_length)
    run_training(cfg, items_path, order_path, single)
    info = launched.join(ctx.subprocess_timeout)
    multi_log, single_log = read_log(multi), read_log(single)
    meta = json.loads((multi / "config.json").read_text(encoding="utf-8"))
    world = meta.get("world_size")
    same_ids = [r["ids"] for r in multi_log] == [r["ids"] for r in single_log]
    loss_rel = max(abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-12) for a, b in zip(multi_log, single_log,
                                                                                         strict=True))
    weights = compare_weights(_adapter_weights(multi), _adapter_weights(single))
    tol = BF16_RUN_TOLERANCE if ctx.precision == "bf16" else 1e-4
    rel = weights["relative_frobenius"]
    ok = world == 2 and same_ids and len(multi_log) == ctx.resume_steps and loss_rel <= tol and rel is not None \
        and rel <= tol
    report.check("torchrun.two_process", ok, f"world_size {world}, {len(multi_log)} steps, same items per step: "
                 f"{same_ids}, max relative loss difference {loss_rel:.2e}, adapter relative Frobenius distance "
                 f"{_fmt(rel)} (tolerance {tol:g}: the gradients are summed across processes in another order)")
    return {"world_size": world, "backend": "nccl" if ctx.gpu else "gloo", "steps": len(multi_log), **info,
            "max_relative_loss_difference": loss_rel, "weights": weights, "tolerance": tol}


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= SCORE_ATOL + SCORE_RTOL * abs(b)


def part_scoring(ctx: Ctx, report: Report) -> dict[str, Any]:

    from medtune.scoring import score_items

    assert ctx.small_dir is not None
    items = ctx.test_items[:ctx.n_score]
    ref, low = fp32_and_bf16(ctx)
    devices = tensor_devices(low.model)
    dtypes = Counter(str(p.dtype).replace("torch.", "") for p in low.model.parameters())
    report.check("scoring.bf16_model", set(devices) == {ctx.device} and set(dtypes) == {"bfloat16"},
                 f"bf16 model: devices {devices}, dtypes {dict(dtypes)}")
    out: dict[str, Any] = {"items": len(items), "tolerance": {"rtol": SCORE_RTOL, "atol": SCORE_ATOL}}
    for mode in ("letter", "option", "generate"):
        kw = {"max_new_tokens": ctx.gen_tokens} if mode == "generate" else {}
        timings = {}
        frames = {}
        for label, loaded in (("fp32_cpu", ref), ("bf16", low)):
            t0 = time.perf_counter()
            frames[label] = score_items(loaded, items, mode=mode, progress=False, **kw)
            cuda_sync()
            timings[label] = time.perf_counter() - t0
        a, b = frames["bf16"], frames["fp32_cpu"]
        figures: dict[str, Any] = {f"{k}_q_per_s": len(items) / v for k, v in timings.items()}
        if mode == "generate":
            same = sum(x == y for x, y in zip(a["generated"], b["generated"], strict=True)) / len(items)
            first = sum((x.split() or [""])[0] == (y.split() or [""])[0]
                        for x, y in zip(a["generated"], b["generated"], strict=True)) / len(items)
            figures.update({"same_text": same, "same_first_word": first})
            report.check("scoring.generate", same > MIN_SAME_TEXT, f"same greedy text on {same:.0%} of {len(items)} "
                         f"items (need > {MIN_SAME_TEXT:.0%}); same first word {first:.0%}")
        else:
            agree = float((a["pred"].to_numpy() == b["pred"].to_numpy()).mean())
            pairs = [(x, y) for xs, ys in zip(a["scores"], b["scores"], strict=True) for x, y in zip(xs, ys,
                                                                                                     strict=True)]
            diffs = [abs(x - y) for x, y in pairs]
            within = sum(_close(x, y) for x, y in pairs) / len(pairs)
            finite = all(math.isfinite(x) for x, _ in pairs)
            figures.update({"agreement": agree, "max_abs_logprob_difference": max(diffs),
                            "mean_abs_logprob_difference": sum(diffs) / len(diffs), "within_tolerance": within})
            report.check(f"scoring.{mode}", finite and agree >= MIN_AGREEMENT and within == 1.0,
                         f"same argmax on {agree:.1%} (need {MIN_AGREEMENT:.0%}); log-probs within "
                         f"{SCORE_ATOL} + {SCORE_RTOL:.4f}*|lp|: {within:.1%} (max |diff| {max(diffs):.3g})")
        out[mode] = figures
    return out


def part_qlora_eval(ctx: Ctx, report: Report) -> dict[str, Any]:
    requires("bitsandbytes")
    if ctx.qlora_run is None or ctx.qlora_scores is None:
        raise Skip("no qlora run in this check (the methods part did not train one)")
    import bitsandbytes as bnb

    from medtune.scoring import load_backend, score_items

    meta = json.loads((ctx.qlora_run / "config.json").read_text(encoding="utf-8"))
    base, adapter = meta["base_model"], ctx.qlora_run / "adapter"
    items = ctx.test_items[:ctx.n_qlora_eval]
    reset_peak()
    t0 = time.perf_counter()
    # fp32 for the layers that stay unquantised, as peft's k-bit preparation left them in the trained model, so the
    # two are the same computation (the 4-bit layers compute in bf16 on a GPU either way).
    backend = load_backend(base, quantization="4bit", adapter=adapter, dtype="fp32", device=ctx.device)
    load_s = time.perf_counter() - t0
    model = backend.model  # type: ignore[attr-defined]
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    kinds = Counter(getattr(m.weight, "quant_type", None) for m in layers)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    devices = tensor_devices(model)
    report.check("qlora_eval.loaded", bool(layers) and set(kinds) == {"nf4"} and bool(lora_b)
                 and any(float(p.abs().max()) > 0 for p in lora_b) and set(devices) == {ctx.device},
                 f"{len(layers)} Linear4bit {dict(kinds)}, {len(lora_b)} trained lora_B tensors, devices {devices}")
    t0 = time.perf_counter()
    frame = score_items(backend, items, mode="letter", progress=False)
    cuda_sync()
    score_s = time.perf_counter() - t0
    mem = ctx.qlora_scores
    agree = float((frame["pred"].to_numpy() == mem["pred"].to_numpy()).mean())
    pairs = [(x, y) for xs, ys in zip(frame["scores"], mem["scores"], strict=True) for x, y in zip(xs, ys,
                                                                                                   strict=True)]
    finite = all(math.isfinite(x) for x, _ in pairs)
    within = sum(_close(x, y) for x, y in pairs) / len(pairs)
    report.check("qlora_eval.scores", finite and agree >= MIN_AGREEMENT and within == 1.0,
                 f"4-bit base + adapter vs the trained model in memory: same argmax on {agree:.1%}, log-probs within "
                 f"tolerance {within:.1%}")
    return {"load_seconds": round(load_s, 2), "q_per_s": len(items) / score_s, "agreement": agree,
            "within_tolerance": within, "max_abs_logprob_difference": max(abs(x - y) for x, y in pairs),
            "peak_bytes": peak_bytes(), "linear4bit_layers": len(layers)}


def medtune_base_dtype(config: Any, precision: str) -> str:
    """The dtype medtune keeps a run's base weights in (the trainer's ``base_dtype``; the same rule if it moves)."""
    try:
        from medtune.training.trainer import base_dtype

        return base_dtype(config, precision)
    except ImportError:
        from medtune.training.methods import get_method

        return precision if get_method(config.method).is_adapter and precision in ("bf16", "fp16") else "fp32"


def run_trl(ctx: Ctx, method: str, items: list[Any]) -> dict[str, Any]:
    """TRL's SFTTrainer with its defaults on the same model, items, micro-batch, length, precision, lr, steps."""
    datasets = requires("datasets")
    trl = requires("trl")
    if method == "qlora":
        requires("bitsandbytes")
    from peft import LoraConfig
    from transformers import TrainerCallback

    from medtune.models import load_pretrained
    from medtune.training.data import prompt_and_completion
    from medtune.training.methods import target_module_suffixes

    assert ctx.large_dir is not None
    cfg = train_config(ctx, method, ctx.large_dir)
    reset_peak()
    # The base as medtune loads it for this method (bf16 frozen base on a GPU; 4-bit NF4 for qlora).
    loaded = load_pretrained(ctx.large_dir, dtype=medtune_base_dtype(cfg, ctx.precision), device=ctx.device,
                             quantization="4bit" if method == "qlora" else None)
    model = loaded.model
    rows = [dict(zip(("prompt", "completion"), prompt_and_completion(it, "letter", "paper"), strict=True))
            for it in items]
    args = trl.SFTConfig(
        output_dir=str(ctx.work / f"trl-{method}"), per_device_train_batch_size=ctx.batch, max_length=ctx.max_length,
        learning_rate=ctx.lr, max_steps=ctx.steps, num_train_epochs=1, logging_steps=1, save_strategy="no",
        report_to=[], bf16=ctx.precision == "bf16", use_cpu=not ctx.gpu, dataloader_num_workers=0, seed=0,
        max_grad_norm=1.0, disable_tqdm=True)
    peft_cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=target_module_suffixes(model),
                          task_type="CAUSAL_LM")

    class StepTimer(TrainerCallback):
        """Per-step wall time, synchronised with the GPU, as medtune's run log records it."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self.t0 = 0.0

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            cuda_sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            cuda_sync()
            self.times.append(time.perf_counter() - self.t0)

    timer = StepTimer()
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = trl.SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                                 processing_class=loaded.tokenizer, peft_config=peft_cfg, callbacks=[timer])
        seen: list[int] = []
        collate = trainer.data_collator

        def counting(features: Any) -> Any:
            batch = collate(features)
            mask = batch.get("attention_mask")
            seen.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
            return batch

        trainer.data_collator = counting
        trainer.train()
    peak = peak_bytes()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    steps = trainer.state.global_step
    tokens = seen[:steps]
    result = {"steps": steps, "losses": losses, "tokens": sum(tokens), "train_seconds": sum(timer.times),
              "tokens_per_s": sum(tokens) / sum(timer.times) if timer.times else None,
              "steady_tokens_per_s": steady_tokens_per_s(tokens, timer.times[:len(tokens)]), "peak_bytes": peak,
              "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
              "base_dtype": str(next(p.dtype for p in model.parameters())).replace("torch.", "")}
    del trainer, model, loaded
    reset_peak()
    return result


def part_trl(ctx: Ctx, report: Report) -> dict[str, Any]:
    items = ctx.train_items[:ctx.steps * ctx.batch]
    out: dict[str, Any] = {}
    for method in ("lora", "qlora"):
        name = f"trl.{method}"
        mine = ctx.runs.get(method)
        try:
            if not mine:
                raise Skip(f"medtune's {method} run did not complete in this check")
            theirs = run_trl(ctx, method, items)
        except Skip as s:
            report.skip(name, str(s))
            out[method] = {"skipped": str(s)}
            continue
        except Exception as exc:  # one baseline failing leaves the other to run
            report.check(name, False, _error_text(exc))
            out[method] = {"error": _error_text(exc)}
            reset_peak()
            continue
        speed = (mine["steady_tokens_per_s"] / theirs["steady_tokens_per_s"]
                 if mine.get("steady_tokens_per_s") and theirs.get("steady_tokens_per_s") else None)
        memory = mine["peak_bytes"] / theirs["peak_bytes"] if mine.get("peak_bytes") and theirs.get("peak_bytes") \
            else None
        out[method] = {"trl": theirs, "medtune_steady_tokens_per_s": mine.get("steady_tokens_per_s"),
                       "medtune_peak_bytes": mine.get("peak_bytes"), "tokens_per_s_ratio": speed,
                       "peak_memory_ratio": memory}
        ok = _finite(speed) and speed > 0 and theirs["steps"] == ctx.steps and all(map(math.isfinite,
                                                                                     theirs["losses"]))
        report.check(name, ok, f"medtune {method} vs TRL SFTTrainer: tokens/s x{_fmt(speed)}, peak memory "
                     f"x{_fmt(memory)} (TRL: {theirs['steps']} steps, gradient checkpointing "
                     f"{theirs['gradient_checkpointing']})")
        goal = TARGETS[f"{method}_vs_trl_tokens_per_s"]
        if method == "lora":
            met = None if speed is None else speed >= goal and (memory is None or memory <= 1.0)
            report.target("lora_vs_trl", speed, f"LoRA tokens/s >= {goal}x TRL at <= its peak memory "
                          f"(memory x{_fmt(memory)})", met)
        else:
            report.target("qlora_vs_trl", speed, f"QLoRA tokens/s >= {goal}x TRL",
                          None if speed is None else speed >= goal)
    return out


def part_lm_eval(ctx: Ctx, report: Report) -> dict[str, Any]:
    requires("lm_eval.models.huggingface", "lm-eval")
    import logging

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from medtune.models import load_pretrained
    from medtune.prompts import mcq_prompt
    from medtune.scoring import score_items
    from medtune.scoring.backends import argmax, continuations

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # "pretrained is not a str": passing the model is the point
    assert ctx.large_dir is not None
    items = ctx.test_items[:ctx.n_lm_eval]
    loaded = load_pretrained(ctx.large_dir, dtype=ctx.precision, device=ctx.device)
    # warm-up on a few items: kernel selection and allocator growth are not the scorer's cost
    score_items(loaded, items[:4], mode="letter", progress=False)
    t0 = time.perf_counter()
    ours = score_items(loaded, items, mode="letter", progress=False)
    cuda_sync()
    ours_s = time.perf_counter() - t0
    # The same (prompt, continuation) pairs letter mode scores: the paper prompt and " A", " B", ...
    requests, owner = [], []
    for i, it in enumerate(items):
        for cont in continuations("letter", it.options):
            requests.append(Instance(request_type="loglikelihood", doc={}, arguments=(mcq_prompt(it, "paper"), cont),
                                     idx=len(requests)))
            owner.append(i)
    with contextlib.redirect_stdout(io.StringIO()):
        lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=ctx.lm_eval_batch,
                  max_length=ctx.large_shape.get("max_position_embeddings", 2048))
        lm.loglikelihood(requests[:4 * 4], disable_tqdm=True)  # the same warm-up
        t0 = time.perf_counter()
        results = lm.loglikelihood(requests, disable_tqdm=True)
        cuda_sync()
    theirs_s = time.perf_counter() - t0
    per_item: list[list[float]] = [[] for _ in items]
    for i, (ll, _) in zip(owner, results, strict=True):
        per_item[i].append(float(ll))
    theirs_pred = [argmax(v) for v in per_item]
    agree = sum(int(p) == q for p, q in zip(ours["pred"], theirs_pred, strict=True)) / len(items)
    ratio = theirs_s / ours_s
    report.check("lm_eval.compare", _finite(ratio) and ratio > 0 and agree >= MIN_AGREEMENT,
                 f"medtune letter mode {len(items) / ours_s:.1f} q/s vs lm-eval HFLM (batch {ctx.lm_eval_batch}) "
                 f"{len(items) / theirs_s:.1f} q/s: x{ratio:.2f}; same argmax on {agree:.1%}")
    goal = TARGETS["scoring_vs_lm_eval_q_per_s"]
    report.target("scoring_vs_lm_eval", ratio, f"scoring q/s >= {goal}x lm-eval hf", ratio >= goal)
    return {"items": len(items), "medtune_q_per_s": len(items) / ours_s, "lm_eval_q_per_s": len(items) / theirs_s,
            "q_per_s_ratio": ratio, "agreement": agree, "lm_eval_batch_size": ctx.lm_eval_batch,
            "dtype": ctx.precision}


# ----------------------------------------------------------------------------------------------------------
# workflow: chat templates, validation, DPO, sampling and harness tasks on the device


# ChatML with the BOS written by the template itself (as Llama-3's ``<|begin_of_text|>``): a tokenizer that also
# added BOS to the rendered text would give two, which the chat check catches.
CHATML_WITH_BOS = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_SYSTEM_PROMPT = "Answer with one letter."


def chat_model_folder(ctx: Ctx) -> Path:
    """The small model's shape and tokenizer with ChatML's control tokens and template, saved under an instruct name
    (so ``chat: auto`` would pick it too); a vocabulary that holds the two added tokens."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    assert ctx.small_dir is not None
    folder = ctx.work / "model-small-chat-instruct"
    tok = AutoTokenizer.from_pretrained(ctx.small_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML_WITH_BOS
    cfg = AutoConfig.from_pretrained(ctx.small_dir)
    cfg.vocab_size = max(cfg.vocab_size, -(-len(tok) // 64) * 64)
    torch.manual_seed(1)
    with torch.device(ctx.device):
        model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


@dataclass
class ChatRun:
    """The workflow part's one LoRA run with the chat template and validation, shared by two of its checks."""

    run_dir: Path
    model: Any
    tokenizer: Any
    losses: list[float]
    steps: int


def chat_validation_run(ctx: Ctx, items: list[Any]) -> ChatRun:
    """LoRA on the chat model, prompts in its chat template, a quarter of the items held out and validated after
    every step (patience 1, keep_best): one short run covers both, and validation encodes under chat as well."""
    from medtune.training import train

    folder = chat_model_folder(ctx)
    run_dir = ctx.work / "workflow-chat-validation"
    validation = {"share": 0.25, "every": 1, "patience": 1, "keep_best": True}
    cfg = train_config(ctx, "lora", folder, chat=True, system_prompt=CHAT_SYSTEM_PROMPT, target="letter",
                       validation=validation, lr=1e-2, lora={"dropout": 0.0})
    res = train(cfg, items, order_for([it.id for it in items]), run_dir)
    return ChatRun(run_dir, res.model, res.tokenizer, [float(x) for x in res.losses], res.steps)


def _workflow_chat(ctx: Ctx, report: Report, run: ChatRun, items: list[Any]) -> dict[str, Any]:
    from medtune.chat_format import recorded_format
    from medtune.models import LoadedModel
    from medtune.prompts import mcq_completion
    from medtune.scoring import score_items
    from medtune.scoring.engine import question_prompt
    from medtune.scoring.tokens import token_cache
    from medtune.training.data import IGNORE, encode_item

    meta = json.loads((run.run_dir / "config.json").read_text(encoding="utf-8"))
    chat = recorded_format(meta.get("chat"))  # what the evaluation of the run reuses
    tok = run.tokenizer
    same = one_bos = 0
    prompt_lengths = []
    for item in items:
        encoded = encode_item(item, tok, target="letter", template="paper", max_length=ctx.max_length, chat=chat)
        n_prompt = sum(1 for t in encoded.labels if t == IGNORE)
        train_prompt = list(encoded.input_ids[:n_prompt])
        context, cont = token_cache(tok).split(question_prompt(item, "paper", None, chat), mcq_completion(item))
        same += context == train_prompt and cont == list(encoded.input_ids[n_prompt:n_prompt + 1])
        one_bos += train_prompt.count(tok.bos_token_id) == 1 and train_prompt[:1] == [tok.bos_token_id]
        prompt_lengths.append(len(train_prompt))
    # The trained model scored under the run's chat format where it trained (on the device, in its precision).
    import torch

    dtype = next((p.dtype for p in run.model.parameters() if p.dtype.is_floating_point), torch.float32)
    frame = score_items(LoadedModel(run.model, tok, str(run.run_dir), dtype, ctx.device), items, mode="letter",
                        chat=chat, progress=False)
    cuda_sync()
    finite = all(math.isfinite(s) for row in frame["scores"] for s in row)
    devices = tensor_devices(run.model)
    ok = (chat is not None and chat.system_prompt == CHAT_SYSTEM_PROMPT and run.steps >= 2
          and all(map(math.isfinite, run.losses)) and same == one_bos == len(items) and finite
          and set(devices) == {ctx.device})
    report.check("workflow.chat_one_bos", ok, f"{run.steps} chat-template LoRA steps (losses "
                 f"{[round(x, 3) for x in run.losses]}); training prompt ids == scoring prompt ids on {same}/"
                 f"{len(items)} items, one leading BOS on {one_bos}/{len(items)}; letter scores under chat finite: "
                 f"{finite}; devices {devices}; recorded chat {meta.get('chat', {}).get('enabled')}")
    return {"losses": run.losses, "prompt_ids": prompt_lengths, "same_prompt_ids": same, "one_bos": one_bos,
            "devices": devices}


def _workflow_validation(ctx: Ctx, report: Report, run: ChatRun) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    from medtune.adaptive.verify import verify_run
    from medtune.training.runlog import read_log, read_log_records

    run_dir = run.run_dir
    model_devices = tensor_devices(run.model)  # after the best weights were put back
    trainable = {n.replace(".default", ""): p.detach().cpu() for n, p in run.model.named_parameters()
                 if p.requires_grad}
    records = read_log_records(run_dir, "validation")
    stops = read_log_records(run_dir, "stop")
    steps = read_log(run_dir)
    record = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["validation"]
    losses = [r.get("val_loss") for r in records]
    finite = bool(losses) and all(_finite(x) for x in losses)
    every_step = [r["step"] for r in records] == [r["step"] for r in steps]
    best_step = record.get("best_step")
    best_ok = finite and best_step is not None and record.get("weights") == "best" and next(
        (r["val_loss"] for r in records if r["step"] == best_step), None) == min(losses)
    held, trained = set(record.get("held_out") or []), {i for r in steps for i in r["ids"]}
    # The saved adapter is the best validation's weights, and so is the model the run returned (on its device).
    saved = _adapter_weights(run_dir)
    best_file = run_dir / "best" / f"step-{best_step}.safetensors"
    best = {k.replace(".default", ""): v for k, v in load_file(str(best_file)).items()} if best_file.exists() else {}
    saved_is_best = bool(saved) and saved.keys() == best.keys() and all(
        torch.equal(saved[k], best[k].to(saved[k].dtype)) for k in saved)
    memory_is_best = bool(saved) and all(k in trainable and torch.equal(trainable[k].to(saved[k].dtype), saved[k])
                                         for k in saved)
    verified = verify_run(run_dir)
    stopped = stops[0]["step"] if stops else None
    ok = (finite and every_step and best_ok and saved_is_best and memory_is_best and verified.ok
          and bool(held) and not held & trained and set(model_devices) == {ctx.device}
          and (stopped is None or stopped == len(steps)))
    report.check("workflow.validation_stop", ok, f"{len(steps)} steps, {len(records)} validations (every step: "
                 f"{every_step}), val_loss {[round(x, 4) if _finite(x) else x for x in losses]}, "
                 f"{'stopped early at step ' + str(stopped) if stopped else 'ran to the end'}; best step {best_step} "
                 f"restored (saved adapter == best weights: {saved_is_best}, model in memory: {memory_is_best}, "
                 f"on {model_devices}); {len(held)} held out, never trained; verify-order: {verified.ok} "
                 f"({getattr(verified, 'message', '')})")
    return {"steps": len(steps), "val_losses": losses, "best_step": best_step, "stopped_at": stopped,
            "held_out": len(held), "verify_order": verified.ok, "model_devices": model_devices}


def _workflow_dpo(ctx: Ctx, report: Report, items: list[Any]) -> dict[str, Any]:
    requires("trl")
    from medtune.data import load
    from medtune.prompts import qa_prompt
    from medtune.scoring import load_backend
    from medtune.training import train

    # Pairs from the questions: chosen the right option, rejected the next one.
    rows = [{"id": f"pair{k:02d}", "prompt": it.question, "chosen": it.options[it.answer],
             "rejected": it.options[(it.answer + 1) % len(it.options)]} for k, it in enumerate(items)]
    pairs_path = ctx.work / "workflow-pairs.jsonl"
    pairs_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pairs = load("preference", pairs_path).items
    run_dir = ctx.work / "workflow-dpo"
    cfg = train_config(ctx, "dpo", ctx.small_dir, lr=1e-2, batch_size=len(pairs) // ctx.dpo_steps,
                       max_steps=ctx.dpo_steps, packing=False, lora={"dropout": 0.0},
                       dpo={"beta": 1.0, "check_pairs": len(pairs)})
    res = train(cfg, pairs, order_for([p.id for p in pairs]), run_dir)
    losses = [float(x) for x in res.losses]
    res = None
    reset_peak()
    meta = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    summary = meta.get("dpo") or {}
    before, after = summary.get("mean_margin_before"), summary.get("mean_margin_after")
    # The adapter run evaluated like any other: its base and adapter loaded on the device in the run's precision.
    backend = load_backend(str(meta["base_model"]), adapter=run_dir / "adapter", dtype=ctx.precision,
                           device=ctx.device)
    scored = backend.loglikelihood([(qa_prompt(p), text) for p in pairs for text in (p.answer, p.meta["rejected"])])
    cuda_sync()
    evaluated = [s for s, _ in scored]
    margins = [evaluated[2 * k] - evaluated[2 * k + 1] for k in range(len(pairs))]
    finite = all(map(math.isfinite, losses)) and _finite(before) and _finite(after) and all(map(_finite, margins))
    rose = finite and after > before
    dtype = (meta.get("precision") or {}).get("dtype")
    ok = finite and len(losses) == ctx.dpo_steps and dtype == ctx.precision and rose
    report.check("workflow.dpo_margin", ok, f"DPO (LoRA, {dtype}) {len(losses)} steps on {len(pairs)} pairs, losses "
                 f"{[round(x, 4) for x in losses]}; mean chosen-rejected margin {_fmt(before)} -> {_fmt(after)} "
                 f"(rose: {rose}); the adapter evaluates on {ctx.device}: mean margin "
                 f"{_fmt(sum(margins) / len(margins))}")
    return {"losses": losses, "mean_margin_before": before, "mean_margin_after": after,
            "evaluated_mean_margin": sum(margins) / len(margins), "dtype": dtype}


def letter_writer(loaded: Any) -> Any:
    """``loaded`` with an output head that mostly writes the letters " A" ... " D": a bias of 10 on them and small
    random rows (which letter then depends on the context and the draw), zero for every other token. A random
    model's samples would name no option; these do, so the votes have something to decide."""
    import torch

    from medtune.prompts import LETTERS, PAPER
    from medtune.scoring.tokens import letter_token_ids

    model = loaded.model
    letters = letter_token_ids(loaded.tokenizer, PAPER.answer_prefix, list(LETTERS[:4]))
    vocab, hidden = model.lm_head.weight.shape
    head = torch.nn.Linear(hidden, vocab, bias=True, device=model.lm_head.weight.device, dtype=loaded.dtype)
    rows = 0.2 * torch.randn((len(letters), hidden), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[letters] = rows.to(head.weight.device, head.weight.dtype)
        head.bias[letters] = 10.0
    model.lm_head = head  # untied from the input embeddings
    model.eval()
    return loaded


def _workflow_sampling(ctx: Ctx, report: Report, items: list[Any]) -> dict[str, Any]:
    import pandas as pd

    from medtune.evaluation import compute_metrics
    from medtune.models import load_pretrained
    from medtune.scoring import score_items
    from medtune.scoring.sampling import Sampling
    from medtune.voting import majority_vote

    loaded = letter_writer(load_pretrained(ctx.small_dir, dtype=ctx.precision, device=ctx.device))
    sampling = Sampling(n=3, temperature=1.0, top_p=0.95, seed=7)
    kwargs: dict[str, Any] = {"mode": "generate", "max_new_tokens": ctx.sample_tokens, "sampling": sampling,
                              "progress": False}
    batched = score_items(loaded, items, batch_tokens=1 << 16, **kwargs)
    again = score_items(loaded, items, batch_tokens=1 << 16, **kwargs)
    single = score_items(loaded, items, batch_tokens=1, **kwargs)  # one question per batch
    cuda_sync()

    def texts(frame: Any) -> list[list[str]]:
        return [list(s) for s in frame["samples"]]

    repeat = texts(again) == texts(batched)
    same = sum(a == b for a, b in zip(texts(single), texts(batched), strict=True)) / len(items)
    spread = sum(len(set(s)) > 1 for s in texts(batched))
    votes_ok = all(len(s) == 3 and len(p) == 3 for s, p in zip(batched["samples"], batched["sample_preds"],
                                                              strict=True))
    for row in batched.itertuples():
        vote = majority_vote([None if pd.isna(p) else int(p) for p in row.sample_preds]).answer
        pred = None if pd.isna(row.pred) else int(row.pred)
        votes_ok = votes_ok and vote == pred
    metrics = compute_metrics(batched, items, n_boot=20)
    sc = metrics.get("self_consistency") or {}
    read = sum(p is not None and not pd.isna(p) for row in batched["sample_preds"] for p in row)
    votes_ok = votes_ok and sc.get("samples") == 3 and read > 0
    # fp32 on a CPU: a row's draws use its own generator whatever the batch, so the texts are identical; in bf16 a
    # padded batch rounds differently and one flipped draw changes the rest of that sample (the greedy-text rule).
    need = 1.0 if ctx.precision == "fp32" else MIN_SAME_TEXT
    ok = repeat and votes_ok and spread > 0 and (same >= need if need == 1.0 else same > need)
    report.check("workflow.sampling_seeded", ok, f"3 samples (T 1.0, top_p 0.95, seed 7) of {len(items)} questions "
                 f"on {ctx.device} ({ctx.precision}): same batching twice identical: {repeat}; one question per batch "
                 f"vs all together: identical samples on {same:.0%} (need {'all' if need == 1.0 else f'> {need:.0%}'}"
                 f"); samples differ within {spread} questions; {read} of {3 * len(items)} samples name an option; "
                 f"votes = majority of the samples' answers: {votes_ok} "
                 f"(voted accuracy {_fmt(sc.get('voted_accuracy'))}, vote share {_fmt(sc.get('vote_share'))})")
    return {"items": len(items), "repeat_identical": repeat, "same_across_batching": same, "spread": spread,
            "answers_read": read,
            "self_consistency": {k: sc.get(k) for k in ("samples", "voted_accuracy", "vote_share")}}


def _workflow_harness(ctx: Ctx, report: Report, items: list[Any], pool: list[Any]) -> dict[str, Any]:

    from medtune.harness import get_task, score_task

    task = get_task("mmlu_anatomy")
    ref, low = fp32_and_bf16(ctx)
    frames = {label: score_task(loaded, task, items, pool, num_fewshot=5) for label, loaded in
              (("fp32_cpu", ref), ("bf16", low))}
    cuda_sync()
    a, b = frames["bf16"], frames["fp32_cpu"]
    shots = {len(x) for x in a["fewshot"]}
    agree = float((a["pred"].to_numpy() == b["pred"].to_numpy()).mean())
    pairs = [(x, y) for xs, ys in zip(a["scores"], b["scores"], strict=True) for x, y in zip(xs, ys, strict=True)]
    within = sum(_close(x, y) for x, y in pairs) / len(pairs)
    finite = all(math.isfinite(x) for x, _ in pairs)
    acc = {k: float(f["correct"].mean()) for k, f in frames.items()}
    ok = finite and shots == {5} and agree >= MIN_AGREEMENT and within == 1.0
    report.check("workflow.harness_task", ok, f"{task.name}, 5-shot, {len(items)} questions, bf16 on {ctx.device} vs "
                 f"fp32 on the CPU: same acc prediction on {agree:.1%} (need {MIN_AGREEMENT:.0%}); log-likelihoods "
                 f"within {SCORE_ATOL} + {SCORE_RTOL:.4f}*|lp|: {within:.1%}; shots per question {sorted(shots)}; "
                 f"acc {acc}")
    return {"task": task.name, "items": len(items), "agreement": agree, "within_tolerance": within,
            "max_abs_logprob_difference": max(abs(x - y) for x, y in pairs), "acc": acc}


def part_workflow(ctx: Ctx, report: Report) -> dict[str, Any]:
    """The training and evaluation workflow's newer paths on the device (each check on its own: one that raises is
    recorded as failed and the others still run)."""
    assert ctx.small_dir is not None
    train_items, test_items = ctx.train_items, ctx.test_items
    shared: list[Any] = []

    def chat_run() -> ChatRun:  # trained once, by the first check that needs it (its error fails both)
        if not shared:
            try:
                shared.append(chat_validation_run(ctx, train_items[:ctx.validation_items]))
            except Exception as exc:
                shared.append(exc)
        if isinstance(shared[0], Exception):
            raise shared[0]
        return shared[0]

    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("chat_one_bos", lambda: _workflow_chat(ctx, report, chat_run(), train_items[:ctx.validation_items])),
        ("validation_stop", lambda: _workflow_validation(ctx, report, chat_run())),
        ("dpo_margin", lambda: _workflow_dpo(ctx, report, train_items[:ctx.dpo_pairs])),
        ("sampling_seeded", lambda: _workflow_sampling(ctx, report, test_items[:ctx.n_sampling])),
        ("harness_task", lambda: _workflow_harness(ctx, report, test_items[:ctx.n_harness], train_items[-5:])),
    ]
    out: dict[str, Any] = {}
    for name, run in steps:
        t0 = time.perf_counter()
        try:
            out[name] = run()
        except Skip as s:
            report.skip(f"workflow.{name}", str(s))
            out[name] = {"skipped": str(s)}
        except Exception as exc:
            report.check(f"workflow.{name}", False, _error_text(exc))
            out[name] = {"error": _error_text(exc)}
        out[name]["seconds"] = round(time.perf_counter() - t0, 2)
        if name == "validation_stop":
            shared.clear()  # the run's model is not needed again
        reset_peak()
    return out


PART_FUNCTIONS: dict[str, Callable[[Ctx, Report], dict[str, Any]]] = {
    "models": part_models, "methods": part_methods, "packing": part_packing, "resume": part_resume,
    "torchrun": part_torchrun, "scoring": part_scoring, "qlora_eval": part_qlora_eval, "trl": part_trl,
    "lm_eval": part_lm_eval, "workflow": part_workflow,
}
# The checks each part records, so a part that fails early still names what it did not check.
PART_CHECKS: dict[str, tuple[str, ...]] = {
    "packing": ("packing.equal",), "resume": ("resume.equal",), "torchrun": ("torchrun.two_process",),
    "scoring": ("scoring.letter", "scoring.option", "scoring.generate"),
    "qlora_eval": ("qlora_eval.loaded", "qlora_eval.scores"), "lm_eval": ("lm_eval.compare",),
    "trl": ("trl.lora", "trl.qlora"), "models": ("models.large", "models.small"),
    "workflow": WORKFLOW_CHECKS,
}


def run_part(name: str, ctx: Ctx, report: Report) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    entry: dict[str, Any] = {}
    try:
        entry = {"status": "ok", **(PART_FUNCTIONS[name](ctx, report) or {})}
    except Skip as s:
        entry = {"status": "skipped", "reason": str(s)}
        for check in PART_CHECKS.get(name, (name,)):
            report.skip(check, str(s))
    except Exception as exc:
        entry = {"status": "failed", "error": _error_text(exc)}
        for check in PART_CHECKS.get(name, (name,)):
            if check not in report.checks:
                report.check(check, False, _error_text(exc))
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    entry["cpu_seconds"] = round(time.process_time() - c0, 2)  # this process only, all its threads
    report.parts[name] = entry
    print(f"  {name:<11} {entry['status']:<8} {entry['seconds']:7.1f} s", flush=True)


# ----------------------------------------------------------------------------------------------------------
# The command


def print_summary(report: Report, result: dict[str, Any]) -> None:
    env = report.environment
    print(f"\nmedtune GPU check ({report.mode} mode{', quick' if report.quick else ''}) on {env.get('device')}: "
          f"torch {env.get('torch')}, transformers {env.get('transformers')}, accelerate {env.get('accelerate')}, "
          f"peft {env.get('peft')}; {result['wall_seconds']:.0f} s")
    counts = Counter(c["status"] for c in report.checks.values())
    print(f"checks: {counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, "
          f"{counts.get('skipped', 0)} skipped")
    methods = report.parts.get("methods", {})
    for method in METHODS:
        f = methods.get(method) or {}
        if "steady_tokens_per_s" in f:
            peak = f.get("peak_bytes")
            plan = (f.get("memory_plan") or {}).get("compare_bytes")
            print(f"  {method:<6} {f['steady_tokens_per_s']:>10.0f} tok/s   peak "
                  f"{'-' if peak is None else f'{peak / 2**30:.2f} GiB'}   plan "
                  f"{'n/a' if not plan else f'{plan / 2**30:.2f} GiB'}"
                  + (f"   peak/plan {f['peak_over_plan']:.2f}" if f.get("peak_over_plan") else ""))
    if report.targets:
        note = "" if report.mode == "gpu" else " (reported, not asserted in CPU mode)"
        print(f"targets{note}:")
        for name, t in report.targets.items():
            met = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            print(f"  {name:<28} {_fmt(t['measured']):>8}  {met:<6} {t['target']}")
    skipped = [f"{n}: {c['detail']}" for n, c in report.checks.items() if c["status"] == "skipped"]
    for line in dict.fromkeys(skipped):
        print(f"  skipped {line}")
    failed = report.failed()
    if failed:
        print("FAILED: " + ", ".join(failed))
        for name in failed:
            print(f"  {name}: {report.checks[name]['detail'].splitlines()[0] if report.checks[name]['detail'] else ''}")
    else:
        print("all checks passed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the JSON file to write")
    ap.add_argument("--cpu", action="store_true", help="tiny shapes, fp32, on the CPU (implied without CUDA)")
    ap.add_argument("--quick", action="store_true", help="fewer layers, steps and items")
    ap.add_argument("--only", action="append", choices=PARTS, help="run only these parts (and what they need)")
    ap.add_argument("--workdir", type=Path, help="keep the models and runs in a new folder in here (default: a "
                                                 "temporary folder, deleted at the end)")
    args = ap.parse_args(argv)
    argv_used = list(sys.argv[:1]) + (list(argv) if argv is not None else sys.argv[1:])

    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # also for the subprocesses: CPU mode never touches a GPU
    import warnings

    import torch

    # Deprecation notices of the baselines and galore-torch (e.g. TRL's gradient_checkpointing name) are not findings.
    warnings.filterwarnings("ignore", category=FutureWarning)
    mode = "gpu" if torch.cuda.is_available() and not args.cpu else "cpu"
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t_start = time.perf_counter()
    report = Report(mode=mode, quick=args.quick)
    wanted = list(PARTS) if not args.only else [p for p in PARTS if p in args.only or p == "models"]
    if "qlora_eval" in wanted or "trl" in wanted:
        wanted = sorted(set(wanted) | {"methods"}, key=PARTS.index)
    with contextlib.ExitStack() as stack:
        if args.workdir:  # a fresh folder inside it: runs refuse a folder that already holds a training log
            work = args.workdir / f"check-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            work.mkdir(parents=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medtune-gpu-check-")))
        ctx = make_ctx(mode, args.quick, work)
        report.settings = ctx.settings()
        print(f"medtune GPU check: {mode} mode, parts {', '.join(wanted)}", flush=True)
        t0 = time.perf_counter()
        try:
            part_environment(ctx, report)
            report.parts["environment"] = {"status": "ok"}
        except Exception as exc:  # a figure the machine cannot give must not stop the checks
            report.parts["environment"] = {"status": "failed", "error": _error_text(exc)}
        report.parts["environment"]["seconds"] = round(time.perf_counter() - t0, 2)
        for name in wanted:
            if name != "models" and (ctx.large_dir is None or ctx.small_dir is None):
                report.parts[name] = {"status": "skipped", "reason": "the models part failed", "seconds": 0.0}
                for check in PART_CHECKS.get(name, (name,)):
                    report.check(check, False, "not run: the models part failed")
                continue
            run_part(name, ctx, report)
            if name == "models" and not ctx.gpu and ctx.large_dir is not None:
                for part, start in (("resume", start_resume), ("torchrun", start_torchrun)):
                    if part in wanted:
                        with contextlib.suppress(Exception):  # if it cannot start, its part says why
                            ctx.launched[part] = start(ctx)
        for launched in ctx.launched.values():  # parts that did not run: let their processes end
            launched.thread.join(ctx.subprocess_timeout)
        wall = time.perf_counter() - t_start
        result = report.to_dict(started, wall, argv_used)
        import resource

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        result["cpu_seconds"] = {"this_process": round(time.process_time(), 2),
                                 "subprocesses": round(children.ru_utime + children.ru_stime, 2)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    print_summary(report, result)
    print(f"wrote {args.out}")
    return 1 if report.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
