"""``medtune order ITEMS …`` (plan a learning order) and ``medtune order plot ORDER.json …`` (draw it).

``order`` is a group whose default action is ``build``: when the first argument is not a sub-command,
``build`` is assumed, so both ``medtune order items.parquet --strategy blocked …`` and
``medtune order plot order.json …`` work.

``build`` only parses arguments: its options come from :class:`medtune.orders.stage.OrderSettings` (plus
``-s``, ``-O name=value`` and the ``a,b`` pairs, kept in their documented form) and it calls
:func:`medtune.orders.stage.run_order`, the function the experiment grid calls too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from medtune.bucketing import parse_pair
from medtune.cli.options import bounded, with_settings
from medtune.errors import ConfigError, InputError
from medtune.orders import STRATEGIES, OrderItem, available_strategies, read_order
from medtune.orders.stage import (
    ORDER_ITEMS_NAME,
    ORDER_NAME,
    OrderSettings,
    category_names,
    describe_split,
    read_tables,
    run_order,
    strategy_view,
)
from medtune.settings import validate_settings

DEFAULT_COMMAND = "build"


class DefaultCommandGroup(TyperGroup):
    """A group that runs ``build`` when the first argument is not one of its sub-commands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help(ctx, formatter)
        # Plain text after the rich help: one strategy per line (never re-wrapped), its options below it.
        width = max(len(n) for n in STRATEGIES)
        lines = []
        for name, spec in STRATEGIES.items():
            lines.append(f"  {name.ljust(width)}  {spec.description}")
            for opt, o in spec.options.items():
                default = "n" if o.default is None else o.default
                lines.append(f"  {'':{width}}    --option {opt}={default}: {o.help}")
        click.echo("\nStrategies (--strategy NAME), with their options and defaults:\n" + "\n".join(lines))


def _strategy_help() -> str:
    return "\n".join(f"{n}: {d}" for n, d in available_strategies().items())


order_app = typer.Typer(
    cls=DefaultCommandGroup,
    no_args_is_help=True,
    help="Plan a learning order (default: `medtune order ITEMS --strategy NAME --seed N -o order.json`) "
    "or draw orders (`medtune order plot`).",
)


def _parse_options(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--option takes name=value, got {pair!r}")
        out[name.strip().replace("-", "_")] = value.strip()
    return out


def _pair_option(text: str | None, flag: str) -> dict[str, tuple[float, float]]:
    """``{"thresholds": (a, b)}`` from ``--thresholds a,b`` (nothing when not given)."""
    if text is None:
        return {}
    try:
        return {flag: parse_pair(text, flag)}
    except InputError as exc:
        raise ConfigError(f"--{flag} takes two increasing numbers 'a,b': {exc.reason}") from None


def load_order_items(
    items_path: Path,
    categories: Path | None,
    difficulty: Path | None,
    settings: OrderSettings,
) -> tuple[list[OrderItem], dict[str, str]]:
    """Every item of ``items_path`` as the strategy saw it (+ category display names from a categories file)."""
    from medtune.schema import read_items

    source = settings.source(difficulty)
    cats, diff = read_tables(source, categories, difficulty)
    return strategy_view(read_items(items_path), settings, source, categories=cats, difficulty=diff), \
        category_names(cats)


CategoriesOpt = typer.Option("--categories", help="categories.parquet (medtune categories) to use instead of "
                             "the items' own category.", exists=True, dir_okay=False)
DifficultyOpt = typer.Option("--difficulty", help="difficulty.parquet (medtune difficulty) to use instead of "
                             "the items' human_difficulty.", exists=True, dir_okay=False)
ThresholdsOpt = typer.Option("--thresholds", help="easy_max,medium_max for threshold bucketing (default: the "
                             "paper's 0.66,0.80: easy ≤ 0.66 < medium ≤ 0.80 < hard).")
BucketingOpt = typer.Option("--bucketing", help="Re-bucket continuous difficulty: thresholds | terciles | quantiles. "
                            "Default: a difficulty file's own buckets, other numbers by --thresholds.")
_SETTINGS_ON_OWN_FLAGS = ("strategy", "options", "thresholds", "quantiles")


@order_app.command(DEFAULT_COMMAND, help="Plan a learning order of ITEMS (the default sub-command).\n\n"
                   + _strategy_help())
@with_settings(OrderSettings, exclude=_SETTINGS_ON_OWN_FLAGS)
def build(
    items: Annotated[Path, typer.Argument(help="items.parquet", exists=True, dir_okay=False)],
    strategy: Annotated[str, typer.Option("--strategy", "-s",
                                          help="Strategy name (listed by `medtune order --help`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="order.json to write; or a folder, which gets "
                                         f"{ORDER_NAME} and {ORDER_ITEMS_NAME} (per-item category and bucket).")],
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-O", help="Strategy option name=value, e.g. k=3 (repeatable).")] = None,
    categories: Annotated[Path | None, CategoriesOpt] = None,
    difficulty: Annotated[Path | None, DifficultyOpt] = None,
    thresholds: Annotated[str | None, ThresholdsOpt] = None,
    quantiles: Annotated[str | None, typer.Option(
        "--quantiles", help="q1,q2 cut points for --bucketing quantiles (default 1/3, 2/3).")] = None,
    given: dict[str, Any] | None = None,
) -> None:
    data = {**(given or {}), "strategy": strategy, "options": _parse_options(option or []),
            **_pair_option(thresholds, "thresholds"), **_pair_option(quantiles, "quantiles")}
    settings = validate_settings(OrderSettings, data)
    if output.suffix == ".json" and not output.is_dir():
        out, names = output.parent, {"order_name": output.name, "items_name": None}
    else:
        out, names = output, {}
    import os

    from medtune.io import atomic_files_into, atomic_folder, check_folder_output

    check_folder_output(out, "-o")  # an existing non-.json file: a folder path or an order .json is meant
    if names:  # one file, itself written atomically, into a folder that holds other things
        summary = run_order(settings, items, out, difficulty_path=difficulty, categories_path=categories, **names)
    else:
        # Two files that belong together: built aside, then DIR of its own is swapped whole (a kill or a failure
        # leaves the earlier pair or the new one); a DIR holding other files (or the current folder) is never
        # removed: the two are renamed in one by one, each whole, the order last.
        owns = (ORDER_ITEMS_NAME, ORDER_NAME)
        here = Path(os.path.abspath(out)) == Path.cwd()  # the shell's folder stays; its files are renamed in
        with (atomic_files_into(out, owns, "-o") if here else atomic_folder(out, "-o", owns=owns)) as tmp:
            summary = run_order(settings, items, tmp, difficulty_path=difficulty, categories_path=categories)
        summary = {**summary, "order": str(out / ORDER_NAME), "order_items": str(out / ORDER_ITEMS_NAME)}
    typer.echo(f"{summary['strategy']} (seed {summary['seed']}): {describe_split(summary)}, "
               f"{summary['positions_per_epoch']} positions per epoch, {summary['epochs']} epoch(s) "
               f"({summary['epoch_policy']}), {summary['segments']} segments → {summary['order']}")


@order_app.command("plot", help="Draw orders as the paper's Figure 1: one panel per ORDER.json, position on x, "
                   "category as colour, difficulty as bar height. Writes PNG and SVG.")
def plot(
    orders: list[Path] = typer.Argument(..., help="One or more order.json files.", exists=True, dir_okay=False),
    items: Path = typer.Option(..., "--items", help="The items.parquet the orders were planned on.", exists=True,
                               dir_okay=False),
    output: Path = typer.Option(..., "--output", "-o", help="PNG path; the SVG goes beside it."),
    categories: Annotated[Path | None, CategoriesOpt] = None,
    difficulty: Annotated[Path | None, DifficultyOpt] = None,
    bucketing: Annotated[str | None, BucketingOpt] = None,
    thresholds: Annotated[str | None, ThresholdsOpt] = None,
    epoch: int = typer.Option(0, "--epoch", callback=bounded(ge=0), help="Which epoch to draw."),
) -> None:
    from medtune.io import check_file_output
    from medtune.order_plot import plot_orders

    check_file_output(output, "-o")
    # The strategy does not matter for the drawing; the bucketing settings are the order stage's own.
    settings = validate_settings(OrderSettings, {"strategy": "random", "seed": 0, "bucketing": bucketing,
                                                 **_pair_option(thresholds, "thresholds")})
    oitems, names = load_order_items(items, categories, difficulty, settings)
    plans = [read_order(p) for p in orders]
    written = plot_orders(plans, oitems, output, epoch=epoch, category_names=names)
    typer.echo("wrote " + ", ".join(str(p) for p in written))


def register_order_commands(app: typer.Typer) -> None:
    """Add ``medtune order`` (build by default, and ``plot``)."""
    app.add_typer(order_app, name="order")
