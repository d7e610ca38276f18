"""The picture of a categorisation: a 2-D UMAP of the question embeddings, coloured by category (PNG and SVG).

It shows at a glance whether the categories are separate regions of the embedding space or an arbitrary cut.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtune.categories.categoryfile import NOISE_CATEGORY, Categories
from medtune.categories.search import reduce
from medtune.io import write_figure_png_svg


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
