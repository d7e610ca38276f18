"""Each method's settings are one schema, nested in the training settings under its group's name.

Built in: ``lora`` (lora, dora, qlora, knowtuning-lora), ``galore``, ``knowtuning``. A plugin's method declares its
own schema in its module (tests/plugins/medtune_test_norm_subset.py) and gets a group, command-line options and
YAML keys like a built-in. The flat keys of earlier versions (``lora_r``) still work, with a DeprecationWarning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import typer
import yaml
from training_helpers import MICRO, micro_cli_options
from typer.testing import CliRunner

from medtune import plugins
from medtune.cli import main
from medtune.cli.options import refresh_settings_options, with_settings
from medtune.errors import ConfigError
from medtune.experiments.config import config_from_dict, load_config
from medtune.settings import Settings
from medtune.training import method_settings
from medtune.training.config import TrainSettings, resolve_training_settings
from medtune.training.method_settings import METHODS, GaloreSettings, KnowTuningSettings, LoraSettings
from medtune.training.methods import get_method, register_method

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "tests" / "plugins"
PLUGIN = "medtune_test_norm_subset"


@pytest.fixture
def norm_subset(monkeypatch: pytest.MonkeyPatch):
    """The plugin importable from tests/plugins and named in MEDTUNE_PLUGINS, not yet imported; afterwards the
    method registry and the settings groups are as they were."""
    monkeypatch.setattr(method_settings, "_PLUGIN_GROUPS", dict(method_settings._PLUGIN_GROUPS))
    monkeypatch.setattr(method_settings, "_METHOD_GROUPS", dict(method_settings._METHOD_GROUPS))
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    with METHODS.scoped(without=["norm-subset"]):
        monkeypatch.delitem(sys.modules, PLUGIN, raising=False)
        monkeypatch.setattr(plugins, "_loaded", set())
        monkeypatch.syspath_prepend(str(PLUGINS))
        monkeypatch.setenv(plugins.ENV_VAR, PLUGIN)
        yield
        sys.modules.pop(PLUGIN, None)
    monkeypatch.undo()
    refresh_settings_options()


def _trainable(run: Path) -> int:
    return json.loads((run / "config.json").read_text())["trainable_parameters"]


# ----------------------------------------------------------------------------------------------------------
# The built-in groups


def test_the_built_in_methods_name_their_settings_class():
    assert {name: get_method(name).settings_class for name in ("lora", "dora", "qlora", "knowtuning-lora")} == \
        dict.fromkeys(("lora", "dora", "qlora", "knowtuning-lora"), LoraSettings)
    assert get_method("galore").settings_class is GaloreSettings and get_method("galore").group == "galore"
    assert get_method("knowtuning").settings_class is KnowTuningSettings
    assert get_method("full").settings_class is None and TrainSettings(method="full").method_settings() is None
    cfg = TrainSettings(method="qlora", lora={"r": 4})
    assert cfg.lora.r == 4 and cfg.method_settings() is cfg.lora and cfg.settings_group("galore") == GaloreSettings()
    assert all(issubclass(c, Settings) and c.__name__.endswith("Settings")
               for c in method_settings.settings_groups().values())


def test_a_group_rejects_an_unknown_key_or_group_naming_it():
    with pytest.raises(ConfigError, match=r"^training\.lora\.rank: unknown key$"):
        TrainSettings.from_dict({"lora": {"rank": 8}})
    with pytest.raises(ConfigError, match=r"^training\.galore\.rank: Input should be greater than or equal to 1"):
        TrainSettings.from_dict({"galore": {"rank": 0}})
    with pytest.raises(ConfigError, match=r"^training\.lorra: unknown key$"):
        TrainSettings.from_dict({"lorra": {"r": 8}})


def test_new_records_are_nested_and_groups_merge_key_by_key():
    data = TrainSettings(lora={"r": 8}).to_dict()
    assert data["lora"] == {"r": 8, "alpha": 32, "dropout": 0.05} and "lora_r" not in data
    assert TrainSettings.from_run_record(data) == TrainSettings(lora={"r": 8})
    # A preset's other keys of a group stay under an explicit one (as they did with the flat keys).
    cfg = resolve_training_settings({"lora": {"r": 8}}, {"lora": {"dropout": 0.0}}, preset="paper-qlora")
    assert (cfg.method, cfg.lora) == ("qlora", LoraSettings(r=8, alpha=64, dropout=0.0))
    cfg = resolve_training_settings({}, preset="knowtuning")
    assert cfg.knowtuning.lora_targets == ["q_proj", "v_proj"] and cfg.knowtuning.kc_lr == 1e-5


# ----------------------------------------------------------------------------------------------------------
# The flat keys of earlier versions


def test_flat_keys_map_into_their_group_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match=r"training\.lora_r is deprecated: use training\.lora\.r"):
        cfg = TrainSettings(method="lora", lora_r=4, lora_alpha=8)
    assert cfg.lora == LoraSettings(r=4, alpha=8)
    with pytest.warns(DeprecationWarning, match=r"knowtuning\.generator_steps"):
        cfg = TrainSettings.from_dict({"galore_rank": 8, "galore_optim": "galore_adafactor", "knowtuning_beta": 0.3,
                                     "knowtuning_generator_steps": ["facts"]})
    assert (cfg.galore.rank, cfg.galore.optim, cfg.knowtuning.beta) == (8, "galore_adafactor", 0.3)
    assert cfg.knowtuning.generator_steps == ["facts"]
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError, match=r"lora_r: given as 4 and as"):
        TrainSettings.from_dict({"lora_r": 4, "lora": {"r": 8}})
    with pytest.warns(DeprecationWarning, match=r"TrainSettings\.lora_r is deprecated"):
        assert cfg.lora_r == 16


def test_a_run_record_of_an_earlier_version_reads_into_the_groups(tmp_path):
    old = {"train": {"method": "lora", "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "galore_rank": 32,
                     "knowtuning_lora_targets": ["q_proj"], "seed": 3}}
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.warns(DeprecationWarning):
        cfg = TrainSettings.load(tmp_path / "config.json")
    assert (cfg.lora, cfg.galore.rank, cfg.knowtuning.lora_targets, cfg.seed) == (
        LoraSettings(r=4, alpha=8, dropout=0.0), 32, ["q_proj"], 3)


def test_a_grid_takes_flat_and_nested_keys_and_names_a_wrong_one_at_its_line(tmp_path):
    grid = {"name": "x", "output_dir": str(tmp_path / "run"), "models": [{"name": "m", "spec": "tiny"}],
            "datasets": [{"source": "synthetic"}], "test_sets": [{"source": "synthetic"}],
            "strategies": ["random"], "seeds": [0],
            "training": {"methods": ["lora", "galore"], "lora": {"r": 8}, "galore_rank": 4}}
    with pytest.warns(DeprecationWarning, match=r"galore_rank is deprecated: use training\.galore\.rank"):
        cfg = config_from_dict(grid)
    assert cfg.training_settings("m", "lora", 0).lora.r == 8
    assert cfg.training_settings("m", "galore", 0).galore.rank == 4
    grid["training"] = {"methods": ["lora"], "lora": {"r": 8, "rank": 2}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "rank:" in text)
    with pytest.raises(ConfigError, match=rf"grid\.yaml:{line}: training\.lora\.rank: unknown key"):
        load_config(path)


def test_the_flat_command_line_options_set_the_groups():
    given: dict = {}
    app = typer.Typer()
    app.command()(with_settings(TrainSettings, rename={"tiny": "--tiny-option"}, param="seen")(
        lambda seen=None: given.update(seen or {})))
    result = CliRunner().invoke(app, ["--lora-r", "4", "--lora-dropout", "0", "--galore-rank", "8",
                                      "--galore-optim", "galore_adafactor", "--knowtuning-beta", "0.3",
                                      "--knowtuning-lora-targets", "q_proj", "--knowtuning-lora-targets", "v_proj",
                                      "--lr", "0.01"])
    assert result.exit_code == 0, result.output
    assert given == {"lr": 0.01, "lora": {"r": 4, "dropout": 0.0}, "galore": {"rank": 8, "optim": "galore_adafactor"},
                     "knowtuning": {"beta": 0.3, "lora_targets": ["q_proj", "v_proj"]}}
    bad = CliRunner().invoke(app, ["--lora-r", "0"])
    assert bad.exit_code != 0 and "--lora-r must be ≥ 1" in str(bad.exception or bad.output)


# ----------------------------------------------------------------------------------------------------------
# A plugin method with settings of its own


def test_a_plugin_group_is_registered_with_its_method_and_checked_like_a_built_in(norm_subset):
    plugins.load_plugins()
    assert get_method("norm-subset").group == "norm_subset"
    cfg = TrainSettings(method="norm-subset", norm_subset={"scale": 0.5})
    assert cfg.method_settings() == sys.modules[PLUGIN].NormSubsetSettings(scale=0.5)
    assert TrainSettings.from_run_record(cfg.to_dict()) == cfg and cfg.to_dict()["norm_subset"]["scale"] == 0.5
    with pytest.raises(ConfigError, match=r"^training\.norm_subset\.scales: unknown key$"):
        TrainSettings.from_dict({"method": "norm-subset", "norm_subset": {"scales": 2}})
    # Another method's record holds no plugin group unless one was given (it reads without the plugin).
    assert "norm_subset" not in TrainSettings(method="lora").to_dict()
    module = sys.modules[PLUGIN]
    with pytest.raises(ConfigError, match="has the name of a training setting"):
        register_method(module.NormSubset(name="lr", summary="x", is_adapter=False, settings_class=LoraSettings))
    with pytest.raises(ConfigError, match="settings group 'lora' is built in"):
        register_method(module.NormSubset(name="x-lora", summary="x", is_adapter=False, settings_group="lora",
                                          settings_class=module.NormSubsetSettings))


def test_cli_trains_a_plugin_method_with_its_settings(files, tmp_path, norm_subset):
    out = tmp_path / "run"
    code = main(["train", "--items", str(files["items"]), "--order", str(files["order"]), "-o", str(out),
                 "--method", "norm-subset", "--norm-subset-skip-final", "--norm-subset-scale", "0.5",
                 "--batch-size", "4", "--max-steps", "2", *micro_cli_options(), "--no-progress"])
    assert code == 0
    assert sys.modules[PLUGIN].SEEN[-1] == {"skip_final": True, "scale": 0.5}
    train = json.loads((out / "config.json").read_text())["train"]
    assert train["norm_subset"] == {"skip_final": True, "scale": 0.5} and train["lora"]["r"] == 16
    # one decoder layer: its two RMSNorm weight vectors train, the final norm does not
    assert _trainable(out) == 2 * MICRO["hidden_size"]
    assert main(["verify-order", str(out)]) == 0


def test_a_grid_trains_a_plugin_method_with_its_settings(tmp_path, norm_subset, monkeypatch):
    monkeypatch.delenv(plugins.ENV_VAR)  # the grid names its plugin itself
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data.update(output_dir=str(tmp_path / "run"), seeds=[0], strategies=["random"], plugins=[PLUGIN])
    data["training"].update(methods=["norm-subset"], max_steps=2, norm_subset={"skip_final": True, "scale": 0.5})
    data["evaluation"].update(baseline=False, bootstrap=10)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["run", str(path), "--no-report"]) == 0
    assert sys.modules[PLUGIN].SEEN[-1] == {"skip_final": True, "scale": 0.5}
    runs = [p.parent for p in (tmp_path / "run").rglob("config.json")
            if json.loads(p.read_text()).get("train", {}).get("method") == "norm-subset"]
    assert len(runs) == 1
    assert json.loads((runs[0] / "config.json").read_text())["train"]["norm_subset"]["skip_final"] is True
    assert _trainable(runs[0]) == 2 * data["models"][0]["tiny"]["hidden_size"]
    # A wrong key of the plugin's group is named at its line, like any other.
    data["training"]["norm_subset"] = {"skip_finale": True}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "skip_finale" in text)
    with pytest.raises(ConfigError, match=rf"grid\.yaml:{line}: training\.norm_subset\.skip_finale: unknown key"):
        load_config(path)
