"""A scoring backend defined outside medtune that loads local weights, as a plugin for an in-house model would.

Importing the module registers ``local`` (``MEDTUNE_PLUGINS=medtune_test_local_backend``); a spec ``local:FOLDER``
names a saved model folder (``config.json`` and weights, as ``save_pretrained`` writes them). It refuses anything
else before loading (no hub name, no download), then scores with the transformers backend on those weights, so
its scores are the ``hf`` backend's on the same folder: what a test compares. ``LOADED`` records each folder
loaded in this process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtune.errors import ConfigError
from medtune.scoring.backends import BACKENDS, register_backend

LOADED: list[str] = []


def make_local_backend(target: str, **options: Any) -> Any:
    """The factory: ``target`` must be a folder holding ``config.json``; the rest is the ``hf`` factory's."""
    folder = Path(target).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(f"local backend: {target!r} is not a saved model folder (no config.json)")
    backend = BACKENDS.get("hf")(str(folder), **options)
    backend.name, backend.spec = "local", f"local:{folder}"
    LOADED.append(str(folder))
    return backend


make_local_backend.precision = "torch"  # type: ignore[attr-defined]  # dtype auto resolved as torch loads it
register_backend("local", make_local_backend)
