"""Every hand-written numeric option (one not generated from a settings schema) has a range, checked on parsing.

The commands are found by walking the real command tree, so an option added later without a bound fails
``test_every_hand_written_numeric_option_is_bounded``. For each option, values drawn outside its range must stop
the command with exit code 2 and one line naming the option and the range — no numpy/scipy/transformers
traceback, and before any input file is opened (the placeholder inputs here are not even items files).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.test_bad_inputs import error_line, run

from medtune.cli import app, main
from medtune.cli.options import Bound


def _leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    subs = getattr(command, "commands", None)
    if subs is None:
        return [(path, command)]
    return [leaf for name, sub in sorted(subs.items()) for leaf in _leaves(sub, (*path, name))]


def _numeric_type(param: Any) -> type | None:
    annotation = param.type_descriptor.annotation  # typer's parsed annotation (``int | None`` → int)
    return annotation if annotation in (int, float) else None


def _numeric_options() -> list[tuple[tuple[str, ...], Any, Any]]:
    """(command path, the command, the option) for each hand-written int/float option of every command."""
    out = []
    for path, command in _leaves(typer.main.get_command(app)):
        for param in command.params:
            generated = param.name.startswith("opt_")  # made by medtune.cli.options from a settings schema
            if param.param_type_name == "option" and not generated and _numeric_type(param) is not None:
                out.append((path, command, param))
    return out


OPTIONS = _numeric_options()


def _schema_options() -> list[tuple[tuple[str, ...], Any, Any]]:
    """(command path, the command, the option) for each option generated from a settings field with a range."""
    out = []
    for path, command in _leaves(typer.main.get_command(app)):
        for param in command.params:
            if (param.param_type_name == "option" and param.name.startswith("opt_")
                    and _numeric_type(param) is not None and getattr(param.callback, "bound", None) is not None):
                out.append((path, command, param))
    return out


SCHEMA_OPTIONS = _schema_options()


def _flag(param: Any) -> str:
    return next(o for o in param.opts if o.startswith("--"))


def _id(entry: tuple[tuple[str, ...], Any, Any]) -> str:
    return " ".join((*entry[0], _flag(entry[2])))


def _bound(param: Any) -> Bound | None:
    return getattr(param.callback, "bound", None)


def test_every_hand_written_numeric_option_is_bounded():
    found = {_id(e) for e in OPTIONS}
    # The walk finds the options this file was written for (it is not vacuous) ...
    assert {"evaluate compare --n-boot", "evaluate metrics --n-boot", "generate --max-new-tokens",
            "evaluate power --alpha", "evaluate anchors choose --k", "train --threads", "order plot --epoch"} <= found
    # ... and every one of them carries a range.
    unbounded = sorted(_id(e) for e in OPTIONS if _bound(e[2]) is None)
    assert not unbounded, f"numeric options without a bound: {unbounded}"


def _outside(bound: Bound, integer: bool) -> st.SearchStrategy[Any]:
    """Values outside ``bound`` (for floats also NaN and ±inf, which no range admits)."""
    parts: list[st.SearchStrategy[Any]] = []
    if integer:
        if bound.ge is not None:
            parts.append(st.integers(max_value=math.ceil(bound.ge) - 1))
        if bound.gt is not None:
            parts.append(st.integers(max_value=math.floor(bound.gt)))
        if bound.le is not None:
            parts.append(st.integers(min_value=math.floor(bound.le) + 1))
        if bound.lt is not None:
            parts.append(st.integers(min_value=math.ceil(bound.lt)))
        if bound.nonzero:
            parts.append(st.just(0))
    else:
        finite = {"allow_nan": False, "allow_infinity": False}
        if bound.ge is not None:
            parts.append(st.floats(max_value=bound.ge, exclude_max=True, **finite))
        if bound.gt is not None:
            parts.append(st.floats(max_value=bound.gt, **finite))
        if bound.le is not None:
            parts.append(st.floats(min_value=bound.le, exclude_min=True, **finite))
        if bound.lt is not None:
            parts.append(st.floats(min_value=bound.lt, **finite))
        if bound.nonzero:
            parts.append(st.sampled_from([0.0, -0.0]))
        parts.append(st.sampled_from([math.nan, math.inf, -math.inf]))
    assert parts, "a bound that rules nothing out"
    return st.one_of(parts)


def _placeholders(command: Any, param: Any, dummy: Path) -> list[str]:
    """Values for the command's other required inputs: an existing (but not a valid) file for each."""
    argv: list[str] = []
    for other in command.params:
        if other is param or not other.required:
            continue
        if other.param_type_name == "option":
            argv += [_flag(other) if any(o.startswith("--") for o in other.opts) else other.opts[0], str(dummy)]
        else:
            argv.append(str(dummy))
    return argv


def test_the_schema_ranges_reach_the_generated_options():
    """Options generated from a settings schema carry the field's range (e.g. ``--lr`` > 0, ``--batch-size`` ≥ 1),
    so they are refused on parsing as the hand-written ones are."""
    found = {_id(e): _bound(e[2]) for e in SCHEMA_OPTIONS}
    assert {"train --lr", "train --batch-size", "train --max-steps", "train --gpu-memory",
            "evaluate run --max-new-tokens"} <= set(found)
    assert found["train --lr"].describe() == "> 0" and found["train --batch-size"].describe() == "≥ 1"


@pytest.mark.parametrize("entry", OPTIONS + SCHEMA_OPTIONS, ids=_id)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_out_of_range_value_stops_with_one_line(entry, data, tmp_path, capsys):
    path, command, param = entry
    bound = _bound(param)
    assert bound is not None, _id(entry)
    value = data.draw(_outside(bound, _numeric_type(param) is int), label=_id(entry))
    assert not bound.allows(value)
    dummy = tmp_path / "input.parquet"
    dummy.write_text("not a parquet file")  # nothing may read it: the option is refused first
    flag = _flag(param)
    code, out, err = run(capsys, *path, f"{flag}={value}", *_placeholders(command, param, dummy))
    assert code == 2, (out, err)
    line = error_line(err)
    assert flag in line and f"must be {bound.describe()}" in line, line


@pytest.mark.parametrize(("argv", "message"), [
    (["evaluate", "compare", "A", "B", "--n-boot", "-1"], "--n-boot must be ≥ 1, got -1"),
    (["evaluate", "metrics", "P", "--items", "I", "--n-boot", "0"], "--n-boot must be ≥ 1, got 0"),
    (["generate", "smollm2", "hi", "--max-new-tokens", "-1"], "--max-new-tokens must be ≥ 1, got -1"),
    (["evaluate", "power", "R", "--alpha", "1"], "--alpha must be > 0 and < 1, got 1.0"),
    (["evaluate", "power", "R", "--gain", "0"], "--gain must be > -1 and < 1 and ≠ 0, got 0.0"),
])
def test_the_reported_cases_name_option_and_range(argv, message, capsys):
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 2 and message in error_line(err)


def test_a_value_on_the_boundary_is_accepted():
    assert Bound(ge=1).allows(1) and not Bound(ge=1).allows(0)
    assert not Bound(gt=0, lt=1).allows(0) and not Bound(gt=0, lt=1).allows(1) and Bound(gt=0, lt=1).allows(0.5)
    assert Bound(gt=0, le=1).allows(1.0) and not Bound(nonzero=True).allows(0)
