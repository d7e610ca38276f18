"""Strategy options: :class:`OptionSpec` and the parsers that check a value given on the command line or in YAML.

Kept apart from the strategies because they depend on nothing of theirs: a plugin's strategy declares its
options with the same parsers, so ``k=items``, ``c0=0.3`` and their errors read alike for every strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from medtune.errors import ConfigError

__all__ = ["OptionSpec", "choice", "count", "float_in", "optional_length", "parse_k", "positive_int"]


def parse_k(v: Any) -> int | str:
    if v == "items":
        return "items"
    try:
        k = int(v)
    except (TypeError, ValueError):
        raise ConfigError(f"k must be a positive integer or 'items', got {v!r}") from None
    if k < 1 or str(k) != str(v).strip():
        raise ConfigError(f"k must be a positive integer or 'items', got {v!r}")
    return k


def positive_int(name: str) -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        try:
            x = int(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a positive integer, got {v!r}") from None
        if x < 1 or float(v) != x:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        return x

    return parse


def count(name: str) -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        try:
            x = int(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a non-negative integer, got {v!r}") from None
        if x < 0 or float(v) != x:
            raise ConfigError(f"{name} must be a non-negative integer, got {v!r}")
        return x

    return parse


def optional_length(v: Any) -> int | None:
    return None if v is None or v == "n" else positive_int("length")(v)


def float_in(name: str, lo: float, hi: float, lo_open: bool = False) -> Callable[[Any], float]:
    def parse(v: Any) -> float:
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {v!r}") from None
        if not (lo < x <= hi if lo_open else lo <= x <= hi):
            raise ConfigError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {v!r}")
        return x

    return parse


def choice(name: str, choices: Sequence[str]) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if v not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {v!r}")
        return str(v)

    return parse


@dataclass(frozen=True)
class OptionSpec:
    """One strategy option: its default, its parser (raises :class:`ConfigError`) and a one-line help.

    ``omit_default``: the resolved options leave the option out while it holds its default. An option
    added to existing strategies uses it, so the order files and stage keys of settings that do not
    use it stay what they were; equal settings still resolve equal, however they were written.
    """

    default: Any
    parse: Callable[[Any], Any]
    help: str
    omit_default: bool = False
