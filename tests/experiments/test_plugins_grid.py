"""A test-only fine-tuning method and a test-only scoring backend, each one module, used from a YAML grid.

The grid names its plugins under ``plugins:``; nothing else in medtune knows them. The method (``norm-only``:
only the RMSNorm weights train) and the backend (``longest``: scores the longest option highest, no model) are
registered only when the grid loads them, so a finished grid proves that the config reached both registries.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medtune import plugins
from medtune.cli import main
from medtune.schema import read_items
from medtune.scoring import backends as backends_module
from medtune.training.methods import base as methods_base

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "tests" / "plugins"


@pytest.fixture
def fresh_registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registries without the test plugins, and the plugins importable only from tests/plugins."""
    names = ("medtune_test_method", "medtune_test_backend")
    before = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    monkeypatch.syspath_prepend(str(PLUGINS))
    with methods_base.METHODS.scoped(without=["norm-only"]), backends_module.BACKENDS.scoped(without=["longest"]):
        yield
    for name in names:  # the modules imported here registered into the registries that are now restored
        sys.modules.pop(name, None)
    sys.modules.update(before)


def _grid(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data.update(output_dir=str(tmp_path / "run"), seeds=[0], strategies=["random"],
                plugins=["medtune_test_method", "medtune_test_backend"])
    data["training"]["methods"] = ["norm-only"]
    data["evaluation"].update(mode="letter", template="paper", backend="longest", baseline=False)
    data.update(changes)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_grid_trains_with_a_plugin_method_and_scores_with_a_plugin_backend(tmp_path, fresh_registries) -> None:
    assert "norm-only" not in methods_base._REGISTRY and "longest" not in backends_module.BACKENDS
    assert main(["run", str(_grid(tmp_path)), "--no-report"]) == 0
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert list(results["status"]) == ["done"] and list(results["method"]) == ["norm-only"]
    row = results.iloc[0]
    # Trained by the plugin method: a full model saved, the optimizer its own, only norm weights trainable.
    meta = json.loads((Path(row["train_dir"]) / "config.json").read_text())
    assert meta["train"]["method"] == "norm-only" and (Path(row["train_dir"]) / "model").is_dir()
    # hidden 64, one layer: 3 RMSNorm weight vectors of 64 (the whole model has about 50 000 parameters)
    assert meta["trainable_parameters"] == 3 * 64
    # Scored by the plugin backend: every prediction is the longest option (the first on ties).
    preds = pd.read_parquet(row["predictions"])
    items = {it.id: it for it in read_items(Path(json.loads(
        (tmp_path / "run" / "cells" / f"{row['cell_id']}.json").read_text())["tests"]["synthetic-test"]["items"]))}
    expected = [max(range(len(items[i].options)), key=lambda k: (len(items[i].options[k].strip()), -k))
                for i in preds["id"]]
    assert list(preds["pred"]) == expected
    metrics = json.loads(Path(row["predictions"]).with_name("metrics.json").read_text())
    assert metrics["run"]["backend"] == "longest"


def test_a_grid_naming_a_plugin_it_does_not_load_fails_before_running(tmp_path, fresh_registries, capsys) -> None:
    assert main(["run", str(_grid(tmp_path, plugins=["medtune_test_backend"])), "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "training.methods[0]" in err and "norm-only" in err
    assert main(["run", str(_grid(tmp_path, plugins=["no_such_plugin_module"])), "--dry-run"]) == 2
    assert "plugins" in capsys.readouterr().err
