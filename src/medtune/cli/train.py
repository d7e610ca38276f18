"""``medtune train`` (fine-tune in the planned order), ``medtune verify-order`` and ``medtune export``.

The training options are generated from :class:`medtune.training.TrainSettings` (one per field, same defaults; a
method's settings group flattened: ``--lora-r``, ``--galore-rank``, ``--knowtuning-beta``, and a plugin method's
``--<group>-<setting>`` once the plugin is loaded);
options left unset keep the schema's defaults or those of ``--preset``; options given explicitly always win over
the preset. The adaptive options are generated from :class:`medtune.adaptive.AdaptiveSettings` the same way
(``--every``, ``--rescore``, ``--anchors``, ``--difficulty``, ...; its ``options`` as ``--adaptive-option``), and
``--adaptive STRATEGY`` turns them on. Either way the command calls the training stage,
:func:`medtune.adaptive.stage.run_training_stage`. For several processes run the same command under
``torchrun --nproc-per-node N`` (gloo on CPU): the global order per step does not depend on ``N``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from medtune.adaptive.stage import AdaptiveSettings
from medtune.cli.options import COUNT, bounded, option_name, with_settings
from medtune.errors import ConfigError
from medtune.hardware import set_threads
from medtune.training.config import TrainSettings, resolve_training_settings
from medtune.training.method_settings import plugin_settings_groups

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
# The adaptive schema's options: its strategy is --adaptive (the command's own switch), its options
# --adaptive-option.
ADAPTIVE_RENAME = {"options": "--adaptive-option"}


@with_settings(TrainSettings, rename={"tiny": "--tiny-option"}, groups=plugin_settings_groups)
@with_settings(AdaptiveSettings, exclude=("strategy",), rename=ADAPTIVE_RENAME, param="adaptive_given")
def train_command(
    items: Annotated[Path | None, typer.Option(
        "--items", help="items.parquet to train on (ids referenced by the order; required unless --dry-run)")] = None,
    order: Annotated[Path | None, typer.Option(
        "--order", help="order.json planned by `medtune order` (required unless --dry-run)")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="run folder to write (required unless "
                                                                       "--dry-run)")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="print the memory plan per GPU and stop before training; exit 2 when it does not fit "
                          "the GPU (--gpu-memory, else this machine's)")] = False,
    world_size: Annotated[int | None, typer.Option(
        "--world-size", callback=bounded(**COUNT), help="--dry-run: processes to plan for (default: $WORLD_SIZE "
                                                        "as torchrun sets it, else 1)")] = None,
    split: Annotated[str | None, typer.Option(
        help="split of the items file to train on (default: 'train' when the file holds several)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the latest checkpoint in -o")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads", callback=bounded(**COUNT))] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="progress bar")] = True,
    adaptive: Annotated[str | None, typer.Option(
        "--adaptive", help="decide the items during training with this strategy (ability, self-paced, "
                           "learnability, rho); ORDER gives the candidate pool and the number of steps")] = None,
    given: dict[str, Any] | None = None,
    adaptive_given: dict[str, Any] | None = None,
) -> None:
    """Fine-tune a model on ITEMS in exactly the order of ORDER; writes the run folder (docs/ARTIFACTS.md).

    With --adaptive the items of each block of --every steps are chosen during training from the model being
    trained (decisions.jsonl records every decision; verify-order replays them). With --eval-anchors
    anchors.json --eval-items ITEMS the model answers the anchor items every --eval-every steps and after the
    last one, and the full-test accuracy they estimate is appended to anchor_eval.jsonl. With --dry-run nothing
    trains: the memory plan per GPU is printed, and exit code 2 says it does not fit, with what would."""
    from medtune.adaptive.stage import run_training_stage

    set_threads(threads)
    if output is not None:  # a file there would fail only when the first checkpoint is written
        from medtune.io import check_folder_output

        check_folder_output(output, "-o")
    saved = output / "config.json" if output is not None else None
    # Resume with the saved settings, and what the command line says explicitly.
    layers = [TrainSettings.load(saved).model_dump()] if resume and saved is not None and saved.exists() else []
    settings = resolve_training_settings(*layers, given, where="options")
    if dry_run:
        print_memory_plan(settings, world_size)
        return
    missing = [flag for flag, value in (("--items", items), ("--order", order), ("-o/--output", output))
               if value is None]
    if missing:
        raise ConfigError(f"missing option(s) {', '.join(missing)}: training needs them (only --dry-run does not)")
    assert items is not None and order is not None and output is not None
    adaptive_settings = adaptive_from_options(adaptive, adaptive_given or {})
    summary = run_training_stage(settings, items, order, output, adaptive=adaptive_settings, split=split,
                                 resume=resume, progress=progress)
    if adaptive_settings is not None:
        share = summary["adaptive"]["score_share"]
        console.print(f"adaptive '{adaptive}': {summary['adaptive']['decisions']} decisions, scoring "
                      f"{summary['adaptive']['score_seconds']:.1f} s"
                      + (f" ({share:.0%} of scoring + steps)" if share is not None else ""))
    final = summary["final_loss"]
    console.print(f"trained {summary['steps']} steps ({settings.method}, {summary['split']}); final loss "
                  f"{final if final is not None else float('nan'):.4f}; wrote {output}")
    if settings.eval_anchors is not None:
        print_anchor_estimate(output)
    if summary.get("validation"):
        v = summary["validation"]
        stop, best = v["stopped_early"], "n/a" if v["best"] is None else f"{v['best']:.4f}"
        console.print(f"validation on {v['n_items']} held-out items: best {v['metric']} {best} after step "
                      f"{v['best_step']} ({'the saved model' if v['weights'] == 'best' else 'the last step is saved'})"
                      + (f"; stopped early after step {stop['step']}: {stop['reason']}" if stop else ""))


def adaptive_from_options(strategy: str | None, given: dict[str, Any]) -> AdaptiveSettings | None:
    """The adaptive settings of ``--adaptive STRATEGY`` and the adaptive options given (None without a strategy;
    an adaptive option given without one would be silently unused, so it is refused)."""
    from medtune.settings import validate_settings

    if strategy is None:
        if given:
            flags = [ADAPTIVE_RENAME.get(name, option_name(name)) for name in AdaptiveSettings.model_fields
                     if name in given]
            raise ConfigError(f"{', '.join(flags)} only apply with --adaptive STRATEGY")
        return None
    return validate_settings(AdaptiveSettings, {"strategy": strategy, **given}, "options")


def print_memory_plan(settings: TrainSettings, world_size: int | None) -> None:
    """The dry run: the plan of the run these settings describe, refused (exit 2) when it does not fit the GPU."""
    from medtune.hardware import world_size_from_env
    from medtune.training.memory import check_fits, plan_run

    plan = plan_run(settings, world_size=world_size or world_size_from_env())
    console.print(plan.describe(), soft_wrap=True, markup=False)
    if plan.gpu_bytes is None and plan.note is None:
        console.print("no GPU on this machine and no --gpu-memory: nothing to compare the plan with")
    check_fits(plan, "memory plan")


def print_anchor_estimate(run_dir: Path) -> None:
    """The last anchor check of a run: its estimate of the test accuracy, with the interval and what it cost."""
    from medtune.anchors.check import read_anchor_evals

    checks = read_anchor_evals(run_dir)
    if not checks:
        return
    last = checks[-1]
    spent = sum(float(c.get("seconds", 0.0)) for c in checks)
    console.print(f"estimated test accuracy after step {last['step']}: {last['estimate']:.3f} (95% "
                  f"{last['low']:.3f}-{last['high']:.3f}, {last['estimator']}; {last.get('correct')}/"
                  f"{last.get('k')} anchors right, {last.get('n_items')} items); {len(checks)} checks, "
                  f"{spent:.1f} s")


def verify_order_command(
    run_dir: Annotated[Path, typer.Argument(help="a training run folder")],
    order: Annotated[Path | None, typer.Option("--order", help="plan to compare with (default: RUN_DIR/order.json)")]
    = None,
) -> None:
    """Check that the run trained in exactly the planned order; exit 1 naming the first differing step."""
    from medtune.adaptive.verify import verify_run

    result = verify_run(run_dir, order)
    if result.ok:
        console.print(f"[green]OK[/] {result.message}")
        return
    err_console.print(f"[bold red]order mismatch[/] at {result.message}")
    for line in result.details:
        err_console.print(f"  {line}", soft_wrap=True)
    raise typer.Exit(1)


def export_command(
    run_dir: Annotated[Path, typer.Argument(help="a training run folder")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="folder to write")] = None,
    merge: Annotated[bool, typer.Option("--merge/--adapter", help="merge the adapter into a full model")] = True,
    push_to_hub: Annotated[str | None, typer.Option(help="also push to this hub repository (needs network)")] = None,
) -> None:
    """Export a trained run: the adapter, or a merged full model (safetensors + tokenizer); optionally push."""
    from medtune.training.export import export_run

    if output is None and push_to_hub is None:
        raise ConfigError("give -o OUTPUT and/or --push-to-hub REPO")
    out = export_run(run_dir, output, merge=merge, push_to_hub=push_to_hub)
    if out is not None:
        console.print(f"wrote {out}")


def merge_command(
    run_dir: Annotated[Path, typer.Argument(help="a training run folder with an adapter")],
    output: Annotated[Path, typer.Option("-o", "--output", help="folder to write the merged model to")],
) -> None:
    """Merge a run's adapter into its base model and save a full model (same as `export --merge`)."""
    from medtune.training.export import export_run

    console.print(f"wrote {export_run(run_dir, output, merge=True)}")


def register_train_commands(app: typer.Typer) -> None:
    """Add ``train``, ``verify-order``, ``export`` and ``merge`` to the main app."""
    app.command("train")(train_command)
    app.command("verify-order")(verify_order_command)
    app.command("export")(export_command)
    app.command("merge")(merge_command)
