"""The demo: the whole pipeline on the embedded synthetic dataset, offline on a CPU (what ``medtune demo`` runs).

The demo is the embedded grid config ``medtune/configs/demo.yaml`` run by the same runner as ``medtune run``,
plus a few steps around it that show the data and the clustering. It is a list of :class:`Stage` s run in order;
each reads and writes the shared :class:`DemoContext` (paths under ``--out`` and in-memory results) and returns
a one-line summary; the caller (the CLI) decides how to display them. The stages:

1. generate the synthetic dataset, validate it (write → read round trip; every answer stated in the
   textbook) and print its summary (the tables of ``data describe``);
2. start clustering the questions into semantic categories in a background process (embeddings → UMAP →
   HDBSCAN); it runs on the core that the sequential pretraining leaves idle;
3. run the experiment grid of the embedded config ``medtune/configs/demo.yaml`` (the same runner as
   ``medtune run``): pretrain a tiny Llama on the textbook, measure difficulty with an ensemble of short
   cross-fitted fine-tunes, build every strategy's order (given categories; human and LLM difficulty), fine-tune
   per strategy and seed (one pass over the training questions in the strategy's order; an A/A arm repeats
   random shuffle with orders of its own), evaluate the base and every fine-tuned model on the test set;
4. collect the clustering and compare it with the given categories (adjusted Rand index);
5. write the report (HTML, Markdown, CSV) and print its headline table.

Re-running the demo in the same folder resumes: finished cells and stages are not recomputed.
"""

from __future__ import annotations

import importlib.resources
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtune.data.synthetic_questions import generate_synthetic, unanswerable_items
from medtune.errors import MedtuneError
from medtune.io import write_json_atomic
from medtune.schema import read_items, write_items
from medtune.textbook import read_textbook, textbook_path, write_textbook

DEMO_CONFIG = "demo.yaml"  # packaged in medtune/configs/

DEFAULT_OUT = Path("medtune-demo")
ITEMS_FILE = "items.parquet"  # the textbook is written beside it as items.textbook.txt


@dataclass
class DemoContext:
    out: Path
    seed: int
    show: Callable[[Any], None] = print  # displays a table or a line (the CLI passes a rich console's print)
    log: Callable[[str], None] = print  # one progress line of the grid, e.g. "[3/19] cell: done (...)"
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


def demo_dataset_options(quick: bool = False) -> dict[str, Any]:
    """The generator options of the demo grid's training set (its seed aside): the data the grid trains on.

    The smoke-test grid (``quick``) takes the generator's default sizes: it checks wiring, not learning.
    """
    import yaml

    if quick:
        return {}
    options = dict(yaml.safe_load(demo_config_text())["datasets"][0].get("options") or {})
    options.pop("seed", None)
    return options


def _generate(ctx: DemoContext) -> str:
    ds = generate_synthetic(seed=ctx.seed, **demo_dataset_options(ctx.quick))
    ctx.state["dataset"] = ds
    n_train = sum(it.split == "train" for it in ds.items)
    return (f"{len(ds.knowledge_base.diseases)} invented diseases in {len(ds.knowledge_base.systems)} systems; "
            f"{n_train} train and {len(ds.items) - n_train} test questions; {len(ds.textbook)} textbook sentences")


def _write_and_validate(ctx: DemoContext) -> str:
    ds = ctx.state["dataset"]
    bad = unanswerable_items(ds.items, ds.textbook)
    if bad:
        raise MedtuneError(f"{len(bad)} generated questions are not answerable from the textbook (e.g. {bad[0]})")
    write_textbook(ctx.items_path, ds.textbook)
    write_items(ds.items, ctx.items_path)
    write_json_atomic(ctx.out / "knowledge_base.json", ds.knowledge_base.to_dict())
    back = read_items(ctx.items_path)
    if [it.model_dump() for it in back] != [it.model_dump() for it in ds.items]:
        raise MedtuneError(f"{ctx.items_path}: items changed in the write → read round trip")
    if read_textbook(ctx.items_path) != ds.textbook:
        raise MedtuneError(f"{ctx.textbook_path}: textbook changed in the write → read round trip")
    ctx.state["items"] = back
    return f"round trip lossless; every answer stated in the textbook; wrote {ctx.items_path} and {ctx.textbook_path}"


def _summarise(ctx: DemoContext) -> str:
    from medtune.data.describe import summary_tables

    for table in summary_tables(ctx.state["items"]):
        ctx.show(table)
    return "tables above"


def demo_config_text() -> str:
    """The embedded default grid (``medtune/configs/demo.yaml``)."""
    return importlib.resources.files("medtune").joinpath("configs", DEMO_CONFIG).read_text(encoding="utf-8")


def _cluster_job(items_path: str, out_dir: str, seed: int, log_path: str) -> None:
    """The background clustering (a separate process): the categories stage on the demo's questions."""
    import contextlib

    from medtune.categories.stage import CategorySettings, run_categories

    with open(log_path, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        settings = CategorySettings(method="cluster", trials=12, min_clusters=3, max_clusters=12, seed=seed)
        run_categories(settings, Path(items_path), Path(out_dir))


def _start_clustering(ctx: DemoContext) -> str:
    if not ctx.cluster:
        return "skipped (--no-cluster)"
    out = ctx.out / "categories.parquet"
    if out.exists():
        return f"already clustered: {out}"
    import multiprocessing

    # One thread each for numba/BLAS in the child: it runs on the core the sequential pretraining leaves idle.
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    os.environ.update({"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"})
    try:
        proc = multiprocessing.get_context("spawn").Process(
            target=_cluster_job, args=(str(ctx.items_path), str(ctx.out), ctx.seed, str(ctx.out / "categories.log")),
            daemon=True)
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    ctx.state["clustering"] = proc
    return f"background process {proc.pid}, log in {ctx.out / 'categories.log'}"


def _run_grid(ctx: DemoContext) -> str:
    import yaml

    from medtune.experiments import config_from_dict, run_experiment

    data = yaml.safe_load(demo_config_text())
    data["output_dir"] = str((ctx.out / "run").resolve())
    data["seeds"] = [ctx.seed + s for s in data["seeds"]]
    for part in (*data["datasets"], *data["test_sets"]):
        part["options"] = {**demo_dataset_options(ctx.quick), "seed": ctx.seed}
    if ctx.quick:
        data["seeds"] = data["seeds"][:1]
        data["strategies"] = ["random", "curriculum"]
        data["models"][0]["pretrain"]["epochs"] = 2
        data["difficulty"]["crossfit"]["max_steps"] = 8
        data["training"].update(max_steps=16, epochs=1)
        data["evaluation"]["bootstrap"] = 200
    cfg = config_from_dict(data, source=f"medtune/configs/{DEMO_CONFIG}")
    # Cells run in two processes: their own progress bars would interleave, so they report by log lines.
    summary = run_experiment(cfg, progress=True, cell_progress=False, log=ctx.log)
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
    proc = ctx.state.pop("clustering", None)
    if proc is not None:
        proc.join()
        code = proc.exitcode
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
    from medtune.report import write_report

    rep = write_report(ctx.state["grid"].run_dir)
    ctx.state["report"] = rep
    return f"{rep.html}"


STAGES: list[Stage] = [
    Stage("generate synthetic dataset", _generate),
    Stage("validate and write items + textbook", _write_and_validate),
    Stage("summarise dataset", _summarise),
    Stage("cluster questions (background)", _start_clustering),
    Stage("run the grid: pretrain, difficulty, orders, fine-tunes, evaluation", _run_grid),
    Stage("semantic categories by clustering", _collect_clustering),
    Stage("write the report", _report),
]


def run_demo(out: Path = DEFAULT_OUT, seed: int = 0, *, stages: list[Stage] | None = None, quick: bool = False,
             cluster: bool = True, show: Callable[[Any], None] = print, log: Callable[[str], None] = print,
             on_stage: Callable[[int, int, Stage, str, float], None] | None = None,
             before_stage: Callable[[int, int, Stage], None] | None = None) -> DemoContext:
    """Run the demo stages in order; a failing stage stops the run with its error.

    ``before_stage(i, n, stage)`` and ``on_stage(i, n, stage, summary, seconds)`` let a caller display progress.
    """
    ctx = DemoContext(out=Path(out), seed=seed, show=show, log=log, quick=quick, cluster=cluster)
    ctx.out.mkdir(parents=True, exist_ok=True)
    stages = STAGES if stages is None else stages
    # Model-loading bars and library notices would drown the demo's own lines (also in the worker processes).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for i, stage in enumerate(stages, start=1):
        if before_stage is not None:
            before_stage(i, len(stages), stage)
        start = time.perf_counter()
        summary = stage.run(ctx)
        if on_stage is not None:
            on_stage(i, len(stages), stage, summary, time.perf_counter() - start)
    return ctx
