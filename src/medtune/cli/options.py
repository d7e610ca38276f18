"""Command-line options generated from a stage's settings schema (:class:`medtune.settings.Settings`).

One option per field, named ``--field-name``, with the field's description as its help and its default shown;
booleans get ``--x/--no-x``, lists are repeatable, ``dict[str, int]`` fields take ``key=value`` pairs. A field
that nests a group of settings (a method's: ``lora: LoraSettings``) is flattened: one option per setting of the
group, ``--lora-r``; so are the groups that plugins register at run time (``groups``), once the plugins are
loaded (:func:`refresh_settings_options`). Every option defaults to "not given", so a command knows which
settings the user set explicitly (they win over a preset) and the schema stays the one place that holds a
default. Validation is the schema's own.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

import typer
from pydantic.fields import FieldInfo

from medtune.errors import ConfigError
from medtune.settings import Settings, settings_group_class


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _strip_optional(args[0])
        return str  # a union of several types: parsed as text, validated by the schema
    return tp


def _cli_type(tp: Any) -> tuple[Any, str]:
    """(the type typer parses, the kind: plain | bool | list | dict) of a settings field."""
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if tp is bool:
        return bool, "bool"
    if origin is typing.Literal:
        values = typing.get_args(tp)
        return (type(values[0]) if values else str), "plain"
    if origin in (list, tuple) and origin is list:
        (inner,) = typing.get_args(tp) or (str,)
        return list[_strip_optional(inner)], "list"
    if origin is tuple:
        args = typing.get_args(tp)
        if args and args[-1] is not Ellipsis:
            return tuple[tuple(_strip_optional(a) for a in args)], "plain"
        return list[_strip_optional(args[0])], "list"
    if origin is dict:
        return list[str], "dict"
    if tp in (int, float, str):
        return tp, "plain"
    return str, "plain"


def _choices(tp: Any) -> tuple[Any, ...] | None:
    tp = _strip_optional(tp)
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _default_note(field: FieldInfo, kind: str) -> str:
    """What ``--help`` says of a field's default: "(required)" when it has none (pydantic's "undefined"
    sentinel means nothing to a user), nothing for an empty default, else the value."""
    if field.is_required():
        return " (required)"
    default = field.get_default(call_default_factory=True)
    if default not in (None, [], {}, ()) or kind == "bool":
        return f" (default: {default})"
    return ""


Groups = Callable[[], Mapping[str, type[Settings]]]


def settings_parameters(cls: type[Settings], *, exclude: Iterable[str] = (),
                        rename: dict[str, str] | None = None, groups: Groups | None = None,
                        ) -> tuple[list[inspect.Parameter], dict[str, str]]:
    """One keyword parameter per field of ``cls`` (per setting of a nested group, and of each of ``groups()``);
    returns them and {parameter name: "field:kind"} info, the field of a group's setting as ``group.setting``."""
    params: list[inspect.Parameter] = []
    info: dict[str, str] = {}
    rename = rename or {}
    skip = set(exclude)
    fields: list[tuple[str, str, type[Settings], FieldInfo]] = []  # (key, name in its schema, schema, field)
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        group = settings_group_class(field.annotation)
        if group is None:
            fields.append((name, name, cls, field))
        else:
            fields += [(f"{name}.{sub}", sub, group, f) for sub, f in group.model_fields.items()]
    for gname, group in (groups() if groups is not None else {}).items():
        if gname not in cls.model_fields and gname not in skip:
            fields += [(f"{gname}.{sub}", sub, group, f) for sub, f in group.model_fields.items()]
    for key, name, schema, field in fields:
        py_type, kind = _cli_type(field.annotation)
        flag = rename.get(key, option_name(key.replace(".", "_")))
        help_text = (field.description or "").strip()
        choices = _choices(field.annotation)
        if choices:
            help_text += f" ({' | '.join(map(str, choices))})"
        help_text += _default_note(field, kind)
        if kind == "dict":
            help_text += " (key=value, repeatable)"
        decl = f"{flag}/--no-{flag[2:]}" if kind == "bool" else flag
        extra: dict[str, Any] = {}
        if py_type in (int, float) and _limits(field):
            # Checked as the command line is parsed, like the hand-written options: an out-of-range number stops
            # the command with one line naming the option and the schema's range, before any input is read.
            extra["callback"] = schema_bounded(schema, name)
        option = typer.Option(decl, help=help_text, show_default=False, **extra)
        param = f"opt_{key.replace('.', '__')}"
        params.append(inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[py_type | None, option]))
        info[param] = f"{key}:{kind}"
    return params, info


def _parse_pairs(flag: str, pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} takes key=value, got {pair!r}")
        text = value.strip()
        try:
            out[key.strip()] = int(text)
        except ValueError:
            try:
                out[key.strip()] = float(text)
            except ValueError:
                out[key.strip()] = text
    return out


# Commands whose options include groups registered at run time: rebuilt once the plugins are loaded.
_REFRESH: list[Callable[[], None]] = []


def refresh_settings_options() -> None:
    """Rebuild the options of every command decorated with ``groups``, so the settings groups that plugins
    registered since (a plugin method's) get their options; the CLI calls it after loading the plugins."""
    for refresh in _REFRESH:
        refresh()


def with_settings(cls: type[Settings], *, exclude: Iterable[str] = (), rename: dict[str, str] | None = None,
                  param: str = "given", groups: Groups | None = None,
                  ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command so it also takes one option per field of ``cls`` (per setting of a nested group, and
    of each group ``groups()`` names when the options are built or refreshed).

    The command receives ``given`` (``param``): a dict of the settings the user set explicitly, keyed by field
    name (a group's settings as a dict under the group's name), ready for
    ``cls.model_validate({**preset, **given})``. Its own parameters stay as they are.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(func, include_extras=True)  # resolves postponed (string) annotations
        own = [p.replace(annotation=hints.get(name, p.annotation))
               for name, p in inspect.signature(func).parameters.items() if name != param]
        info: dict[str, str] = {}

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            given: dict[str, Any] = {}
            for pname, spec in info.items():
                value = kwargs.pop(pname, None)
                field, kind = spec.split(":")
                if value is None or (kind in ("list", "dict") and not value):
                    continue
                if kind == "dict":
                    flag = (rename or {}).get(field, option_name(field.replace(".", "_")))
                    value = _parse_pairs(flag, list(value))
                elif kind == "list" or isinstance(value, tuple):
                    value = list(value)
                group, _, setting = field.partition(".")
                if setting:
                    given.setdefault(group, {})[setting] = value
                else:
                    given[field] = value
            return func(**kwargs, **{param: given})

        def build() -> None:
            extra, new_info = settings_parameters(cls, exclude=exclude, rename=rename, groups=groups)
            clash = {p.name for p in own} & {p.name for p in extra}
            if clash:
                raise TypeError(f"{func.__name__}: parameters {clash} clash with settings options")
            info.clear()
            info.update(new_info)
            ordered = [p for p in own if p.default is inspect.Parameter.empty]
            ordered += [p for p in own if p.default is not inspect.Parameter.empty]
            wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
                [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in ordered] + extra)

        build()
        if groups is not None:
            _REFRESH.append(build)
        # typer reads annotations from the signature; the wrapped function's hints must not shadow them.
        wrapper.__annotations__ = {}
        del wrapper.__wrapped__
        return wrapper

    return decorate


class Bound:
    """The allowed range of a hand-written numeric option (one not generated from a settings schema).

    Checked as the command line is parsed, so an out-of-range value stops the command with a one-line
    :class:`ConfigError` naming the option and the range, before any file is read, instead of surfacing as a
    numpy / scipy / transformers traceback deep inside the stage.
    """

    def __init__(self, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
                 lt: float | None = None, nonzero: bool = False) -> None:
        self.ge, self.gt, self.le, self.lt, self.nonzero = ge, gt, le, lt, nonzero

    def describe(self) -> str:
        parts = [f"{sym} {lim:g}" for sym, lim in (("≥", self.ge), (">", self.gt), ("≤", self.le), ("<", self.lt))
                 if lim is not None]
        if self.nonzero:
            parts.append("≠ 0")
        return " and ".join(parts) or "a finite number"

    def allows(self, value: float) -> bool:
        # Written so that NaN fails every comparison; an infinite value is never a sensible count or rate.
        if value != value or value in (float("inf"), float("-inf")):
            return False
        return not ((self.ge is not None and not value >= self.ge) or (self.gt is not None and not value > self.gt)
                    or (self.le is not None and not value <= self.le) or (self.lt is not None and not value < self.lt)
                    or (self.nonzero and value == 0))

    def check(self, flag: str, value: float | None) -> None:
        """Raise :class:`ConfigError` ("--n-boot must be ≥ 1, got -1") when ``value`` is given and out of range."""
        if value is not None and not self.allows(value):
            raise ConfigError(f"{flag} must be {self.describe()}, got {value}")


def flag_of(param: Any) -> str:
    """The option's long name as the user types it (``--n-boot``), else its first declaration."""
    opts = list(getattr(param, "opts", []) or [])
    longs = [o for o in opts if o.startswith("--")]
    return (longs or opts or [f"--{param.name}"])[0]


def bounded(*, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
            nonzero: bool = False) -> Callable[..., Any]:
    """A typer option callback that enforces a :class:`Bound`: ``typer.Option(callback=bounded(ge=1))``.

    The bound is kept on the callback (``.bound``) so the tests can find every bounded option and its range.
    """
    bound = Bound(ge=ge, gt=gt, le=le, lt=lt, nonzero=nonzero)

    def check(param: typer.CallbackParam, value: Any) -> Any:
        bound.check(flag_of(param), value)
        return value

    check.bound = bound  # type: ignore[attr-defined]
    return check


def _limits(field: FieldInfo) -> dict[str, float]:
    """The numeric range a settings field declares (``ge``, ``gt``, ``le``, ``lt``)."""
    limits: dict[str, float] = {}
    for meta in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if getattr(meta, name, None) is not None:
                limits[name] = getattr(meta, name)
    return limits


def schema_bounded(cls: type[Settings], field: str) -> Callable[..., Any]:
    """:func:`bounded` with the range of ``cls``'s ``field``, for an option that feeds that field (generated or
    hand-written): the schema stays the one place that says what is allowed."""
    return bounded(**_limits(cls.model_fields[field]))


# The ranges shared by many commands.
SEED = {"ge": 0}  # numpy's generators take no negative seed
COUNT = {"ge": 1}  # a number of draws, items, tokens, processes
SHOWN = {"ge": 0}  # "list at most this many": 0 lists none
