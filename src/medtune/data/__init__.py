"""Loaders that read each medical QA source in its published format into :mod:`medtune.schema` items.

Loaders register themselves by name; :func:`load` dispatches to them. Importing this package imports
every loader module so the registry is complete. The data stage (:class:`DataSettings`, :func:`run_data`)
is what the CLI and the experiment grid call: load, then keep a split, a portion and a number of items.
"""

from medtune.data.registry import LoadResult, OnError, available_loaders, get_loader, load, register_loader

# Import loader modules for their registration side effect.
from medtune.data import (  # noqa: F401  isort: skip
    instruct,
    lek,
    medmcqa,
    medqa,
    medquad,
    mmlu,
    preference,
    pubmedqa,
    synthetic,
    synthetic_qa,
    tabular,
    usmle,
)
from medtune.data.stage import DataSettings, LoadedData, id_fraction, load_data, run_data  # isort: skip

__all__ = [
    "DataSettings",
    "LoadResult",
    "LoadedData",
    "OnError",
    "available_loaders",
    "get_loader",
    "id_fraction",
    "load",
    "load_data",
    "register_loader",
    "run_data",
]
