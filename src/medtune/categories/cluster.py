"""Categories by clustering: the items' question texts embedded, clustered (:mod:`medtune.categories.search`) and
each cluster named by its top terms (:mod:`medtune.categories.naming`).

The embeddings come from :mod:`medtune.embeddings` (cached by content hash); a model that cannot be loaded gives an
error that says how to supply it, since the hub's own error does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medtune.categories.categoryfile import NOISE_CATEGORY, Categories
from medtune.categories.naming import ctfidf_terms
from medtune.categories.search import LOW_PROBABILITY, SearchSpace, search_clusters
from medtune.errors import InputError


def clustered_text(item: Any) -> str:
    """What is embedded and named for an item: its question."""
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
    from medtune.embeddings import resolve_embedding_model

    texts = [clustered_text(it) for it in items]
    if model_id is None and embeddings is not None:
        model_id = "precomputed"
    if embeddings is None:
        embeddings = embed_items(items, embedding_model, device=embedding_device)
    if model_id is None:
        model_id = resolve_embedding_model(embedding_model)[0]
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

    texts = [clustered_text(it) for it in items]
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
