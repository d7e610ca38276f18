"""Every wrong value of a grid config names its YAML file and line, also those only a stage or a registry can
judge (strategy names and options, training, evaluation and difficulty values, adaptive entries), the same way
an unknown key does: ``FILE:LINE: key.path: message``."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtune.cli import main
from medtune.errors import ConfigError
from medtune.experiments import load_config

HERE = "# <- here"

GRID = """\
name: places
output_dir: {out}
seeds: [0]
models:
  - name: tiny
    spec: tiny
    tiny: {{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2}}
    vocab_size: 256
{model_training}datasets:
  - name: synthetic
    source: synthetic
    split: train
    options: {{seed: 0, n_systems: 2, diseases_per_system: 2, train_per_level: 1, test_per_level: 1}}
test_sets:
  - name: synthetic-test
    source: synthetic
    split: test
    options: {{seed: 0, n_systems: 2, diseases_per_system: 2, train_per_level: 1, test_per_level: 1}}
strategies:
  - random
{strategies}baseline_strategy: {baseline}
difficulty:
{difficulty}categories:
  method: {categories}
training:
  methods: {methods}
  max_steps: 2
  batch_size: 2
{training}evaluation:
  mode: option
{evaluation}executor:
  kind: local
"""

HUMAN = "  sources: [human]\n"
DEFAULTS = {"model_training": "", "strategies": "  - curriculum\n", "baseline": "random", "difficulty": HUMAN,
            "categories": "given", "methods": "[lora]", "training": "", "evaluation": ""}

CASES = {
    "unknown strategy": ({"strategies": f"  - name: curriculm  {HERE}\n"}, "strategies[1]", "unknown strategy"),
    "bare unknown strategy": ({"strategies": f"  - curriculm  {HERE}\n"}, "strategies[1]", "unknown strategy"),
    "option of the wrong type": (
        {"strategies": f"  - name: interleaved\n    options:\n      category_order: sorted\n      k: three  {HERE}\n"},
        "strategies[1]", "k must be a positive integer"),
    "unknown option": ({"strategies": f"  - name: interleaved\n    options:\n      kk: 3  {HERE}\n"},
                       "strategies[1]", "has no option 'kk'"),
    "zero learning rate": ({"training": f"  lr: 0  {HERE}\n"}, "training.lr", "greater than 0"),
    "a model's own value": ({"model_training": f"    training:\n      batch_size: 0  {HERE}\n"},
                            "models[0].training.batch_size", "greater than or equal to 1"),
    "the grid's value under a model with settings of its own": (
        {"model_training": "    training: {grad_accum: 2}\n", "training": f"  lr: -1  {HERE}\n"},
        "training.lr", "greater than 0"),
    "unknown preset": ({"training": f"  preset: nope  {HERE}\n"}, "training.preset", "unknown preset"),
    "unknown method": ({"methods": f"[lora, sft]  {HERE}"}, "training.methods[1]", "unknown method"),
    "baseline strategy": ({"baseline": f"blocked  {HERE}"}, "baseline_strategy", "not among the strategies"),
    "evaluation bound": ({"evaluation": f"  bootstrap: 0  {HERE}\n"}, "evaluation.bootstrap",
                         "greater than or equal to 1"),
    "difficulty thresholds": ({"difficulty": f"{HUMAN}  thresholds: [0.9, 0.1]  {HERE}\n"},
                              "difficulty.thresholds", ""),
    "category method": ({"categories": f"givn  {HERE}"}, "categories.method", "'given' or 'cluster'"),
    "llm difficulty without its ensemble": ({"difficulty": f"  sources: [llm]  {HERE}\n"}, "difficulty.sources",
                                            "need `ensemble`"),
    "thresholds and quantiles": ({"difficulty": f"{HUMAN}  thresholds: [0.3, 0.6]\n  quantiles: [0.3, 0.6]  {HERE}\n"},
                                 "difficulty.quantiles", "not both"),
    "baseline method": ({"strategies": f"  - curriculum\nbaseline_method: full  {HERE}\n"}, "baseline_method",
                        "is not one of training.methods"),
    "adaptive options in the wrong place": (
        {"strategies": f"  - name: ability\n    options: {{delta: 1}}  {HERE}\n    adaptive: {{}}\n"},
        "strategies[1].options", "under `adaptive.options`"),
    "adaptive option": (
        {"strategies": f"  - name: ability\n    adaptive:\n      options: {{delta_x: 1}}  {HERE}\n"},
        "strategies[1].adaptive.options", "delta_x"),
}


def _grid(tmp_path: Path, **values: str) -> tuple[Path, int]:
    text = GRID.format(out=tmp_path / "run", **{**DEFAULTS, **values})
    lines = text.splitlines()
    path = tmp_path / "grid.yaml"
    path.write_text(text, encoding="utf-8")
    return path, next((i for i, line in enumerate(lines, 1) if HERE in line), 0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_wrong_value_names_its_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               case: str) -> None:
    values, key, fragment = CASES[case]
    path, line = _grid(tmp_path, **values)
    assert line > 0
    assert main(["run", str(path), "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{path}:{line}: {key}: " in err and fragment in err, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
    with pytest.raises(ConfigError) as info:  # the library call says the same, on one line
        load_config(path)
    assert len(str(info.value).splitlines()) == 1 and f"{path}:{line}: {key}: " in str(info.value)


def test_the_same_grid_with_good_values_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _grid(tmp_path, training="  lr: 0.001\n", evaluation="  bootstrap: 10\n",
                    strategies="  - name: interleaved\n    options: {k: 2}\n")
    assert main(["run", str(path), "--dry-run"]) == 0, capsys.readouterr().err


def test_every_problem_of_a_grid_is_named_at_once(tmp_path: Path) -> None:
    path, first = _grid(tmp_path, training=f"  lr: 0  {HERE}\n", strategies=f"  - curriculm  {HERE}\n")
    second = [i for i, line in enumerate(path.read_text().splitlines(), 1) if HERE in line][1]
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert f"{path}:{first}: strategies[1]: unknown strategy" in text and f"{path}:{second}: training.lr: " in text
