"""Question categories for blocked and interleaved orders: the items' own (``given``), or clusters of the
question texts.

One module per job: :mod:`~medtune.categories.search` (UMAP → HDBSCAN, tuned by a seeded Optuna search),
:mod:`~medtune.categories.naming` (clusters named by c-TF-IDF), :mod:`~medtune.categories.cluster` (items →
named categories), :mod:`~medtune.categories.categoryfile` (categories.parquet), :mod:`~medtune.categories.plot`
(the 2-D picture) and :mod:`~medtune.categories.stage` (settings and ``run_categories``). Import from the module
that owns a name; this face hands on the stage and its artifact only.
"""

from medtune.categories.categoryfile import Categories, read_categories, write_categories
from medtune.categories.stage import CategorySettings, run_categories

__all__ = ["Categories", "CategorySettings", "read_categories", "run_categories", "write_categories"]
