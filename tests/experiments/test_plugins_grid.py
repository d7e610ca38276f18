"""Test-only plugins, each one module of tests/plugins, used from a YAML grid.

The grid names its plugins under ``plugins:``; nothing else in medtune knows them. The method (``norm-only``:
only the RMSNorm weights train) and the backend (``longest``: scores the longest option highest, no model) are
registered only when the grid loads them, so a finished grid proves that the config reached both registries. A
second grid does the same for a data loader (``test-quiz``), a strategy (``longest-id-first``), a difficulty
source (``question-length``) and a backend that loads the fine-tuned weights from their folder (``local``).
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


OTHER_PLUGINS = ("medtune_test_strategy", "medtune_test_loader", "medtune_test_local_backend",
                 "medtune_test_difficulty")


@pytest.fixture
def other_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The strategy, loader, local-weights backend and difficulty source of tests/plugins, not yet imported;
    afterwards every registry is as it was."""
    from medtune.data.registry import LOADERS
    from medtune.difficulty_sources import SOURCES
    from medtune.orders.strategies import STRATEGIES

    before = {name: sys.modules.pop(name) for name in OTHER_PLUGINS if name in sys.modules}
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    with STRATEGIES.scoped(without=["longest-id-first"]), LOADERS.scoped(without=["test-quiz"]), \
            backends_module.BACKENDS.scoped(without=["local"]), SOURCES.scoped(without=["question-length"]):
        monkeypatch.setattr(plugins, "_loaded", set())
        monkeypatch.syspath_prepend(str(PLUGINS))
        yield
        monkeypatch.undo()
    for name in OTHER_PLUGINS:
        sys.modules.pop(name, None)
    sys.modules.update(before)


def test_a_grid_with_a_plugin_loader_strategy_difficulty_source_and_local_weights_backend(tmp_path,
                                                                                      other_plugins) -> None:
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data.update(output_dir=str(tmp_path / "run"), seeds=[0], plugins=list(OTHER_PLUGINS),
                datasets=[{"name": "quiz", "source": "test-quiz", "split": "train", "options": {"n": 12}}],
                test_sets=[{"name": "quiz-test", "source": "test-quiz", "split": "test",
                            "options": {"n": 4, "split": "test"}}],
                strategies=["random", {"name": "longest-id-first", "options": {"reverse": "yes"}}, "curriculum-strict"])
    data["difficulty"] = {"sources": ["question-length"]}
    data["evaluation"].update(backend="local", baseline=False)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["run", str(path), "--no-report"]) == 0
    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert sorted(results["strategy"]) == ["curriculum-strict", "longest-id-first", "random"]
    assert set(results["status"]) == {"done"}
    assert dict(zip(results["strategy"], results["difficulty"], strict=True))["curriculum-strict"] == "question-length"
    for row in results.itertuples():
        metrics = json.loads(Path(row.predictions).with_name("metrics.json").read_text())
        assert metrics["run"]["backend"] == "local"  # the plugin loaded the fine-tuned weights
    loaded = sys.modules["medtune_test_local_backend"].LOADED
    assert loaded and all(Path(folder, "config.json").is_file() for folder in loaded)
    orders = {o["strategy"]: o["epochs"][0] for o in (json.loads(p.read_text())
                                                      for p in (tmp_path / "run").rglob("order.json"))}
    assert orders["longest-id-first"][:2] == ["tq-train-0", "tq-train-1"]  # reverse=yes: shortest id first
    length = {it.id: len(it.question) for it in (sys.modules["medtune_test_loader"].build_item(k, 12, "train")
                                                 for k in range(12))}
    by_length = [length[i] for i in orders["curriculum-strict"]]
    assert by_length == sorted(by_length) and len(set(by_length)) > 1  # by the plugin source's difficulty
