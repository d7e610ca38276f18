"""Benchmark: medtune's in-order LoRA training against a plain TRL ``SFTTrainer`` with its defaults.

    python benchmarks/bench_training.py            # SmolLM2-135M-Instruct, all 30 layers, 64 items
    python benchmarks/bench_training.py --quick    # its architecture with 4 layers, 16 items (~2 min)

Same model (the packaged SmolLM2-135M-Instruct converted to safetensors; ``--layers N`` keeps its first N
decoder layers, stated in the output), same data (the first ``--items`` MedQA 4-option test questions, the
paper's prompt, loss on the answer letter + EOS), same batch (``--batch``), max length, dtype, LoRA r 16 /
alpha 32 on every linear layer but the head, learning rate, one epoch, ``--threads`` CPU threads.

Each configuration runs in its own subprocess, so peak RSS (``ru_maxrss``) is its own:

- ``trl``: ``SFTTrainer`` with a prompt/completion dataset and its defaults (random sampler, padding to the
  longest in the batch, full-vocabulary logits at every position; completion-only loss);
- ``medtune-padded``: ``medtune.training.train`` in the planned order, padded micro-batches (``--no-packing``),
  answer-only logits;
- ``medtune-packed``: the padding-free order-preserving mode (next-fit packing, ``position_ids`` restarting
  per item) with answer-only logits;
- ``medtune-padded-gc`` / ``medtune-packed-gc``: the same with gradient checkpointing, which TRL's
  ``SFTConfig`` turns on by default (trl 1.16: ``gradient_checkpointing=True``) and medtune leaves off. Peak RSS
  is compared like for like: the ``-gc`` rows use the baseline's memory strategy.

Reported: real (non-pad) tokens per second of the training steps, and peak RSS; ratios are against the
TRL baseline measured in the same run (targets: padded ≥ 1.0, packed ≥ 1.5 with peak RSS ≤ baseline).
Load average is printed: other jobs share these cores, so compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDTUNE_SHARED_DATA", REPO.parent / "shared" / "data"))
MEDQA = DATA / "medqa" / "4_options" / "phrases_no_exclude_test.jsonl"
CONFIGS = ("trl", "medtune-padded", "medtune-packed", "medtune-padded-gc", "medtune-packed-gc")


def _model_dir(layers: int | None, workdir: Path) -> Path:
    """SmolLM2-135M-Instruct as safetensors, optionally cut to its first ``layers`` decoder layers."""
    from medtune.models import smollm2_dir

    src = smollm2_dir()
    if not layers:
        return src
    out = workdir / f"smollm2-{layers}l"
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def _items(n: int):
    from medtune.data import load

    return load("medqa", MEDQA).items[:n]


def _worker(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    items = _items(args.items)
    out = Path(args.workdir) / args.worker
    if args.worker == "trl":
        return _run_trl(args, items, out)
    return _run_medtune(args, items, out, packing="packed" in args.worker, checkpointing=args.worker.endswith("-gc"))


def _real_tokens(items, tokenizer, max_length: int) -> int:
    from medtune.training.data import encode_items

    enc = encode_items(items, tokenizer, target="letter", template="paper", max_length=max_length)
    return sum(e.n_tokens for e in enc.values())


def _run_medtune(args, items, out: Path, packing: bool, checkpointing: bool) -> dict:
    from medtune.training import TrainSettings, train

    ids = [it.id for it in items]
    order = {"format": "medtune.order/1", "strategy": "file", "seed": 0, "epoch_policy": "repeat",
             "epochs": [ids], "n_items": len(ids), "segments": []}
    cfg = TrainSettings(method="lora", model=str(args.model_dir), batch_size=args.batch, max_length=args.max_length,
                      lr=2e-4, dtype=args.dtype, packing=packing, gradient_checkpointing=checkpointing,
                      target="letter", template="paper",
                      lora={"r": 16, "alpha": 32, "dropout": 0.05}, max_grad_norm=1.0)
    res = train(cfg, items, order, out)
    return {"tokens": res.tokens, "seconds": res.seconds, "steps": res.steps}


def _run_trl(args, items, out: Path) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from medtune.training.data import prompt_and_completion
    from medtune.training.methods import target_module_suffixes

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    rows = [dict(zip(("prompt", "completion"), prompt_and_completion(it, "letter", "paper"), strict=True))
            for it in items]
    ds = datasets.Dataset.from_list(rows)
    cfg = SFTConfig(output_dir=str(out), per_device_train_batch_size=args.batch, max_length=args.max_length,
                    learning_rate=2e-4, num_train_epochs=1, logging_steps=1, save_strategy="no", report_to="none",
                    bf16=args.dtype == "bf16", use_cpu=True, dataloader_num_workers=0, seed=0, max_grad_norm=1.0)
    peft_cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=target_module_suffixes(model),
                          task_type="CAUSAL_LM")

    class Timer(TrainerCallback):
        """Time the training steps only (from the first step's start), as medtune's figure is."""

        start: float | None = None
        end: float = 0.0

        def on_step_begin(self, *a, **k):
            if self.start is None:
                self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.end = time.perf_counter()

    timer = Timer()
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, peft_config=peft_cfg,
                         callbacks=[timer])
    trainer.train()
    checkpointing = bool(trainer.args.gradient_checkpointing)
    n_items = min(len(items), trainer.state.global_step * args.batch)
    return {"tokens": _real_tokens(items[:n_items], tok, args.max_length) if n_items == len(items) else None,
            "seconds": timer.end - (timer.start or timer.end), "steps": trainer.state.global_step,
            "gradient_checkpointing": checkpointing}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 layers, 16 items")
    ap.add_argument("--layers", type=int, default=None, help="keep the first N decoder layers (default: all)")
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=CONFIGS, action="append", help="run only these configurations")
    ap.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.layers = args.layers or 4
        args.items = min(args.items, 16)

    if args.worker:
        result = _worker(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return 0

    if not MEDQA.exists():
        print(f"MedQA test file not found: {MEDQA} (set MEDTUNE_SHARED_DATA)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-train-") as work:
        model_dir = _model_dir(args.layers, Path(work))
        from transformers import AutoConfig

        n_layers = AutoConfig.from_pretrained(model_dir).num_hidden_layers
        print(f"model: SmolLM2-135M-Instruct architecture, {n_layers} of 30 decoder layers "
              f"({'truncated' if args.layers else 'complete'}); {args.items} MedQA test items, batch {args.batch}, "
              f"max length {args.max_length}, {args.dtype}, LoRA r16, {args.threads} threads; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        results: dict[str, dict] = {}
        for name in args.only or CONFIGS:
            cmd = [sys.executable, __file__, "--worker", name, "--workdir", work, "--model-dir", str(model_dir),
                   "--items", str(args.items), "--batch", str(args.batch), "--max-length", str(args.max_length),
                   "--dtype", args.dtype, "--threads", str(args.threads)]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(f"{name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                return 1
            results[name] = json.loads(line[len("RESULT "):])
        base = results.get("trl")
        if base is not None and results.get("medtune-padded"):
            base["tokens"] = base["tokens"] or results["medtune-padded"]["tokens"]
        print(f"{'configuration':18} {'steps':>5} {'real tokens':>11} {'seconds':>8} {'tokens/s':>9} "
              f"{'peak RSS MB':>11} {'speed ratio':>11} {'RSS ratio':>9}")
        for name, r in results.items():
            tps = r["tokens"] / r["seconds"] if r["seconds"] else float("nan")
            r["tokens_per_s"] = tps
            ratio = tps / base["tokens_per_s"] if base and "tokens_per_s" in base else float("nan")
            rss = r["peak_rss_mb"] / base["peak_rss_mb"] if base else float("nan")
            print(f"{name:18} {r['steps']:>5} {r['tokens']:>11} {r['seconds']:>8.1f} {tps:>9.1f} "
                  f"{r['peak_rss_mb']:>11.0f} {ratio:>11.2f} {rss:>9.2f}")
        if base:
            print(f"baseline: TRL SFTTrainer defaults, gradient checkpointing "
                  f"{'on' if base.get('gradient_checkpointing') else 'off'}")
            for suffix in ("", "-gc"):
                pad, pk = results.get("medtune-padded" + suffix), results.get("medtune-packed" + suffix)
                if not (pad and pk):
                    continue
                rp, rk = pad["tokens_per_s"] / base["tokens_per_s"], pk["tokens_per_s"] / base["tokens_per_s"]
                rss_ok = pk["peak_rss_mb"] <= base["peak_rss_mb"]
                label = "with gradient checkpointing" if suffix else "without gradient checkpointing"
                print(f"targets, medtune {label}: padded ≥ 1.0 → {rp:.2f} ({'met' if rp >= 1.0 else 'NOT met'}); "
                      f"packed ≥ 1.5 → {rk:.2f} ({'met' if rk >= 1.5 else 'NOT met'}); packed peak RSS ≤ baseline: "
                      f"{'yes' if rss_ok else 'NO'} ({pk['peak_rss_mb'] / base['peak_rss_mb']:.2f}×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
