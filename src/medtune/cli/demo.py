"""``medtune demo``: the whole pipeline on the embedded synthetic dataset, offline on a CPU.

Argument handling and display only: the demo itself (the embedded grid plus its data and clustering steps) is
:func:`medtune.demo.run_demo`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from medtune.cli.options import SEED, bounded
from medtune.demo import DEFAULT_OUT, STAGES, Stage, run_demo


def demo(out: Path = DEFAULT_OUT, seed: int = 0, *, quick: bool = False, cluster: bool = True,
         console: Console | None = None, stages: list[Stage] | None = None) -> None:
    """Run the demo with a rich progress display and print its headline."""
    from medtune.io import check_folder_output

    check_folder_output(out, "--out")
    console = console or Console(highlight=False)
    columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        overall = progress.add_task("medtune demo", total=len(stages if stages is not None else STAGES))
        cells: dict[str, int] = {}

        def log(msg: str) -> None:
            progress.console.print(f"  {msg}", highlight=False, markup=False)
            m = re.match(r"\[(\d+)/(\d+)\]", msg)
            if m:
                if "task" not in cells:
                    cells["task"] = progress.add_task("fine-tuned and evaluated cells", total=int(m.group(2)))
                progress.update(cells["task"], completed=int(m.group(1)))

        def before(i: int, n: int, stage: Stage) -> None:
            progress.update(overall, total=n, description=f"[{i}/{n}] {stage.name}")

        def after(i: int, n: int, stage: Stage, summary: str, seconds: float) -> None:
            if "task" in cells:
                progress.remove_task(cells.pop("task"))
            progress.console.print(f"[green]✓[/] {stage.name} ({seconds:.1f} s): {summary}", soft_wrap=True)
            progress.advance(overall)

        ctx = run_demo(out, seed, stages=stages, quick=quick, cluster=cluster, show=progress.console.print, log=log,
                       before_stage=before, on_stage=after)
    rep = ctx.state.get("report")
    if rep is not None:
        console.print("\n[bold]Headline[/] (accuracy on the synthetic test set; gain over random shuffle in pp with "
                      "its 95% interval over seeds, its p-value from a paired t-test on the seeds, Holm-adjusted "
                      "across the strategies, and mdg, the smallest gain these seeds detect with 80% power):")
        console.print(rep.headline_text(), highlight=False, markup=False, soft_wrap=True)
        for note in rep.headline_notes:
            console.print(f"\n{note}", highlight=False, markup=False, soft_wrap=True)
        console.print(f"\nreport: {rep.html}")
    console.print(f"demo outputs in {ctx.out}")


def register_demo_commands(app: typer.Typer) -> None:
    """Add the ``demo`` command to the main app."""

    @app.command("demo")
    def demo_cmd(
        out: Annotated[Path, typer.Option(help="Folder for the demo's outputs.")] = DEFAULT_OUT,
        seed: Annotated[int, typer.Option(help="Seed of the generated dataset and of every stage.",
                                          callback=bounded(**SEED))] = 0,
        quick: Annotated[bool, typer.Option(help="A smoke-test grid (1 seed, 2 strategies, few steps): "
                                                 "checks the wiring in about a minute; numbers not meaningful.")
                         ] = False,
        cluster: Annotated[bool, typer.Option(help="Also cluster the questions into semantic categories.")] = True,
    ) -> None:
        """Run the whole pipeline on the embedded synthetic dataset (CPU, offline, under 10 minutes on 2 cores).

        Generates the dataset, pretrains a tiny Llama on its textbook, measures difficulty with a small
        ensemble, clusters the questions, builds every strategy's order, fine-tunes per strategy and seed (one
        pass over the training questions in that order, an A/A arm beside them), evaluates, and writes a report.
        The grid is medtune/configs/demo.yaml.
        """
        demo(out, seed, quick=quick, cluster=cluster)
