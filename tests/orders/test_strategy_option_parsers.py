"""The parsers behind every strategy option, built fresh here: what each accepts (and returns, with its type), what
it refuses, and the message naming the option and its range. The registry builds its parsers once at import; these
tests build their own from the same factories, so each bound is checked on the code that defines it."""

from __future__ import annotations

import pytest

from medtune.errors import ConfigError
from medtune.orders import options as o
from medtune.orders import strategies as s


def _refuses(parse, value, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(value)
    assert str(err.value) == message


def test_count_accepts_zero_and_whole_numbers_only():
    parse = o.count("reviews")
    assert parse(0) == 0 and parse("3") == 3 and parse(2.0) == 2 and type(parse(2.0)) is int
    _refuses(parse, -1, "reviews must be a non-negative integer, got -1")
    _refuses(parse, 1.5, "reviews must be a non-negative integer, got 1.5")
    _refuses(parse, "x", "reviews must be a non-negative integer, got 'x'")
    _refuses(parse, None, "reviews must be a non-negative integer, got None")


def test_positive_int_starts_at_one():
    parse = o.positive_int("steps")
    assert parse(1) == 1 and parse("4") == 4 and parse(3.0) == 3 and type(parse(3.0)) is int
    _refuses(parse, 0, "steps must be a positive integer, got 0")
    _refuses(parse, 2.5, "steps must be a positive integer, got 2.5")
    _refuses(parse, "two", "steps must be a positive integer, got 'two'")
    _refuses(parse, [], "steps must be a positive integer, got []")


def test_float_in_closed_and_half_open_ranges():
    closed = o.float_in("growth", 1.0, 4.0)
    assert closed(1) == 1.0 and closed("4") == 4.0 and type(closed(2)) is float
    _refuses(closed, 0.99, "growth must be in [1.0, 4.0], got 0.99")
    _refuses(closed, 4.01, "growth must be in [1.0, 4.0], got 4.01")
    _refuses(closed, "fast", "growth must be a number, got 'fast'")
    _refuses(closed, None, "growth must be a number, got None")
    half = o.float_in("c0", 0.0, 1.0, lo_open=True)
    assert half(1.0) == 1.0 and half(1e-9) == 1e-9
    _refuses(half, 0.0, "c0 must be in (0.0, 1.0], got 0.0")
    _refuses(half, 1.5, "c0 must be in (0.0, 1.0], got 1.5")


def test_choice_and_the_category_order_option():
    parse = o.choice("schedule", ("linear", "root"))
    assert parse("root") == "root"
    _refuses(parse, "step", "schedule must be one of linear, root, got 'step'")
    assert s.get_strategy("blocked").resolve_options({"category_order": "size"}) == {"category_order": "size"}
    # the default is left out of the resolved options, a given non-default kept
    assert s.get_strategy("blocked").resolve_options({"category_order": "seeded"}) == {}
    assert s.get_strategy("blocked").resolve_options({}) == {}


def test_k_is_a_positive_integer_written_as_one_or_items():
    assert o.parse_k("items") == "items" and o.parse_k(2) == 2 and o.parse_k("3") == 3 and o.parse_k(" 3 ") == 3
    for bad in (0, -1, "2.0", 2.5, "x", None, "items "):
        _refuses(o.parse_k, bad, f"k must be a positive integer or 'items', got {bad!r}")


def test_length_is_none_n_or_a_positive_integer():
    assert o.optional_length(None) is None and o.optional_length("n") is None
    assert o.optional_length(5) == 5 and o.optional_length("7") == 7
    _refuses(o.optional_length, 0, "length must be a positive integer, got 0")


def test_a_base_strategy_must_exist():
    assert s._strategy_name("curriculum") == "curriculum"
    with pytest.raises(ConfigError, match="unknown strategy 'nope'"):
        s._strategy_name("nope")


def test_every_registered_option_keeps_its_default_and_bounds():
    pacing = s.get_strategy("pacing").resolve_options({})
    assert pacing == {"schedule": "linear", "c0": 0.2, "ramp": 0.8, "steps": 3, "length": None,
                      "sampling": "balanced"}
    spaced = s.get_strategy("spaced-repetition").resolve_options({})
    assert spaced == {"reviews": 2, "first_interval": 1, "growth": 2.0, "base": "random", "length": None}
    assert s.get_strategy("interleaved").resolve_options({}) == {"k": 3}
    assert s.get_strategy("spaced-repetition").resolve_options({"reviews": 0})["reviews"] == 0
    with pytest.raises(ConfigError, match=r"growth must be in \[1.0, 1000000.0\]"):
        s.get_strategy("spaced-repetition").resolve_options({"growth": 0.5})
    with pytest.raises(ConfigError, match=r"ramp must be in \(0.0, 1.0\]"):
        s.get_strategy("pacing").resolve_options({"ramp": 0})
    with pytest.raises(ConfigError, match=r"has no option 'a', 'b' \(its options: none\)"):
        s.get_strategy("random").resolve_options({"b": 1, "a": 2})
