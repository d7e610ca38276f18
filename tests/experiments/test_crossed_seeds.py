"""Order seeds crossed with initialisation seeds: the grid, a real run, and the report's variance decomposition."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from medtune.errors import ConfigError
from medtune.experiments import config_from_dict, expand, run_experiment
from medtune.experiments.grid import Cell, cell_key
from medtune.experiments.store import ResultStore
from medtune.report import write_report
from medtune.report.inference import gains_table, variance_table
from medtune.report.results import RunData

REPO = Path(__file__).resolve().parents[2]


def _tiny(tmp_path: Path, **changes: object) -> dict:
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data.update(output_dir=str(tmp_path / "run"), **changes)
    return data


def test_tied_seeds_keep_their_ids_and_keys(tmp_path: Path) -> None:
    cfg = config_from_dict(_tiny(tmp_path))
    assert cfg.run_seeds == [(0, None), (1, None)] and not cfg.crossed_seeds
    cells = [c for c in expand(cfg) if not c.is_base]
    assert {c.id.rsplit("__", 1)[1] for c in cells} == {"s0", "s1"}
    assert all(c.order_seed_value == c.seed for c in cells)
    # A tied cell hashes as it did before order seeds existed (its runs stay valid).
    assert "order_seed" not in cells[0].key_fields()


def test_crossed_seeds_give_every_pair_one_cell(tmp_path: Path) -> None:
    data = _tiny(tmp_path, order_seeds=[0, 1, 2], init_seeds=[5, 6])
    data.pop("seeds")
    cfg = config_from_dict(data)
    cells = [c for c in expand(cfg) if c.strategy == "random"]
    assert sorted(c.run_key for c in cells) == [(i, o) for i in (5, 6) for o in (0, 1, 2)]
    assert {c.id.rsplit("__", 1)[1] for c in cells} == {f"s{i}-o{o}" for i in (5, 6) for o in (0, 1, 2)}
    # The order seed is part of the cell's identity.
    a, b = Cell("tiny", "synthetic", "lora", "random", "none", 5, 0), Cell("tiny", "synthetic", "lora", "random",
                                                                           "none", 5, 1)
    assert cell_key(cfg, a) != cell_key(cfg, b)


@pytest.mark.parametrize("changes, message", [
    ({"order_seeds": [0, 1]}, "need both"),
    ({"init_seeds": [0, 1]}, "need both"),
    ({"order_seeds": [0, 1], "init_seeds": [0, 1], "seeds": [0]}, "not both"),
    ({"order_seeds": [0, 0], "init_seeds": [0, 1]}, "duplicate"),
])
def test_a_half_given_or_doubled_seed_design_is_rejected(tmp_path: Path, changes: dict, message: str) -> None:
    data = _tiny(tmp_path)
    data.pop("seeds")
    data.update(changes)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_a_crossed_run_draws_orders_from_the_order_seed_and_weights_from_the_init_seed(tmp_path: Path) -> None:
    data = _tiny(tmp_path, order_seeds=[0, 1], init_seeds=[0, 1], strategies=["random"])
    data.pop("seeds")
    data["evaluation"].update(baseline=False)
    data["training"]["max_steps"] = 3
    summary = run_experiment(config_from_dict(data), progress=False)
    assert summary.counts == {"done": 4}
    cells = {p.stem.rsplit("__", 1)[1]: json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*")}
    orders = {k: json.loads(Path(c["order"]).read_text()) for k, c in cells.items()}
    trains = {k: json.loads((Path(c["train"]["dir"]) / "config.json").read_text())["train"] for k, c in cells.items()}
    for init in (0, 1):
        for order in (0, 1):
            k = f"s{init}-o{order}"
            assert orders[k]["seed"] == order and trains[k]["seed"] == init
    assert orders["s0-o0"]["epochs"] == orders["s1-o0"]["epochs"]  # same order seed: the same order
    assert orders["s0-o0"]["epochs"] != orders["s0-o1"]["epochs"]
    table = ResultStore(tmp_path / "run").build_tables()
    import pandas as pd

    res = pd.read_parquet(table)
    assert sorted(zip(res["seed"], res["order_seed"], strict=True)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    md = write_report(summary.run_dir).markdown.read_text()
    assert "Seeds, crossed: initialisation 0, 1 × order 0, 1" in md
    assert "the order seed accounts for" in md


# ----------------------------------------------------------------------------------------------------------
# The report on a hand-built run with planted seed effects

N_ITEMS = 200


def _run(root: Path, order_sd: float, init_sd: float, seed: int = 0) -> Path:
    """Cells of two strategies over 4 order × 4 init seeds: accuracy = 0.5 + order effect + init effect."""
    from medtune.schema import MCQItem, write_items

    rng = np.random.default_rng(seed)
    items = write_items([MCQItem(id=f"t{i}", question=f"Q{i}?", options=["a", "b"], answer=0, source="t",
                                 split="test") for i in range(N_ITEMS)], root / "test.parquet")
    order_fx, init_fx = rng.normal(0, order_sd, 4), rng.normal(0, init_sd, 4)
    store = ResultStore(root / "run")
    easy = rng.random(N_ITEMS)
    for strategy, shift in (("random", 0.0), ("curriculum", 0.02)):
        for i in range(4):
            for o in range(4):
                acc = 0.5 + shift + order_fx[o] + init_fx[i] + rng.normal(0, 0.005)
                c = (easy < acc).astype(int)
                cell = f"m__d__lora__{strategy}__none__s{i}-o{o}"
                path = root / "preds" / f"{cell}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                import pandas as pd

                pd.DataFrame({"id": [f"t{j}" for j in range(N_ITEMS)], "mode": "option", "answer": 0,
                              "pred": 1 - c, "correct": c.astype(bool), "scores": None, "probs": None,
                              "permutation": None, "generated": None}).to_parquet(path)
                store.write({"cell_id": cell, "model": "m", "dataset": "d", "method": "lora", "strategy": strategy,
                             "difficulty": "none", "seed": i, "order_seed": o, "key": "k", "status": "done",
                             "test_sets": ["t"],
                             "tests": {"t": {"accuracy": float(c.mean()), "n_items": N_ITEMS, "metric": "accuracy",
                                             "n_correct": int(c.sum()), "predictions": str(path), "items": str(items)}},
                             "train": {"steps": 3, "final_loss": 1.0, "seconds": 0.1}})
    store.build_tables()
    return root / "run"


@pytest.mark.parametrize("order_sd, init_sd, bigger", [(0.04, 0.0, "order"), (0.0, 0.04, "init")])
def test_the_variance_table_finds_the_seed_that_moves_accuracy(tmp_path: Path, order_sd: float, init_sd: float,
                                                              bigger: str) -> None:
    run = RunData(_run(tmp_path, order_sd, init_sd))
    var = variance_table(run)
    assert sorted(var["label"][:2]) == ["curriculum", "random"] and var["label"].iloc[-1] == "all arms (pooled)"
    pooled = var.iloc[-1]
    other = "init" if bigger == "order" else "order"
    assert pooled[f"share_{bigger}"] > 0.7 and pooled[f"share_{other}"] < 0.2
    assert pooled[f"p_{bigger}"] < 0.01
    # Arms pair on the same (init, order) run: 16 pairs, and the shared seed effects cancel in the gain.
    gains = gains_table(run)
    row = gains.iloc[0]
    assert row["seeds"] == 16
    assert abs(row["gain"] - 0.02) < 0.01 and row["sd_gain"] < 0.02


def test_tied_runs_have_no_variance_table(tmp_path: Path) -> None:
    data = _tiny(tmp_path)
    cfg = config_from_dict(data)
    assert cfg.run_seeds[0][1] is None
    # A results table from before order seeds existed: the order seed is read as the seed.
    store = ResultStore(tmp_path / "run")
    store.write({"cell_id": "m__d__lora__random__none__s0", "model": "m", "dataset": "d", "method": "lora",
                 "strategy": "random", "difficulty": "none", "seed": 0, "key": "k", "status": "done",
                 "test_sets": ["t"], "tests": {"t": {"accuracy": 0.5, "n_items": 2}}})
    store.build_tables()
    run = RunData(tmp_path / "run")
    assert list(run.done["order_seed"]) == [0]
    assert variance_table(run).empty
