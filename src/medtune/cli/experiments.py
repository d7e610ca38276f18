"""``medtune run CONFIG`` (a whole grid, resumable) and ``medtune report RUN_DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from medtune.experiments import ExperimentSettings, RunSummary
    from medtune.experiments.grid import Cell

console = Console()

_STATUS_STYLE = {"done": "green", "failed": "red", "stale": "yellow", "pending": "dim"}


def run_command(
    config: Annotated[Path, typer.Argument(help="experiment YAML (see configs/)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the expanded grid and what is done; run nothing")]
    = False,
    executor: Annotated[str | None, typer.Option(help="local, pool or ray (default: the config's executor.kind)")]
    = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="run directory (overrides output_dir)")]
    = None,
    retry_failed: Annotated[bool, typer.Option(help="run cells that failed before again")] = True,
    report: Annotated[bool, typer.Option(help="write the report when the grid is done")] = True,
    progress: Annotated[bool, typer.Option(help="progress bars inside cells")] = False,
) -> None:
    """Run every cell of an experiment grid; finished cells are skipped, failed ones recorded and retried.

    Exit code 0 when every cell is done, 1 when some cell failed (its error is in the results and the
    report), 2 for a bad config.
    """
    from medtune.errors import ConfigError
    from medtune.experiments import load_config, run_experiment

    if executor is not None and executor not in ("local", "pool", "ray"):
        raise ConfigError(f"--executor must be local, pool or ray, got '{executor}'")
    if output is not None:
        from medtune.io import check_folder_output

        check_folder_output(output, "-o")
    overrides = {"output_dir": str(output.resolve())} if output else None
    cfg = load_config(config, overrides=overrides)
    summary = run_experiment(cfg, executor=executor, dry_run=dry_run, retry_failed=retry_failed,
                             progress=progress, log=lambda s: console.print(s, highlight=False))
    if dry_run:
        _print_grid(summary, cfg)
        return
    counts = summary.counts
    console.print(f"grid finished: {counts.get('done', 0)} done, {counts.get('failed', 0)} failed "
                  f"({len(summary.ran)} ran, {len(summary.skipped)} skipped as already done)")
    console.print(f"results: {summary.results}")
    for cell_id in summary.failed:
        console.print(f"[red]failed[/]: {cell_id}", highlight=False)
    if report:
        from medtune.report import write_report

        rep = write_report(summary.run_dir)
        if not rep.sweep.empty:
            console.print("settings chosen per arm on validation items (scores in %):")
            console.print(rep.sweep_text(), highlight=False, markup=False, soft_wrap=True)
        if not rep.methods.empty:
            console.print("methods against the baseline method (seed-aware 95% intervals, Holm-adjusted p):")
            console.print(rep.methods_text(), highlight=False, markup=False, soft_wrap=True)
        console.print(f"report: {rep.html}")
    if summary.failed:  # the grid went on, but a script or CI must see that something failed
        raise typer.Exit(1)


def _precision(dtype: str | None, quantization: str | None) -> str:
    if dtype is None and quantization is None:
        return "-"
    return f"{dtype or 'server'}" + (f" + {quantization}" if quantization else "")


def _schedule(cfg: ExperimentSettings, cell: Cell) -> str:
    """What a reviewer checks first: learning rate, batch × accumulation, schedule (empty for a base cell)."""
    if cell.is_base:
        return "-"
    setting = cfg.setting(cell.method, cell.setting)
    t = cfg.training_settings(cell.model, cell.method, cell.seed, setting=setting)
    warm = f", warm-up {t.warmup_steps}" if t.warmup_steps else ""
    epochs = f", {setting['epochs']} epochs" if "epochs" in setting else ""
    return f"lr {t.lr:g}, batch {t.batch_size}×{t.grad_accum}, {t.scheduler}{warm}{epochs}"


def _print_grid(summary: RunSummary, cfg: ExperimentSettings) -> None:
    from rich import box

    from medtune.experiments.runner import cell_precision, stored_artifacts

    table = Table(title=f"{cfg.name}: {len(summary.statuses)} cells → {summary.run_dir}", box=box.SIMPLE_HEAD,
                  caption="cell: model__data[-fFOLD]__method__strategy__difficulty__seed[__setting]; train / eval: "
                          "precision")
    table.add_column("#", justify="right")
    table.add_column("cell", overflow="fold")
    table.add_column("train", overflow="fold")
    table.add_column("eval", overflow="fold")
    table.add_column("schedule", overflow="fold")
    table.add_column("tested on", overflow="fold")
    table.add_column("status", no_wrap=True)
    for i, s in enumerate(summary.statuses, 1):
        style = _STATUS_STYLE.get(s.status, "")
        p = cell_precision(cfg, s.cell)
        tests = cfg.test_sets_for(s.cell.dataset, s.cell.fold, base=s.cell.is_base)
        table.add_row(str(i), s.cell.id, _precision(p["train_dtype"], p["train_quantization"]),
                      _precision(p["eval_dtype"], p["eval_quantization"]), _schedule(cfg, s.cell),
                      ", ".join(t.label + (f" (fold {t.fold})" if t.fold is not None else "") for t in tests),
                      f"[{style}]{s.status}[/]" if style else s.status)
    # Into a file or a pipe the table is printed whole (ids are what a user greps for); a terminal folds it.
    longest = max((len(s.cell.id) for s in summary.statuses), default=10)
    out = console if console.is_terminal else Console(width=max(console.width, longest + 140), highlight=False)
    out.print(table)
    console.print("train / eval: the precision a cell trains and is evaluated in, resolved for this machine (dtype "
                  "auto: bf16 on a GPU with bf16, fp32 on a CPU; + 4bit: a quantized base); a fine-tuned model is "
                  "evaluated on the weights it was trained with", highlight=False)
    _print_memory(cfg)
    from medtune.experiments.grid import sweep_lines

    for line in sweep_lines(cfg, [s.cell for s in summary.statuses]):
        console.print(line, highlight=False, markup=False)
    counts = summary.counts
    console.print("status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), highlight=False)
    stages = stored_artifacts(cfg)
    if stages:
        console.print("stored stage artifacts: " + ", ".join(f"{k} {v}" for k, v in stages.items()),
                      highlight=False)


def _print_memory(cfg: ExperimentSettings) -> None:
    """The memory plan per model × method against the GPU its cells get (nothing on a CPU machine that states
    no `training.gpu_memory`)."""
    from medtune.experiments.checks import memory_plans
    from medtune.training.memory_plan import GIB

    for cp in memory_plans(cfg):
        p = cp.plan
        gpus = f" on each of {p.world_size} GPUs" if p.world_size > 1 else ""
        setting = f" [{cp.cells[0].setting}]" if cp.cells[0].setting else ""
        console.print(f"memory: {cp.model} × {cp.method}{setting}: ~{p.total / GIB:.1f} GiB of "
                      f"{(p.gpu_bytes or 0) / GIB:.1f} GiB per GPU{gpus} ({p.precision}, peak in the {p.peak})"
                      + ("" if p.fits else " [does not fit; memory_check is off]"), highlight=False, markup=False)


def report(
    run_dir: Annotated[Path, typer.Argument(help="run directory of `medtune run`")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="report folder (default RUN_DIR/report)")]
    = None,
) -> None:
    """Write the report of a run: HTML (self-contained), Markdown and CSV tables."""
    from medtune.io import check_folder_output
    from medtune.report import write_report

    if output is not None:
        check_folder_output(output, "-o")
    rep = write_report(run_dir, output)
    if not rep.sweep.empty:
        console.print("settings chosen per arm on validation items (scores in %):")
        console.print(rep.sweep_text(), highlight=False, markup=False, soft_wrap=True)
    if not rep.methods.empty:
        console.print("methods against the baseline method (seed-aware 95% intervals, Holm-adjusted p):")
        console.print(rep.methods_text(), highlight=False, markup=False, soft_wrap=True)
    console.print(f"report: {rep.html}")
    console.print(f"tables: {rep.markdown}, {rep.out_dir / 'tables'}")


def register_experiments_commands(app: typer.Typer) -> None:
    """Add ``run`` and ``report`` to the main app."""
    app.command("run")(run_command)
    app.command("report")(report)
