"""``medtune train`` (fine-tune in the planned order), ``medtune verify-order`` and ``medtune export``.

Options left unset keep the defaults of :class:`medtune.training.TrainConfig` or of ``--preset``; options
given explicitly always win over the preset. For several processes run the same command under
``torchrun --nproc-per-node N`` (gloo on CPU): the global order per step does not depend on ``N``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medtune.errors import ConfigError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def train_command(
    items: Annotated[Path, typer.Option("--items", help="items.parquet to train on (ids referenced by the order)")],
    order: Annotated[Path, typer.Option("--order", help="order.json planned by `medtune order`")],
    output: Annotated[Path, typer.Option("-o", "--output", help="run folder to write")],
    method: Annotated[str | None, typer.Option(help="full | lora | dora | qlora | galore")] = None,
    model: Annotated[str | None, typer.Option(help="tiny | smollm2 | a local folder | a .gguf file")] = None,
    preset: Annotated[str | None, typer.Option(help="named settings, e.g. paper-qlora")] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs (default: as many as the order file holds)")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after this many optimizer steps")] = None,
    batch_size: Annotated[int | None, typer.Option(help="items per micro-batch")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="micro-batches per optimizer step")] = None,
    max_length: Annotated[int | None, typer.Option(help="max tokens per item")] = None,
    lr: Annotated[float | None, typer.Option(help="peak learning rate")] = None,
    scheduler: Annotated[str | None, typer.Option(help="constant | linear | cosine")] = None,
    warmup_steps: Annotated[int | None, typer.Option(help="linear warm-up steps")] = None,
    dtype: Annotated[str | None, typer.Option(help="fp32 | bf16 (mixed precision, AMX on CPU)")] = None,
    packing: Annotated[bool | None, typer.Option("--packing/--no-packing",
                                                 help="padding-free order-preserving packing")] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="recompute activations in backward: less memory, about a third more compute")] = None,
    target: Annotated[str | None, typer.Option(
        help="letter | letter+explanation | option | option+explanation")] = None,
    template: Annotated[str | None, typer.Option(help="prompt template (as for scoring)")] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank")] = None,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha")] = None,
    lora_dropout: Annotated[float | None, typer.Option(help="LoRA dropout")] = None,
    dora: Annotated[bool | None, typer.Option("--dora/--no-dora", help="DoRA (weight-decomposed LoRA)")] = None,
    optim: Annotated[str | None, typer.Option(help="adamw | adamw_8bit | paged_adamw_8bit")] = None,
    galore_optim: Annotated[str | None, typer.Option(
        help="galore_adamw | galore_adafactor | galore_adamw_8bit")] = None,
    galore_rank: Annotated[int | None, typer.Option(help="GaLore projection rank")] = None,
    save_every: Annotated[int | None, typer.Option(help="checkpoint every N steps")] = None,
    seed: Annotated[int | None, typer.Option(help="seed (initialisation, dropout)")] = None,
    report_to: Annotated[list[str] | None, typer.Option(help="tensorboard | mlflow | wandb (repeatable)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the latest checkpoint in -o")] = False,
    tiny_option: Annotated[list[str] | None, typer.Option(
        help="size of --model tiny, e.g. hidden_size=64 (repeatable; keys of medtune.models.TINY_DEFAULTS)")] = None,
    tiny_vocab_size: Annotated[int | None, typer.Option(help="tokenizer vocabulary of --model tiny")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="progress bar")] = True,
) -> None:
    """Fine-tune a model on ITEMS in exactly the order of ORDER; writes the run folder (docs/ARTIFACTS.md)."""
    import torch

    from medtune.training.config import TrainConfig, apply_preset
    from medtune.training.trainer import load_items_and_order, textbook_beside, train

    if threads:
        torch.set_num_threads(threads)
    given = {k: v for k, v in {
        "method": method, "model": model, "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size,
        "grad_accum": grad_accum, "max_length": max_length, "lr": lr, "scheduler": scheduler,
        "warmup_steps": warmup_steps, "dtype": dtype, "packing": packing,
        "gradient_checkpointing": gradient_checkpointing, "target": target, "template": template,
        "lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout, "dora": dora, "optim": optim,
        "galore_optim": galore_optim, "galore_rank": galore_rank, "save_every": save_every, "seed": seed,
        "report_to": list(report_to) if report_to else None,
        "tiny": _parse_tiny(tiny_option) if tiny_option else None, "tiny_vocab_size": tiny_vocab_size,
    }.items() if v is not None}
    if resume and (output / "config.json").exists():
        config = TrainConfig.load(output / "config.json")  # resume with the saved settings ...
    else:
        config = apply_preset(TrainConfig(), preset, set(given))
    for k, v in given.items():  # ... and what the command line says explicitly
        setattr(config, k, v)
    config.validate()
    item_list, order_obj = load_items_and_order(items, order)
    result = train(config, item_list, order_obj, output, textbook=textbook_beside(items), resume=resume,
                   progress=progress, items_path=items, order_path=order)
    if result.output_dir is not None:
        console.print(f"trained {result.steps} steps ({config.method}); final loss "
                      f"{result.losses[-1] if result.losses else float('nan'):.4f}; wrote {result.output_dir}")


def _parse_tiny(pairs: list[str]) -> dict[str, int]:
    from medtune.models import TINY_DEFAULTS

    out: dict[str, int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in TINY_DEFAULTS or not value.strip().isdigit():
            raise ConfigError(f"--tiny-option takes key=integer with key one of {', '.join(TINY_DEFAULTS)}, "
                              f"got {pair!r}")
        out[key] = int(value)
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


def register(app: typer.Typer) -> None:
    """Add ``train``, ``verify-order``, ``export`` and ``merge`` to the main app."""
    app.command("train")(train_command)
    app.command("verify-order")(verify_order_command)
    app.command("export")(export_command)
    app.command("merge")(merge_command)
