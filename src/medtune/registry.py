"""One registry for everything pluggable: data loaders, scoring backends, adaptive strategies, grid checks...

Every extension point used to keep its own dict with its own rules (one refused a name taken twice, one
silently replaced it, one accepted any name). :class:`Registry` is the single set of rules, in the spirit of
lm-evaluation-harness's registry:

- **names**: lower-case letters, digits, ``-``, ``_`` and ``.``, starting with a letter (:data:`NAME_PATTERN`),
  because they are typed on the command line and in YAML, and a backend's name is a model spec's ``NAME:`` prefix;
- **collisions**: a second object under a taken name is a :class:`~medtune.errors.ConfigError` naming both
  registrants, unless ``replace=True`` is passed, so two plugins (or a plugin and a built-in) never shadow each
  other by accident. Registering the same object again, or the same definition again (its module imported a
  second time), is not a collision;
- **unknown names**: one :class:`~medtune.errors.ConfigError` listing the registered names, with a
  "did you mean" suggestion for a misspelling;
- **built-ins** are named up front as ``"module:attribute"`` references and imported on first use, so listing
  the names costs no import and a heavy built-in is loaded only when asked for;
- **plugins**: the first read of a registry imports the plugin modules (:func:`medtune.plugins.load_plugins`:
  ``MEDTUNE_PLUGINS`` and the ``medtune.plugins`` entry-point group), so a plugin's names are there whether
  medtune runs from the CLI, a grid or plain Python.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from medtune import plugins
from medtune.errors import ConfigError

T = TypeVar("T")

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]*$")
NAME_RULE = "lower-case letters, digits, '-', '_' or '.', starting with a letter"


def is_valid_name(name: object) -> bool:
    """Whether ``name`` follows the one name rule (a string matching :data:`NAME_PATTERN`)."""
    return isinstance(name, str) and NAME_PATTERN.match(name) is not None


def check_name(name: object, kind: str) -> str:
    """``name`` if it follows the name rule; a ConfigError naming the ``kind`` and the rule otherwise."""
    if not is_valid_name(name):
        raise ConfigError(f"{kind} name {name!r} must be {NAME_RULE} (it is typed on the command line and in YAML)")
    return str(name)


def registrant(obj: object) -> str:
    """Who registered ``obj``, for messages: ``module.qualname`` of a function or class, else of its type."""
    target = obj if hasattr(obj, "__qualname__") and hasattr(obj, "__module__") else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(obj).__name__)}"


def same_definition(a: object, b: object) -> bool:
    """True when ``b`` is ``a`` or ``a`` defined again by importing its module a second time (a plugin loaded
    twice, a module reloaded): the same function (path and source line) or class path, or an instance of the
    same class with equal attributes. Such a registration is a repeat, not a collision."""
    if a is b:
        return True
    if registrant(a) != registrant(b) or type(a) is not type(b):
        return False
    if isinstance(a, type):
        return True
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    if code_a is not None and code_b is not None:
        return (code_a.co_filename, code_a.co_firstlineno) == (code_b.co_filename, code_b.co_firstlineno)
    try:
        return bool(vars(a) == vars(b))
    except TypeError:
        return bool(a == b)


def _reference(obj: object) -> str:
    """``module:qualname`` of a function or class (what a built-in's reference names), else ``""``."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}:{qualname}" if isinstance(module, str) and isinstance(qualname, str) else ""


@dataclass(frozen=True)
class _Entry(Generic[T]):
    obj: T
    origin: object  # what identifies the registrant (the object itself, or e.g. a loader's function)


@dataclass(frozen=True)
class _Builtin:
    ref: str  # "module:attribute", imported on first use


class Registry(Generic[T]):
    """Named objects of one ``kind`` (``"scoring backend"``, ``"data source"``...), used in every message.

    ``builtins`` maps names to ``"module:attribute"`` references, imported the first time the name is looked
    up (once); ``hint`` is appended to the unknown-name error (e.g. where more names come from).
    Names keep their registration order (built-ins first); callers sort where they list them.
    """

    def __init__(self, kind: str, *, builtins: Mapping[str, str] | None = None, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._slots: dict[str, _Entry[T] | _Builtin] = {}
        self._plugins = "unloaded"  # unloaded, loading, loaded
        for name, ref in (builtins or {}).items():
            check_name(name, kind)
            if ":" not in ref:
                raise ValueError(f"built-in {kind} '{name}': reference {ref!r} must be 'module:attribute'")
            self._slots[name] = _Builtin(ref)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._slots)} names)"

    # -- registering ---------------------------------------------------------------------------------------

    def register(self, name: str, obj: T, *, replace: bool = False, origin: object = None) -> T:
        """Make ``obj`` available under ``name``; returns ``obj``.

        A name already taken (by a built-in too, imported or not) is refused with both registrants named,
        unless ``replace=True`` or it is the same definition again. ``origin`` is what identifies the
        registrant when ``obj`` is a wrapper (a loader's spec around its function); ``obj`` by default.
        A replacement keeps the name's place in the order.
        """
        check_name(name, self.kind)
        origin = obj if origin is None else origin
        taken = self._slots.get(name)
        if taken is not None and not replace:
            # One message whether or not a built-in has been imported yet: its reference names what it will be.
            if isinstance(taken, _Builtin):
                holder = taken.ref.replace(":", ".") if taken.ref != _reference(origin) else None
            else:
                holder = None if same_definition(taken.origin, origin) else registrant(taken.origin)
            if holder is not None:  # the built-in's own module registering it, or the same definition, is no collision
                raise ConfigError(f"{self.kind} '{name}' is already registered by {holder}; {registrant(origin)} "
                                  "registers it again (pass replace=True to override it)")
        self._slots[name] = _Entry(obj, origin)
        return obj

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a built-in too); an unknown name is the unknown-name error."""
        self._load_plugins()
        if name not in self._slots:
            raise self.unknown(name)
        del self._slots[name]

    # -- reading -------------------------------------------------------------------------------------------

    def get(self, name: str) -> T:
        """The object registered under ``name``; the unknown-name error otherwise."""
        self._load_plugins()
        slot = self._slots.get(name) if isinstance(name, str) else None
        if slot is None:
            raise self.unknown(name)
        if isinstance(slot, _Builtin):
            return self._resolve(name, slot)
        return slot.obj

    def __getitem__(self, name: str) -> T:
        """``registry[name]``: :meth:`get`, so a registry reads like the dict it replaces."""
        return self.get(name)

    def names(self) -> list[str]:
        """Every registered name, in registration order (built-ins first)."""
        self._load_plugins()
        return list(self._slots)

    def items(self) -> list[tuple[str, T]]:
        """``(name, object)`` for every name, in registration order; imports the built-ins not imported yet."""
        return [(name, self.get(name)) for name in self.names()]

    def values(self) -> list[T]:
        return [obj for _, obj in self.items()]

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._slots

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def unknown(self, name: object, *, where: str = "", hint: str | None = None, suggest: bool = True) -> ConfigError:
        """The one unknown-name error: the names registered, a close match if any, and the hint.

        ``where`` says where the name was read (``" in model spec 'x:y'"``); ``hint`` replaces the registry's;
        ``suggest=False`` leaves out the close match where the hint names the real fix.
        """
        names = list(self._slots)
        close = difflib.get_close_matches(name, names, n=1) if suggest and isinstance(name, str) else []
        suggestion = f"; did you mean '{close[0]}'?" if close else ""
        listed = ", ".join(sorted(names)) or "none"
        hint = self.hint if hint is None else hint
        return ConfigError(f"unknown {self.kind} {name!r}{where}{suggestion} (registered: {listed})"
                           + (f"; {hint}" if hint else ""))

    # -- tests ---------------------------------------------------------------------------------------------

    @contextmanager
    def scoped(self, *, without: Iterable[str] = ()) -> Iterator[Registry[T]]:
        """Within the block ``without`` is hidden and names may be registered; on exit the registry is as before.

        What a test needs to register a plugin (or import one a second time) without leaving it behind.
        """
        self._load_plugins()
        saved = dict(self._slots)
        try:
            for name in without:
                self._slots.pop(name, None)
            yield self
        finally:
            self._slots = saved

    # -- internals -----------------------------------------------------------------------------------------

    def _resolve(self, name: str, builtin: _Builtin) -> T:
        """Import the built-in ``name`` (once: it is then an ordinary entry, in its place)."""
        module_name, _, attr = builtin.ref.partition(":")
        module = importlib.import_module(module_name)
        slot = self._slots.get(name)
        if isinstance(slot, _Entry):  # importing the module registered it
            return slot.obj
        obj = getattr(module, attr)
        self._slots[name] = _Entry(obj, obj)
        return obj

    def _load_plugins(self) -> None:
        """Import the plugin modules before the first read (once per registry), so their names are here.

        A plugin that reads a registry while it is being imported sees what is registered so far; a plugin
        that cannot be imported is the plugin loader's error, and the next read tries again.
        """
        if self._plugins != "unloaded":
            return
        self._plugins = "loading"
        try:
            plugins.load_plugins()
        except BaseException:
            self._plugins = "unloaded"
            raise
        self._plugins = "loaded"
