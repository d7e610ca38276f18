"""A grid re-run after an upgrade recomputes; every cell is evaluated in the precision it was trained in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import medtune
from medtune import hardware
from medtune.experiments import config_from_dict, expand, load_config, run_experiment
from medtune.experiments.pipeline import cell_precision

REPO = Path(__file__).resolve().parents[2]


def _tiny(tmp_path: Path) -> dict:
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data.update(output_dir=str(tmp_path / "run"), seeds=[0], strategies=["random"])
    data["evaluation"]["baseline"] = False
    return data


def test_a_rerun_after_the_package_version_changes_recomputes(tmp_path, monkeypatch) -> None:
    cfg = config_from_dict(_tiny(tmp_path))
    first = run_experiment(cfg, progress=False)
    assert first.counts == {"done": 1}
    assert run_experiment(cfg, progress=False).ran == []  # same version: nothing recomputed
    record = json.loads(next((tmp_path / "run" / "cells").glob("*.json")).read_text())
    old_keys = {name: stage["key"] for name, stage in record["stages"].items()}

    monkeypatch.setattr(medtune, "__version__", medtune.__version__ + ".post1")
    again = run_experiment(cfg, progress=False)
    assert again.ran == [first.statuses[0].cell.id]  # the finished cell is stale under the new version
    record = json.loads(next((tmp_path / "run" / "cells").glob("*.json")).read_text())
    # Every artifact the cell used is a new one (shared stages were computed again before the cell ran).
    assert not set(old_keys.values()) & {stage["key"] for stage in record["stages"].values()}
    assert record["stages"]["train"]["cached"] is False


def test_the_paper_grid_evaluates_every_cell_in_its_training_precision(monkeypatch) -> None:
    monkeypatch.setenv("MEDTUNE_SHARED_DATA", "/data")
    monkeypatch.setenv("MEDMCQA_DEV", "/data/dev.json")
    cfg = load_config(REPO / "configs" / "paper-yang2024.yaml")
    cells = [c for c in expand(cfg) if not c.is_base]
    assert cells
    for cell in cells:
        p = cell_precision(cfg, cell)
        assert (p["eval_dtype"], p["eval_quantization"]) == (p["train_dtype"], p["train_quantization"]), cell.id
        assert p["train_quantization"] == "4bit"  # QLoRA: its adapter is scored on the 4-bit base it trained on


@pytest.mark.parametrize("native", [True, False])
def test_bf16_training_is_evaluated_in_bf16_only_where_the_cpu_runs_it(tmp_path, monkeypatch, native) -> None:
    monkeypatch.setenv(hardware.ENV_OVERRIDE, "1" if native else "0")
    data = _tiny(tmp_path)
    data["training"]["dtype"] = "bf16"
    cfg = config_from_dict(data)
    cell = next(c for c in expand(cfg) if not c.is_base)
    with pytest.warns(RuntimeWarning) if not native else _no_warning():
        p = cell_precision(cfg, cell)
    want = "bf16" if native else "fp32"
    assert (p["train_dtype"], p["eval_dtype"]) == (want, want)


class _no_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
