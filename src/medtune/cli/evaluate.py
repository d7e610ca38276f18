"""``medtune evaluate``: score items with a (fine-tuned) model → ``predictions.parquet`` + ``metrics.json``.

``medtune evaluate ITEMS --model M [--adapter DIR] -o OUT_DIR`` (or ``--run RUN_DIR``, a training run folder) is
short for ``medtune evaluate run ...``; its settings options come from
:class:`medtune.evaluation_stage.EvalSettings` and the work is :func:`medtune.evaluation_stage.run_evaluation`,
the same stage the experiment grid runs. ``medtune evaluate compare A.parquet B.parquet`` compares two prediction
files on the same items (McNemar and a paired bootstrap of the accuracy difference); ``medtune evaluate metrics
PREDICTIONS --items ITEMS`` recomputes the metrics of an existing predictions file; ``medtune evaluate power
RUN_DIR`` says, for a grid run, the smallest gain over the baseline its seeds can detect and how many seeds a
named gain needs (:func:`medtune.report.inference.power_table`). Scoring streams to ``OUT_DIR``
so an interrupted run resumes. Free-text items (QAItem, e.g. MedQuAD) are evaluated in generate mode with token
P/R/F1, ROUGE-L and BERTScore (``--bertscore-model``, ``--bertscore-layer``, ``--no-bertscore``), per item in
``OUT_DIR/item_metrics.parquet``; ``medtune evaluate score-file FILE -o OUT_DIR`` computes the same
for another tool's generations, and accuracy with a ``predictions.parquet`` for its MCQ answers
(:func:`medtune.evaluation_stage.score_file`: LLaMA-Factory, lm-eval samples logs, MCQ letters). ``medtune evaluate run
... --anchors anchors.json`` scores only the anchor items and estimates the full-test accuracy
(:mod:`medtune.anchors`; ``medtune evaluate anchors choose`` makes the file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from medtune.bertscore import BertScoreSettings
from medtune.cli.anchors import anchors_app, print_estimates
from medtune.cli.options import bounded, schema_bounded, with_settings
from medtune.errors import ConfigError, InputError
from medtune.evaluation import DEFAULT_N_BOOT, compare_predictions, compute_metrics, read_predictions
from medtune.evaluation_stage import PREDICTIONS_NORM, EvalSettings, ModelRef, score_file
from medtune.foreign_predictions import FORMATS, parse_fields
from medtune.io import check_file_output, check_folder_output, write_json_atomic
from medtune.schema import read_items
from medtune.settings import validate_settings

console = Console(highlight=False)


class _DefaultRunGroup(TyperGroup):
    """A group whose default sub-command is ``run``: ``medtune evaluate ITEMS ...`` works as documented."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


evaluate_app = typer.Typer(
    cls=_DefaultRunGroup,
    help="Evaluate a model on items (accuracy with CI, F1, breakdowns; QA metrics) and compare prediction files. "
         "`medtune evaluate ITEMS --model M -o DIR` runs `evaluate run`.",
    no_args_is_help=True,
)
evaluate_app.add_typer(anchors_app, name="anchors")


def _fmt_ci(res: dict[str, Any]) -> str:
    return f"{res['accuracy']:.4f} [{res['ci_low']:.4f}, {res['ci_high']:.4f}]"


def print_metrics(metrics: dict[str, Any], out: Console | None = None) -> None:
    """Rich tables of a metrics dict (overall, then per-group breakdowns)."""
    out = out or console
    head = Table(title=f"evaluation: {metrics['n']} items ({metrics.get('mode')} mode)")
    head.add_column("metric")
    head.add_column("value", justify="right")
    if metrics["kind"] == "qa":
        qa = metrics["qa"]
        for key in ("f1", "precision", "recall", "exact_match", "rougeL"):
            head.add_row(key, f"{qa[key]:.4f}")
        head.add_row("f1 95% CI", f"[{qa['f1_ci']['ci_low']:.4f}, {qa['f1_ci']['ci_high']:.4f}]")
        bert = qa.get("bertscore")
        if bert:
            for key in ("f1", "precision", "recall"):
                head.add_row(f"BERTScore {key}", f"{bert[key]:.4f}")
            head.add_row("BERTScore f1 95% CI", f"[{bert['f1_ci']['ci_low']:.4f}, {bert['f1_ci']['ci_high']:.4f}]")
            head.add_row("BERTScore model", escape(f"{bert['model']} (layer {bert['layer']})"))
    else:
        head.add_row("accuracy [95% CI]", _fmt_ci(metrics["accuracy"]))
        head.add_row("macro F1", f"{metrics['macro_f1']:.4f}")
        head.add_row("weighted F1", f"{metrics['weighted_f1']:.4f}")
        head.add_row("unanswered", str(metrics["unanswered"]))
        pos = metrics["answer_positions"]
        head.add_row("gold positions", " ".join(f"{k}:{v}" for k, v in pos["gold"].items()))
        head.add_row("predicted positions", " ".join(f"{k}:{v}" for k, v in pos["pred"].items()))
    if metrics.get("n_items_missing"):
        head.add_row("items without prediction", str(metrics["n_items_missing"]))
    out.print(head)
    groups = [(name.removeprefix("per_"), metrics[name]) for name in
              ("per_category", "per_subcategory", "per_human_difficulty", "per_category_f1") if name in metrics]
    groups += [(f"meta.{k}", v) for k, v in metrics.get("per_meta", {}).items()]
    for title, table_data in groups:
        t = Table(title=title)
        t.add_column("group")
        t.add_column("n", justify="right")
        t.add_column("accuracy [95% CI]" if not title.endswith("_f1") else "F1 [95% CI]", justify="right")
        for key, res in list(table_data.items())[:30]:
            t.add_row(str(key), str(res["n"]), _fmt_ci(res))
        out.print(t)


# The bootstrap options of the commands that recompute metrics, with EvalSettings' ranges.
NBootOpt = Annotated[int, typer.Option(help="Bootstrap resamples.", callback=schema_bounded(EvalSettings, "bootstrap"))]
SeedOpt = Annotated[int, typer.Option(help="Bootstrap seed.", callback=schema_bounded(EvalSettings, "seed"))]

# BERTScore options, the same on every command that scores free text; they fill EvalSettings.bertscore.
BertModelOpt = Annotated[str | None, typer.Option(
    "--bertscore-model", help="BERTScore model: minilm (the packaged all-MiniLM-L6-v2, the default when "
    "installed), study (microsoft/deberta-xlarge-mnli, layer 40; must be in the Hugging Face cache), a local "
    "folder or a cached hub name.", show_default=False)]
BertLayerOpt = Annotated[int | None, typer.Option(
    "--bertscore-layer", help="BERTScore layer (default: the model's, e.g. 6 for minilm, 40 for study).",
    show_default=False, callback=schema_bounded(BertScoreSettings, "num_layers"))]
BertOnOpt = Annotated[bool | None, typer.Option(
    "--bertscore/--no-bertscore", help="Compute BERTScore of free-text answers (default: on when its model is "
    "installed).", show_default=False)]


def bertscore_given(model: str | None, layer: int | None, on: bool | None) -> dict[str, Any] | None:
    """The ``bertscore`` settings the three options set (None: none given, the settings' default applies)."""
    if on is False:
        if model is not None or layer is not None:
            raise ConfigError("--no-bertscore cannot go with --bertscore-model or --bertscore-layer")
        return {"model": "none"}
    given = {k: v for k, v in (("model", model), ("num_layers", layer)) if v is not None}
    return given or ({} if on else None)


def _model_ref(model: str | None, adapter: Path | None, run: Path | None) -> ModelRef:
    if (model is None) == (run is None):
        raise ConfigError("give the model to evaluate with --model (and optionally --adapter) or --run RUN_DIR")
    if run is not None:
        if adapter is not None:
            raise ConfigError("--adapter goes with --model; a --run folder holds its own adapter")
        return ModelRef.from_run(run)
    assert model is not None
    return ModelRef(spec=model, adapter=adapter)


def _record_final_folder(metrics_path: Path, tmp: Path, output: Path) -> None:
    """The anchor items the scorer read live in the temporary folder; ``metrics.json`` names them where they end."""
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    items = metrics.get("run", {}).get("items")
    if isinstance(items, str) and Path(items).parent == tmp:
        metrics["run"]["items"] = str(output / Path(items).name)
        write_json_atomic(metrics_path, metrics)


@evaluate_app.command("run")
@with_settings(EvalSettings, rename={"bootstrap": "--n-boot"}, exclude=("bertscore",))
def run_cmd(
    items_path: Annotated[Path, typer.Argument(metavar="ITEMS", help="Items Parquet file (MCQ or free text).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (predictions.parquet, metrics.json).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model spec: a local folder, .gguf file, "
                                              "smollm2, a hub name when online; a backend prefix selects another "
                                              "backend (openai:http://HOST:PORT/v1[#model], vllm:PATH).")] = None,
    adapter: Annotated[Path | None, typer.Option(help="PEFT adapter folder applied on top of --model.")] = None,
    run: Annotated[Path | None, typer.Option("--run", help="A training run folder (its adapter or model, "
                                             "base, template and base quantization).")] = None,
    split: Annotated[str | None, typer.Option(help="Only items of this split (e.g. test).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    bertscore_model: BertModelOpt = None,
    bertscore_layer: BertLayerOpt = None,
    bertscore: BertOnOpt = None,
    anchors: Annotated[Path | None, typer.Option("--anchors", help="anchors.json: score only its anchor items and "
                                                 "estimate the accuracy on all items (metrics.json: estimate).")]
    = None,
    anchor_estimator: Annotated[str, typer.Option(help="With --anchors: the headline estimator (weighted, pirt, "
                                                  "gpirt); metrics.json holds all three.")] = "gpirt",
    given: dict[str, Any] | None = None,
) -> None:
    """Score ITEMS with a model and write OUT/predictions.parquet and OUT/metrics.json (free text: also
    OUT/item_metrics.parquet). With --anchors, only the anchor items are scored and the full-test accuracy is
    estimated."""
    from medtune.evaluation_stage import run_evaluation

    given = dict(given or {})
    bert = bertscore_given(bertscore_model, bertscore_layer, bertscore)
    if bert is not None:
        given["bertscore"] = bert
    settings = validate_settings(EvalSettings, given, "options")
    ref = _model_ref(model, adapter, run)
    check_folder_output(output, "-o")
    from medtune.io import atomic_folder

    if anchors is not None:  # built beside OUT and swapped in whole, like a full evaluation
        from medtune.evaluation_stage import run_anchor_evaluation

        owns = ("anchor_items.parquet", "predictions.parquet", "metrics.json")
        with atomic_folder(output, "-o", resumable=True, owns=owns) as tmp:
            summary = run_anchor_evaluation(settings, items_path, ref, tmp, anchors, estimator=anchor_estimator,
                                            split=split, progress=progress)
            _record_final_folder(tmp / "metrics.json", tmp, output)
        summary = {**summary, "predictions": output / "predictions.parquet", "metrics": output / "metrics.json"}
        metrics = json.loads(Path(summary["metrics"]).read_text(encoding="utf-8"))
        print_metrics(metrics)
        est = metrics["estimate"]
        print_estimates(metrics["anchors"]["estimates"], f"estimated accuracy on all {est['n_items']} items from "
                        f"{est['k']} anchors (headline: {est['estimator']})")
    else:  # built beside OUT and swapped in whole: a failed or killed run leaves an earlier OUT as it was
        owns = ("predictions.parquet", "item_metrics.parquet", "metrics.json")  # a run folder's other files stay
        with atomic_folder(output, "-o", resumable=True, owns=owns) as tmp:
            summary = run_evaluation(settings, items_path, ref, tmp, split=split, progress=progress)
        summary = {**summary, "predictions": output / "predictions.parquet", "metrics": output / "metrics.json"}
        print_metrics(json.loads(Path(summary["metrics"]).read_text(encoding="utf-8")))
    console.print(f"wrote {summary['predictions']} and {summary['metrics']}")


@evaluate_app.command("metrics")
def metrics_cmd(
    predictions: Annotated[Path, typer.Argument(help="predictions.parquet from the scorer.")],
    items_path: Annotated[Path, typer.Option("--items", help="The items the predictions were made on.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="metrics.json to write.")] = None,
    meta_key: Annotated[list[str] | None, typer.Option("--meta-key", help="Break accuracy down by this meta "
                                                       "field (repeatable; default: automatic).")] = None,
    n_boot: NBootOpt = DEFAULT_N_BOOT,
    seed: SeedOpt = 0,
    bertscore_model: BertModelOpt = None,
    bertscore_layer: BertLayerOpt = None,
    bertscore: BertOnOpt = None,
) -> None:
    """Recompute metrics for an existing predictions file."""
    if output is not None:
        check_file_output(output, "-o")
    bert = validate_settings(EvalSettings, {"bertscore": bertscore_given(bertscore_model, bertscore_layer,
                                                                          bertscore) or {}}, "options").bertscore
    frame = read_predictions(predictions)
    items = read_items(items_path)
    try:
        metrics = compute_metrics(frame, items, n_boot=n_boot, seed=seed, meta_keys=meta_key or None,
                                  bertscore=bert)
    except InputError as exc:
        raise exc.located(file=predictions) from None
    if output is not None:
        write_json_atomic(output, metrics)
    print_metrics(metrics)


@evaluate_app.command("score-file")
def score_file_cmd(
    generations: Annotated[Path, typer.Argument(metavar="FILE", help="Predictions of medtune or another tool, JSON "
                                                "lines: medtune generations (prompt, reference, prediction), "
                                                "LLaMA-Factory's generated_predictions.jsonl, an lm-eval "
                                                "--log_samples file, or MCQ letters (id, answer, pred).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (metrics.json; free text: "
                                         "item_metrics.parquet; MCQ: predictions.parquet).")],
    file_format: Annotated[str, typer.Option("--format", help="auto (from the field names), medtune, llamafactory, "
                                             "lm-eval or mcq.")] = "auto",
    fields: Annotated[str | None, typer.Option("--fields", help="The file's field per role: "
                                               "prompt=…,reference=…,prediction=… (free text) or answer=…,pred=… "
                                               "(MCQ letters), and id=…; dotted paths reach nested fields "
                                               "(id=doc.qid).", show_default=False)] = None,
    lm_eval_filter: Annotated[str | None, typer.Option("--filter", help="lm-eval samples logs: the filter to "
                                                       "read when the file holds several.", show_default=False)]
    = None,
    n_boot: NBootOpt = DEFAULT_N_BOOT,
    seed: SeedOpt = 0,
    bertscore_model: BertModelOpt = None,
    bertscore_layer: BertLayerOpt = None,
    bertscore: BertOnOpt = None,
) -> None:
    """Score another tool's predictions: free text gets token P/R/F1, exact match, ROUGE-L and BERTScore; MCQ
    (letters, lm-eval multiple choice) a predictions.parquet and accuracy with CI, for `evaluate compare`."""
    if file_format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{file_format}'")
    mapping = parse_fields(fields)
    given: dict[str, Any] = {"bootstrap": n_boot, "seed": seed}
    bert = bertscore_given(bertscore_model, bertscore_layer, bertscore)
    if bert is not None:
        given["bertscore"] = bert
    from medtune.io import atomic_folder

    settings = validate_settings(EvalSettings, given, "options")
    owns = ("item_metrics.parquet", PREDICTIONS_NORM, "predictions.parquet", "metrics.json")
    with atomic_folder(output, "-o", owns=owns) as tmp:  # a failure writes none of them
        metrics = score_file(generations, settings, tmp, format=file_format, fields=mapping,
                             lm_eval_filter=lm_eval_filter)
        written = [name for name in owns if (tmp / name).exists()]
    print_metrics(metrics)
    if "accuracy_norm" in metrics:
        console.print(f"accuracy_norm (lm-eval's acc_norm) [95% CI]: {_fmt_ci(metrics['accuracy_norm'])}")
    console.print("wrote " + " and ".join(str(output / name) for name in written))


@evaluate_app.command("compare")
def compare_cmd(
    a: Annotated[Path, typer.Argument(metavar="A", help="First predictions file.")],
    b: Annotated[Path, typer.Argument(metavar="B", help="Second predictions file (same items).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the comparison as JSON.")] = None,
    n_boot: NBootOpt = DEFAULT_N_BOOT,
    seed: SeedOpt = 0,
) -> None:
    """Paired comparison of two prediction files: McNemar (exact, mid-p) and a paired bootstrap of A − B."""
    fa, fb = read_predictions(a), read_predictions(b)
    try:
        res = compare_predictions(fa, fb, n_boot=n_boot, seed=seed, names=("A", "B"))
    except InputError as exc:
        raise exc.located(file=b) from None
    res["files"] = {"A": str(a), "B": str(b)}
    if output is not None:
        write_json_atomic(output, res)
    t = Table(title=f"A = {a}\nB = {b}  ({res['n']} items, {res['metric']})")
    t.add_column("statistic")
    t.add_column("value", justify="right")
    t.add_row(f"{res['metric']} A", f"{res['A']:.4f}")
    t.add_row(f"{res['metric']} B", f"{res['B']:.4f}")
    pb = res["paired_bootstrap"]
    t.add_row("A − B [95% CI]", f"{pb['diff']:+.4f} [{pb['ci_low']:+.4f}, {pb['ci_high']:+.4f}]")
    t.add_row("paired bootstrap p", f"{pb['p_value']:.4g}")
    if "mcnemar" in res:
        mc = res["mcnemar"]
        t.add_row("only A right / only B right", f"{mc['a_only']} / {mc['b_only']}")
        t.add_row("McNemar exact p", f"{mc['p_exact']:.4g}")
        t.add_row("McNemar mid-p", f"{mc['p_midp']:.4g}")
    console.print(t)


@evaluate_app.command("power")
def power_cmd(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A grid run folder of `medtune run`.")],
    gain: Annotated[float, typer.Option(help="The gain to count seeds for (0.01 = 1 pp).",
                                        callback=bounded(gt=-1, lt=1, nonzero=True))] = 0.01,
    alpha: Annotated[float, typer.Option(help="Two-sided significance level.", callback=bounded(gt=0, lt=1))]
    = 0.05,
    power: Annotated[float, typer.Option(help="Power wanted (probability of detecting the gain).",
                                         callback=bounded(gt=0, lt=1))] = 0.8,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the table as CSV.")] = None,
) -> None:
    """Per comparison with the baseline: the minimum detectable gain of the grid as run, and the seeds needed.

    Paired t-test on the per-seed gains (noncentral t), from the run-to-run variance the grid shows, floored by
    the test items' own (binomial) variance.
    """
    from medtune.report.inference import power_table
    from medtune.report.results import RunData

    table = power_table(RunData(run_dir), gain=gain, alpha=alpha, power=power)
    if table.empty:
        console.print(f"{run_dir}: no strategy could be paired with a finished baseline cell")
        return
    if output is not None:
        from medtune.io import atomic_path

        with atomic_path(output, suffix=".csv") as tmp:
            table.to_csv(tmp, index=False)
    t = Table(title=f"{run_dir}: power of the paired t on the seeds (two-sided α = {alpha:g}, power {power:g})")
    t.add_column("comparison")
    for col in ("seeds", "items", "sd of a per-seed gain", "min. detectable gain", f"seeds for {100 * gain:g} pp"):
        t.add_column(col, justify="right")
    for r in table.itertuples():
        where = " / ".join(str(v) for v in (r.model, r.dataset, r.method, r.test_set))
        needed = "-" if r.seeds_needed is None or r.seeds_needed != r.seeds_needed else str(int(r.seeds_needed))
        mdg = "not estimable (one seed)" if r.mdg != r.mdg else f"{100 * r.mdg:.2f} pp"
        sd = "-" if r.sd_gain_power != r.sd_gain_power else f"{100 * r.sd_gain_power:.2f} pp"
        # escape: "[human]" in a label is text, not console markup
        t.add_row(escape(f"{r.label} − baseline ({where})"), str(r.seeds), str(r.n_items), sd, mdg, needed)
    console.print(t)


def register_evaluate_commands(app: typer.Typer) -> None:
    """Add ``medtune evaluate ...`` to the main app."""
    app.add_typer(evaluate_app, name="evaluate")
