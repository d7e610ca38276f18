"""Benchmark: the transformers backend's log-likelihoods, batched across contexts vs one context at a time.

    python benchmarks/bench_loglik_batching.py            # about 1-2 minutes on 2 CPU threads
    python benchmarks/bench_loglik_batching.py --quick    # fewer pairs (development)

``HFBackend.loglikelihood`` scores pairs whose continuations are not single tokens in one of these ways
(``context_sharing``):

- ``per_context``, the named baseline (*per-context*): a context runs once and its KV cache is shared by its
  continuations, one context at a time (two forward passes of batch 1 per context);
- ``never`` (*flat*): every pair runs as one full sequence, all pairs of a call right-padded into a few passes;
- ``always`` (*shared*): the contexts of a call run in one batched pass, then all their continuations in one pass
  over the contexts' KV cache;
- ``auto`` (the default): flat for a context with one continuation, shared for a context with several.

All are timed in the same run on the same pairs, the best of ``--repeats`` interleaved runs after a warm-up call,
and each prints the ratio per-context time / its time (> 1: faster than the baseline). The values are compared
with the baseline's too (max absolute difference over the pairs).

Workloads (contexts: MedQA test questions cut to ``--context-tokens`` tokens; continuations: option texts cut to
``--option-tokens`` tokens), built from
``$MEDTUNE_SHARED_DATA/medqa/test.jsonl`` (the MedQA test file in its published format):

- *distinct*: ``--pairs`` (prompt, answer) pairs, every pair with its own prompt (an item's training loss, as the
  adaptive curricula re-score it);
- *options*: ``--questions`` four-option questions, the options of a question sharing its prompt (option mode).

Models (random weights, seeded, fp32): *tiny*, a Llama with hidden 64 and 1 layer on a 1024-token BPE trained on
the questions; *smollm2-sized*, a Llama with SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads, 3 KV heads,
intermediate 1536, vocab 49152, tied embeddings) on the same tokenizer. The larger model scores an eighth of the
pairs and questions, to keep the run short. The call sizes are the adaptive curricula's
(:mod:`medtune.training.scores`: 16 items per call for losses, 64 pairs for options), set by ``--call-items``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDTUNE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _cut(tok, text: str, n: int) -> str:
    """``text`` cut to its first ``n`` tokens (decoded back, so it tokenizes to about ``n``)."""
    ids = tok.encode(text, add_special_tokens=False)[:n]
    return tok.decode(ids).strip()


def workloads(items, tok, args, scale: int) -> dict[str, list[tuple[str, str]]]:
    n_pairs, n_questions = max(1, args.pairs // scale), max(1, args.questions // scale)
    distinct = [(_cut(tok, it.question, args.context_tokens),
                 " " + _cut(tok, it.options[it.answer], args.option_tokens)) for it in items[:n_pairs]]
    options = []
    for it in items[n_pairs:n_pairs + n_questions]:
        prompt = _cut(tok, it.question, args.context_tokens)
        options += [(prompt, " " + _cut(tok, o, args.option_tokens)) for o in it.options[:4]]
    return {"distinct": distinct, "options": options}


def build_models(texts):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from medtune.models import LoadedModel, build_tiny_model

    tiny, tok = build_tiny_model(texts, vocab_size=1024, seed=0, hidden_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, intermediate_size=256)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    smol = LlamaForCausalLM(config)
    return {"tiny": (LoadedModel(tiny, tok, "tiny", torch.float32, "cpu"), 1),
            "smollm2-sized": (LoadedModel(smol, tok, "smollm2-sized", torch.float32, "cpu"), 8)}


MODES = {"per_context": "per-context", "never": "flat", "always": "shared", "auto": "auto"}


def time_modes(loaded, pairs, call: int, repeats: int) -> dict[str, tuple[float, list[tuple[float, int]]]]:
    """Per mode: best wall time of scoring ``pairs`` in calls of ``call`` pairs, and the values.

    Each mode is warmed up on two pairs; the repeats interleave the modes, so a change of machine load between
    repeats touches every mode alike.
    """
    from medtune.scoring.hf import HFBackend

    backends = {mode: HFBackend(loaded, context_sharing=mode) for mode in MODES}
    for backend in backends.values():
        backend.loglikelihood(pairs[:2])
    best = dict.fromkeys(MODES, float("inf"))
    values: dict[str, list[tuple[float, int]]] = {}
    for _ in range(repeats):
        for mode, backend in backends.items():
            t = time.perf_counter()
            out = []
            for s in range(0, len(pairs), call):
                out += backend.loglikelihood(pairs[s:s + call])
            best[mode] = min(best[mode], time.perf_counter() - t)
            values[mode] = out
    return {mode: (best[mode], values[mode]) for mode in MODES}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a quarter of the pairs and questions")
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--context-tokens", type=int, default=100)
    ap.add_argument("--option-tokens", type=int, default=5)
    ap.add_argument("--call-items", type=int, default=16, help="items per loglikelihood call (options: 4x pairs)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.questions = args.pairs // 4, args.questions // 4

    import torch

    from medtune.data.registry import load

    torch.set_num_threads(args.threads)
    path = DATA / "medqa" / "test.jsonl"
    if not path.exists():
        print(f"MedQA test file not found: {path} (set MEDTUNE_SHARED_DATA)", file=sys.stderr)
        return 2
    items = load("medqa", path).items
    print(f"cpu capability: {torch.backends.cpu.get_cpu_capability()}, threads: {torch.get_num_threads()}, "
          f"torch {torch.__version__}")
    figures = []
    for name, (loaded, scale) in build_models([it.question for it in items[:200]]).items():
        for kind, pairs in workloads(items, loaded.tokenizer, args, scale).items():
            call = args.call_items * (4 if kind == "options" else 1)
            timed = time_modes(loaded, pairs, call, args.repeats)
            base, ref = timed["per_context"]
            row = {"model": name, "workload": kind, "pairs": len(pairs), "call": call}
            parts = [f"per-context (baseline) {base:7.3f}s"]
            for mode in ("never", "always", "auto"):
                t, vals = timed[mode]
                diff = max(abs(a[0] - b[0]) for a, b in zip(vals, ref, strict=True))
                row.update({f"{MODES[mode]}_s": t, f"{MODES[mode]}_ratio": base / t, f"{MODES[mode]}_max_diff": diff})
                parts.append(f"{MODES[mode]} {t:7.3f}s = {base / t:5.2f}x (|diff| {diff:.0e})")
            row["per_context_s"] = base
            figures.append(row)
            print(f"{name:13s} {kind:8s} {len(pairs):3d} pairs, {call:2d}/call: " + " | ".join(parts), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
