"""The A/A arm: the baseline strategy again with order seeds of its own, reported as a calibration check."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from medtune.experiments import config_from_dict, expand, run_experiment, write_report
from medtune.experiments.config import AA_ORDER_SEED_OFFSET

REPO = Path(__file__).resolve().parents[2]


def test_the_aa_arm_draws_its_own_orders_keeps_the_initialisation_and_is_reported(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data.update(output_dir=str(tmp_path / "run"), strategies=["random"])
    data["evaluation"].update(aa_check=True, baseline=False)
    cfg = config_from_dict(data)
    assert [s.id for s in cfg.strategies] == ["random", "random-aa"]
    assert {c.strategy for c in expand(cfg)} == {"random", "random-aa"}
    summary = run_experiment(cfg, progress=False)
    assert summary.counts == {"done": 4}

    cells = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")}
    for seed in (0, 1):
        a = cells[f"tiny__synthetic__lora__random__none__s{seed}"]
        b = cells[f"tiny__synthetic__lora__random-aa__none__s{seed}"]
        order_a, order_b = (json.loads(Path(c["order"]).read_text()) for c in (a, b))
        assert order_a["seed"] == seed and order_b["seed"] == seed + AA_ORDER_SEED_OFFSET
        assert order_a["epochs"] != order_b["epochs"]  # its own order ...
        train_a, train_b = (json.loads((Path(c["train"]["dir"]) / "config.json").read_text())["train"]
                            for c in (a, b))
        assert train_a["seed"] == train_b["seed"] == seed  # ... from the same initialisation
        assert {k: v for k, v in train_a.items()} == train_b

    rep = write_report(summary.run_dir)
    md = rep.markdown.read_text()
    assert "A/A check (tiny / synthetic-test): random-aa − random =" in md
