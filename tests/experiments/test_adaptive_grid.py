"""Adaptive strategies as grid arms: a small grid runs them end to end; bad entries fail at their place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medtune.adaptive.verify import verify_run
from medtune.errors import ConfigError
from medtune.experiments import load_config, run_experiment
from medtune.report.inference import gains_table
from medtune.report.results import RunData

REPO = Path(__file__).resolve().parents[2]
ABILITY = {"name": "ability", "adaptive": {"every": 2, "anchors": {"n": 6}, "options": {"delta": 0.5}}}
SELF_PACED = {"name": "self-paced", "label": "sp", "adaptive": {"every": 2, "options": {"start_quantile": 0.5}}}


def _grid(tmp: Path, strategies: list, **extra: object) -> Path:
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data["output_dir"] = str(tmp / "run")
    data["models"][0]["tiny"] = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                 "num_attention_heads": 2}
    data["training"]["max_steps"] = 4
    data["evaluation"]["bootstrap"] = 50
    data["evaluation"]["baseline"] = False
    data["strategies"] = strategies
    data.update(extra)
    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_bad_adaptive_entries_fail_at_their_line(tmp_path: Path) -> None:
    cases = {
        "unknown key": {"name": "ability", "adaptive": {"evry": 2}},
        "unknown adaptive strategy 'curriculum'": {"name": "curriculum", "adaptive": {}},
        "delta_x": {"name": "ability", "adaptive": {"options": {"delta_x": 1}}},
        "under `adaptive.options`": {"name": "ability", "options": {"delta": 1}, "adaptive": {}},
        "greater than or equal to 1": {"name": "rho", "adaptive": {"every": 0}},
    }
    for expected, entry in cases.items():
        path = _grid(tmp_path, ["random", entry])
        with pytest.raises(ConfigError) as info:
            load_config(path)
        message = str(info.value)
        assert expected in message, message
        assert "strategies[1]" in message and f"{path}:" in message, message


def test_dry_run_lists_adaptive_cells(tmp_path: Path) -> None:
    cfg = load_config(_grid(tmp_path, ["random", ABILITY, SELF_PACED], seeds=[0, 1]))
    ids = [s.cell.id for s in run_experiment(cfg, dry_run=True, progress=False).statuses]
    # ability reads difficulty (a cell per source); self-paced does not (source "none"), labelled "sp"
    assert "tiny__synthetic__lora__ability__human__s1" in ids
    assert "tiny__synthetic__lora__sp__none__s0" in ids
    assert len(ids) == 6
    # the adaptive settings are part of each cell's key: another `every` makes another cell result
    other = load_config(_grid(tmp_path, ["random", {**ABILITY, "adaptive": {**ABILITY["adaptive"], "every": 1}},
                                         SELF_PACED], seeds=[0, 1]))
    from medtune.experiments.grid import cell_key, expand

    keys = {c.id: cell_key(cfg, c) for c in expand(cfg)}
    other_keys = {c.id: cell_key(other, c) for c in expand(other)}
    assert keys["tiny__synthetic__lora__ability__human__s0"] != other_keys["tiny__synthetic__lora__ability__human__s0"]
    assert keys["tiny__synthetic__lora__sp__none__s0"] == other_keys["tiny__synthetic__lora__sp__none__s0"]


def test_adaptive_grid_runs_end_to_end(tmp_path: Path) -> None:
    cfg = load_config(_grid(tmp_path, ["random", ABILITY, SELF_PACED], seeds=[0, 1]))
    summary = run_experiment(cfg, progress=False)
    statuses = {s.cell.id: s.status for s in summary.statuses}
    assert set(statuses.values()) == {"done"}, statuses
    cells = {p.stem: json.loads(p.read_text()) for p in (cfg.run_dir / "cells").glob("*.json")}
    random_order = {c["seed"]: c["order"] for c in cells.values() if c["strategy"] == "random"}
    for cid, rec in cells.items():
        if rec["strategy"] == "random":
            continue
        run = Path(rec["train"]["dir"])
        decisions = [json.loads(line) for line in (run / "decisions.jsonl").read_text().splitlines()]
        assert len(decisions) == 2 and decisions[0]["strategy"] == ("ability" if "ability" in cid else "self-paced")
        assert rec["train"]["adaptive"]["decisions"] == 2
        assert rec["order"] == random_order[rec["seed"]]  # the candidate pool: random shuffle's own order
        result = verify_run(run)
        assert result.ok, result
        if rec["strategy"] == "ability":
            assert decisions[0]["theta"] is not None and len(decisions[0]["anchors"]["ids"]) == 6
            test_ids = set()
            for t in rec["tests"].values():
                import pandas as pd

                test_ids |= set(pd.read_parquet(t["items"])["id"])
            assert not set(decisions[0]["anchors"]["ids"]) & test_ids
            meta = json.loads((run / "config.json").read_text())
            assert (run / meta["adaptive"]["settings"]["difficulty"]).is_file()  # the b table, in the store
    gains = gains_table(RunData(cfg.run_dir))
    assert set(gains["strategy"]) == {"ability", "sp"}
    assert (gains["seeds"] == 2).all() and gains["gain_ci_low"].notna().all()
