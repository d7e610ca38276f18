"""``medtune train`` (fine-tune in the planned order), ``medtune verify-order`` and ``medtune export``.

The training options are generated from :class:`medtune.training.TrainConfig` (one per field, same defaults; a
method's settings group flattened: ``--lora-r``, ``--galore-rank``, ``--knowtuning-beta``, and a plugin method's
``--<group>-<setting>`` once the plugin is loaded);
options left unset keep the schema's defaults or those of ``--preset``; options given explicitly always win over
the preset. For several processes run the same command under
``torchrun --nproc-per-node N`` (gloo on CPU): the global order per step does not depend on ``N``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from medtune.adaptive.strategies import EVERY_DEFAULT, RESCORE_DEFAULT
from medtune.cli.options import COUNT, bounded, with_settings
from medtune.errors import ConfigError
from medtune.hardware import set_threads
from medtune.training.config import TrainConfig, resolve_training_settings
from medtune.training.method_settings import plugin_settings_groups

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@with_settings(TrainConfig, rename={"tiny": "--tiny-option"}, groups=plugin_settings_groups)
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
    adaptive_option: Annotated[list[str] | None, typer.Option(
        "--adaptive-option", help="a strategy option as key=value (repeatable), e.g. delta=0.5")] = None,
    every: Annotated[int, typer.Option("--every", callback=bounded(**COUNT),
                                       help="adaptive: decide every N optimizer steps")] = EVERY_DEFAULT,
    rescore: Annotated[str, typer.Option(
        "--rescore", help="adaptive loss/probability strategies: items re-scored per decision, as a multiple of the "
                          "items it trains (the others keep their last scores), or 'all'")] = str(RESCORE_DEFAULT),
    anchors: Annotated[list[str] | None, typer.Option(
        "--anchors", help="adaptive ability: anchor items (an items file, or ids of ITEMS; repeatable)")] = None,
    difficulty: Annotated[Path | None, typer.Option(
        "--difficulty", help="adaptive ability: difficulty.parquet with each item's difficulty")] = None,
    difficulty_column: Annotated[str, typer.Option(
        "--difficulty-column", help="adaptive ability: the difficulty file's column used as b")] = "irt_b",
    reference: Annotated[str | None, typer.Option(
        "--reference", help="adaptive rho: the reference model (a run folder or a model spec; default the base "
                            "model)")] = None,
    given: dict[str, Any] | None = None,
) -> None:
    """Fine-tune a model on ITEMS in exactly the order of ORDER; writes the run folder (docs/ARTIFACTS.md).

    With --adaptive the items of each block of --every steps are chosen during training from the model being
    trained (decisions.jsonl records every decision; verify-order replays them). With --eval-anchors
    anchors.json --eval-items ITEMS the model answers the anchor items every --eval-every steps and after the
    last one, and the full-test accuracy they estimate is appended to anchor_eval.jsonl. With --dry-run nothing
    trains: the memory plan per GPU is printed, and exit code 2 says it does not fit, with what would."""
    from medtune.training.stage import run_training

    set_threads(threads)
    if output is not None:  # a file there would fail only when the first checkpoint is written
        from medtune.io import check_folder_output

        check_folder_output(output, "-o")
    saved = output / "config.json" if output is not None else None
    # Resume with the saved settings, and what the command line says explicitly.
    layers = [TrainConfig.load(saved).model_dump()] if resume and saved is not None and saved.exists() else []
    settings = resolve_training_settings(*layers, given, where="options")
    if dry_run:
        print_memory_plan(settings, world_size)
        return
    missing = [flag for flag, value in (("--items", items), ("--order", order), ("-o/--output", output))
               if value is None]
    if missing:
        raise ConfigError(f"missing option(s) {', '.join(missing)}: training needs them (only --dry-run does not)")
    assert items is not None and order is not None and output is not None
    stray = [flag for flag, value in (("--adaptive-option", adaptive_option), ("--anchors", anchors),
                                      ("--difficulty", difficulty), ("--reference", reference)) if value]
    if adaptive is None and stray:  # an adaptive strategy's input given without one would be silently unused
        raise ConfigError(f"{', '.join(stray)} only apply with --adaptive STRATEGY")
    if adaptive is not None:
        from medtune.adaptive.stage import AdaptiveSettings, run_adaptive_training
        from medtune.settings import validate_settings

        adaptive_settings = validate_settings(AdaptiveSettings, {
            "strategy": adaptive, "options": parse_key_values(adaptive_option or [], "--adaptive-option"),
            "every": every, "anchors": anchors or [], "difficulty": str(difficulty) if difficulty else None,
            "difficulty_column": difficulty_column, "rescore": rescore, "reference": reference}, "options")
        summary = run_adaptive_training(settings, items, adaptive_settings, output, order_path=order, split=split,
                                        resume=resume, progress=progress)
        share = summary["adaptive"]["score_share"]
        console.print(f"adaptive '{adaptive}': {summary['adaptive']['decisions']} decisions, scoring "
                      f"{summary['adaptive']['score_seconds']:.1f} s"
                      + (f" ({share:.0%} of scoring + steps)" if share is not None else ""))
    else:
        summary = run_training(settings, items, order, output, split=split, resume=resume, progress=progress)
    final = summary["final_loss"]
    console.print(f"trained {summary['steps']} steps ({settings.method}, {summary['split']}); final loss "
                  f"{final if final is not None else float('nan'):.4f}; wrote {output}")
    if settings.eval_anchors is not None:
        print_anchor_estimate(output)


def print_memory_plan(settings: TrainConfig, world_size: int | None) -> None:
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
    from medtune.training.anchor_check import read_anchor_evals

    checks = read_anchor_evals(run_dir)
    if not checks:
        return
    last = checks[-1]
    spent = sum(float(c.get("seconds", 0.0)) for c in checks)
    console.print(f"estimated test accuracy after step {last['step']}: {last['estimate']:.3f} (95% "
                  f"{last['low']:.3f}-{last['high']:.3f}, {last['estimator']}; {last.get('correct')}/"
                  f"{last.get('k')} anchors right, {last.get('n_items')} items); {len(checks)} checks, "
                  f"{spent:.1f} s")


def parse_key_values(pairs: list[str], option: str) -> dict[str, Any]:
    """``["k=v", ...]`` → dict; values read as JSON when they parse (numbers, true/false), else as text."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} takes key=value, got '{pair}'")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def verify_order_command(
    run_dir: Annotated[Path, typer.Argument(help="a training run folder")],
    order: Annotated[Path | None, typer.Option("--order", help="plan to compare with (default: RUN_DIR/order.json)")]
    = None,
) -> None:
    """Check that the run trained in exactly the planned order; exit 1 naming the first differing step."""
    from medtune.training.verify import verify_run

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
