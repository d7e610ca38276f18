"""Every settings schema is named ``*Settings``; the previous release's names still import, with a warning."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pydantic
import pytest

import medtune
from medtune.schema import MCQItem, QAItem
from medtune.settings import GridSection

RECORDS = (MCQItem, QAItem)  # data records (an item), not settings
BASES = (GridSection,)  # the base of the grid's generated sections, never validated on its own


def test_every_schema_is_named_settings() -> None:
    misnamed = []
    for info in pkgutil.walk_packages(medtune.__path__, "medtune."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, pydantic.BaseModel) and obj.__module__ == module.__name__
                    and not name.startswith("_") and not issubclass(obj, RECORDS) and obj not in BASES
                    and not name.endswith("Settings")):
                misnamed.append(f"{module.__name__}.{name}")
    assert misnamed == []


@pytest.mark.parametrize(("module", "old", "new"), [
    ("medtune.training", "TrainConfig", "TrainSettings"),
    ("medtune.training.config", "TrainConfig", "TrainSettings"),
    ("medtune.data.prepare", "PrepareConfig", "PrepareSettings"),
    ("medtune.experiments", "ExperimentConfig", "ExperimentSettings"),
    ("medtune.experiments.config", "ExperimentConfig", "ExperimentSettings"),
])
def test_the_previous_names_still_import_with_a_warning(module: str, old: str, new: str) -> None:
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=f"{old} is now {new}"):
        assert getattr(mod, old) is getattr(mod, new)
    with pytest.raises(AttributeError):
        mod.NoSuchName  # noqa: B018
