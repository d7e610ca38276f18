"""``medtune demo``: the whole pipeline on the embedded synthetic dataset, offline on a CPU.

The demo is a list of :class:`Stage` s run in order with a rich progress display; each stage reads and
writes the shared :class:`DemoContext` (paths under ``--out`` and in-memory results) and returns a one-line
summary. The stages:

1. generate the synthetic dataset, validate it (write → read round trip; every answer stated in the
   textbook) and print its summary (the tables of ``data describe``);
2. start clustering the questions into semantic categories in a background process (embeddings → UMAP →
   HDBSCAN); it runs on the core that the sequential pretraining leaves idle;
3. run the experiment grid of the embedded config ``medtune/configs/demo.yaml`` (the same runner as
   ``medtune run``): pretrain a tiny Llama on the textbook, measure difficulty with an ensemble of short
   cross-fitted fine-tunes, build every strategy's order (given categories; human and LLM difficulty), fine-tune
   with LoRA per strategy and seed, evaluate the base and every fine-tuned model on the test set;
4. collect the clustering and compare it with the given categories (adjusted Rand index);
5. write the report (HTML, Markdown, CSV) and print its headline table.

Re-running the demo in the same folder resumes: finished cells and stages are not recomputed.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from medtune.cli.data import print_summary, textbook_path
from medtune.data.synthetic import generate_synthetic, unanswerable_items
from medtune.errors import MedtuneError
from medtune.io import write_json_atomic, write_text_atomic
from medtune.schema import read_items, write_items

DEMO_CONFIG = "demo.yaml"  # packaged in medtune/configs/

DEFAULT_OUT = Path("medtune-demo")
ITEMS_FILE = "items.parquet"  # the textbook is written beside it as items.textbook.txt


@dataclass
class DemoContext:
    out: Path
    seed: int
    console: Console
    state: dict[str, Any] = field(default_factory=dict)
    quick: bool = False  # a smoke-test grid (tests): minutes → seconds, numbers not meaningful
    cluster: bool = True

    @property
    def items_path(self) -> Path:
        return self.out / ITEMS_FILE

    @property
    def textbook_path(self) -> Path:
        return textbook_path(self.items_path)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[DemoContext], str]


def _generate(ctx: DemoContext) -> str:
    ds = generate_synthetic(seed=ctx.seed)
    ctx.state["dataset"] = ds
    n_train = sum(it.split == "train" for it in ds.items)
    return (f"{len(ds.knowledge_base.diseases)} invented diseases in {len(ds.knowledge_base.systems)} systems; "
            f"{n_train} train and {len(ds.items) - n_train} test questions; {len(ds.textbook)} textbook sentences")


def _write_and_validate(ctx: DemoContext) -> str:
    ds = ctx.state["dataset"]
    bad = unanswerable_items(ds.items, ds.textbook)
    if bad:
        raise MedtuneError(f"{len(bad)} generated questions are not answerable from the textbook (e.g. {bad[0]})")
    write_text_atomic(ctx.textbook_path, "".join(f"{s}\n" for s in ds.textbook))
    write_items(ds.items, ctx.items_path)
    write_json_atomic(ctx.out / "knowledge_base.json", ds.knowledge_base.to_dict())
    back = read_items(ctx.items_path)
    if [it.model_dump() for it in back] != [it.model_dump() for it in ds.items]:
        raise MedtuneError(f"{ctx.items_path}: items changed in the write → read round trip")
    if ctx.textbook_path.read_text(encoding="utf-8").splitlines() != ds.textbook:
        raise MedtuneError(f"{ctx.textbook_path}: textbook changed in the write → read round trip")
    ctx.state["items"] = back
    return f"round trip lossless; every answer stated in the textbook; wrote {ctx.items_path} and {ctx.textbook_path}"


def _summarise(ctx: DemoContext) -> str:
    print_summary(ctx.state["items"], ctx.console)
    return "tables above"


def demo_config_text() -> str:
    """The embedded default grid (``medtune/configs/demo.yaml``)."""
    return importlib.resources.files("medtune").joinpath("configs", DEMO_CONFIG).read_text(encoding="utf-8")


def _start_clustering(ctx: DemoContext) -> str:
    if not ctx.cluster:
        return "skipped (--no-cluster)"
    out = ctx.out / "categories.parquet"
    if out.exists():
        return f"already clustered: {out}"
    cmd = [sys.executable, "-c", "import sys; from medtune.cli import main; sys.exit(main(sys.argv[1:]))",
           "categories", str(ctx.items_path), "-o", str(out), "--plot", str(ctx.out / "categories.png"),
           "--trials", "12", "--min-clusters", "3", "--max-clusters", "12", "--seed", str(ctx.seed), "--quiet"]
    log = open(ctx.out / "categories.log", "w", encoding="utf-8")  # noqa: SIM115 - closed when the process ends
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    ctx.state["clustering"] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    return f"background process {ctx.state['clustering'][0].pid}, log in {log.name}"


def _run_grid(ctx: DemoContext) -> str:
    import yaml

    from medtune.experiments import config_from_dict, run_experiment

    data = yaml.safe_load(demo_config_text())
    data["output_dir"] = str((ctx.out / "run").resolve())
    data["seeds"] = [ctx.seed + s for s in data["seeds"]]
    for part in (*data["datasets"], *data["test_sets"]):
        part["options"]["seed"] = ctx.seed
    if ctx.quick:
        data["seeds"] = data["seeds"][:1]
        data["strategies"] = ["random", "curriculum"]
        data["models"][0]["pretrain"]["epochs"] = 2
        data["difficulty"]["crossfit"]["max_steps"] = 8
        data["training"].update(max_steps=16, epochs=1)
        data["evaluation"]["bootstrap"] = 200
    cfg = config_from_dict(data, source=f"medtune/configs/{DEMO_CONFIG}")
    progress: Progress | None = ctx.state.get("progress")
    task = None

    def log(msg: str) -> None:
        nonlocal task
        ctx.console.print(f"  {msg}", highlight=False, markup=False)
        m = re.match(r"\[(\d+)/(\d+)\]", msg)
        if progress is not None and m:
            if task is None:
                task = progress.add_task("fine-tuned and evaluated cells", total=int(m.group(2)))
            progress.update(task, completed=int(m.group(1)))

    # Cells run in two processes: their own progress bars would interleave, so they report by log lines.
    summary = run_experiment(cfg, progress=True, cell_progress=False, log=log)
    if task is not None:
        progress.remove_task(task)
    ctx.state["grid"] = summary
    counts = ", ".join(f"{n} {k}" for k, n in sorted(summary.counts.items()))
    if summary.failed:
        raise MedtuneError(f"demo grid: {len(summary.failed)} cell(s) failed ({', '.join(summary.failed)}); "
                           f"see {summary.run_dir / 'results.csv'}")
    return f"{counts}; results in {summary.results}"


def _collect_clustering(ctx: DemoContext) -> str:
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    if not ctx.cluster:
        return "skipped (--no-cluster)"
    out = ctx.out / "categories.parquet"
    started = ctx.state.pop("clustering", None)
    if started is not None:
        proc, log = started
        code = proc.wait()
        log.close()
        if code != 0:
            tail = (ctx.out / "categories.log").read_text(encoding="utf-8").strip().splitlines()[-1:]
            raise MedtuneError(f"clustering failed (exit {code}): {' '.join(tail)}")
    clusters = pd.read_parquet(out)
    given = {it.id: it.category for it in ctx.state["items"]}
    ari = adjusted_rand_score([given[i] for i in clusters["id"]], clusters["category"])
    names = clusters.drop_duplicates("category")["name"].head(4).tolist()
    return (f"{clusters['category'].nunique()} clusters (e.g. {'; '.join(names)}); agreement with the given organ "
            f"systems ARI {ari:.2f}; {out}, plot {ctx.out / 'categories.png'}")


def _report(ctx: DemoContext) -> str:
    from medtune.experiments import write_report

    rep = write_report(ctx.state["grid"].run_dir)
    ctx.state["report"] = rep
    return f"{rep.html}"


STAGES: list[Stage] = [
    Stage("generate synthetic dataset", _generate),
    Stage("validate and write items + textbook", _write_and_validate),
    Stage("summarise dataset", _summarise),
    Stage("cluster questions (background)", _start_clustering),
    Stage("run the grid: pretrain, difficulty, orders, LoRA fine-tunes, evaluation", _run_grid),
    Stage("semantic categories by clustering", _collect_clustering),
    Stage("write the report", _report),
]


def run_demo(out: Path = DEFAULT_OUT, seed: int = 0, console: Console | None = None,
             stages: list[Stage] | None = None, *, quick: bool = False, cluster: bool = True) -> DemoContext:
    """Run the demo stages in order; a failing stage stops the run with its error."""
    console = console or Console(highlight=False)
    ctx = DemoContext(out=Path(out), seed=seed, console=console, quick=quick, cluster=cluster)
    ctx.out.mkdir(parents=True, exist_ok=True)
    stages = STAGES if stages is None else stages
    columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn())
    # Model-loading bars and library notices would drown the demo's own lines (also in the worker processes).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with Progress(*columns, console=console, transient=True) as progress:
        ctx.state["progress"] = progress
        overall = progress.add_task("medtune demo", total=len(stages))
        for i, stage in enumerate(stages, start=1):
            progress.update(overall, description=f"[{i}/{len(stages)}] {stage.name}")
            start = time.perf_counter()
            summary = stage.run(ctx)
            progress.console.print(f"[green]✓[/] {stage.name} ({time.perf_counter() - start:.1f} s): {summary}",
                                   soft_wrap=True)
            progress.advance(overall)
    rep = ctx.state.get("report")
    if rep is not None:
        console.print("\n[bold]Headline[/] (accuracy on the synthetic test set; gain over random shuffle, paired "
                      "bootstrap p):")
        console.print(rep.headline_text(), highlight=False, markup=False, soft_wrap=True)
        console.print(f"\nreport: {rep.html}")
    console.print(f"demo outputs in {ctx.out}")
    return ctx


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the main app."""

    @app.command("demo")
    def demo_cmd(
        out: Annotated[Path, typer.Option(help="Folder for the demo's outputs.")] = DEFAULT_OUT,
        seed: Annotated[int, typer.Option(help="Seed of the generated dataset and of every stage.")] = 0,
        quick: Annotated[bool, typer.Option(help="A smoke-test grid (1 seed, 2 strategies, few steps): "
                                                 "checks the wiring in about a minute; numbers not meaningful.")
                         ] = False,
        cluster: Annotated[bool, typer.Option(help="Also cluster the questions into semantic categories.")] = True,
    ) -> None:
        """Run the whole pipeline on the embedded synthetic dataset (CPU, offline, under 10 minutes on 2 cores).

        Generates the dataset, pretrains a tiny Llama on its textbook, measures difficulty with a small
        ensemble, clusters the questions, builds every strategy's order, fine-tunes with LoRA per strategy and
        seed, evaluates, and writes a report. The grid is medtune/configs/demo.yaml.
        """
        run_demo(out, seed, quick=quick, cluster=cluster)
