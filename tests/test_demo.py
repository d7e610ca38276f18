"""``medtune demo`` through the CLI entry point: the dataset stages exactly, the grid in its --quick form.

The full demo (four seeds × six strategies and an A/A arm, one pass each) takes minutes; its timing is measured
by hand and stated in the README. Here the same stages run on the smoke-test grid, so the wiring of every stage
is checked.
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from medtune.cli import main
from medtune.cli.demo import demo
from medtune.data.synthetic_questions import generate_synthetic
from medtune.demo import STAGES, DemoContext, Stage, demo_dataset_options
from medtune.errors import MedtuneError
from medtune.schema import read_items


@pytest.mark.slow  # the whole quick demo: about 40 s
def test_demo_writes_validated_dataset_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seed", "4", "--quick", "--no-cluster"]) == 0
    stdout = capsys.readouterr().out
    for stage in STAGES:
        assert f"✓ {stage.name}" in stdout
    for title in ("Categories", "Answer position", "Human difficulty", "Lengths"):
        assert title in stdout
    items = read_items(out / "items.parquet")
    ds = generate_synthetic(seed=4, **demo_dataset_options(quick=True))
    assert items == ds.items
    assert (out / "items.textbook.txt").read_text(encoding="utf-8").splitlines() == ds.textbook
    kb = json.loads((out / "knowledge_base.json").read_text())
    assert len(kb["diseases"]) == 48 and kb["seed"] == 4

    # the grid ran every cell, and the closing lines give the headline and the report's place
    results = pd.read_parquet(out / "run" / "results.parquet")
    assert set(results["status"]) == {"done"}
    assert {"random", "curriculum", "base", "random-aa"} <= set(results["strategy"])
    report = out / "run" / "report" / "report.html"
    assert report.exists() and f"report: {report}" in stdout.replace("\n", "")
    assert "curriculum [human]" in stdout and "curriculum [llm]" in stdout

    # a second run with the same seed rewrites byte-identical files and recomputes no cell
    first = hashlib.sha256((out / "items.parquet").read_bytes()).hexdigest()
    assert main(["demo", "--out", str(out), "--seed", "4", "--quick", "--no-cluster"]) == 0
    assert hashlib.sha256((out / "items.parquet").read_bytes()).hexdigest() == first
    assert "0 to run" in capsys.readouterr().out


def test_a_failing_stage_stops_the_demo(tmp_path, capsys):
    ran = []

    def boom(ctx: DemoContext) -> str:
        raise MedtuneError("stage exploded")

    def later(ctx: DemoContext) -> str:
        ran.append(1)
        return "ran"

    with pytest.raises(MedtuneError, match="exploded"):
        demo(tmp_path, stages=[STAGES[0], Stage("boom", boom), Stage("later", later)])
    assert ran == []
    assert "✓ generate synthetic dataset" in capsys.readouterr().out


def test_demo_help():
    assert main(["demo", "--help"]) == 0


def test_the_full_demo_trains_on_every_generated_question_once():
    """The embedded grid asks the study's question: one pass over every distinct training question."""
    import yaml

    from medtune.demo import demo_config_text
    from medtune.experiments import config_from_dict

    options = demo_dataset_options()
    ds = generate_synthetic(seed=0, **options)
    train = [it for it in ds.items if it.split == "train"]
    assert len({it.question for it in train}) == len(train) > 1500
    more = generate_synthetic(seed=0, **{**options, "train_per_level": 10 * options["train_per_level"]})
    assert sum(it.split == "train" for it in more.items) == len(train)  # no question left ungenerated
    cfg = config_from_dict({**yaml.safe_load(demo_config_text()), "output_dir": "unused"})
    assert cfg.training.epochs == 1 and cfg.training.max_steps is None and len(cfg.seeds) >= 3
    assert cfg.evaluation.aa_check
