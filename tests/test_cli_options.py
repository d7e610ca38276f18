"""Options generated from a settings schema (medtune.cli.options): what ``--help`` says of each default."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import Field

from medtune.cli import main
from medtune.cli.options import settings_parameters
from medtune.settings import Settings


class _Example(Settings):
    seed: int = Field(description="the seed")
    epochs: int = Field(3, description="epochs")
    tags: list[str] = Field(default_factory=list, description="tags")
    shuffle: bool = Field(False, description="shuffle")


def _help_texts(cls: type[Settings]) -> dict[str, str]:
    """Field → the help text of its generated option."""
    params, info = settings_parameters(cls)
    out: dict[str, str] = {}
    for p in params:
        option: Any = p.annotation.__metadata__[0]
        out[info[p.name].split(":")[0]] = option.help
    return out


def test_help_says_required_for_a_field_without_default() -> None:
    texts = _help_texts(_Example)
    assert texts == {"seed": "the seed (required)", "epochs": "epochs (default: 3)", "tags": "tags",
                     "shuffle": "shuffle (default: False)"}


def test_order_help_shows_no_pydantic_sentinel(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["order", "build", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "PydanticUndefined" not in out
    assert "(required)" in out
