"""``medtune data``: load a source into items.parquet, describe it, prepare it, check train/test leakage.

Every command reads and writes the artifacts of docs/ARTIFACTS.md. A bad input file stops the command with
one line naming file, record and field (exit code 2) before anything is written: outputs are written only
after the whole input has been read and validated, and atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medtune.cli.options import COUNT, SEED, SHOWN, bounded, schema_bounded, with_settings
from medtune.data import DataSettings, available_loaders, get_loader, load_data
from medtune.data.describe import summary_tables
from medtune.data.prepare import PrepareSettings, leakage_report, run_prepare
from medtune.data.stage import write_data
from medtune.errors import ConfigError
from medtune.io import check_file_output, write_json_atomic
from medtune.schema import Item, read_items
from medtune.settings import validate_settings
from medtune.textbook import textbook_path

data_app = typer.Typer(
    help="Load medical QA sources into the item schema, describe, prepare and check for train/test leakage.",
    no_args_is_help=True,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def parse_option_pairs(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to loader options; values are read as JSON when they parse (numbers, lists, bools)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--option")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


# ----------------------------------------------------------------------------------------------------------
# Summary tables (shared with `medtune demo`)


def print_summary(items: list[Item], out: Console | None = None) -> None:
    out = out or console
    for table in summary_tables(items):
        out.print(table)


# ----------------------------------------------------------------------------------------------------------
# Commands


@data_app.command("sources")
def sources_cmd() -> None:
    """List the registered data sources (loaders)."""
    table = Table(title="Data sources", title_justify="left")
    table.add_column("source")
    table.add_column("path")
    table.add_column("description")
    for name, spec in available_loaders().items():
        table.add_row(name, "file/folder" if spec.needs_path else "none", spec.description)
    console.print(table)


def _split_order(splits: dict[str, int]) -> str:
    return ", ".join(f"{s}={n}" for s, n in splits.items())


def load_message(summary: dict[str, Any], output: Path, textbook: list[str] | None, facts: Any = None) -> str:
    """The one line ``data load`` prints: how many items of each split went into which file.

    A file holding several splits says so, because later stages then pick one (training: the train split).
    """
    splits = summary["splits"]
    counts = _split_order(splits)
    msg = f"wrote {summary['n_items']} items to {output} ("
    msg += f"{len(splits)} splits in one file: {counts})" if len(splits) > 1 else f"{counts})"
    if summary["skipped"]:
        msg += f"; skipped {summary['skipped']} bad records"
    if textbook is not None:
        msg += f"; textbook ({len(textbook)} sentences) to {textbook_path(output)}"
    if facts is not None:
        from medtune.factsheet import factsheet_path

        msg += f"; fact sheet ({len(facts.subjects)} subjects) to {factsheet_path(output)}"
    return msg


def _loader_options(source: str, split: str | None, seed: int | None, option: list[str] | None,
                    columns: dict[str, Any]) -> dict[str, Any]:
    """The loader's keyword options from ``--option`` pairs and the dedicated flags (the flags win)."""
    opts = parse_option_pairs(option or [])
    spec = get_loader(source)  # unknown source: fail before anything else
    takes_split = spec.options is None or "split" in spec.options
    if split is not None and takes_split:
        opts["split"] = split  # the split name for files whose name does not say it
    if seed is not None:
        opts["seed"] = seed
    opts.update({k: v for k, v in columns.items() if v is not None})
    return opts


@data_app.command("load")
@with_settings(DataSettings, exclude=("name", "source", "path", "split", "options", "mix", "seed", "replace", "total"))
def load_cmd(
    source: Annotated[str, typer.Argument(help="Registered source name (see `medtune data sources`).")],
    path: Annotated[Path | None, typer.Argument(help="File or folder to read (none for synthetic).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Items Parquet file to write.")] = Path(
        "items.parquet"),
    split: Annotated[str | None, typer.Option(help="Keep only this split; also the split name given to the "
                                                    "loader (for files whose name does not say it).")] = None,
    seed: Annotated[int | None, typer.Option(help="Generator seed (synthetic).", callback=bounded(**SEED))] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Loader option KEY=VALUE (repeatable); "
                                                     "VALUE is parsed as JSON when possible.")] = None,
    question_col: Annotated[str | None, typer.Option(help="Tabular: question column.")] = None,
    options_cols: Annotated[str | None, typer.Option(help="Tabular: option columns, comma-separated "
                                                     "(or one list-valued column).")] = None,
    answer_col: Annotated[str | None, typer.Option(help="Tabular: answer column.")] = None,
    answer_format: Annotated[str | None, typer.Option(help="Tabular: letter, index0, index1, text or auto "
                                                      "(default: auto).")] = None,
    id_col: Annotated[str | None, typer.Option(help="Tabular: id column.")] = None,
    category_col: Annotated[str | None, typer.Option(help="Tabular: category column.")] = None,
    given: dict[str, Any] | None = None,
) -> None:
    """Load SOURCE [PATH] into a validated items Parquet file (synthetic: its textbook goes beside it)."""
    columns = {"question_col": question_col, "answer_col": answer_col, "answer_format": answer_format,
               "id_col": id_col, "category_col": category_col,
               "options_cols": [c.strip() for c in options_cols.split(",") if c.strip()] if options_cols else None}
    check_file_output(output, "-o")  # before loading, which can take long
    opts = _loader_options(source, split, seed, option, columns)
    settings = validate_settings(DataSettings, {"source": source, "path": str(path) if path is not None else None,
                                                "split": split, "options": opts, **(given or {})})
    data = load_data(settings)
    for exc in data.skipped:  # escaped: a message quoting "[...]" from the file is not console markup
        err_console.print(f"skipped: {escape(str(exc))}", soft_wrap=True)
    summary = write_data(data, output)
    console.print(escape(load_message(summary, output, data.textbook, data.facts)), soft_wrap=True)


@data_app.command("describe")
def describe_cmd(
    file: Annotated[Path, typer.Argument(help="Items Parquet file.")],
    max_categories: Annotated[int, typer.Option(help="Show at most this many categories.",
                                                callback=bounded(**COUNT))] = 30,
) -> None:
    """Summarise an items file: counts per split, category, answer position, option count, difficulty; lengths."""
    items = read_items(file)
    for table in summary_tables(items, max_categories=max_categories):
        console.print(table)


@data_app.command("prepare")
@with_settings(PrepareSettings, rename={"clean_explanations": "--clean", "near_duplicates": "--near"})
def prepare_cmd(
    file: Annotated[Path, typer.Argument(help="Items Parquet file to prepare.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Prepared items Parquet file.")],
    keep_multi: Annotated[bool, typer.Option(help="Keep multi-answer questions (the same as "
                                             "--no-single-answer).")] = False,
    report: Annotated[Path | None, typer.Option(help="Write the preparation report (JSON) here.")] = None,
    show: Annotated[int, typer.Option(help="List at most this many removed duplicates.",
                                      callback=bounded(**SHOWN))] = 20,
    given: dict[str, Any] | None = None,
) -> None:
    """Filter, clean, de-duplicate and select items (single-answer questions only by default)."""
    settings = validate_settings(PrepareSettings, {**(given or {}), **({"single_answer": False} if keep_multi else {})},
                                 "options")
    check_file_output(output, "-o")
    if report is not None:
        check_file_output(report, "--report")
    n_before = len(read_items(file))
    kept, rep = run_prepare(settings, file, output)
    steps = Table(title=f"Preparation of {file}", title_justify="left")
    for col, just in (("step", "left"), ("before", "right"), ("after", "right"), ("detail", "left")):
        steps.add_column(col, justify=just)
    for s in rep.steps:
        steps.add_row(s.name, str(s.before), str(s.after), s.detail)
    console.print(steps)
    if rep.duplicates and show > 0:
        console.print(_pairs_table(f"Removed duplicates ({len(rep.duplicates)})", ("removed", "duplicate of"),
                                   rep.duplicates[:show]))
    if report is not None:
        write_json_atomic(report, rep.to_dict())
    console.print(f"wrote {len(kept)} of {n_before} items to {output}")


def _pairs_table(title: str, names: tuple[str, str], pairs: list[Any]) -> Table:
    """Duplicate pairs (removed or leaked item, the item it duplicates, exact/near, similarity) as a table."""
    table = Table(title=title, title_justify="left")
    for col in (*names, "kind", "similarity"):
        table.add_column(col)
    for p in pairs:
        table.add_row(p.removed, p.kept, p.kind, f"{p.similarity:.3f}")
    return table


@data_app.command("leakage")
def leakage_cmd(
    train: Annotated[Path, typer.Argument(help="Training items Parquet file.")],
    test: Annotated[Path, typer.Argument(help="Test items Parquet file (may be the same file with --*-split).")],
    threshold: Annotated[float, typer.Option(help="Jaccard similarity of word 3-grams for near duplicates.",
                                             callback=schema_bounded(PrepareSettings, "near_threshold"))] = 0.8,
    train_split: Annotated[str | None, typer.Option(help="Use only this split of TRAIN.")] = None,
    test_split: Annotated[str | None, typer.Option(help="Use only this split of TEST.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report (JSON) here.")] = None,
    show: Annotated[int, typer.Option(help="List at most this many pairs.", callback=bounded(**SHOWN))] = 50,
    fail_on_leak: Annotated[bool, typer.Option(help="Exit with code 1 when any test item leaks.")] = False,
) -> None:
    """Report test questions that are exact or near duplicates of training questions."""
    train_items = read_items(train)
    test_items = read_items(test)
    if train_split:
        train_items = [it for it in train_items if it.split == train_split]
    if test_split:
        test_items = [it for it in test_items if it.split == test_split]
    rep = leakage_report(train_items, test_items, threshold=threshold)
    d = rep.to_dict()
    if rep.pairs and show > 0:
        console.print(_pairs_table(f"Leaked pairs ({len(rep.pairs)})", ("test id", "train id"), rep.pairs[:show]))
    summary = Table(title="Leakage", title_justify="left")
    for col in ("train", "test", "exact pairs", "near pairs", "test items leaked", "share"):
        summary.add_column(col, justify="right")
    share = d["n_test_leaked"] / d["n_test"] if d["n_test"] else 0.0
    summary.add_row(str(d["n_train"]), str(d["n_test"]), str(d["n_exact"]), str(d["n_near"]),
                    str(d["n_test_leaked"]), f"{100 * share:.1f}%")
    console.print(summary)
    if json_out is not None:
        write_json_atomic(json_out, {"train": str(train), "test": str(test), **d})
    if fail_on_leak and rep.pairs:
        raise typer.Exit(1)


@data_app.command("mix")
def mix_cmd(
    parts: Annotated[list[str], typer.Argument(help="Items files with a share or a count: PATH:SHARE (a.parquet:0.5), "
                                               "PATH:COUNT (a.parquet:300) or NAME=PATH:... (NAME is the part's "
                                               "label in meta.source; default: the file's stem).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Mixed items Parquet file to write.")],
    seed: Annotated[int, typer.Option(help="Seed of the draw.", callback=bounded(**SEED))] = 0,
    replace: Annotated[bool, typer.Option("--replace", help="Draw with replacement (an item drawn again gets the "
                                          "id ID#2, ...).")] = False,
    total: Annotated[int | None, typer.Option(help="Items in the mix (default: as many as the share parts allow "
                                              "without replacement, plus the counts).",
                                              callback=bounded(**COUNT))] = None,
    split: Annotated[str | None, typer.Option(help="Split taken from each file (default: train when a file holds "
                                              "several, else all of it).")] = None,
) -> None:
    """Mix items files by share or count into one items file (seeded, exact counts; see medtune.data.mix)."""
    from medtune.data.mix import MixSettings, mix_files, parse_part
    from medtune.data.stage import LoadedData, mix_metadata

    check_file_output(output, "-o")
    try:
        settings = MixSettings(parts=[parse_part(p) for p in parts], seed=seed, replace=replace, total=total,
                               split=split)
    except ValidationError as exc:  # the rules of the whole mix: labels, the sum of the shares
        raise ConfigError(exc.errors()[0]["msg"].removeprefix("Value error, ").removeprefix("parts: ")) from None
    mixed = mix_files(settings)
    write_data(LoadedData(mixed.items, textbook=mixed.textbook, n_loaded=len(mixed.items),
                          metadata=mix_metadata(mixed)), output)
    drawn = ", ".join(f"{label}={n}" for label, n in mixed.counts.items())
    console.print(escape(f"wrote {len(mixed.items)} items to {output} ({drawn}; seed {seed}"
                         f"{', with replacement' if replace else ''})"), soft_wrap=True)


def register_data_commands(app: typer.Typer) -> None:
    """Add the ``data`` sub-app to the main app."""
    app.add_typer(data_app, name="data")
