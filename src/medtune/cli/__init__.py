"""The ``medtune`` command line: one sub-command per stage, plus ``run`` (a whole config) and ``demo``.

Each stage's commands live in their own module here and register themselves on the shared app, so the
CLI imports the stages and never the other way round. User errors (:class:`~medtune.errors.MedtuneError`)
print one line and exit with code 2; there is no traceback for bad input.
"""

from __future__ import annotations

import importlib
import os
import sys

import click
import typer
from rich.console import Console
from rich.markup import escape

from medtune.errors import MedtuneError

app = typer.Typer(
    name="medtune",
    help="Fine-tune and evaluate LLMs for medical QA, with human-inspired learning orders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err_console = Console(stderr=True)

# The modules that add commands to `app`, in the order of the pipeline, each with its function that adds them.
COMMAND_MODULES = (
    ("data", "register_data_commands"),
    ("difficulty", "register_difficulty_commands"),
    ("categories", "register_categories_commands"),
    ("order", "register_order_commands"),
    ("train", "register_train_commands"),
    ("evaluate", "register_evaluate_commands"),
    ("generate", "register_generate_commands"),
    ("experiments", "register_experiments_commands"),
    ("demo", "register_demo_commands"),
)


def _register_all() -> None:
    for name, register in COMMAND_MODULES:
        getattr(importlib.import_module(f"medtune.cli.{name}"), register)(app)


_register_all()


# typer >= 0.2x raises its own vendored copy of click's exceptions (typer._click, typer.Exit/Abort), not click's.
_EXIT: tuple[type[BaseException], ...] = (click.exceptions.Exit, typer.Exit)
_ABORT: tuple[type[BaseException], ...] = (click.exceptions.Abort, typer.Abort)
try:
    import typer._click as _typer_click

    _CLICK_ERRORS: tuple[type[BaseException], ...] = (click.ClickException, _typer_click.ClickException)
except ImportError:  # pragma: no cover - older typer uses click itself
    _CLICK_ERRORS = (click.ClickException,)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into a one-line message and exit code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from medtune.cli.options import refresh_settings_options
        from medtune.plugins import load_plugins

        load_plugins()  # methods, backends, strategies or loaders that plugins register
        refresh_settings_options()  # a plugin method's settings get their options (--<group>-<setting>)
        command = typer.main.get_command(app)
        rv = command.main(args=argv, prog_name="medtune", standalone_mode=False)
    except MedtuneError as exc:
        # The message quotes the user's input, which may look like rich markup ('[b]'): print it as text.
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except _EXIT as exc:
        return exc.exit_code
    except _CLICK_ERRORS as exc:
        exc.show()
        return 2
    except _ABORT:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    # In non-standalone mode click returns the code of a `typer.Exit(code)` raised by a command.
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def run() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
