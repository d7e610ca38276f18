"""Per-arm sweeps: the config's shape and errors, the cells and their ids and keys, the choice on validation items (a
pure function, checked with hypothesis), and one real sweep grid on the synthetic task (2 arms × 2 learning rates ×
2 seeds) whose test labels are then changed: the choice must not move.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from medtune.cli import main
from medtune.data import load
from medtune.errors import ConfigError
from medtune.experiments import config_from_dict, expand, load_config, run_experiment
from medtune.experiments.grid import cell_key
from medtune.experiments.pipeline import Context, data_stage, validation_stage
from medtune.experiments.selection import at_chosen, select_settings, validation_curves
from medtune.experiments.store import Store
from medtune.experiments.validation import hold_out
from medtune.report import write_report
from medtune.report.results import RunData
from medtune.report.sweep import chosen_table
from medtune.schema import read_items
from medtune.textbook import read_textbook

REPO = Path(__file__).resolve().parents[2]
LRS = [0.001, 0.01]
WORLD = {"seed": 0, "n_systems": 3, "diseases_per_system": 4, "train_per_level": 2, "test_per_level": 1}


def _tiny(out: Path, **training: object) -> dict:
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data["output_dir"] = str(out)
    data["training"].update(training)
    return data


# ----------------------------------------------------------------------------------------------------------
# The config and the cells


def test_a_sweep_gives_every_arm_a_cell_per_setting_and_seed(tmp_path: Path) -> None:
    plain = expand(config_from_dict(_tiny(tmp_path)))
    cfg = config_from_dict(_tiny(tmp_path, sweep={"lr": LRS}))
    cells = [c for c in expand(cfg) if not c.is_base]
    assert len(cells) == 2 * 2 * 2  # strategies × learning rates × seeds
    assert {c.setting for c in cells} == {"lr=0.001", "lr=0.01"}
    assert {c.id for c in cells if c.strategy == "random" and c.seed == 0} == {
        "tiny__synthetic__lora__random__none__s0__lr-0.001", "tiny__synthetic__lora__random__none__s0__lr-0.01"}
    # A grid without a sweep keeps its ids and keys (its finished cells stay finished).
    assert [c.id for c in plain] == [c.id for c in expand(config_from_dict(_tiny(tmp_path)))]
    assert all("setting" not in c.key_fields() for c in plain)
    # The cell trains at its own setting.
    c = next(c for c in cells if c.setting == "lr=0.01")
    assert cfg.training_settings(c.model, c.method, c.seed, setting=cfg.setting(c.method, c.setting)).lr == 0.01


def test_a_growing_sweep_only_adds_cells(tmp_path: Path) -> None:
    """Resume: a cell's key hashes its own setting, not the rest of the sweep."""
    small = config_from_dict(_tiny(tmp_path, sweep={"lr": LRS}))
    grown = config_from_dict(_tiny(tmp_path, sweep={"lr": [*LRS, 0.03]}))
    before = {c.id: cell_key(small, c) for c in expand(small)}
    after = {c.id: cell_key(grown, c) for c in expand(grown)}
    assert set(before) < set(after)
    assert all(after[i] == k for i, k in before.items())


def test_a_method_sweep_adds_and_replaces_keys_and_the_shared_setting(tmp_path: Path) -> None:
    data = _tiny(tmp_path, methods=["lora", "full"], sweep={"lr": LRS},
                 sweep_by_method={"lora": {"lora.r": [4, 8], "lr": [0.01, 0.001]}}, sweep_shared={"lr": 0.001})
    cfg = config_from_dict(data)
    assert cfg.settings_of("full") == [{"lr": 0.001}, {"lr": 0.01}]
    assert cfg.settings_of("lora") == [{"lr": 0.01, "lora.r": 4}, {"lr": 0.01, "lora.r": 8},
                                       {"lr": 0.001, "lora.r": 4}, {"lr": 0.001, "lora.r": 8}]
    assert cfg.shared_of("lora") == {"lr": 0.001, "lora.r": 4} and cfg.shared_of("full") == {"lr": 0.001}
    lora = next(c for c in expand(cfg) if c.method == "lora" and c.setting == "lr=0.001,lora.r=8")
    assert cfg.training_settings("tiny", "lora", 0, setting=cfg.setting("lora", lora.setting)).lora.r == 8


@pytest.mark.parametrize("training, extra, message", [
    ({"sweep": {"lr_rate": [0.1]}}, {}, "training.sweep.lr_rate: not a training setting"),
    ({"sweep": {"lora.rank": [4]}}, {}, "training.sweep: lora.rank: 'rank' is not a setting of lora"),
    ({"sweep": {"lora.r": [0]}}, {}, "training.sweep: lora.r: 0: Input should be greater than or equal to 1"),
    ({"sweep": {"epochs": [1.5]}}, {}, "training.sweep.epochs: 1.5: Input should be a valid integer"),
    ({"sweep": {"lr": []}}, {}, "training.sweep.lr: give a non-empty list"),
    ({"sweep": {"lr": [0.1, 0.1]}}, {}, "training.sweep.lr: a value is listed twice"),
    ({"sweep": {"lr": [-1.0]}}, {}, "training.sweep.lr: -1.0: Input should be greater than 0"),
    ({"sweep_by_method": {"full": {"lr": [0.1]}}}, {}, "training.sweep_by_method.full: not one of training.methods"),
    ({"sweep": {"lr": LRS}, "sweep_shared": {"lr": 0.5}}, {}, "training.sweep_shared.lr: 0.5 is not among"),
    ({"sweep": {"lr": LRS}}, {"validation": {"share": 1.5}}, "validation.share"),
    ({"sweep": {"lr": LRS}}, {"validation": {"split": "test"}}, "validation.split"),
])
def test_a_wrong_sweep_fails_at_its_line(tmp_path: Path, training: dict, extra: dict, message: str) -> None:
    data = _tiny(tmp_path / "run", **training)
    data.update(extra)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert message in text and "\n" not in text
    key = next(iter(extra)) if extra else next(iter(training))
    line = next(i for i, row in enumerate(path.read_text().splitlines(), 1) if row.strip().startswith(f"{key}:"))
    assert f"{path}:" in text and int(text.split(f"{path}:")[1].split(":")[0]) >= line


def test_an_unknown_sweep_key_is_reported_at_its_own_line(tmp_path: Path) -> None:
    data = _tiny(tmp_path / "run", sweep={"lr": LRS}, sweep_by_method={"lora": {"lr": LRS, "warmup_step": [0, 2]}})
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    line = next(i for i, row in enumerate(path.read_text().splitlines(), 1) if row.strip() == "warmup_step:")
    with pytest.raises(ConfigError, match=rf"^{path}:{line}: training\.sweep_by_method\.lora\.warmup_step: not a "):
        load_config(path)


def test_the_held_out_share_is_stable_and_disjoint() -> None:
    items = load("synthetic", None, **WORLD).items
    train, val = hold_out(items, 0.25, seed=3)
    assert {it.id for it in train}.isdisjoint(it.id for it in val)
    assert len(train) + len(val) == len(items) and 0.1 < len(val) / len(items) < 0.4
    assert [it.id for it in hold_out(list(reversed(items)), 0.25, seed=3)[1]] == [it.id for it in reversed(val)]
    assert {it.id for it in hold_out(items, 0.25, seed=4)[1]} != {it.id for it in val}


def _stage_config(tmp: Path, datasets: list[dict], test_sets: list[dict], **validation: object) -> object:
    data = _tiny(tmp / "run", sweep={"lr": LRS})
    data.update(datasets=datasets, test_sets=test_sets, strategies=["random"], validation=validation)
    return config_from_dict(data)


def test_a_source_with_a_dev_split_validates_on_it(tmp_path: Path) -> None:
    path = tmp_path / "bank.jsonl"
    with path.open("w") as f:
        for i in range(12):
            split = ("train", "dev", "test")[i % 3]
            f.write(json.dumps({"id": f"q{i}", "question": f"Question {i}?", "options": ["a", "b", "c"],
                                "answer": i % 3, "split": split}) + "\n")
    table = {"source": "tabular", "path": str(path),
             "options": {"options_cols": ["options"], "answer_format": "index0", "id_col": "id", "split_col": "split"}}
    cfg = _stage_config(tmp_path, [{**table, "name": "bank", "split": "train"}],
                        [{**table, "name": "bank-test", "split": "test"}], limit=3)
    ctx = Context(cfg, Store(cfg.store_path))
    data = data_stage(ctx, cfg.datasets[0])
    train, val = validation_stage(ctx, cfg.datasets[0], data)
    assert train == data  # the training items stay whole
    assert [it.id for it in read_items(val.path / "items.parquet")] == ["q1", "q4", "q7"]  # dev, first 3
    # Without its own split (the training set is all of the source), a share of the training items is held out.
    cfg = _stage_config(tmp_path, [{**table, "name": "bank"}], [{**table, "name": "bank-test", "split": "test"}],
                        share=0.5)
    ctx = Context(cfg, Store(cfg.store_path))
    data = data_stage(ctx, cfg.datasets[0])
    train, val = validation_stage(ctx, cfg.datasets[0], data)
    kept, held = ({it.id for it in read_items(a.path / "items.parquet")} for a in (train, val))
    assert kept and held and kept.isdisjoint(held) and kept | held == {f"q{i}" for i in range(12)}


def test_held_out_training_items_keep_their_textbook(tmp_path: Path) -> None:
    cfg = config_from_dict(_tiny(tmp_path / "run", sweep={"lr": LRS}))
    ctx = Context(cfg, Store(cfg.store_path))
    data = data_stage(ctx, cfg.datasets[0])
    train, _ = validation_stage(ctx, cfg.datasets[0], data)
    assert train != data and read_textbook(train.path / "items.parquet") == read_textbook(data.path / "items.parquet")


# ----------------------------------------------------------------------------------------------------------
# The choice: a pure function of the validation columns


def _table(val: list[list[list[float]]], test: list[list[list[float]]]) -> pd.DataFrame:
    """A results table: arm a, setting s, seed k (listed in a scrambled order); two test sets per cell."""
    rows = []
    for a, settings_ in enumerate(val):
        for s, seeds in enumerate(settings_):
            for k, v in enumerate(seeds):
                for t, name in enumerate(("test-a", "test-b")):
                    acc = test[a][s][k] if t == 0 else 1 - test[a][s][k]
                    rows.append({"cell_id": f"arm{a}__s{k}__set{s}", "model": "tiny", "dataset": "d", "method": "lora",
                                 "strategy": f"arm{a}", "difficulty": "none", "seed": k, "setting": f"lr={s}",
                                 "setting_index": s, "setting_shared": s == 0, "status": "done", "test_set": name,
                                 "val_accuracy": v, "accuracy": acc, "n_correct": round(acc * 10), "n_items": 10})
    table = pd.DataFrame(rows)
    return table.sample(frac=1.0, random_state=len(rows)).reset_index(drop=True)


def _by_hand(val: list[list[list[float]]]) -> dict[str, str]:
    out = {}
    for a, settings_ in enumerate(val):
        means = [sum(seeds) / len(seeds) for seeds in settings_]
        out[f"arm{a}"] = f"lr={next(s for s, m in enumerate(means) if m >= max(means) - 1e-12)}"
    return out


# Accuracies on 8 validation items: ties between settings are common, as they are on small validation sets.
eighths = st.integers(0, 8).map(lambda n: n / 8)


@st.composite
def sweeps(draw: st.DrawFn) -> tuple[list, list, list]:
    n_arms, n_settings, n_seeds = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    shape = st.lists(st.lists(st.lists(eighths, min_size=n_seeds, max_size=n_seeds), min_size=n_settings,
                              max_size=n_settings), min_size=n_arms, max_size=n_arms)
    return draw(shape), draw(shape), draw(shape)


@settings(max_examples=30, deadline=None)
@given(sweeps())
def test_the_choice_reads_validation_only(data: tuple[list, list, list]) -> None:
    val, test, other_test = data
    chosen = select_settings(_table(val, test))
    assert dict(zip(chosen["strategy"], chosen["setting"], strict=True)) == _by_hand(val)
    # Other test labels (other test scores, counts and all) never change the choice.
    again = select_settings(_table(val, other_test))
    pd.testing.assert_frame_equal(chosen, again)
    # The tuned rows are each arm's chosen setting, every test set, every seed.
    rows = at_chosen(_table(val, test), chosen)
    assert len(rows) == sum(len(v[0]) for v in val) * 2
    assert set(zip(rows["strategy"], rows["setting"], strict=True)) == set(_by_hand(val).items())


def test_ties_go_to_the_first_setting_in_sweep_order() -> None:
    table = _table([[[0.5, 0.5], [0.75, 0.25], [0.25, 0.75]]], [[[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]])
    table.loc[table["setting_index"] == 2, "setting"] = "lr=first-listed-last"
    assert select_settings(table)["setting"].tolist() == ["lr=0"]
    curve = validation_curves(table)
    assert curve["setting_index"].tolist() == [0, 1, 2] and np.allclose(curve["val_accuracy"], 0.5)
    # A failed cell, and cells outside the sweep, take no part.
    table.loc[(table["setting_index"] == 1) & (table["seed"] == 1), "status"] = "failed"
    assert select_settings(table)["setting"].tolist() == ["lr=1"]


# ----------------------------------------------------------------------------------------------------------
# A real sweep grid


def _test_file(path: Path, rotate: int) -> Path:
    """The synthetic test questions as a JSON-lines table; ``rotate`` shifts every answer to another option."""
    items = load("synthetic", None, split="test", **WORLD).items
    with path.open("w") as f:
        for it in items:
            f.write(json.dumps({"id": it.id, "question": it.question, "options": list(it.options),
                                "answer": (it.answer + rotate) % len(it.options)}) + "\n")
    return path


def _grid(tmp: Path, name: str, rotate: int) -> dict:
    data = _tiny(tmp / name, sweep={"lr": LRS}, max_steps=4)
    data["store_dir"] = str(tmp / "store")  # shared: the second grid reuses the first one's training
    data["evaluation"].update(baseline=False, bootstrap=50)
    data["test_sets"] = [{"name": "synthetic-test", "source": "tabular",
                          "path": str(_test_file(tmp / f"{name}.jsonl", rotate)),
                          "options": {"options_cols": ["options"], "answer_format": "index0", "id_col": "id"}}]
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return data


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("sweep")
    runs = {}
    for name, rotate in (("labels", 0), ("other-labels", 1)):
        summary = run_experiment(config_from_dict(_grid(tmp, name, rotate)), progress=False)
        runs[name] = {"summary": summary, "run": Path(summary.run_dir),
                      "chosen": chosen_table(RunData(Path(summary.run_dir)))}
    runs["labels"]["report"] = write_report(runs["labels"]["run"])  # the whole report once (CPU budget)
    return {"tmp": tmp, **runs}


def test_the_report_chooses_per_arm_as_a_hand_computation_from_the_cells(swept: dict) -> None:
    run, rep = swept["labels"]["run"], swept["labels"]["report"]
    assert swept["labels"]["summary"].counts == {"done": 8}
    records = [json.loads(p.read_text()) for p in sorted((run / "cells").glob("*.json"))]
    hand = {}
    for strategy in ("random", "curriculum"):
        means = [np.mean([r["validation"]["accuracy"] for r in records
                          if r["strategy"] == strategy and r["setting_values"] == {"lr": lr}]) for lr in LRS]
        hand[strategy] = f"lr={LRS[next(i for i, m in enumerate(means) if m >= max(means) - 1e-12)]}"
    table = pd.read_csv(rep.tables["sweep_chosen"])
    assert dict(zip(table["strategy"], table["chosen"], strict=True)) == hand
    assert (table["shared"] == "lr=0.001").all() and (table["seeds"] == 2).all()
    assert all(setting in rep.sweep_text() for setting in hand.values())
    page = rep.html.read_text()
    assert "Settings chosen on validation items" in page and "sweep_validation_curves.png" in str(rep.figures)
    comparison = pd.read_csv(rep.tables["sweep_comparison"])
    assert set(comparison["settings"]) == {"tuned", "shared"}
    # Every later table reads each arm at its chosen setting: the summary's accuracy is the chosen cells' mean.
    summary = pd.read_csv(rep.tables["summary"])
    for strategy, setting in hand.items():
        want = np.mean([r["tests"]["synthetic-test"]["accuracy"] for r in records
                        if r["strategy"] == strategy and r["setting"] == setting])
        label = strategy if strategy == "random" else "curriculum [human]"
        assert summary.loc[summary["label"] == label, "accuracy"].item() == pytest.approx(want)


def test_validation_items_are_neither_trained_on_nor_tested(swept: dict) -> None:
    record = json.loads(next((swept["labels"]["run"] / "cells").glob("*.json")).read_text())
    split = Path(record["stages"]["validation:synthetic"]["path"])
    val = {it.id for it in read_items(split / "validation" / "items.parquet")}
    train = {it.id for it in read_items(split / "train" / "items.parquet")}
    trained = {row["id"] for row in json.loads(Path(record["order_items"]).read_text())}
    test = {it.id for it in read_items(record["tests"]["synthetic-test"]["items"])}
    assert val and train and val.isdisjoint(train) and val.isdisjoint(test)
    assert record["validation"]["n_items"] == len(val)
    assert trained and trained <= train


def test_other_test_labels_never_change_the_choice(swept: dict) -> None:
    a, b = (swept[n]["chosen"] for n in ("labels", "other-labels"))
    pd.testing.assert_frame_equal(a, pd.read_csv(swept["labels"]["report"].tables["sweep_chosen"]),
                                  check_dtype=False)
    assert a["chosen"].tolist() == b["chosen"].tolist()
    assert a["val_chosen"].tolist() == b["val_chosen"].tolist()
    assert not np.allclose(a["test_chosen"], b["test_chosen"])  # the labels did change what the test set says
    # Only the test scores were recomputed: the second grid trained nothing.
    cells = [json.loads(p.read_text()) for p in (swept["other-labels"]["run"] / "cells").glob("*.json")]
    assert all(c["stages"]["train"]["cached"] and c["stages"]["eval:(validation)"]["cached"] for c in cells)


def test_dry_run_lists_the_sweep_cells_and_their_cost_and_report_their_choice(
        swept: dict, capsys: pytest.CaptureFixture[str]) -> None:
    path = swept["tmp"] / "labels.yaml"
    assert main(["run", str(path), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for setting in ("lr-0.001", "lr-0.01"):
        assert f"tiny__synthetic__lora__curriculum__human__s1__{setting}" in out
    assert "lr 0.01, batch 4×1" in out and "done 8" in out
    assert "sweep: lora: 2 settings (lr [0.001, 0.01]) → 8 training cells (4 per setting); shared setting lr=0.001" \
        in out
    assert "sweep cost: 8 training runs instead of 4 (×2.0)" in out
    # The report command names each arm's chosen setting.
    assert main(["report", str(swept["labels"]["run"]), "-o", str(swept["tmp"] / "report-again")]) == 0
    out = capsys.readouterr().out
    assert "settings chosen per arm on validation items" in out
    assert all(setting in out for setting in swept["labels"]["chosen"]["chosen"])
