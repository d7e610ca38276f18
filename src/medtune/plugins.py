"""Third-party extensions: modules that register strategies, loaders, fine-tuning methods or scoring backends.

A plugin is an ordinary importable module whose import registers things (``register_method(...)``,
``register_backend(...)``, ...). medtune imports the modules named in the ``MEDTUNE_PLUGINS`` environment
variable (comma-separated), those of the ``medtune.plugins`` entry-point group of installed packages, and those
a grid config lists under ``plugins:``. The CLI loads them before parsing a command; every worker process of a
grid loads them before it runs a cell, so a plugin works the same from Python, the CLI and a Ray cluster.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable

from medtune.errors import ConfigError

ENV_VAR = "MEDTUNE_PLUGINS"
ENTRY_POINT_GROUP = "medtune.plugins"
_loaded: set[str] = set()


def _entry_point_modules() -> list[str]:
    from importlib.metadata import entry_points

    return [ep.value.split(":", 1)[0] for ep in entry_points(group=ENTRY_POINT_GROUP)]


def load_plugins(extra: Iterable[str] = ()) -> list[str]:
    """Import every plugin module once (environment, entry points, then ``extra``); returns those imported now."""
    names = [n.strip() for n in os.environ.get(ENV_VAR, "").split(",") if n.strip()]
    names += _entry_point_modules()
    names += [n for n in extra if n]
    new = []
    for name in dict.fromkeys(names):
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"plugin module '{name}' cannot be imported ({exc}); check {ENV_VAR} or `plugins:`"
                              ) from None
        _loaded.add(name)
        new.append(name)
    return new


def loaded_plugins() -> list[str]:
    """The plugin modules imported so far, sorted (what the run store puts in its keys)."""
    return sorted(_loaded)
