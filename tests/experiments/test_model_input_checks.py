"""A dry run checks every model and file a cell will read: base models given as folders or .gguf files, the
categories stage's embedding model, the anchors files of the training settings. Each grid here lacks one input
(the dry run stops, naming it and the cells) and then has it (the check passes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtune.cli import main
from medtune.experiments import load_config
from medtune.experiments.checks import cell_problems, model_inputs, training_files

GRID = """\
name: inputs
output_dir: run
seeds: [0]
models:
  - name: m
    spec: {spec}
    tiny: {{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2}}
    vocab_size: 256
datasets:
  - name: synthetic
    source: synthetic
    split: train
    options: {{seed: 0, n_systems: 2, diseases_per_system: 2, train_per_level: 1, test_per_level: 1}}
test_sets:
  - name: synthetic-test
    source: synthetic
    split: test
    options: {{seed: 0, n_systems: 2, diseases_per_system: 2, train_per_level: 1, test_per_level: 1}}
strategies: [random]
difficulty:
  sources: [human]
categories:
{categories}training:
  methods: [lora]
  max_steps: 2
{training}executor:
  kind: local
"""


def _grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, spec: str = "tiny", categories: str = "  method: given\n",
          training: str = "") -> Path:
    monkeypatch.chdir(tmp_path)  # relative paths of a grid start where medtune runs
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(spec=spec, categories=categories, training=training), encoding="utf-8")
    return path


def _dry_run_refuses(path: Path, capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    assert main(["run", str(path), "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cell m__synthetic__lora__" in err or "cells (m__synthetic__" in err, err  # the cells it stops
    for fragment in fragments:
        assert fragment in err, err
    assert not (path.parent / "run").exists()


def test_embedding_model_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    path = _grid(tmp_path, monkeypatch, categories="  method: cluster\n  embedding_model: models/S-PubMedBert\n")
    _dry_run_refuses(path, capsys, "categories.embedding_model not found: models/S-PubMedBert → "
                     f"{tmp_path / 'models' / 'S-PubMedBert'}")
    (tmp_path / "models" / "S-PubMedBert").mkdir(parents=True)
    assert cell_problems(load_config(path), [model_inputs]) == []
    assert main(["run", str(path), "--dry-run"]) == 0, capsys.readouterr().err


def test_embedding_model_hub_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub name is resolved as the stage resolves it: offline only a cached one is there; online it is fetched."""
    path = _grid(tmp_path, monkeypatch, categories="  method: cluster\n  embedding_model: no-such-org/no-such-model\n")
    monkeypatch.setattr("medtune.models.hub_offline", lambda: True)
    (problem,) = cell_problems(load_config(path), [model_inputs])
    assert "categories.embedding_model" in problem and "no-such-org/no-such-model" in problem
    assert "Hugging Face cache" in problem
    monkeypatch.setattr("medtune.models.hub_offline", lambda: False)
    assert cell_problems(load_config(path), [model_inputs]) == []


def test_the_default_embedding_model_and_given_categories_need_nothing(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert cell_problems(load_config(_grid(tmp_path, monkeypatch, categories="  method: cluster\n")),
                         [model_inputs]) == []
    given = _grid(tmp_path, monkeypatch, categories="  method: given\n  embedding_model: models/absent\n")
    assert cell_problems(load_config(given), [model_inputs]) == []  # the categories stage does not run


@pytest.mark.parametrize(("spec", "make"), [
    ("models/llama-7b", lambda p: p.mkdir(parents=True)),
    ("./weights/model.Q4_K_M.gguf", lambda p: (p.parent.mkdir(parents=True), p.write_bytes(b"GGUF"))),
    ("$MEDTUNE_TEST_MODELS/llama", lambda p: p.mkdir(parents=True)),
])
def test_base_model_folder_or_gguf_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str], spec: str, make) -> None:
    monkeypatch.setenv("MEDTUNE_TEST_MODELS", str(tmp_path / "store"))
    path = _grid(tmp_path, monkeypatch, spec=spec)
    target = load_config(path).resolve(spec)
    assert target is not None
    _dry_run_refuses(path, capsys, "model 'm' (models[].spec) not found:", str(target))
    make(target)
    assert cell_problems(load_config(path), [model_inputs]) == []


def test_a_hub_base_model_is_not_a_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _grid(tmp_path, monkeypatch, spec="meta-llama/Llama-2-7b-chat-hf")
    assert cell_problems(load_config(path), [model_inputs]) == []


def test_anchors_files_of_the_training_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = _grid(tmp_path, monkeypatch, training="  eval_anchors: anchors/anchors.json\n"
                                                  "  eval_items: anchors/items.parquet\n")
    _dry_run_refuses(path, capsys, f"training.eval_anchors not found: anchors/anchors.json → "
                     f"{tmp_path / 'anchors' / 'anchors.json'}", "training.eval_items not found:")
    (tmp_path / "anchors").mkdir()
    (tmp_path / "anchors" / "anchors.json").write_text("{}", encoding="utf-8")
    (problem,) = cell_problems(load_config(path), [training_files])
    assert "training.eval_items" in problem and "eval_anchors" not in problem
    (tmp_path / "anchors" / "items.parquet").write_bytes(b"PAR1")
    assert cell_problems(load_config(path), [training_files]) == []


def test_difficulty_ensemble_model_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = _grid(tmp_path, monkeypatch)
    text = path.read_text().replace("  sources: [human]\n", "  sources: [llm]\n  ensemble: [m, ./scorers/qwen-0.5b]\n")
    text = text.replace("strategies: [random]", "strategies: [random, curriculum]")
    path.write_text(text, encoding="utf-8")
    _dry_run_refuses(path, capsys, "difficulty.ensemble model './scorers/qwen-0.5b' not found: ./scorers/qwen-0.5b → "
                     f"{tmp_path / 'scorers' / 'qwen-0.5b'}")
    (tmp_path / "scorers" / "qwen-0.5b").mkdir(parents=True)
    assert cell_problems(load_config(path), [model_inputs]) == []


def test_the_validation_items_file_of_the_training_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = _grid(tmp_path, monkeypatch, training="  validation: {items: dev/items.parquet, every: 5}\n")
    _dry_run_refuses(path, capsys, "training.validation.items not found: dev/items.parquet")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "items.parquet").write_bytes(b"PAR1")
    assert cell_problems(load_config(path), [training_files]) == []
