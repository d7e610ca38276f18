"""``medtune categories ITEMS -o categories.parquet``: semantic categories by clustering, or the items' own.

The command is :func:`medtune.categories.stage.run_categories` (what the experiment grid runs too); its options
are generated from :class:`~medtune.categories.stage.CategorySettings`, except ``--given`` (the method) and
``--min-cluster-size LOW:HIGH``, which keep their command-line syntax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medtune.categories.stage import CategorySettings, parse_range, run_categories
from medtune.cli.options import with_settings
from medtune.errors import ConfigError
from medtune.settings import validate_settings


@with_settings(CategorySettings, exclude=("method", "min_cluster_size"))
def categories(
    items: Annotated[Path, typer.Argument(help="items.parquet", exists=True, dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write categories.parquet.")],
    given_categories: Annotated[bool, typer.Option(
        "--given", help="Use the items' own category as is (probability 1.0).")] = False,
    min_cluster_size: Annotated[str | None, typer.Option(
        "--min-cluster-size", help="HDBSCAN min cluster size range LOW:HIGH (default: the paper's 25:34 scaled to "
        "the number of items).")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw a 2-D UMAP scatter coloured by category (PNG + SVG).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-trial progress.")] = False,
    given: dict[str, Any] | None = None,
) -> None:
    """Cluster question texts into categories (embeddings → UMAP → HDBSCAN, seeded Optuna search; clusters
    named by their top c-TF-IDF terms), or take the items' own categories with --given."""
    chosen = {**(given or {}), "method": "given" if given_categories else "cluster"}
    if min_cluster_size:
        chosen["min_cluster_size"] = parse_range(min_cluster_size)
    lo, hi = chosen.get("min_clusters"), chosen.get("max_clusters")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"--min-clusters {lo} is above --max-clusters {hi}")
    settings = validate_settings(CategorySettings, chosen, "categories")
    from medtune.io import check_file_output

    check_file_output(output, "-o")  # before clustering, not when the finished table is renamed over a folder
    summary = run_categories(settings, items, output.parent, artifact=output.name, plot=plot if plot else False,
                             progress=not quiet)
    typer.echo(f"{summary['n_categories']} categories over {summary['n_items']} items → {output}")
    names = summary["names"]
    for c, k in sorted(summary["counts"].items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {c:>8}  {k:5d}  {names[c]}")
    if summary["in_range"] is False:
        typer.echo(f"warning: no trial reached {settings.min_clusters}–{settings.max_clusters} clusters; raise "
                   "--trials or widen --min-cluster-size", err=True)
    if summary.get("plot_error"):
        typer.echo(f"warning: the plot could not be drawn: {summary['plot_error']}", err=True)
    if summary["plot"]:
        typer.echo("wrote " + ", ".join(summary["plot"]))


def register_categories_commands(app: typer.Typer) -> None:
    """Add ``medtune categories``."""
    app.command("categories")(categories)
