"""The grid's dry run plans every model × method against the GPU memory its cells get and refuses what cannot fit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from transformers import LlamaConfig

from medtune.cli import main
from medtune.experiments import config_from_dict, expand
from medtune.experiments.checks import cell_problems, fits_gpu_memory, memory_plans

REPO = Path(__file__).resolve().parents[2]
LLAMA2_7B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "intermediate_size": 11008,
             "vocab_size": 32000}


@pytest.fixture(scope="module")
def llama7b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only the config.json of a 7B Llama: a shape to plan, no weights."""
    folder = tmp_path_factory.mktemp("models") / "llama7b"
    LlamaConfig(**LLAMA2_7B).save_pretrained(folder)
    return folder


def _grid(tmp_path: Path, llama7b: Path, **training: Any) -> dict[str, Any]:
    """tiny.yaml with the 7B Llama as a second model."""
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data["output_dir"] = str(tmp_path / "run")
    data["models"] = [{"name": "llama7b", "spec": str(llama7b)}, *data["models"]]
    data["training"].update(training)
    return data


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_cell_that_cannot_fit_stops_the_dry_run_with_exit_2(tmp_path: Path, llama7b: Path) -> None:
    data = _grid(tmp_path, llama7b, gpu_memory=16)
    path = _write(tmp_path, data)
    exe = Path(sys.executable).with_name("medtune")
    proc = subprocess.run([str(exe), "run", str(path), "--dry-run"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stderr
    cells = [c.id for c in expand(config_from_dict(data)) if c.model == "llama7b" and not c.is_base]
    assert cells and all(c in err for c in cells)
    assert "tiny__" not in err.split("problem(s)")[1]  # the tiny model fits
    assert "lora on " in err and "needs ~" in err and "the GPU has 16.0 GiB" in err
    assert "would fit: gradient_checkpointing: true" in err
    assert not (tmp_path / "run").exists()


def test_what_would_fit_does_fit_and_the_summary_shows_the_plans(tmp_path: Path, llama7b: Path, capsys) -> None:
    path = _write(tmp_path, _grid(tmp_path, llama7b, gpu_memory=16, gradient_checkpointing=True))
    assert main(["run", str(path), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "memory: llama7b × lora: ~" in out and "of 16.0 GiB per GPU" in out and "memory: tiny × lora" in out


def test_memory_check_off_lets_the_cells_run(tmp_path: Path, llama7b: Path) -> None:
    assert cell_problems(config_from_dict(_grid(tmp_path, llama7b, gpu_memory=16)), [fits_gpu_memory])
    assert not cell_problems(config_from_dict(_grid(tmp_path, llama7b, gpu_memory=16, memory_check=False)),
                             [fits_gpu_memory])


def test_a_models_own_gpu_memory_and_the_executors_gpus(tmp_path: Path, llama7b: Path) -> None:
    data = _grid(tmp_path, llama7b, methods=["full"])
    data["models"][0]["training"] = {"gpu_memory": 80}  # only the 7B states a GPU
    cfg = config_from_dict(data)
    (problem,) = cell_problems(cfg, [fits_gpu_memory])
    assert problem.startswith("4 cells (llama7b__") and "the GPU has 80.0 GiB" in problem
    assert "distributed: fsdp with executor.num_gpus: " in problem
    if not torch.cuda.is_available():
        assert [p.model for p in memory_plans(cfg)] == ["llama7b"]  # no GPU here, and the tiny model states none
    eight = config_from_dict({**data, "executor": {"kind": "ray", "num_gpus": 8}})
    (plan,) = [p.plan for p in memory_plans(eight) if p.model == "llama7b"]
    assert plan.world_size == 8 and plan.sharded and plan.fits
    assert not cell_problems(eight, [fits_gpu_memory])
    shared = config_from_dict({**_grid(tmp_path, llama7b, gpu_memory=32), "executor": {"kind": "ray", "num_gpus": 0.5}})
    (half,) = [p.plan for p in memory_plans(shared) if p.model == "llama7b"]
    assert half.gpu_bytes == 16 * 2**30 and half.fits is False  # two cells share each GPU


@pytest.mark.cpu_only  # a machine with a GPU has one to plan against
def test_no_check_on_a_cpu_machine_without_a_stated_gpu(tmp_path: Path, llama7b: Path) -> None:
    assert memory_plans(config_from_dict(_grid(tmp_path, llama7b))) == []
