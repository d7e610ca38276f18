"""The test-only plugins of tests/plugins, each one module, used from the command line through MEDTUNE_PLUGINS.

A strategy (``longest-id-first``), a data loader (``test-quiz``), a scoring backend that loads a saved model folder
(``local``) and a difficulty source (``question-length``): nothing in medtune knows them, so a command that works
with one proves the CLI reached the registry it lives in. tests/experiments/test_plugins_grid.py uses the same
modules from a YAML grid.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from medtune import plugins
from medtune.cli import main
from medtune.data.registry import LOADERS
from medtune.difficulty_sources import SOURCES
from medtune.orders.strategies import STRATEGIES
from medtune.schema import read_items
from medtune.scoring.backends import BACKENDS

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "plugins"
MODULES = ("medtune_test_strategy", "medtune_test_loader", "medtune_test_local_backend", "medtune_test_difficulty")


@pytest.fixture
def test_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The four plugins named in MEDTUNE_PLUGINS and importable from tests/plugins, not yet imported; afterwards
    every registry is as it was."""
    before = {name: sys.modules.pop(name) for name in MODULES if name in sys.modules}
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    with STRATEGIES.scoped(without=["longest-id-first"]), LOADERS.scoped(without=["test-quiz"]), \
            BACKENDS.scoped(without=["local"]), SOURCES.scoped(without=["question-length"]):
        monkeypatch.setattr(plugins, "_loaded", set())
        monkeypatch.syspath_prepend(str(PLUGINS))
        monkeypatch.setenv(plugins.ENV_VAR, ",".join(MODULES))
        yield
        monkeypatch.undo()
    for name in MODULES:
        sys.modules.pop(name, None)
    sys.modules.update(before)


def _quiz(tmp_path: Path, n: int = 6, split: str = "train") -> Path:
    out = tmp_path / f"quiz-{split}.parquet"
    assert main(["data", "load", "test-quiz", "--option", f"n={n}", "--option", f"split={split}", "-o", str(out)]) == 0
    return out


def test_the_loader_and_the_strategy_from_the_cli(tmp_path, test_plugins) -> None:
    items = read_items(_quiz(tmp_path, n=12))
    assert [it.id for it in items] == [f"tq-train-{k}" for k in range(12)]
    assert [it.answer for it in items[:5]] == [0, 1, 2, 3, 0] and items[3].category == "c1"
    path = _quiz(tmp_path, n=12)
    for reverse, first in (("no", "tq-train-11"), ("yes", "tq-train-0")):
        out = tmp_path / f"order-{reverse}"
        assert main(["order", str(path), "-s", "longest-id-first", "--seed", "3", "--option", f"reverse={reverse}",
                     "-o", str(out)]) == 0
        ids = json.loads((out / "order.json").read_text())["epochs"][0]
        assert ids[0] == first and sorted(ids) == sorted(it.id for it in items)
    assert main(["order", str(path), "-s", "longest-id-first", "--seed", "0", "--option", "reverse=maybe",
                 "-o", str(tmp_path / "bad")]) == 2


def test_the_difficulty_source_from_the_cli_and_the_order_stage_reading_it(tmp_path, test_plugins) -> None:
    path = _quiz(tmp_path, n=12)
    diff = tmp_path / "difficulty.parquet"
    assert main(["difficulty", "compute", str(path), "--source", "question-length", "-o", str(diff)]) == 0
    table = pd.read_parquet(diff)
    items = read_items(path)
    longest = max(len(it.question) for it in items)
    assert list(table["difficulty"]) == [len(it.question) / longest for it in items]
    out = tmp_path / "order"
    assert main(["order", str(path), "-s", "curriculum-strict", "--seed", "0", "--difficulty", str(diff),
                 "--difficulty-source", "question-length", "-o", str(out)]) == 0
    ids = json.loads((out / "order.json").read_text())["epochs"][0]
    by_id = dict(zip(table["id"], table["difficulty"], strict=True))
    assert [by_id[i] for i in ids] == sorted(by_id.values())
    # a misspelt source: the registry's error, with the close match
    assert main(["difficulty", "compute", str(path), "--source", "question-lenght", "-o", str(diff)]) == 2


def test_the_local_weights_backend_from_the_cli_scores_as_hf_does_on_the_same_folder(tmp_path, test_plugins) -> None:
    from medtune.models import build_tiny_model

    test = _quiz(tmp_path, n=4, split="test")
    model, tok = build_tiny_model([it.question for it in read_items(test)], vocab_size=300, seed=0)
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    preds, backends = {}, {}
    for spec in (f"local:{folder}", str(folder)):
        out = tmp_path / ("eval-local" if spec.startswith("local:") else "eval-hf")
        assert main(["evaluate", "run", str(test), "--model", spec, "-o", str(out), "--device", "cpu"]) == 0
        preds[spec] = pd.read_parquet(out / "predictions.parquet")
        backends[spec] = json.loads((out / "metrics.json").read_text())["run"]["backend"]
    loaded = sys.modules["medtune_test_local_backend"].LOADED
    assert loaded == [str(folder)]
    local, hf = preds[f"local:{folder}"], preds[str(folder)]
    assert list(local["pred"]) == list(hf["pred"])
    assert [p for row in local["probs"] for p in row] == pytest.approx([p for row in hf["probs"] for p in row])
    assert backends == {f"local:{folder}": "local", str(folder): "hf"}
    assert main(["evaluate", "run", str(test), "--model", f"local:{tmp_path / 'nowhere'}", "-o",
                 str(tmp_path / "bad")]) == 2
