"""Benchmark: medtune's letter-mode scorer against three baselines, measured in one run.

    python benchmarks/bench_scoring.py                 # the full run (~30 min on 2 CPU threads)
    python benchmarks/bench_scoring.py --quick         # a few minutes, small subsets (for development)
    python benchmarks/bench_scoring.py --subset 200    # only the first 200 MedQA test questions

Model: the packaged SmolLM2-135M-Instruct (``resolve_model("smollm2")``, real weights and tokenizer), fp32,
2 threads, the paper's prompt (``medtune.prompts.PAPER``) for every method. Questions: the 1273 MedQA test
questions ($MEDTUNE_SHARED_DATA/medqa/test.jsonl) and the MMLU medical test CSVs (for zero-shot accuracy).

Baselines (on the first ``--baseline-n`` questions of a seeded shuffle, since they are slow; medtune is
timed on the same subset right before each baseline, so both see the same machine load, for the ratios):

1. *padded generate*, the paper's difficulty script: every prompt left-padded to ONE global maximum length
   (the maximum over the full MedQA test file, not the subset's, so the subset's per-question cost is the
   full run's), ``generate`` of one token with output logits, batch ``--padded-batch``;
2. *per-option full-sequence scoring*, the paper's inference script: one forward pass (batch 1, full
   logits) per option over prompt + " X", the option's score is the log-probability of its letter;
3. *lm-evaluation-harness* 0.4: its ``hf`` model wrapping the same loaded model, a ``multiple_choice``
   task written to a temp dir (the same prompts, choices " A".." E"), offline, batch ``--lmeval-batch``.

All three compute the same quantity as letter mode (the log-probability of each letter after the prompt),
so predictions must be identical in fp32; the agreement is printed. FLOP/s: "model FLOPs" count
2 × parameters × real (unpadded) prompt tokens (the usual nominal count); "executed FLOPs" count what letter
mode runs: 2 × non-embedding parameters × tokens + causal attention (2 × layers × hidden × T² per
question) + the vocabulary projection at one position per question. Both are divided by the matmul FLOP/s
of a 2048² fp32 (bf16) matmul measured in the same run, the better of two measurements (the compute roof).
lm-evaluation-harness runs at its default batch size 1 and at batch 8 (``--lmeval-batch``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDTUNE_SHARED_DATA", REPO.parent / "shared" / "data"))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_flops(dtype, n: int = 2048, reps: int = 6) -> float:
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


class Flops:
    def __init__(self, model) -> None:
        cfg = model.config
        self.n_total = sum(p.numel() for p in model.parameters())
        self.n_embed = model.get_input_embeddings().weight.numel()
        self.layers, self.hidden, self.vocab = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size

    def model(self, lengths) -> float:
        return 2.0 * self.n_total * sum(lengths)

    def executed(self, lengths) -> float:
        nonemb = self.n_total - self.n_embed
        attn = sum(2.0 * self.layers * self.hidden * t * t for t in lengths)
        return 2.0 * nonemb * sum(lengths) + attn + 2.0 * self.hidden * self.vocab * len(lengths)


def letter_ids(tok, n):
    from medtune.prompts import PAPER, letters_for
    from medtune.scoring import letter_token_ids

    return letter_token_ids(tok, PAPER.answer_prefix, letters_for(n))


def run_medtune(loaded, items, batch_tokens):
    from medtune.scoring import score_items

    t = time.perf_counter()
    df = score_items(loaded, items, mode="letter", batch_tokens=batch_tokens, progress=False)
    return df, time.perf_counter() - t


def run_padded_generate(loaded, prompts, n_options, global_max, batch):
    """The paper's difficulty script: pad all prompts to one global max, generate one token with logits."""
    import torch

    tok, model = loaded.tokenizer, loaded.model
    ids = letter_ids(tok, n_options)
    side = tok.padding_side
    tok.padding_side = "left"
    preds = []
    t = time.perf_counter()
    try:
        with torch.inference_mode():
            for s in range(0, len(prompts), batch):
                enc = tok(prompts[s:s + batch], padding="max_length", max_length=global_max, return_tensors="pt")
                out = model.generate(**enc, max_new_tokens=1, do_sample=False, output_logits=True,
                                     return_dict_in_generate=True, pad_token_id=tok.pad_token_id,
                                     temperature=None, top_p=None, top_k=None)
                logits = out.logits[0][:, ids]
                preds.extend(int(i) for i in logits.argmax(dim=-1))
    finally:
        tok.padding_side = side
    return preds, time.perf_counter() - t


def run_per_option(loaded, prompts, n_options):
    """The paper's inference script: one full-sequence forward pass per option (batch 1, full logits)."""
    import torch

    from medtune.prompts import LETTERS

    tok, model = loaded.tokenizer, loaded.model
    preds = []
    t = time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts:
            scores = []
            for letter in LETTERS[:n_options]:
                seq = tok(prompt + " " + letter)["input_ids"]
                logits = model(torch.tensor([seq])).logits[0]
                scores.append(torch.log_softmax(logits[-2].float(), dim=-1)[seq[-1]].item())
            preds.append(max(range(n_options), key=lambda i: (scores[i], -i)))
    return preds, time.perf_counter() - t


def run_lm_eval(loaded, prompts, answers, n_options, batch):
    """lm-evaluation-harness: its HF model around the same weights, a multiple_choice task in a temp dir."""
    import logging

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from medtune.prompts import LETTERS

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="medtune-lmeval-") as tmp:
        docs = Path(tmp) / "docs.jsonl"
        with open(docs, "w") as f:
            for p, a in zip(prompts, answers, strict=True):
                f.write(json.dumps({"prompt": p, "choices": list(LETTERS[:n_options]), "label": a}) + "\n")
        (Path(tmp) / "task.yaml").write_text(
            "task: medtune_bench_medqa\n"
            "dataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {docs}\n"
            "test_split: test\n"
            "output_type: multiple_choice\n"
            "doc_to_text: '{{prompt}}'\n"
            "doc_to_choice: choices\n"
            "doc_to_target: label\n"
            "target_delimiter: ' '\n"
            "metric_list:\n  - metric: acc\n"
        )
        lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch, max_length=2048)
        tm = TaskManager(include_path=tmp)
        t = time.perf_counter()
        res = simple_evaluate(model=lm, tasks=["medtune_bench_medqa"], task_manager=tm, log_samples=True,
                              bootstrap_iters=0, verbosity="WARNING")
        elapsed = time.perf_counter() - t
    samples = sorted(res["samples"]["medtune_bench_medqa"], key=lambda s: s["doc_id"])
    preds = []
    for s in samples:
        ll = [r[0] for r in s["filtered_resps"]]
        preds.append(max(range(len(ll)), key=lambda i: (ll[i], -i)))
    return preds, elapsed, res["results"]["medtune_bench_medqa"].get("acc,none")


def agreement(a, b) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subset", type=int, default=None, help="use only N MedQA questions (seeded sample)")
    ap.add_argument("--quick", action="store_true", help="small subsets everywhere (a few minutes)")
    ap.add_argument("--baseline-n", type=int, default=128, help="questions for the slow baselines")
    ap.add_argument("--mmlu-n", type=int, default=None, help="MMLU questions (default: all medical test files)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-tokens", type=int, default=1024)
    ap.add_argument("--padded-batch", type=int, default=8)
    ap.add_argument("--lmeval-batch", default="1,8",
                    help="lm-eval batch sizes to run, comma-separated (1 is lm-eval's default)")
    ap.add_argument("--skip", action="append", default=[], choices=["padded", "per-option", "lm-eval", "bf16", "mmlu"])
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.subset = args.subset or 48
        args.baseline_n = min(args.baseline_n, 16)
        args.mmlu_n = args.mmlu_n or 48

    import torch

    torch.set_num_threads(args.threads)
    from medtune.data.registry import load
    from medtune.models import resolve_model
    from medtune.prompts import mcq_prompt

    medqa_path = DATA / "medqa" / "test.jsonl"
    if not medqa_path.exists():
        print(f"MedQA test file not found: {medqa_path} (set MEDTUNE_SHARED_DATA)", file=sys.stderr)
        return 2
    all_items = load("medqa", medqa_path).items
    rng = random.Random(0)
    order = list(range(len(all_items)))
    rng.shuffle(order)
    items = [all_items[i] for i in sorted(order[: args.subset])] if args.subset else all_items
    base_items = [all_items[i] for i in sorted(order[: min(args.baseline_n, len(items))])]
    if args.subset:
        base_items = [it for it in base_items if it in items] or items[: args.baseline_n]
    out: dict = {"threads": args.threads, "n_medqa": len(items), "n_baseline": len(base_items)}
    print(f"torch {torch.__version__}, {args.threads} threads; MedQA questions: {len(items)} "
          f"(baselines on {len(base_items)})")

    peak32, peak16 = matmul_flops(torch.float32), matmul_flops(torch.bfloat16)
    out.update(matmul_fp32=peak32, matmul_bf16=peak16)
    print(f"matmul 2048²: fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s")

    t = time.perf_counter()
    loaded = resolve_model("smollm2", dtype="fp32")
    print(f"model loaded in {time.perf_counter() - t:.1f} s, RSS peak {rss_mb():.0f} MB")
    tok = loaded.tokenizer
    flops = Flops(loaded.model)
    out["params"] = flops.n_total

    def lengths(its):
        return [len(tok(mcq_prompt(it))["input_ids"]) for it in its]

    global_max = max(lengths(all_items))

    # --- medtune, full set -----------------------------------------------------------------------------
    df, el = run_medtune(loaded, items, args.batch_tokens)
    lens = lengths(items)
    peak32 = max(peak32, matmul_flops(torch.float32))  # re-measured: the roof is the better of two
    out["matmul_fp32"] = peak32
    fm, fe = flops.model(lens) / el, flops.executed(lens) / el
    out["medtune_full"] = {"qps": len(items) / el, "seconds": el, "tokens": sum(lens), "accuracy": df.correct.mean(),
                           "model_flops": fm, "executed_flops": fe, "rss_mb": rss_mb()}
    print(f"\nmedtune letter mode, {len(items)} MedQA questions: {el:.1f} s, {len(items) / el:.2f} q/s, "
          f"{sum(lens) / el:.0f} tok/s, accuracy {df.correct.mean():.4f}")
    print(f"  FLOP/s fp32: model {fm / 1e9:.0f} GFLOP/s = {fm / peak32:.1%} of matmul; "
          f"executed {fe / 1e9:.0f} GFLOP/s = {fe / peak32:.1%}; peak RSS so far {rss_mb():.0f} MB")

    # --- medtune on the baseline subset (the reference for the ratios) ----------------------------------
    prompts = [mcq_prompt(it) for it in base_items]
    answers = [it.answer for it in base_items]
    n_opt = len(base_items[0].options)
    assert all(len(it.options) == n_opt for it in base_items)
    sub_df, sub_el = run_medtune(loaded, base_items, args.batch_tokens)
    sub_preds = list(sub_df.pred)
    mt_qps = len(base_items) / sub_el
    out["medtune_subset"] = {"qps": mt_qps, "seconds": sub_el}
    print(f"\nbaseline subset: {len(base_items)} questions; medtune {mt_qps:.2f} q/s; "
          f"global max length {global_max} tokens (subset's own max {max(lengths(base_items))})")

    rows = []
    base_lens = lengths(base_items)

    def versus(name, target, baseline):
        """Time medtune on the subset right before the baseline, so both see the same machine load."""
        _, mt_el = run_medtune(loaded, base_items, args.batch_tokens)
        p, e = baseline()
        # The most any scorer doing letter mode's work could gain: the baseline's time over the time letter
        # mode's executed FLOPs take at 100 % of the matmul roof. A target above it is out of reach.
        ceiling = e / (flops.executed(base_lens) / peak32)
        rows.append((name, len(p) / e, agreement(p, sub_preds), target, len(base_items) / mt_el, ceiling))

    if "padded" not in args.skip:
        versus("padded generate (paper difficulty script)", 3.5,
               lambda: run_padded_generate(loaded, prompts, n_opt, global_max, args.padded_batch))
    if "per-option" not in args.skip:
        versus(f"per-option full sequence ({n_opt} passes)", 6.0, lambda: run_per_option(loaded, prompts, n_opt))
    if "lm-eval" not in args.skip:
        for bs in [int(b) for b in str(args.lmeval_batch).split(",")]:
            def lm_eval_run(bs=bs):
                p, e, acc = run_lm_eval(loaded, prompts, answers, n_opt, bs)
                out["lm_eval_acc"] = acc
                return p, e

            versus(f"lm-evaluation-harness hf (batch {bs})", 2.0, lm_eval_run)
        out["medtune_subset_acc"] = float(sub_df.correct.mean())
    print(f"\n{'baseline':48s} {'q/s':>7s} {'medtune q/s':>11s} {'medtune ×':>10s} {'target':>7s} "
          f"{'identical preds':>16s} {'ceiling':>8s}")
    for name, qps, agree, target, mqps, ceiling in rows:
        ratio = mqps / qps
        ok = "ok" if ratio >= target else "MISSED"
        print(f"{name:48s} {qps:7.2f} {mqps:11.2f} {ratio:9.2f}× {target:6.1f}× {agree:15.2%} {ceiling:7.2f}×  {ok}")
        out.setdefault("baselines", []).append({"name": name, "qps": qps, "medtune_qps": mqps, "ratio": ratio,
                                                "agreement": agree, "target": target, "ceiling": ceiling})
    print("ceiling: the ratio letter mode would reach if its executed FLOPs ran at 100 % of the fp32 matmul "
          "roof measured above")
    if "medtune_subset_acc" in out:
        print(f"accuracy on the subset: medtune {out['medtune_subset_acc']:.4f}, lm-eval {out['lm_eval_acc']:.4f}")

    # --- bf16 ----------------------------------------------------------------------------------------
    if "bf16" not in args.skip:
        _, f_el = run_medtune(loaded, base_items, args.batch_tokens)  # fp32 reference under the same load
        mt_qps = len(base_items) / f_el
        loaded.model.to(torch.bfloat16)
        loaded.dtype = torch.bfloat16
        peak16 = max(peak16, matmul_flops(torch.bfloat16))
        out["matmul_bf16"] = peak16
        bdf, bel = run_medtune(loaded, base_items, args.batch_tokens)
        blens = lengths(base_items)
        bm, be = flops.model(blens) / bel, flops.executed(blens) / bel
        agree = agreement(list(bdf.pred), sub_preds)
        out["bf16"] = {"qps": len(base_items) / bel, "model_flops": bm, "executed_flops": be, "agreement": agree}
        bqps = len(base_items) / bel
        print(f"\nbf16 letter mode on the subset: {bqps:.2f} q/s ({bqps / mt_qps:.2f}× "
              f"fp32); model {bm / 1e9:.0f} GFLOP/s = {bm / peak16:.1%} of bf16 matmul, executed {be / peak16:.1%}; "
              f"predictions agree with fp32 on {agree:.2%}")
        loaded.model.to(torch.float32)
        loaded.dtype = torch.float32

    # --- zero-shot accuracy on MMLU medical ---------------------------------------------------------
    if "mmlu" not in args.skip and (DATA / "mmlu_medical").exists():
        mm = load("mmlu", DATA / "mmlu_medical", split="test").items
        if args.mmlu_n:
            mm = mm[: args.mmlu_n]
        mdf, mel = run_medtune(loaded, mm, args.batch_tokens)
        mdf["subject"] = [it.category for it in mm]
        per = mdf.groupby("subject")["correct"].agg(["mean", "size"])
        out["mmlu"] = {"accuracy": float(mdf.correct.mean()), "n": len(mm),
                       "per_subject": {k: float(v) for k, v in per["mean"].items()}}
        print(f"\nzero-shot accuracy (paper prompt, letter mode): MedQA test {df.correct.mean():.4f} (n={len(items)}); "
              f"MMLU medical test {mdf.correct.mean():.4f} (n={len(mm)}, {len(mm) / mel:.1f} q/s)")
        for subj, r in per.iterrows():
            print(f"  {subj:22s} {r['mean']:.4f} (n={int(r['size'])})")
    out["peak_rss_mb"] = rss_mb()
    print(f"\npeak RSS of the whole run: {rss_mb():.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
