"""The report's order figures read each cell's order file through the one order-file reader."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from medtune.errors import InputError
from medtune.orders import run_order
from medtune.report.figures import order_figures
from medtune.schema import MCQItem, write_items


def _items(path: Path) -> Path:
    return write_items([MCQItem(id=f"q{i}", question=f"Question {i}?", options=["a", "b"], answer=0, source="t",
                                split="train", category=f"c{i % 2}", human_difficulty=["easy", "hard"][i % 2])
                        for i in range(6)], path)


def _run(records: list[dict[str, Any]]) -> SimpleNamespace:
    """What order_figures reads of a run: its done cells and their records."""
    return SimpleNamespace(done=pd.DataFrame({"seed": [r["seed"] for r in records]}),
                           records={f"cell{k}": r for k, r in enumerate(records)})


def _record(summary: dict[str, Any], strategy: str) -> dict[str, Any]:
    return {"status": "done", "seed": 0, "strategy": strategy, "difficulty": "human", "order": summary["order"],
            "order_items": summary["order_items"]}


def test_order_figures_draw_each_strategy(tmp_path: Path) -> None:
    items = _items(tmp_path / "items.parquet")
    cells = [_record(run_order({"strategy": s, "seed": 0}, items, tmp_path / s), s) for s in ("random", "curriculum")]
    figs = order_figures(_run(cells), tmp_path / "figures")  # type: ignore[arg-type]
    assert list(figs) == ["orders-human"] and figs["orders-human"].stat().st_size > 0


def test_a_bad_order_file_is_named(tmp_path: Path) -> None:
    items = _items(tmp_path / "items.parquet")
    cell = _record(run_order({"strategy": "random", "seed": 0}, items, tmp_path / "random"), "random")
    Path(cell["order"]).write_text(json.dumps({"format": "medtune.order/1"}))
    with pytest.raises(InputError, match=r"order\.json, field 'epochs': missing field"):
        order_figures(_run([cell]), tmp_path / "figures")  # type: ignore[arg-type]
