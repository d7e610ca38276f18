"""configs/paper-yang2024.yaml is the authors' protocol: the docs' table holds, the dry run lists it, a CPU copy runs.

docs/reproducing-yang2024.md lists every setting of the authors' code beside the config key that holds it and its
value; the first test reads the config (and the presets it names) and fails when any value drifts from the table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from medtune.cli import main
from medtune.experiments import config_from_dict, expand, load_config
from shared_data import shared_path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "paper-yang2024.yaml"
DOC = ROOT / "docs" / "reproducing-yang2024.md"
ROW = re.compile(r"^\|[^|]+\|[^|]+\|[^|]+\| `(?P<key>[a-z]+:[^`]+)` \| `(?P<value>[^`]*)` \|$")


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v


def _value(cfg: Any, key: str) -> Any:
    """The config's value for a table key (see the table's `medtune key` column)."""
    kind, _, rest = key.partition(":")
    if kind == "model":
        name, field = rest.split(":")
        return getattr(cfg.model(name), field)
    if kind == "train":
        name, field = rest.split(":")
        obj = cfg.training_settings(name, cfg.training.methods[0], cfg.run_seeds[0][0])
        for part in field.split("."):  # a method's setting is in its group: lora.r
            obj = getattr(obj, part)
        return obj
    if kind == "grid":
        obj = cfg
        for part in rest.split("."):
            obj = getattr(obj, part)
        return obj
    if kind == "eval":
        from medtune.experiments.pipeline import eval_settings

        return getattr(eval_settings(cfg), rest)
    if kind == "data":
        label, field = rest.split(":")
        return getattr(cfg.dataset(label), field)
    if kind == "test":
        label, field = rest.split(":")
        return getattr(next(t for t in cfg.test_sets if t.label == label), field)
    if kind == "strategy":
        from medtune.orders.strategies import get_strategy

        sid, option = rest.split(":")
        strat = next(s for s in cfg.strategies if s.id == sid)
        return get_strategy(strat.name).resolve_options(strat.options)[option]
    if kind == "categories":
        return getattr(cfg.categories, rest)
    raise AssertionError(f"unknown key kind in the docs table: {key}")


def test_the_config_holds_every_setting_of_the_table() -> None:
    cfg = load_config(CONFIG)
    rows = [m for line in DOC.read_text(encoding="utf-8").splitlines() if (m := ROW.match(line))]
    assert len(rows) >= 40, "the table's rows no longer parse"
    drift = []
    for m in rows:
        want = yaml.safe_load(m["value"])
        got = _plain(_value(cfg, m["key"]))
        if got != want:
            drift.append(f"{m['key']}: table {want!r}, config {got!r}")
    assert not drift, "docs/reproducing-yang2024.md and the config disagree:\n" + "\n".join(drift)


def test_the_authors_orders_are_the_config_s_main_strategies() -> None:
    table = yaml.safe_load((ROOT / "configs" / "yang2024-orders.yaml").read_text())["functions"]
    cfg = load_config(CONFIG)
    mains = {(s.name, json.dumps(s.options, sort_keys=True)) for s in cfg.strategies if s.label is None}
    for fn in ("random_shuffle", "blocked", "interleaved", "curriculum_emh", "blocked_emh"):
        entry = table[fn]
        assert (entry["strategy"], json.dumps(entry["options"], sort_keys=True)) in mains, fn
    interleaved_emh = [e for k, e in table.items() if k.startswith("interleaved_emh")]
    assert any((e["strategy"], json.dumps(e["options"], sort_keys=True)) in mains for e in interleaved_emh)


def _medmcqa_dev(path: Path) -> None:
    """A MedMCQA dev file in the publisher's format (JSON lines, cop 1-based), written here."""
    rows = [{"id": f"m{i}", "question": f"Which is option {i % 4 + 1}?", "opa": "one", "opb": "two", "opc": "three",
             "opd": "four", "cop": i % 4 + 1, "choice_type": "single", "exp": None, "subject_name": "Medicine",
             "topic_name": None} for i in range(8)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture()
def paper_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The config's data folder as a user lays it out (real LEK and MedQA files; MedMCQA written here)."""
    needed = [shared_path("lek", "Llama-2-7b-chat-hf.json"),
              shared_path("oxford_llm_difficulty", "llm_difficulty_lek.csv"), shared_path("medqa", "test.jsonl")]
    data = tmp_path / "data"
    (data / "lek").mkdir(parents=True)
    (data / "medqa").mkdir()
    (data / "lek" / "Llama-2-7b-chat-hf.json").symlink_to(needed[0])
    (data / "llm_difficulty_lek.csv").symlink_to(needed[1])
    (data / "medqa" / "test.jsonl").symlink_to(needed[2])
    _medmcqa_dev(data / "medmcqa" / "dev.json")
    (tmp_path / "models" / "S-PubMedBert-MS-MARCO").mkdir(parents=True)  # the embedding model's folder
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_dry_run_lists_the_protocol(paper_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(CONFIG), "--dry-run", "-o", str(paper_data / "run")]) == 0
    text = " ".join(capsys.readouterr().out.split())
    cfg = load_config(CONFIG)
    cells = expand(cfg)
    trained = [c for c in cells if not c.is_base]
    # 4 models × 8 strategies × 3 seeds × (4 LEK folds + the whole of LEK for MedQA / MedMCQA), + 4 base cells
    assert len(trained) == 4 * 8 * 3 * 5 and len(cells) == len(trained) + 4
    assert f"{len(cells)} cells" in text
    assert {c.fold for c in trained} == {0, 1, 2, 3, None}
    assert "tinyllama-1.1b__lek-f0__qlora__random__none__s0" in text
    assert "lek-cv (fold 0)" in text and "medqa, medmcqa" in text
    assert "lr 0.0005, batch 16×1, linear" in text and "lr 0.0001, batch 4×2, linear" in text
    assert "+ 4bit" in text  # evaluated on the 4-bit base it was trained on


def test_the_dry_run_refuses_a_missing_embedding_model_folder(paper_data: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    (paper_data / "models" / "S-PubMedBert-MS-MARCO").rmdir()
    assert main(["run", str(CONFIG), "--dry-run", "-o", str(paper_data / "run")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "categories.embedding_model not found: models/S-PubMedBert-MS-MARCO" in err
    assert "tinyllama-1.1b__lek-f0__qlora__random__none__s0" in err


def test_the_dry_run_refuses_human_difficulty_on_lek(paper_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load(CONFIG.read_text())
    data["difficulty"]["sources"] = ["file", "human"]
    bad = paper_data / "with-human.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["run", str(bad), "--dry-run", "-o", str(paper_data / "run")]) == 2
    err = capsys.readouterr().err
    assert "human" in err and "tinyllama-1.1b__lek-f0__qlora__curriculum__human__s0" in " ".join(err.split())


@pytest.mark.slow  # an end-to-end run: the whole suite has it, the fast subset does not
def test_a_cpu_sized_copy_of_the_protocol_runs_end_to_end(tmp_path: Path) -> None:
    """The config itself, with a tiny model for the four and synthetic items standing in for LEK, in 2 folds."""
    from medtune.experiments import run_experiment
    from medtune.report import write_report
    from medtune.report.results import RunData
    from medtune.schema import read_items

    data = yaml.safe_load(CONFIG.read_text())
    synthetic = {"source": "synthetic", "options": {"seed": 0, "n_systems": 3, "diseases_per_system": 4,
                                                    "train_per_level": 2, "test_per_level": 1}}
    data.update(output_dir=str(tmp_path / "run"), seeds=[0, 1],
                models=[{"name": "tiny", "spec": "tiny", "vocab_size": 512,
                         "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                                  "num_attention_heads": 2},
                         "training": {"lr": 0.0005, "batch_size": 4, "grad_accum": 1}}],
                datasets=[{"name": "lek", **synthetic, "split": "train", "folds": 2}],
                test_sets=[{"name": "lek-cv", "folds_of": "lek"},
                           {"name": "medqa", **synthetic, "split": "test"}],
                strategies=[*data["strategies"][:2], data["strategies"][5]],
                categories={"method": "given"}, executor={"kind": "local", "torch_threads": 1})
    # The authors' difficulty is a table keyed by position; a synthetic stand-in keyed by id, written here.
    from medtune.data.synthetic_questions import generate_synthetic

    items = [it for it in generate_synthetic(**synthetic["options"]).items if it.split == "train"]
    table = tmp_path / "difficulty.csv"
    table.write_text("id,llm_difficulty\n" + "".join(f"{it.id},{(i * 37 % 100) / 100}\n"
                                                     for i, it in enumerate(items)))
    data["difficulty"].update(file=str(table), key="id", key_column="id")
    data["training"]["max_steps"] = 2
    data["evaluation"]["bootstrap"] = 100
    cfg = config_from_dict(data)
    train = cfg.training_settings("tiny", "qlora", 0)
    assert (train.scheduler, train.warmup_steps, train.template, train.target, train.add_eos) == \
        ("linear", 0, "yang2024", "letter", False)
    summary = run_experiment(cfg, progress=False)
    assert summary.counts == {"done": 1 + 3 * 2 * 3}  # base + 3 strategies × 2 seeds × (2 folds + whole)
    run = RunData(summary.run_dir)
    cv = run.done[(run.done["test_set"] == "lek-cv") & (run.done["strategy"] == "random")]
    assert len(cv) == 2 and (cv["n_items"] == len(items)).all()  # the folds pooled: every LEK item once
    rec = json.loads(next((summary.run_dir / "cells").glob("tiny__lek-f1__qlora__random__none__s0.json"))
                     .read_text())
    assert rec["tests"]["lek-cv"]["n_items"] + len(read_items(Path(rec["stages"]["data:lek:fold1-train"]["path"])
                                                              / "items.parquet")) == len(items)
    assert "lek-cv" in write_report(summary.run_dir).markdown.read_text()
