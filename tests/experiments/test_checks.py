"""The dry run refuses cells that cannot run: missing files, human difficulty the items lack, tables not joining."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from medtune.cli import main
from medtune.errors import ConfigError
from medtune.experiments import config_from_dict, expand, run_experiment
from medtune.experiments.checks import CHECKS, GridView, cell_problems, check_cells, register_check
from shared_data import shared_path

REPO = Path(__file__).resolve().parents[2]


def _tiny(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data.update(output_dir=str(tmp_path / "run"), **changes)
    return data


def _dry_run(tmp_path: Path, data: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["run", str(path), "--dry-run"])
    return code, " ".join(capsys.readouterr().err.split())


def _lek_grid(tmp_path: Path, lek: Path, **difficulty: Any) -> dict[str, Any]:
    """tiny.yaml on LEK: 80 % to train on, the rest to test on, a curriculum by ``difficulty.sources``."""
    return _tiny(tmp_path,
                 datasets=[{"name": "lek", "source": "lek", "path": str(lek), "portion": [0.0, 0.8]}],
                 test_sets=[{"name": "lek-test", "source": "lek", "path": str(lek), "portion": [0.8, 1.0]}],
                 difficulty=difficulty)


def test_the_tiny_grid_has_no_problems(tmp_path: Path) -> None:
    assert cell_problems(config_from_dict(_tiny(tmp_path))) == []  # synthetic items carry human levels


def test_a_missing_test_set_file_is_refused_naming_the_cells(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("MEDTUNE_NO_SUCH_VAR", raising=False)
    data = _tiny(tmp_path)
    data["test_sets"].append({"name": "medqa", "source": "medqa", "path": "$MEDTUNE_NO_SUCH_VAR/test.jsonl"})
    cfg = config_from_dict(data)
    (problem,) = cell_problems(cfg)
    assert "test set 'medqa' (medqa) not found" in problem
    assert "the environment variable $MEDTUNE_NO_SUCH_VAR is not set" in problem
    assert f"{len(expand(cfg))} cells (" in problem and expand(cfg)[0].id in problem
    code, err = _dry_run(tmp_path, data, capsys)
    assert code == 2 and "test set 'medqa' (medqa) not found" in err and expand(cfg)[0].id in err
    assert not (tmp_path / "run").exists()


def test_a_missing_training_set_file_names_its_cells_and_the_path(tmp_path: Path) -> None:
    data = _tiny(tmp_path)
    data["datasets"].append({"name": "lek", "source": "lek", "path": str(tmp_path / "absent.json")})
    cfg = config_from_dict(data)
    problems = cell_problems(cfg)
    assert len(problems) == 1 and f"training set 'lek' (lek) not found: {tmp_path / 'absent.json'}" in problems[0]
    lek_cells = [c.id for c in expand(cfg) if c.dataset == "lek"]
    assert all(c in problems[0] for c in lek_cells[:6]) and "synthetic__" not in problems[0]
    with pytest.raises(ConfigError, match="1 problem"):
        run_experiment(cfg, dry_run=True, progress=False)


def test_human_difficulty_on_lek_is_refused_and_an_external_table_lets_it_run(tmp_path: Path, capsys) -> None:
    lek = shared_path("lek", "Llama-2-7b-chat-hf.json")
    data = _lek_grid(tmp_path, lek, sources=["human"])
    cfg = config_from_dict(data)
    human_cells = [c.id for c in expand(cfg) if c.difficulty == "human"]
    assert human_cells == ["tiny__lek__lora__curriculum__human__s0", "tiny__lek__lora__curriculum__human__s1"]
    (problem,) = cell_problems(cfg)
    assert problem.startswith("2 cells (tiny__lek__lora__curriculum__human__s0, "
                              "tiny__lek__lora__curriculum__human__s1): difficulty source 'human'")
    assert f"{lek}, record lek-" in problem and "have no human difficulty" in problem and "human_file" in problem
    code, err = _dry_run(tmp_path, data, capsys)
    assert code == 2 and "curriculum__human__s0" in err and "have no human difficulty" in err

    # the share of examinees answering correctly, by the record's position in the file (higher = easier)
    n = len(json.loads(lek.read_text(encoding="utf-8"))["questions"])
    table = tmp_path / "lek_share_correct.csv"
    pd.DataFrame({"Index": range(n), "share": [(i % 10) / 10 for i in range(n)]}).to_csv(table, index=False)
    data = _lek_grid(tmp_path, lek, sources=["human"], human_file=str(table), human_key="position",
                     human_key_column="Index", human_value_column="share", higher_is="easier")
    assert cell_problems(config_from_dict(data)) == []
    code, err = _dry_run(tmp_path, data, capsys)
    assert code == 0, err

    # a table that does not reach every training item is refused, naming it
    pd.DataFrame({"Index": range(10), "share": [0.5] * 10}).to_csv(table, index=False)
    (problem,) = cell_problems(config_from_dict(data))
    assert "neither a human_difficulty of its own nor a row in lek_share_correct.csv" in problem


def test_a_difficulty_table_that_does_not_cover_the_training_part_only_is_refused(tmp_path: Path) -> None:
    lek = shared_path("lek", "Llama-2-7b-chat-hf.json")
    table = shared_path("oxford_llm_difficulty", "llm_difficulty_lek.csv")
    file_source = {"sources": ["file"], "file": str(table), "key": "position", "key_column": "Index",
                   "value_column": "llm_difficulty"}
    (problem,) = cell_problems(config_from_dict(_lek_grid(tmp_path, lek, **file_source)))
    # the table covers all 874 questions, the cells train on 80 % of them
    assert problem.startswith("2 cells (tiny__lek__lora__curriculum__file__s0, ")
    assert "llm_difficulty_lek.csv, row" in problem and "match no item's position" in problem
    ok = config_from_dict(_lek_grid(tmp_path, lek, **file_source, on_unmatched="report"))
    assert cell_problems(ok) == []
    missing = config_from_dict(_lek_grid(tmp_path, lek, **{**file_source, "file": str(tmp_path / "none.csv")}))
    (problem,) = cell_problems(missing)
    assert "difficulty source 'file': `difficulty.file` not found" in problem and "none.csv" in problem


def test_checks_are_a_registry_anyone_can_extend(tmp_path: Path) -> None:
    cfg = config_from_dict(_tiny(tmp_path))

    def no_seed_one(view: GridView) -> list[str]:
        return [f"cell {c.id}: seed 1 is not allowed" for c in view.cells if c.seed == 1]

    def also_no_seed_one(view: GridView) -> list[str]:
        return []

    assert cell_problems(cfg, checks=[no_seed_one])[0].endswith("seed 1 is not allowed")
    with CHECKS.scoped():
        register_check(no_seed_one)
        assert CHECKS.names()[-1] == "no_seed_one" and "missing_inputs" in CHECKS
        with pytest.raises(ConfigError, match=r"(?s)problem\(s\) stop cells of the grid 'tiny'.*seed 1 is not allowed"):
            check_cells(cfg)
        with pytest.raises(ConfigError, match=r"grid check 'no_seed_one' is already registered by .*no_seed_one; "
                                              r".*also_no_seed_one registers it again"):
            register_check(also_no_seed_one, name="no_seed_one")
    assert "no_seed_one" not in CHECKS
    check_cells(cfg)
