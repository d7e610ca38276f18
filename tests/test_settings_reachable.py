"""Every training, scoring and evaluation setting is reachable from the CLI and from a YAML grid, with one default.

The stage schemas are the single source: a CLI option generated from a field, or a grid section made from the
same schema, cannot drift from it; these tests catch a field that one of them leaves out (or a hand-written
option or grid key that sets its own default).
"""

from __future__ import annotations

from typing import Any

import click
import pytest
import typer

from medtune.cli import app
from medtune.difficulty_stage import DifficultySettings
from medtune.evaluation_stage import EvalSettings
from medtune.experiments.config import (
    GridDifficultySettings,
    GridEvaluationSettings,
    GridModelSettings,
    GridTrainingSettings,
)
from medtune.settings import settings_group_class
from medtune.training.config import CELL_FIELDS, TrainSettings, resolve_training_settings


def _command(*path: str) -> click.Command:
    cmd: Any = typer.main.get_command(app)
    for name in path:
        assert hasattr(cmd, "commands"), f"{name}: not a command group"
        cmd = cmd.commands[name]
    return cmd


def _cli_options(cmd: click.Command) -> dict[str, click.Parameter]:
    """Settings field → the option that sets it (generated options are named ``opt_<field>``)."""
    out: dict[str, click.Parameter] = {}
    for p in cmd.params:
        name = p.name or ""
        out[name.removeprefix("opt_")] = p
    return out


def schema_default(schema: Any, name: str) -> Any:
    return schema.model_fields[name].get_default(call_default_factory=True)


# Grid keys that stand for a stage field: the grid's axes (one value per cell). On the command line the
# difficulty source is the sub-command (score: llm/irt, import: file, human: human, from-responses: responses), or
# `difficulty compute --source NAME` for any source.
TRAIN_AXES = {"method": "methods", "seed": "seeds", "model": "models[].spec", "epochs": "training.epochs"}
DIFFICULTY_AXES = {"source": "sources"}


@pytest.mark.parametrize(
    ("schema", "commands", "section", "axes", "cli_alias"),
    [
        (TrainSettings, [("train",)], GridTrainingSettings, TRAIN_AXES, {}),
        (EvalSettings, [("evaluate", "run")], GridEvaluationSettings, {}, {}),
        (DifficultySettings, [("difficulty", "score"), ("difficulty", "import"), ("difficulty", "human"),
                              ("difficulty", "compute")],
         GridDifficultySettings,
         DIFFICULTY_AXES, {"ensemble": "model", "file": "table"}),
    ],
    ids=["training", "evaluation", "difficulty-scoring"],
)
def test_every_setting_has_a_cli_option_and_a_grid_key(schema, commands, section, axes, cli_alias) -> None:
    options: dict[str, click.Parameter] = {}
    for path in commands:  # sibling sub-commands may share one schema (difficulty score / import)
        options.update(_cli_options(_command(*path)))
    grid_keys = set(section.model_fields)
    missing_cli, missing_grid, own_default = [], [], []
    for name in schema.model_fields:
        group = settings_group_class(schema.model_fields[name].annotation) if schema is TrainSettings else None
        if group is not None:  # a method's settings group: one option per setting, a nested grid section
            nested = section.model_fields[name].annotation.__args__[0] if name in grid_keys else None
            for sub in group.model_fields:
                option = options.get(f"{name}__{sub}")
                if option is None:
                    missing_cli.append(f"{name}.{sub}")
                elif option.default not in (None, ()) and option.default != schema_default(group, sub):
                    own_default.append(f"{name}.{sub}: CLI {option.default!r}")
                if nested is None or sub not in nested.model_fields:
                    missing_grid.append(f"{name}.{sub}")
                elif nested.model_fields[sub].default is not None:
                    own_default.append(f"{name}.{sub}: grid {nested.model_fields[sub].default!r}")
            continue
        option = options.get(cli_alias.get(name, name))
        if option is None and name in axes and schema is DifficultySettings:
            pass  # the sub-command
        elif option is None:
            missing_cli.append(name)
        elif (option.default not in (None, ()) and option.default != schema_default(schema, name)
              # a hand-written flag (e.g. --quantiles) may default to False for "not given" over a None default
              and not (option.default is False and schema_default(schema, name) is None)):
            own_default.append(f"{name}: CLI {option.default!r}")
        if name not in grid_keys and name not in axes:
            missing_grid.append(name)
        elif name in grid_keys and name not in axes and section.model_fields[name].default is not None:
            own_default.append(f"{name}: grid {section.model_fields[name].default!r}")
    assert not missing_cli, f"{schema.__name__} fields without a CLI option: {missing_cli}"
    assert not missing_grid, f"{schema.__name__} fields without a grid key: {missing_grid}"
    assert not own_default, f"defaults that differ from the schema's: {own_default}"


def test_unset_cli_options_and_an_empty_grid_section_resolve_to_the_same_training_settings() -> None:
    from medtune.experiments import config_from_dict

    cli = resolve_training_settings({}, {"method": "lora", "model": "tiny", "seed": 3}, where="options")
    cfg = config_from_dict({"name": "x", "output_dir": "/tmp/x", "models": [{"name": "m", "spec": "tiny"}],
                            "datasets": [{"source": "synthetic"}], "test_sets": [{"source": "synthetic"}],
                            "strategies": ["random"], "seeds": [3]})
    assert cfg.training_settings("m", "lora", 3) == cli == TrainSettings(seed=3)
    # A model's own training section holds every field too (and wins over the grid's).
    model_training = GridModelSettings.model_fields["training"].annotation
    assert set(model_training.model_fields) == set(TrainSettings.model_fields) - {*CELL_FIELDS, "epochs"}
