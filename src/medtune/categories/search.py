"""The cluster search: question embeddings → UMAP → HDBSCAN, its parameters tuned by a seeded Optuna search.

This follows the paper's recipe (UMAP with cosine distance, n_neighbors 5–20, 3–14 dimensions; HDBSCAN;
TPE trials minimising the share of points whose membership probability is below 0.05, plus a penalty
outside the wanted number of clusters). Choices of our own, and why:

- The penalty is 1 + distance/range (not a small constant), so any trial inside the wanted cluster-count
  range beats any trial outside it; out-of-range trials still rank by how far they miss.
- HDBSCAN's min cluster size range scales with n: the paper's 25–34 is 2.9 %–3.9 % of LEK's 874 questions.
- Determinism: UMAP gets ``random_state=seed`` (which makes it single-threaded), Optuna's TPE sampler gets the
  seed, trials run one at a time, and HDBSCAN is deterministic for given points; same seed → same labels.
- Noise points (label −1) join the cluster with the nearest centroid in the UMAP space (``noise="nearest"``)
  or form a category of their own (``noise="own"``); their probability stays HDBSCAN's (0).
- Clusters are renumbered by size (c00 is the largest) so labels do not depend on HDBSCAN's internal order.

This module works on arrays alone (no items, no files): :func:`search_clusters` returns the chosen
:class:`Clustering`; turning items into named categories is :mod:`medtune.categories.cluster`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medtune.errors import ConfigError, InputError

NOISE_POLICIES: tuple[str, ...] = ("nearest", "own")
LOW_PROBABILITY = 0.05
# The paper's HDBSCAN min cluster size 25–34 on LEK's 874 questions, as shares of n.
MIN_CLUSTER_SHARE = (25 / 874, 34 / 874)
SAMPLERS: tuple[str, ...] = ("tpe", "hyperopt")
# hyperopt's tpe.suggest: 20 random trials first, then 24 candidates per step scored by the ratio of the
# densities of the best ceil(0.25·√n) trials (at most 25) and the rest.
HYPEROPT_STARTUP_TRIALS = 20
HYPEROPT_EI_CANDIDATES = 24


@dataclass(frozen=True)
class SearchSpace:
    """Ranges of the hyperparameter search (inclusive)."""

    n_neighbors: tuple[int, int] = (5, 20)
    n_components: tuple[int, int] = (3, 14)
    min_cluster_size: tuple[int, int] = (25, 34)

    @classmethod
    def for_n(cls, n: int, min_cluster_size: tuple[int, int] | None = None, *,
              n_neighbors: tuple[int, int] | None = None,
              n_components: tuple[int, int] | None = None) -> SearchSpace:
        """The given ranges (default: the paper's, with min cluster size scaled to ``n``), clipped to what n
        allows: UMAP needs n_neighbors ≤ n − 2 and n_components ≤ n − 3 on so few points."""
        if n < 10:
            raise InputError(f"clustering needs at least 10 items, got {n}")
        if min_cluster_size is None:
            lo = max(2, round(n * MIN_CLUSTER_SHARE[0]))
            hi = max(lo, round(n * MIN_CLUSTER_SHARE[1]))
            min_cluster_size = (lo, hi)
        lo, hi = min_cluster_size
        if not 2 <= lo <= hi:
            raise ConfigError(f"min cluster size range must be 2 ≤ low ≤ high, got {lo}:{hi}")
        nn = _clipped("n_neighbors", n_neighbors or cls.n_neighbors, 2, n - 2)
        nc = _clipped("n_components", n_components or cls.n_components, 1, n - 3)
        return cls(nn, nc, (lo, hi))


def _clipped(name: str, bounds: tuple[int, int], least: int, most: int) -> tuple[int, int]:
    """``bounds`` with its high end lowered to ``most`` (and its low end to the new high end)."""
    lo, hi = bounds
    if not least <= lo <= hi:
        raise ConfigError(f"{name} range must be {least} ≤ low ≤ high, got {lo}:{hi}")
    hi = min(hi, most)
    return min(lo, hi), hi


@dataclass
class Clustering:
    """The chosen clustering: per-point labels (after noise handling), probabilities and provenance."""

    labels: np.ndarray  # -1 only with noise="own"
    raw_labels: np.ndarray  # HDBSCAN's, renumbered by size
    probabilities: np.ndarray
    n_clusters: int
    params: dict[str, int]
    cost: float
    low_share: float
    reduced: np.ndarray
    trials: list[dict[str, Any]] = field(default_factory=list)
    counted_clusters: int = 0  # the count the objective compared with the wanted range


def cost_of(labels: np.ndarray, probabilities: np.ndarray, min_clusters: int, max_clusters: int,
            low: float = LOW_PROBABILITY, *, penalty: float | None = None,
            count_noise: bool = False) -> tuple[float, float, int]:
    """(cost, share of points with probability < low, number of clusters): the search objective.

    The number of clusters is what gets compared with the wanted range: HDBSCAN's clusters, plus one for the
    noise label when ``count_noise`` (and there is noise). Outside the range the cost grows by ``penalty``, or
    by default by 1 + distance/range, so that any in-range trial wins.
    """
    found = set(labels.tolist())
    n_clusters = len(found) if count_noise else len(found - {-1})
    low_share = float(np.count_nonzero(probabilities < low)) / len(labels)
    miss = max(min_clusters - n_clusters, n_clusters - max_clusters, 0)
    if miss == 0:
        extra = 0.0
    elif penalty is not None:
        extra = penalty
    else:
        extra = 1.0 + miss / max(1, max_clusters - min_clusters + 1)
    return low_share + extra, low_share, n_clusters


def hyperopt_gamma(n_trials: int) -> int:
    """How many finished trials hyperopt's TPE counts as good: ceil(0.25·√n), at most 25."""
    return min(math.ceil(0.25 * math.sqrt(n_trials)), 25)


def make_sampler(name: str, seed: int, trials: int) -> Any:
    """Optuna's TPE as medtune tunes it (``tpe``) or with hyperopt's ``tpe.suggest`` defaults (``hyperopt``)."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, trials))
    if name == "hyperopt":
        import warnings

        with warnings.catch_warnings():  # Optuna ≥ 4.9 marks a custom gamma as deprecated; it still applies it
            warnings.filterwarnings("ignore", message=".*gamma.*deprecated", category=FutureWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=HYPEROPT_STARTUP_TRIALS,
                                              n_ei_candidates=HYPEROPT_EI_CANDIDATES, gamma=hyperopt_gamma)
    raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def reduce(embeddings: np.ndarray, n_neighbors: int, n_components: int, seed: int, min_dist: float = 0.0) -> np.ndarray:
    """UMAP with cosine distance; ``random_state`` makes it deterministic (and single-threaded)."""
    import warnings

    import umap

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value 1 overridden.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        model = umap.UMAP(n_neighbors=n_neighbors, n_components=n_components, metric="cosine", min_dist=min_dist,
                          random_state=seed, n_jobs=1, low_memory=True)
        return np.asarray(model.fit_transform(embeddings), dtype=np.float64)


def hdbscan_fit(points: np.ndarray, min_cluster_size: int) -> tuple[np.ndarray, np.ndarray]:
    import hdbscan

    model = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, metric="euclidean", cluster_selection_method="eom",
                            core_dist_n_jobs=1)
    model.fit(points)
    return np.asarray(model.labels_), np.asarray(model.probabilities_, dtype=float)


def renumber_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster 0 is the largest (ties: the one whose first member comes first); noise stays −1."""
    ids = [c for c in set(labels.tolist()) if c != -1]
    ids.sort(key=lambda c: (-int(np.count_nonzero(labels == c)), int(np.argmax(labels == c))))
    mapping = {c: i for i, c in enumerate(ids)}
    return np.array([mapping.get(c, -1) for c in labels.tolist()], dtype=int)


def assign_noise_to_nearest(labels: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Each noise point joins the cluster whose centroid (in ``points`` space) is nearest."""
    out = labels.copy()
    clusters = sorted(set(labels.tolist()) - {-1})
    noise = labels == -1
    if not clusters or not noise.any():
        return out
    centroids = np.stack([points[labels == c].mean(axis=0) for c in clusters])
    dist = ((points[noise][:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    out[noise] = np.asarray(clusters)[dist.argmin(axis=1)]
    return out


def search_clusters(
    embeddings: np.ndarray,
    *,
    trials: int = 50,
    min_clusters: int = 6,
    max_clusters: int = 20,
    seed: int = 0,
    space: SearchSpace | None = None,
    noise: str = "nearest",
    progress: Callable[[int, dict[str, Any]], None] | None = None,
    penalty: float | None = None,
    count_noise: bool = False,
    low_probability: float = LOW_PROBABILITY,
    sampler: str = "tpe",
) -> Clustering:
    """Run ``trials`` seeded TPE trials over UMAP/HDBSCAN parameters and return the best clustering.

    ``penalty``, ``count_noise`` and ``low_probability`` shape the objective (:func:`cost_of`). With
    ``sampler="hyperopt"`` each parameter is a choice among its values, as hyperopt's ``hp.choice`` makes it,
    rather than an ordered integer.
    """
    import optuna

    if noise not in NOISE_POLICIES:
        raise ConfigError(f"noise must be one of {', '.join(NOISE_POLICIES)}, got {noise!r}")
    if not 1 <= min_clusters <= max_clusters:
        raise ConfigError(f"cluster-count range must be 1 ≤ min ≤ max, got {min_clusters}–{max_clusters}")
    if trials < 1:
        raise ConfigError(f"trials must be at least 1, got {trials}")
    study_sampler = make_sampler(sampler, seed, trials)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    space = space or SearchSpace.for_n(len(embeddings))
    reduced_cache: dict[tuple[int, int], np.ndarray] = {}
    fits: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
    log: list[dict[str, Any]] = []

    def fit(nn: int, nc: int, mcs: int) -> tuple[np.ndarray, np.ndarray]:
        if (nn, nc) not in reduced_cache:
            reduced_cache[(nn, nc)] = reduce(embeddings, nn, nc, seed)
        if (nn, nc, mcs) not in fits:
            fits[(nn, nc, mcs)] = hdbscan_fit(reduced_cache[(nn, nc)], mcs)
        return fits[(nn, nc, mcs)]

    def suggest(trial: optuna.Trial, name: str, bounds: tuple[int, int]) -> int:
        if sampler == "hyperopt":
            return int(trial.suggest_categorical(name, list(range(bounds[0], bounds[1] + 1))))
        return trial.suggest_int(name, *bounds)

    def score(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float, int]:
        return cost_of(labels, probs, min_clusters, max_clusters, low_probability, penalty=penalty,
                       count_noise=count_noise)

    def objective(trial: optuna.Trial) -> float:
        nn = suggest(trial, "n_neighbors", space.n_neighbors)
        nc = suggest(trial, "n_components", space.n_components)
        mcs = suggest(trial, "min_cluster_size", space.min_cluster_size)
        labels, probs = fit(nn, nc, mcs)
        cost, low_share, k = score(labels, probs)
        entry = {"n_neighbors": nn, "n_components": nc, "min_cluster_size": mcs, "cost": cost,
                 "low_share": low_share, "n_clusters": k}
        log.append(entry)
        if progress:
            progress(trial.number, entry)
        return cost

    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=study_sampler)
    study.optimize(objective, n_trials=trials, n_jobs=1, show_progress_bar=False)
    best = {name: int(value) for name, value in study.best_trial.params.items()}
    key = (best["n_neighbors"], best["n_components"], best["min_cluster_size"])
    raw, probs = fit(*key)
    cost, low_share, counted = score(raw, probs)
    k = len(set(raw.tolist()) - {-1})
    raw = renumber_by_size(raw)
    reduced = reduced_cache[key[:2]]
    if k == 0:  # everything is noise: one category rather than none
        labels = np.zeros_like(raw)
    elif noise == "nearest":
        labels = assign_noise_to_nearest(raw, reduced)
    else:
        labels = raw
    return Clustering(labels, raw, probs, k, best, cost, low_share, reduced, log, counted)
