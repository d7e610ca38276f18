"""``medtune difficulty``: LLM-defined question difficulty → ``difficulty.parquet`` (+ optional histogram).

Three ways in, one artifact out (docs/ARTIFACTS.md):

- ``score``: run the scorer for an ensemble of models on the items (per-model score files are kept beside
  the output in ``<stem>.scores/``, streamed as they are computed, so an interrupted run resumes and a
  rerun with more models only scores the new ones); ``--crossfit key=value`` adds short cross-fitted
  fine-tunes to the ensemble;
- ``from-responses``: the paper's response files (``questions: [{question_index, correct_answer, clls}]``);
- ``import``: an external difficulty table joined to the items by position, question_index or id.

Each takes ``--thresholds t1,t2`` (fixed cut points, default the paper's 0.66,0.80) or ``--quantiles``
(terciles, or ``--quantile-cuts``), and ``--plot PATH`` for a histogram with the cut points drawn. Every command
is :func:`medtune.difficulty_stage.run_difficulty` (what the experiment grid runs too) with its source; their
options are generated from :class:`~medtune.difficulty_stage.DifficultySettings`. ``medtune difficulty compute
--source NAME`` runs any registered source (a plugin's too) with the stage's settings.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from medtune.bucketing import DEFAULT_QUANTILES, parse_pair
from medtune.cli.options import with_settings
from medtune.difficulty_stage import (
    DifficultySettings,
    model_names,
    run_difficulty,
    scores_dir,
)
from medtune.errors import ConfigError, InputError
from medtune.io import check_file_output
from medtune.settings import validate_settings

__all__ = ["difficulty_app", "model_names", "register_difficulty_commands", "scores_dir"]

difficulty_app = typer.Typer(
    help="LLM-defined question difficulty (ensemble expected accuracy, IRT) and easy/medium/hard buckets.",
    no_args_is_help=True,
)
console = Console(highlight=False)


class KeyChoice(str, Enum):
    position = "position"
    id = "id"
    question_index = "question_index"


ThresholdsOpt = Annotated[str | None, typer.Option(
    "--thresholds", help="Fixed cut points t1,t2: easy ≤ t1 < medium ≤ t2 < hard (default 0.66,0.80, the paper's).")]
QuantilesOpt = Annotated[bool, typer.Option(
    "--quantiles", help="Cut at quantiles of the observed difficulty instead (terciles unless --quantile-cuts).")]
QuantileCutsOpt = Annotated[str | None, typer.Option("--quantile-cuts", help="Quantiles q1,q2 for --quantiles.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Also write a histogram PNG with the cut points.")]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="difficulty.parquet to write.")]

# Settings each command takes from the schema; the rest are the command's own arguments or do not apply.
SCORE_SETTINGS = ("mode", "template", "irt", "irt_data", "split", "dtype", "device", "batch_tokens",
                  "vllm_gpu_memory_utilization", "vllm_max_model_len", "vllm_tensor_parallel_size",
                  "vllm_enforce_eager")
IMPORT_SETTINGS = ("key", "key_column", "value_column", "one_minus", "on_unmatched")
RESPONSES_SETTINGS = ("irt", "irt_data")
HUMAN_SETTINGS = ("higher_is", "human_file", "human_key", "human_key_column", "human_value_column", "split")


def _all_but(*names: str) -> list[str]:
    return [f for f in DifficultySettings.model_fields if f not in names]


def bucketing_settings(thresholds: str | None, quantiles: bool, quantile_cuts: str | None) -> dict[str, Any]:
    """The ``thresholds``/``quantiles`` settings the CLI options ask for (they exclude each other)."""
    if thresholds is not None and (quantiles or quantile_cuts is not None):
        raise InputError("give either --thresholds or --quantiles, not both", field="thresholds")
    if quantiles or quantile_cuts is not None:
        return {"quantiles": parse_pair(quantile_cuts, "quantile-cuts") if quantile_cuts else DEFAULT_QUANTILES}
    if thresholds is not None:
        return {"thresholds": parse_pair(thresholds, "thresholds")}
    return {}


def crossfit_setting(pairs: list[str] | None) -> dict[str, Any]:
    """``--crossfit key=value ...`` as the ``crossfit`` setting (values are validated by the schema)."""
    if not pairs:
        return {}
    cross: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--crossfit takes key=value (folds, repeats, method, max_steps, lr, model), "
                              f"got {pair!r}")
        cross[key.strip()] = value.strip()
    return {"crossfit": cross}


def _report(summary: dict[str, Any], output: Path) -> None:
    """The bucket table and a line of statistics, from the stage's summary."""
    table = Table(title=f"difficulty: {summary['n_items']} questions ({summary['source']})")
    for col in ("bucket", "questions", "range"):
        table.add_column(col, justify="right" if col == "questions" else "left")
    sizes = summary["buckets"]
    cuts = summary.get("thresholds") or []
    if len(cuts) == 2:
        t1, t2 = cuts
        ranges: tuple[str, ...] = (f"≤ {t1:.3f}", f"({t1:.3f}, {t2:.3f}]", f"> {t2:.3f}")
    else:  # levels given as such (easy / medium / hard): no number was cut, so there is no range to show
        ranges = ("given as level",) * len(sizes)
    for level, rng in zip(sizes, ranges, strict=True):
        table.add_row(level, str(sizes[level]), rng)
    console.print(table)
    mean, median = summary["difficulty_mean"], summary["difficulty_median"]
    numbers = (f"difficulty mean {mean:.3f}, median {median:.3f}" if mean == mean and median == median
               else "no numeric difficulty")
    console.print(f"{numbers}; rule {summary['rule']}; models: {', '.join(summary['models']) or '-'}")
    if summary.get("plot_error"):
        console.print(f"[yellow]the histogram could not be drawn:[/] {summary['plot_error']}")
    plot = summary.get("plot")
    console.print(f"wrote {output}" + (f" and {plot}" if plot else ""))


def _run(settings: dict[str, Any], items_path: Path | None, output: Path, plot: Path | None, *,
         progress: bool = False) -> dict[str, Any]:
    s = validate_settings(DifficultySettings, settings, "difficulty")
    check_file_output(output, "-o")  # before scoring, not when the finished table is renamed over a folder
    return run_difficulty(s, items_path, output.parent, artifact=output.name, plot=plot if plot else False,
                          progress=progress, log=console.print)


@difficulty_app.command("score")
@with_settings(DifficultySettings, exclude=_all_but(*SCORE_SETTINGS))
def score_cmd(
    items_path: Annotated[Path, typer.Argument(metavar="ITEMS", help="Items Parquet file (multiple choice).")],
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model spec (repeat for an ensemble): a "
                                                    "local folder, a .gguf file, smollm2, or a hub name when "
                                                    "online.")] = None,
    crossfit: Annotated[list[str] | None, typer.Option(
        "--crossfit", help="Add short cross-fitted fine-tunes to the ensemble, key=value (repeatable): folds, "
        "repeats, method, max_steps, lr, model (the base; default the first --model). Training starts from "
        "medtune.training's defaults.")] = None,
    output: OutputOpt = Path("difficulty.parquet"),
    thresholds: ThresholdsOpt = None,
    quantiles: QuantilesOpt = False,
    quantile_cuts: QuantileCutsOpt = None,
    plot: PlotOpt = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    given: dict[str, Any] | None = None,
) -> None:
    """Score ITEMS with each model and compute the ensemble difficulty (1 − mean expected accuracy)."""
    settings = {**(given or {}), "source": "llm", "ensemble": list(model or []),
                **crossfit_setting(crossfit), **bucketing_settings(thresholds, quantiles, quantile_cuts)}
    if not settings["ensemble"] and "crossfit" not in settings:
        raise ConfigError("give at least one --model (or --crossfit)")
    _report(_run(settings, items_path, output, plot, progress=progress), output)


@difficulty_app.command("from-responses")
@with_settings(DifficultySettings, exclude=_all_but(*RESPONSES_SETTINGS))
def from_responses_cmd(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="Response JSON files, one per model.")],
    output: OutputOpt = Path("difficulty.parquet"),
    thresholds: ThresholdsOpt = None,
    quantiles: QuantilesOpt = False,
    quantile_cuts: QuantileCutsOpt = None,
    plot: PlotOpt = None,
    given: dict[str, Any] | None = None,
) -> None:
    """Difficulty from the paper's response files (ids lek-<question_index>, as the LEK loader assigns)."""
    settings = {**(given or {}), "source": "responses", "responses": [str(f) for f in files],
                **bucketing_settings(thresholds, quantiles, quantile_cuts)}
    _report(_run(settings, None, output, plot), output)


@difficulty_app.command("import")
@with_settings(DifficultySettings, exclude=_all_but(*IMPORT_SETTINGS))
def import_cmd(
    table: Annotated[Path, typer.Argument(metavar="TABLE", help="Difficulty table (CSV, TSV, Parquet, JSON lines).")],
    items_path: Annotated[Path, typer.Option("--items", help="Items Parquet file to join the table to.")],
    output: OutputOpt = Path("difficulty.parquet"),
    thresholds: ThresholdsOpt = None,
    quantiles: QuantilesOpt = False,
    quantile_cuts: QuantileCutsOpt = None,
    plot: PlotOpt = None,
    given: dict[str, Any] | None = None,
) -> None:
    """Import an external difficulty table (e.g. the paper's llm_difficulty_lek.csv) for ITEMS."""
    settings = {**(given or {}), "source": "file", "file": str(table),
                **bucketing_settings(thresholds, quantiles, quantile_cuts)}
    summary = _run(settings, items_path, output, plot)
    report = summary["import"]
    if report["n_unmatched_keys"] or report["n_items_without_value"]:
        console.print(f"[yellow]unmatched:[/] {report['n_unmatched_keys']} table key(s) without an item "
                      f"(first: {report['unmatched_keys'][:5]}), {report['n_items_without_value']} item(s) without "
                      f"a value (first: {report['items_without_value'][:5]})")
    n_items = report["n_matched"] + report["n_items_without_value"]
    key = settings.get("key", DifficultySettings.model_fields["key"].default)
    console.print(f"matched {report['n_matched']} of {n_items} items by {key}")
    _report(summary, output)


@difficulty_app.command("human")
@with_settings(DifficultySettings, exclude=_all_but(*HUMAN_SETTINGS))
def human_cmd(
    items_path: Annotated[Path, typer.Argument(metavar="ITEMS", help="Items Parquet file.")],
    output: OutputOpt = Path("difficulty.parquet"),
    thresholds: ThresholdsOpt = None,
    quantiles: QuantilesOpt = False,
    quantile_cuts: QuantileCutsOpt = None,
    plot: PlotOpt = None,
    given: dict[str, Any] | None = None,
) -> None:
    """Human difficulty of ITEMS (their own, or from --human-file), with its direction, as a difficulty file.

    E.g. the share of examinees who answered correctly: ``--human-file shares.csv --human-key-column id
    --human-value-column p_correct --higher-is easier``.
    """
    settings = {**(given or {}), "source": "human", **bucketing_settings(thresholds, quantiles, quantile_cuts)}
    _report(_run(settings, items_path, output, plot), output)


@difficulty_app.command("compute")
@with_settings(DifficultySettings, exclude=("thresholds", "quantiles"))
def compute_cmd(
    items_path: Annotated[Path, typer.Argument(metavar="ITEMS", help="Items Parquet file.")],
    output: OutputOpt = Path("difficulty.parquet"),
    thresholds: ThresholdsOpt = None,
    quantiles: QuantilesOpt = False,
    quantile_cuts: QuantileCutsOpt = None,
    plot: PlotOpt = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    given: dict[str, Any] | None = None,
) -> None:
    """Difficulty of ITEMS from any registered source (--source NAME, a plugin's too) with every stage setting.

    The commands above are this one with their source fixed; a source added by a plugin has no command of its
    own, so this is where it is run from the command line, with the settings a grid's ``difficulty:`` takes.
    """
    settings = {**(given or {}), **bucketing_settings(thresholds, quantiles, quantile_cuts)}
    _report(_run(settings, items_path, output, plot, progress=progress), output)


def register_difficulty_commands(app: typer.Typer) -> None:
    """Add ``medtune difficulty ...`` to the main app."""
    app.add_typer(difficulty_app, name="difficulty")
