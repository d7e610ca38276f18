"""``medtune evaluate anchors``: choose anchor items from known models' predictions, estimate from anchors.

``medtune evaluate anchors choose PREDICTIONS... -o anchors.json --k 100`` chooses the anchors
(:func:`medtune.anchors.stage.run_anchor_choice`) from the predictions files of several models on the same items;
``medtune evaluate anchors estimate PREDICTIONS --anchors anchors.json`` estimates a model's full-test accuracy
from a predictions file holding (at least) its anchor answers. ``medtune evaluate run ITEMS ... --anchors
anchors.json`` scores a model on the anchors only (:func:`medtune.evaluation_stage.run_anchor_evaluation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medtune.anchors import ANCHOR_METHODS, read_anchors
from medtune.anchors.estimate import DEFAULT_N_BOOT, estimate_all
from medtune.cli.options import COUNT, SEED, bounded
from medtune.errors import InputError
from medtune.evaluation import per_item_scores, read_predictions
from medtune.io import check_file_output, write_json_atomic

console = Console(highlight=False)
anchors_app = typer.Typer(help="Anchor items (tinyBenchmarks-style): estimate full-test accuracy from k items.",
                          no_args_is_help=True)


def print_estimates(results: dict[str, dict[str, Any]], title: str, out: Console | None = None) -> None:
    """One row per estimator: the full-test accuracy estimate with its 95 % interval."""
    t = Table(title=title)
    t.add_column("estimator")
    t.add_column("estimated accuracy [95% CI]", justify="right")
    t.add_column("se", justify="right")
    for name, r in results.items():
        t.add_row(name, f"{r['estimate']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]", f"{r['se']:.4f}")
    (out or console).print(t)


@anchors_app.command("choose")
def choose_cmd(
    predictions: Annotated[list[Path], typer.Argument(metavar="PREDICTIONS...", help="predictions.parquet of "
                                                      "several known models, all on the same items.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="anchors.json to write.")],
    k: Annotated[int, typer.Option("--k", help="Number of anchor items.", callback=bounded(**COUNT))] = 100,
    method: Annotated[str, typer.Option(help=f"How anchors are chosen: {', '.join(ANCHOR_METHODS)}.")]
    = "irt-clusters",
    irt: Annotated[str, typer.Option(help="IRT model fitted to the known models: 1pl or 2pl.")] = "2pl",
    seed: Annotated[int, typer.Option(help="Clustering / sampling seed.", callback=bounded(**SEED))] = 0,
) -> None:
    """Choose anchor items from the predictions of known models (never of the model to be estimated)."""
    from medtune.anchors.stage import AnchorChoiceSettings, run_anchor_choice
    from medtune.settings import validate_settings

    settings = validate_settings(AnchorChoiceSettings, {"k": k, "method": method, "irt": irt, "seed": seed},
                                 "options")
    check_file_output(output, "-o")
    s = run_anchor_choice(settings, predictions, output)
    console.print(f"{s['k']} anchors of {s['n_items']} items ({s['method']}, from {s['known_models']} known "
                  f"models; weights {s['weight_min']:.4f}–{s['weight_max']:.4f}; IRT {s['irt']} converged: "
                  f"{s['converged']}) → {escape(str(output))}")


@anchors_app.command("estimate")
def estimate_cmd(
    predictions: Annotated[Path, typer.Argument(metavar="PREDICTIONS", help="The model's predictions on (at "
                                                "least) the anchor items.")],
    anchors: Annotated[Path, typer.Option("--anchors", help="anchors.json from `evaluate anchors choose`.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the estimates as JSON.")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap draws for the p-IRT and gp-IRT intervals.",
                                        callback=bounded(**COUNT))] = DEFAULT_N_BOOT,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.", callback=bounded(**SEED))] = 0,
) -> None:
    """Estimate full-test accuracy from a model's anchor answers: every estimator with its 95 % interval."""
    if output is not None:
        check_file_output(output, "-o")
    anchor_set = read_anchors(anchors)
    frame = read_predictions(predictions)
    correct = dict(zip(frame["id"].astype(str), per_item_scores(frame), strict=True))
    try:
        results = estimate_all(anchor_set, correct, n_boot=n_boot, seed=seed)
    except InputError as exc:
        raise exc.located(file=predictions) from None
    if output is not None:
        write_json_atomic(output, {"is_estimate": True, "predictions": str(predictions), "anchors": str(anchors),
                                   "estimates": results})
    print_estimates(results, f"{escape(str(predictions))}: full-test accuracy from {anchor_set.k} of "
                             f"{anchor_set.n_items} items (estimates)")
