"""The source loaders are registered under the names the CLI uses, and reject options they do not know."""

from __future__ import annotations

import pytest

from medtune.data import available_loaders, get_loader, load, register_loader
from medtune.data.registry import LOADERS
from medtune.errors import ConfigError, InputError

from .badfiles import write_csv

NAMES = ("medqa", "medmcqa", "lek", "mmlu", "pubmedqa", "medquad", "tabular", "usmle", "hf")


def test_every_source_is_registered_with_a_description():
    loaders = available_loaders()
    for name in NAMES:
        assert name in loaders and loaders[name].description
    assert loaders["hf"].needs_path is False and loaders["tabular"].needs_path is True


def test_a_taken_source_name_is_refused_and_an_unknown_one_gets_a_suggestion():
    def my_medqa(path, *, on_error="raise"):
        """Another reader of medqa files."""

    with LOADERS.scoped():
        with pytest.raises(ConfigError, match=r"data source 'medqa' is already registered by "
                                              r"medtune\.data\.medqa\..*; .*my_medqa registers it again"):
            register_loader("medqa")(my_medqa)
        register_loader("medqa", replace=True)(my_medqa)
        assert get_loader("medqa").func is my_medqa
    assert get_loader("medqa").func is not my_medqa
    with pytest.raises(ConfigError, match=r"unknown data source 'medqaa'; did you mean 'medqa'\? \(registered: .*hf"):
        load("medqaa", None)


@pytest.mark.parametrize("name", ["medqa", "medmcqa", "lek", "mmlu", "pubmedqa", "medquad", "tabular", "usmle"])
def test_unknown_options_are_errors_not_silently_ignored(tmp_path, name):
    path = write_csv(tmp_path / "anatomy_test.csv", [["Q?", "a", "b", "c", "d", "A"]])
    with pytest.raises(InputError, match="unknown option"):
        load(name, path, no_such_option=1)


def test_csv_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("\ufeffq,x,y,ans\nQ?,a,b,B\n", encoding="utf-8")
    assert load("tabular", path, question_col="q", options_cols="x,y", answer_col="ans").items[0].answer == 1
