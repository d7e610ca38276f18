"""The adaptive settings' one schema, as the command line and the grid take it, and the paths the stage reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtune.adaptive.stage import AdaptiveSettings, paths_read_from
from medtune.cli.train import adaptive_from_options
from medtune.errors import ConfigError
from medtune.experiments.adaptive import GRID_FIELDS, GridAdaptiveSettings


def test_the_grid_entry_is_made_of_the_schema_fields_with_their_defaults() -> None:
    assert set(GridAdaptiveSettings.model_fields) == {*GRID_FIELDS, "anchors"}
    entry = GridAdaptiveSettings()
    for name in GRID_FIELDS:
        assert getattr(entry, name) == AdaptiveSettings.model_fields[name].get_default(call_default_factory=True)
    settings = GridAdaptiveSettings(every=3, options={"start_quantile": 0.5}, rescore="all").settings("self-paced")
    assert settings == AdaptiveSettings(strategy="self-paced", every=3, options={"start_quantile": 0.5},
                                        rescore="all")
    with pytest.raises(ConfigError, match=r"adaptive\.rescore"):
        GridAdaptiveSettings(rescore=-1).settings("rho")


def test_relative_paths_are_read_from_the_given_folder(tmp_path: Path) -> None:
    run = tmp_path / "stage" / "run"
    (tmp_path / "stage" / "anchors.json").parent.mkdir(parents=True)
    (tmp_path / "stage" / "anchors.json").write_text("{}")
    given = AdaptiveSettings(strategy="ability", difficulty="../b.parquet", anchors=["../anchors.json", "a,b"],
                             reference="tiny")
    read = paths_read_from(given, run)
    assert read.difficulty == str(tmp_path / "stage" / "b.parquet")
    assert read.anchors == [str(tmp_path / "stage" / "anchors.json"), "a,b"]
    assert read.reference == "tiny"  # a model spec, not a folder there
    assert paths_read_from(given, None) is given


def test_adaptive_options_without_a_strategy_are_refused() -> None:
    assert adaptive_from_options(None, {}) is None
    with pytest.raises(ConfigError, match="--adaptive-option, --every only apply with --adaptive"):
        adaptive_from_options(None, {"every": 2, "options": {"delta": 1}})
    assert adaptive_from_options("ability", {"every": 2}) == AdaptiveSettings(strategy="ability", every=2)
