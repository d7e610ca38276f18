"""The report of a grid run: which strategy beats random shuffle, by how much, with what confidence.

``medtune report RUN_DIR`` reads the run's results table and each cell's predictions and writes
``RUN_DIR/report/``: ``report.html`` (self-contained: figures embedded as base64 PNG, inline CSS, no
external asset), ``report.md`` and ``tables/*.csv``. Every number comes from the run's files.

Statistics (all from :mod:`medtune.stats` and :mod:`medtune.evaluation`, nothing re-implemented here):

- accuracy per model × training set × method × difficulty source × strategy × test set: the mean over
  seeds, with a 95% percentile-bootstrap CI over *items* of the seed-averaged per-item correctness, and
  the calibration of the option probabilities (ECE, Brier score; mean over seeds);
- gain over random shuffle, with the training run as the unit (runs of one strategy differ with the seed
  about as much as strategies do): per seed, the strategy's cell against the random cell of the same seed,
  on the same items; a paired t-test on the per-seed gains gives the p-value and the 95% interval, and Holm's
  adjustment runs across the strategies of one model × training set × method × test set (the heatmap stars
  and the headline use the adjusted p); a two-stage (seeds, then items) bootstrap is shown beside it;
- within-run tests, labelled as such: McNemar and the item bootstrap on the pooled (seed, item) pairs,
  which treat each run as a fixed system and so ignore run-to-run variance; with one seed they are all
  there is, and the report says so;
- power: the minimum detectable gain of the grid as run and the seeds a 1 pp gain would need;
- a forest plot of each strategy's gain, its seed-aware interval and the per-seed gains;
- human vs LLM (or IRT, file) difficulty: the same paired comparison between difficulty sources;
- accuracy per human difficulty level and for held-out items (synthetic ``meta.heldout``), where order
  effects are expected: hard and held-out items need inference and transfer rather than recall;
- accuracy per source where a test set holds several (a mixture's parts, :mod:`~medtune.report.sources`).

The report is written one section at a time, in the order the reader meets them (:func:`write_report`); the
numbers come from :mod:`~medtune.report.results` (the run's files), :mod:`~medtune.report.tables`,
:mod:`~medtune.report.inference`, :mod:`~medtune.report.methods` and :mod:`~medtune.report.steps`, the pictures
from :mod:`~medtune.report.figures`, and both pages from :mod:`~medtune.report.render`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medtune.experiments.grid import BASE_STRATEGY
from medtune.io import atomic_path, write_text_atomic
from medtune.report.figures import (
    forest_figure,
    heatmap_figure,
    levels_figure,
    loss_figure,
    order_figures,
    validation_figure,
)
from medtune.report.inference import (
    aa_check_lines,
    difficulty_sources_table,
    gains_table,
    power_paragraphs,
    variance_paragraphs,
    variance_table,
)
from medtune.report.methods import HEADLINE_METRICS, methods_paragraphs, methods_table
from medtune.report.render import Section, fmt_table, html_page, markdown_page
from medtune.report.results import RunData
from medtune.report.steps import meta_groups_table
from medtune.report.tables import (
    best_table,
    headline_table,
    level_gains_table,
    levels_table,
    seed_design,
    summary_table,
)
from medtune.schema import DIFFICULTY_LEVELS

SECTIONS = {
    "overview": "Overview",
    "failed": "Failed cells",
    "sweep": "Settings chosen on validation items (sweep)",
    "summary": "Accuracy per cell (mean over seeds, 95% CI)",
    "methods": "Methods compared with the baseline method",
    "gains": "Gain over random shuffle",
    "forest": "Gains with seed-aware intervals",
    "heatmap": "Heatmap of gains",
    "power": "Power of the grid",
    "variance": "Order seed vs initialisation seed",
    "best": "Best strategy per model and test set",
    "difficulty-sources": "Human vs LLM difficulty",
    "levels": "Accuracy per difficulty level and on held-out items",
    "steps": "Accuracy per USMLE step",
    "sources": "Accuracy per source",
    "loss": "Loss curves",
    "orders": "Learning orders",
}


HEADLINE_PCT = ("accuracy", "ci_low", "ci_high", "gain", "gain_ci_low", "gain_ci_high", "mdg", "item_ci_low",
                "item_ci_high")
HEADLINE_P = ("p_holm", "p_within_run")


@dataclass
class Report:
    out_dir: Path
    html: Path
    markdown: Path
    tables: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    headline: pd.DataFrame = field(default_factory=pd.DataFrame)
    # What the headline needs beside it: the A/A check and what the grid can detect (plain sentences).
    headline_notes: list[str] = field(default_factory=list)
    # A grid with several methods: each against the baseline method, per metric (:mod:`medtune.report.methods`).
    methods: pd.DataFrame = field(default_factory=pd.DataFrame)
    # A sweep: each arm's setting chosen on validation items (:mod:`medtune.report.sweep`); empty without one.
    sweep: pd.DataFrame = field(default_factory=pd.DataFrame)

    def sweep_text(self) -> str:
        """Each arm's chosen setting with its validation and test score, as plain text (empty without a sweep)."""
        if self.sweep.empty:
            return ""
        cols = ["test_set", "method", "label", "chosen", "val_chosen", "test_chosen", "shared", "test_shared"]
        return fmt_table(self.sweep[cols], pct=("val_chosen", "test_chosen", "test_shared")).to_string(index=False)

    def methods_text(self) -> str:
        """The methods comparison on its main metrics as plain text (empty when the grid trains one method; the
        report's table and ``tables/methods.csv`` have every metric)."""
        if self.methods.empty:
            return ""
        cols = ["test_set", "method", "metric", "seeds", "value", "value_baseline", "gain", "gain_ci_low",
                "gain_ci_high", "p_holm"]
        main = self.methods[self.methods["metric"].isin(HEADLINE_METRICS)]
        shown = (main if not main.empty else self.methods)[cols]
        return fmt_table(shown, pct=("value", "value_baseline", "gain", "gain_ci_low", "gain_ci_high"),
                         pvals=("p_holm",)).to_string(index=False)

    def headline_text(self) -> str:
        """The headline table as plain text (for a closing console message)."""
        if self.headline.empty:
            return "(no finished cell)"
        return fmt_table(self.headline, pct=HEADLINE_PCT, pvals=HEADLINE_P).to_string(index=False)


class _Writer:
    """The report being written: the run, the output folder, the sections so far and the files saved for them."""

    def __init__(self, run: RunData, out: Path, rep: Report) -> None:
        self.run, self.out, self.rep = run, out, rep
        self.sections: list[Section] = []

    def section(self, sid: str) -> Section:
        s = Section(sid, SECTIONS[sid])
        self.sections.append(s)
        return s

    def save_table(self, name: str, df: pd.DataFrame) -> None:
        path = self.out / "tables" / f"{name}.csv"
        with atomic_path(path, suffix=".csv") as tmp:
            df.to_csv(tmp, index=False)
        self.rep.tables[name] = path

    def save_fig(self, name: str, png: bytes) -> Path:
        path = self.out / "figures" / f"{name}.png"
        with atomic_path(path, suffix=".png") as tmp:
            tmp.write_bytes(png)
        self.rep.figures[name] = path
        return path


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, *, n_boot: int | None = None) -> Report:
    """Write ``report.html`` (self-contained), ``report.md`` and ``tables/*.csv`` for a run directory.

    One step per section, in the order the reader meets them; each step writes its section and saves its tables
    and figures, and the later steps take the tables the earlier ones computed.
    """
    run_dir = Path(run_dir)
    run = RunData(run_dir, n_boot)
    out = Path(out_dir) if out_dir else run_dir / "report"
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    rep = Report(out, out / "report.html", out / "report.md")
    w = _Writer(run, out, rep)
    _overview(w)
    _failed(w)
    _sweep(w)
    summary = _summary(w)
    methods = _methods(w)
    gains = _gains(w)
    _gain_figures(w, gains)
    _power(w, gains)
    _variance(w)
    _best(w, summary, gains)
    _difficulty_sources(w)
    _levels(w)
    _steps(w)
    _sources(w)
    _loss(w)
    _orders(w)
    _finish(w, summary, gains, methods)
    return rep


def _overview(w: _Writer) -> None:
    """What was run, how it is tested, and what one seed cannot tell."""
    run = w.run
    res = run.results
    n_cells = res["cell_id"].nunique() if not res.empty else 0
    cell_status = res.drop_duplicates("cell_id")["status"].value_counts().to_dict() if not res.empty else {}
    s = w.section("overview")
    s.text(f"Run directory: {run.run_dir.resolve()}. Experiment: {run.config.get('name', '?')}. "
           f"{n_cells} cells: " + ", ".join(f"{v} {k}" for k, v in sorted(cell_status.items())) + ". "
           f"Test sets: {', '.join(sorted(res['test_set'].dropna().unique())) if not res.empty else '-'}. "
           + seed_design(run) + ".")
    s.text(f"Baseline strategy: {run.baseline}. Accuracy intervals: 95% percentile bootstrap over items "
           f"({run.n_boot} resamples). Gains are tested with the training run as the unit: two runs of one "
           "strategy that differ only in the seed (initialisation, data order) differ by about as much as "
           "strategies do, so a test over items alone would call seed noise an effect. The seed-aware test is "
           "a paired t-test on the per-seed gains (the same seed's two runs form a pair), Holm-adjusted across "
           "the strategies compared with the baseline in each model × training set × method × test set. "
           "McNemar and the item bootstrap, which treat each run as a fixed system, are shown as within-run "
           "tests. Accuracies in %, gains in percentage points (pp).")
    n_seeds = run.done[run.done["strategy"] != BASE_STRATEGY]["seed"].nunique() if not run.done.empty else 0
    if n_seeds == 1:
        s.text("This grid has one seed: no variance between training runs can be estimated, so no seed-aware "
               "test or interval exists. The intervals and p-values shown for gains are item-level (within-run) "
               "ones: they say whether these two runs differ on these items, not whether the strategies do. "
               "Run two or more seeds to compare strategies.")


def _failed(w: _Writer) -> None:
    """The cells that did not finish, with their errors."""
    res = w.run.results
    failed = res[res["status"] != "done"].drop_duplicates("cell_id")[["cell_id", "status", "error"]] \
        if not res.empty else pd.DataFrame(columns=["cell_id", "status", "error"])
    s = w.section("failed")
    if failed.empty:
        s.text("No cell failed.")
    else:
        s.text(f"{len(failed)} cell(s) did not finish; their errors are below (the other cells are unaffected).")
        s.table(failed)
    w.save_table("failed", failed)


def _sweep(w: _Writer) -> None:
    """A sweep's choice per arm, its validation curves, and the arms compared tuned and at one shared setting."""
    from medtune.experiments.selection import validation_curves
    from medtune.report.sweep import chosen_table, comparison_table, curve_figure

    run = w.run
    if not run.swept:
        return
    s = w.section("sweep")
    s.text("Each arm (model × training set × method × strategy) was trained at every setting of the sweep. Its "
           "setting is chosen on validation items only — the best mean validation score over seeds (ties: the "
           "first setting in sweep order) — never on the test set, whose score at the chosen setting would "
           "otherwise be the best of several draws. Every later section reads each arm at its chosen setting. "
           "chosen/shared: the setting; val_*: mean validation score; test_*: mean test score over seeds (%).")
    chosen = chosen_table(run)
    s.table(chosen, pct=("val_chosen", "test_chosen", "val_shared", "test_shared"))
    w.save_table("sweep_chosen", chosen)
    w.rep.sweep = chosen
    curves = validation_curves(run.results)
    png = curve_figure(curves)
    s.image(png, w.save_fig("sweep_validation_curves", png), "validation score per setting, per arm")
    s.table(curves, pct=("val_accuracy", "val_sd"))
    w.save_table("sweep_curves", curves)
    views = {"tuned": run, "shared": run.at_shared_setting()}
    gains = {k: gains_table(v) for k, v in views.items() if not v.done.empty}
    methods = {}
    for k, v in views.items():
        table = methods_table(v) if not v.done.empty else pd.DataFrame()
        main = table[table["metric"].isin(HEADLINE_METRICS)] if not table.empty else table
        methods[k] = main if not main.empty else table
    comparison = comparison_table(gains, methods)
    if not comparison.empty:
        s.text("The arms compared seed-aware (paired over seeds, Holm-adjusted as in the sections below) at their "
               "own chosen settings (tuned) and all at the shared setting (shared): a difference that exists "
               "only in one of the two comes from the setting, not from the arm.")
        s.table(comparison, pct=("gain", "gain_ci_low", "gain_ci_high"), pvals=("p_seed", "p_holm"))
    w.save_table("sweep_comparison", comparison)


def _summary(w: _Writer) -> pd.DataFrame:
    """Accuracy and calibration per cell group (the table later steps rank)."""
    run = w.run
    summary = summary_table(run) if not run.done.empty else pd.DataFrame()
    s = w.section("summary")
    if summary.empty:
        s.text("No finished cell yet.")
    else:
        cols = ["model", "dataset", "method", "test_set", "label", "seeds", "accuracy", "ci_low", "ci_high", "sd",
                "ece", "brier", "n_items", "final_loss"]
        s.text("label = strategy [difficulty source]; 'base' is the model before fine-tuning. sd: across seeds. "
               "ece: expected calibration error of the option probabilities (10 equal-width confidence bins, "
               "in %); brier: multi-class Brier score (0 = certain and right, 2 = certain and wrong); both the "
               "mean over seeds, empty where answers were generated.")
        s.table(summary[cols], pct=("accuracy", "ci_low", "ci_high", "sd", "ece"))
    w.save_table("summary", summary)
    return summary


def _methods(w: _Writer) -> pd.DataFrame:
    """Each method against the baseline method, per metric (a section only where the grid has several)."""
    run = w.run
    methods = methods_table(run) if not run.done.empty else pd.DataFrame()
    if not methods.empty:
        s = w.section("methods")
        base = methods["baseline"].iloc[0]
        s.text(f"gain = method − {base}, per metric, the mean of the per-seed differences (same seed, strategy and "
               "test items); values and gains in % / pp of the metric's 0–1 scale. Seed-aware: gain_ci_low/high, "
               "the 95% t interval over seeds, p_seed the paired t-test on the per-seed differences, p_holm "
               "adjusted across the methods of one model × training set × strategy × test set × metric; per_seed in "
               "pp; mdg, the smallest difference these seeds detect with 80% power. item_ci_low/high and "
               "p_bootstrap: within-run (items resampled, blind to run-to-run variance).")
        for text in methods_paragraphs(methods):
            s.text(text)
        cols = ["model", "dataset", "strategy", "test_set", "method", "metric", "seeds", "value", "value_baseline",
                "gain", "gain_ci_low", "gain_ci_high", "p_seed", "p_holm", "per_seed", "mdg", "item_ci_low",
                "item_ci_high", "p_bootstrap"]
        s.table(methods[cols], pct=("value", "value_baseline", "gain", "gain_ci_low", "gain_ci_high", "mdg",
                                    "item_ci_low", "item_ci_high"), pvals=("p_seed", "p_holm", "p_bootstrap"))
    w.save_table("methods", methods)
    w.rep.methods = methods
    return methods


def _gains(w: _Writer) -> pd.DataFrame:
    """Each strategy against the baseline, seed-aware and within-run, and the A/A lines."""
    run = w.run
    gains = gains_table(run) if not run.done.empty else pd.DataFrame()
    s = w.section("gains")
    if gains.empty:
        s.text(f"No strategy could be paired with a finished '{run.baseline}' cell.")
    else:
        cols = ["model", "dataset", "method", "test_set", "label", "seeds", "gain", "gain_ci_low", "gain_ci_high",
                "p_seed", "p_holm", "hb_ci_low", "hb_ci_high", "p_hier", "per_seed", "item_ci_low", "item_ci_high",
                "p_bootstrap", "p_mcnemar"]
        cols = [c for c in cols if c in gains.columns]
        s.text(f"gain = strategy − {run.baseline}, mean of the per-seed gains (same seed, same items); per_seed "
               "in pp. Seed-aware (training run as the unit): gain_ci_low/high, the 95% t interval over seeds; "
               "p_seed, the paired t-test on the per-seed gains (Welch's t on per-run accuracies where seeds are "
               "not shared); p_holm, p_seed Holm-adjusted across the strategies of one model × training set × "
               "method × test set; hb_ci_low/high and p_hier, a two-stage bootstrap (seeds, then items within "
               "each seed). Within-run (each run a fixed system, items resampled; blind to run-to-run variance): "
               "item_ci_low/high and p_bootstrap, the paired item bootstrap, and p_mcnemar, exact McNemar, on "
               "the pooled (seed, item) pairs.")
        if gains["p_seed"].isna().all():
            s.text("No comparison has two seeds in common: the variance between training runs cannot be estimated "
                   "and the seed-aware columns are empty; only the item-level (within-run) intervals and tests "
                   "are available, and they do not show whether the strategies differ.")
        s.table(gains[cols], pct=("gain", "gain_ci_low", "gain_ci_high", "hb_ci_low", "hb_ci_high", "item_ci_low",
                                  "item_ci_high"), pvals=("p_seed", "p_holm", "p_hier", "p_bootstrap", "p_mcnemar"))
        for text in aa_check_lines(gains, run.baseline):
            s.text(text)
    w.save_table("gains", gains)
    return gains


def _gain_figures(w: _Writer, gains: pd.DataFrame) -> None:
    """The forest plot and the heatmap of the gains."""

    def figure_section(name: str, draw: Any, alt: str, intro: str | None = None) -> None:
        sec = w.section(name)
        if gains.empty:
            sec.text("Nothing to draw.")
            return
        if intro:
            sec.text(intro)
        png = draw(gains)
        sec.image(png, w.save_fig(f"gains_{name}", png), alt)

    figure_section("forest", forest_figure, "forest plot of gains over the baseline",
                   "Each strategy's gain over the baseline (◆), its 95% seed-aware interval (bar) and the gain of "
                   "each seed (●). An interval that crosses 0 is no evidence of an effect; dots far apart mean "
                   "runs vary more than the strategies differ.")
    figure_section("heatmap", heatmap_figure, "heatmap of gains over random shuffle")


def _power(w: _Writer, gains: pd.DataFrame) -> None:
    """What the grid can detect, and the seeds a 1 pp gain needs."""
    s = w.section("power")
    if gains.empty:
        s.text("No comparison to assess.")
    else:
        for text in power_paragraphs(gains):
            s.text(text)
        cols = ["model", "dataset", "method", "test_set", "label", "seeds", "n_items", "sd_gain_power", "between_sd",
                "item_sd", "mdg", "seeds_needed", "mdg_items"]
        s.text("sd_gain_power: sd of one per-seed gain (the larger of the observed spread and the item-level "
               "floor); between_sd: its run-to-run part; item_sd: the part the test items alone contribute; "
               "mdg: minimum detectable gain with these seeds (two-sided α = 0.05, 80% power, paired t, "
               "noncentral t); seeds_needed: seeds for 80% power at a 1 pp gain; mdg_items: the gain these seeds' "
               "test items alone would resolve if training runs did not vary (normal approximation), the "
               "lower bound of mdg.")
        s.table(gains[[c for c in cols if c in gains.columns]],
                pct=("sd_gain_power", "between_sd", "item_sd", "mdg", "mdg_items"))
        w.save_table("power", gains[[c for c in cols if c in gains.columns]])


def _variance(w: _Writer) -> None:
    """Order seed against initialisation seed, where the grid crosses them."""
    run = w.run
    var = variance_table(run) if not run.done.empty else pd.DataFrame()
    s = w.section("variance")
    if var.empty:
        s.text("Order and initialisation seeds are tied in this grid (`seeds`: one seed sets both), so their "
               "shares of the run-to-run variance cannot be told apart. Give `order_seeds` and `init_seeds` "
               "instead to train every order seed from every initialisation seed.")
    else:
        for text in variance_paragraphs(var):
            s.text(text)
        s.text("Two-way random-effects ANOVA without replication per arm (method of moments, negative estimates "
               "set to 0): sd_order, sd_init: the spread of accuracy that changing only that seed causes; "
               "sd_residual: their interaction and everything else; share_*: the parts of the total variance; "
               "p_order/p_init: F-tests of no effect. With few seeds these are rough: read the pooled row.")
        s.table(var[["model", "dataset", "method", "test_set", "label", "order_seeds", "init_seeds", "sd_order",
                     "sd_init", "sd_residual", "share_order", "share_init", "share_residual", "p_order",
                     "p_init"]],
                pct=("sd_order", "sd_init", "sd_residual", "share_order", "share_init", "share_residual"),
                pvals=("p_order", "p_init"))
    w.save_table("variance", var)


def _best(w: _Writer, summary: pd.DataFrame, gains: pd.DataFrame) -> None:
    """The best strategy per model × training set × method × test set."""
    best = best_table(summary, gains)
    s = w.section("best")
    if best.empty:
        s.text("Nothing to rank.")
    else:
        s.table(best, pct=[c for c in ("accuracy", "margin", "gain_over_random") if c in best.columns],
                pvals=("p_holm",))
    w.save_table("best", best)


def _difficulty_sources(w: _Writer) -> None:
    """The same strategy under two difficulty sources."""
    run = w.run
    diffs = difficulty_sources_table(run) if not run.done.empty else pd.DataFrame()
    s = w.section("difficulty-sources")
    if diffs.empty:
        s.text("Only one difficulty source in this grid (add e.g. `llm` to difficulty.sources to compare).")
    else:
        s.text("The same strategy under two difficulty sources, paired per seed and item. ci_low/high and p_seed: "
               "seed-aware (paired t on the per-seed differences, not adjusted); p_bootstrap and p_mcnemar: "
               "within-run tests on the pooled (seed, item) pairs.")
        cols = ["model", "dataset", "method", "test_set", "strategy", "comparison", "accuracy_source",
                "accuracy_versus", "difference", "ci_low", "ci_high", "p_seed", "p_bootstrap", "p_mcnemar", "seeds"]
        s.table(diffs[cols], pct=("accuracy_source", "accuracy_versus", "difference", "ci_low", "ci_high"),
                pvals=("p_seed", "p_bootstrap", "p_mcnemar"))
    w.save_table("difficulty_sources", diffs)


def _levels(w: _Writer) -> None:
    """Accuracy per difficulty level and on held-out items, and the gains per level."""
    run = w.run
    levels = levels_table(run) if not run.done.empty else pd.DataFrame()
    s = w.section("levels")
    if levels.empty:
        s.text("The test items carry no difficulty levels or held-out flags.")
    else:
        s.text("Accuracy per human difficulty level of the test items, and on items about held-out facts "
               "(synthetic data: diseases that appear only in test questions), mean over seeds.")
        lv = [c for c in (*DIFFICULTY_LEVELS, "seen", "heldout") if c in levels.columns]
        s.table(levels[["model", "dataset", "method", "test_set", "label", "seeds", *lv]], pct=lv)
        png = levels_figure(levels)
        s.image(png, w.save_fig("levels", png), "accuracy per difficulty level")
        level_gains = level_gains_table(levels, run.baseline)
        if not level_gains.empty:
            s.text(f"Gain over {run.baseline} per level (pp, mean over seeds): an order can help one level and "
                   "hurt another while the total moves little.")
            s.table(level_gains, pct=lv)
            w.save_table("level_gains", level_gains)
    w.save_table("levels", levels)


def _steps(w: _Writer) -> None:
    """Accuracy per USMLE step (a section only where test items carry meta.step)."""
    run = w.run
    steps = meta_groups_table(run, "step")
    if not steps.empty:
        s = w.section("steps")
        s.text("Accuracy per USMLE step of the test items (meta.step), mean over seeds, with the 95% item "
               "bootstrap interval of the seed-averaged correctness.")
        s.table(steps[["model", "dataset", "method", "test_set", "label", "value", "seeds", "n_items", "accuracy",
                       "ci_low", "ci_high"]].rename(columns={"value": "step"}), pct=("accuracy", "ci_low", "ci_high"))
        w.save_table("steps", steps)


def _sources(w: _Writer) -> None:
    """Accuracy per source (a section only where a test set holds items of several sources: a mixture's)."""
    from medtune.report.sources import sources_table

    table = sources_table(w.run)
    if not table.empty:
        s = w.section("sources")
        s.text("Accuracy per source of the test items (meta.source: the part of a mixture an item came from, else "
               "its own source), mean over seeds, with the 95% item bootstrap interval of the seed-averaged "
               "correctness.")
        s.table(table[["model", "dataset", "method", "test_set", "label", "source", "seeds", "n_items", "accuracy",
                       "ci_low", "ci_high"]], pct=("accuracy", "ci_low", "ci_high"))
        w.save_table("sources", table)


def _loss(w: _Writer) -> None:
    """The training loss curves."""
    run = w.run
    s = w.section("loss")
    png = loss_figure(run)
    if png is None:
        s.text("No training log found.")
    else:
        s.image(png, w.save_fig("loss_curves", png), "training loss curves")
    png = validation_figure(run)
    if png is not None:  # runs that validated on held-out items during training
        s.image(png, w.save_fig("validation_curves", png), "validation curves")


def _orders(w: _Writer) -> None:
    """The learning orders as drawn strips."""
    run = w.run
    s = w.section("orders")
    try:
        figs = order_figures(run, w.out / "figures")
    except Exception as exc:  # a plot never sinks the report; say why it is missing
        figs = {}
        s.text(f"Order plots could not be drawn: {type(exc).__name__}: {exc}")
    for name, path in figs.items():
        s.image(path.read_bytes(), path, f"learning orders ({name})")
        w.rep.figures[name] = path
    if not figs and not s.html:
        s.text("No order to draw.")


def _finish(w: _Writer, summary: pd.DataFrame, gains: pd.DataFrame, methods: pd.DataFrame) -> None:
    """The headline and its notes for a console, then both pages."""
    run, rep = w.run, w.rep
    rep.sections = [x.id for x in w.sections]
    rep.headline = headline_table(summary, gains)
    if not gains.empty:
        rep.headline_notes = [*aa_check_lines(gains, run.baseline), *power_paragraphs(gains)]
    rep.headline_notes += methods_paragraphs(methods)
    title = f"medtune report — {run.config.get('name', run.run_dir.name)}"
    write_text_atomic(rep.html, html_page(title, w.sections))
    write_text_atomic(rep.markdown, markdown_page(title, w.sections))
