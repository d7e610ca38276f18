"""The difficulty-source registry: one type of source name for the three schemas that take one, one error.

The difficulty stage's ``source``, the order stage's ``difficulty_source`` and a grid's ``difficulty.sources`` all
check a name against :data:`medtune.difficulty_sources.SOURCES`, so a misspelt source gets the registry's
"did you mean" in each, and a source registered later (a plugin's) is accepted by each without their code changing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medtune.difficulty_sources import SOURCES, DifficultySourceSpec, get_difficulty_source, register_difficulty_source
from medtune.difficulty_stage import DifficultySettings
from medtune.errors import ConfigError
from medtune.experiments.config import config_from_dict
from medtune.orders.stage import OrderSettings
from medtune.settings import validate_settings

REPO = Path(__file__).resolve().parents[1]


class Constant(DifficultySourceSpec):
    name = "constant"
    description = "every item equally hard"
    multiple_choice = False


def _grid(sources: list[str]) -> dict:
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data["difficulty"] = {"sources": sources}
    return data


def test_the_built_ins_declare_what_the_order_stage_reads() -> None:
    assert set(SOURCES.names()) >= {"human", "llm", "irt", "file", "responses"}
    irt, llm, human = (get_difficulty_source(n) for n in ("irt", "llm", "human"))
    assert (irt.order_column, irt.order_bucketing) == ("irt_b", "terciles")
    assert (llm.order_column, llm.order_bucketing, llm.from_file) == ("difficulty", None, True)
    assert not human.from_file and not get_difficulty_source("responses").reads_items


def test_a_misspelt_source_is_the_registry_error_in_every_schema() -> None:
    with pytest.raises(ConfigError, match=r"unknown difficulty source 'irrt'; did you mean 'irt'\?"):
        validate_settings(DifficultySettings, {"source": "irrt"}, "difficulty")
    with pytest.raises(ConfigError, match=r"unknown difficulty source 'humna'; did you mean 'human'\?"):
        validate_settings(OrderSettings, {"strategy": "random", "seed": 0, "difficulty_source": "humna"})
    with pytest.raises(ConfigError, match=r"unknown difficulty source 'fiel'; did you mean 'file'\?"):
        config_from_dict(_grid(["human", "fiel"]))


def test_a_registered_source_is_accepted_by_every_schema_and_none_stays_the_order_stages() -> None:
    with SOURCES.scoped():
        register_difficulty_source(Constant())
        assert validate_settings(DifficultySettings, {"source": "constant"}, "difficulty").source == "constant"
        order = validate_settings(OrderSettings, {"strategy": "curriculum", "seed": 0, "difficulty_source": "constant"})
        assert order.difficulty_source == "constant"
        assert config_from_dict(_grid(["human", "constant"])).difficulty.sources == ["human", "constant"]
        with pytest.raises(ConfigError, match="already registered"):
            register_difficulty_source(type("Other", (Constant,), {})())
        with pytest.raises(ValueError, match="'none'"):
            register_difficulty_source(type("Nothing", (Constant,), {"name": "none"})())
    assert "constant" not in SOURCES
    assert validate_settings(OrderSettings, {"strategy": "random", "seed": 0, "difficulty_source": "none"})
    with pytest.raises(ConfigError, match="unknown difficulty source 'none'"):
        validate_settings(DifficultySettings, {"source": "none"}, "difficulty")
