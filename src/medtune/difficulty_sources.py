"""Where difficulty comes from: one registered object per source, on the one :class:`~medtune.registry.Registry`.

A source is what the difficulty stage computes (``difficulty.parquet``) and what the order stage reads back; both
ask the source's object rather than compare its name, so a plugin's source (``register_difficulty_source``) is
accepted wherever a source is named: the difficulty stage's ``source``, the order stage's ``difficulty_source`` and
a grid's ``difficulty.sources``, from the CLI, a grid or Python. What a source declares:

- ``compute``: the artifact for the stage's settings and items (the :class:`DifficultyResult` and what the stage's
  summary adds);
- ``check`` (the settings it needs) and ``artifact_settings`` (the settings its artifact depends on: a cache key);
- for the order stage: whether it reads the difficulty file (``from_file``; ``human`` reads the items' own values),
  which column it orders by (``order_column``: ``irt`` orders by ``irt_b``) and how that column is bucketed by
  default (``order_bucketing``: ``terciles`` for ``irt``'s logit scale, else the file's own buckets);
- for a grid: the settings naming files it reads (``input_files``), whether it scores the ensemble's models
  (``scores_models``), whether these settings need the stage at all (``needs_stage``: ``human`` as the items carry
  it does not) and what the order stage reads the stage's artifact as then (``staged_as``); for the adaptive
  ``ability`` strategy, whether its order column is an IRT b (``irt_scale``).

This module imports no model code: listing and checking a source name costs nothing. A built-in names the stage's
function that computes it as a ``"module:function"`` reference (as the registry names lazy built-ins), imported when
it computes, so the order stage, which reads a source's declarations, never imports the difficulty stage.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator

from medtune.registry import Registry

if TYPE_CHECKING:
    from medtune.difficulty import DifficultyResult
    from medtune.schema import Item

# The difficulty stage's settings (medtune.difficulty_stage.DifficultySettings). The stage imports this module for
# its source type, so the settings are not imported here, not even for type checkers.
DifficultySettings = Any

NO_SOURCE = "none"  # the order stage's "no difficulty at all" (difficulty-free strategies only)


@dataclass(frozen=True)
class SourceInputs:
    """What a source may use besides its settings: the artifact's path (per-model scores go beside it), the items
    file, grid model names → specs, the training settings of fine-tunes, and where progress goes."""

    artifact: Path
    items_path: Path | None = None
    models: Mapping[str, str] | None = None
    training: Any = None  # a TrainSettings or a dict of its fields
    progress: bool = False
    log: Callable[[str], None] | None = None


class DifficultySourceSpec:
    """A difficulty source. Subclass it, set ``name`` and ``description``, implement :meth:`compute`, and register
    an instance; the defaults describe a source that reads multiple-choice items and whose artifact's
    ``difficulty`` and ``bucket`` columns the order stage reads."""

    name: str = ""
    description: str = ""
    reads_items: bool = True  # False: the source needs no items file (response files carry their own ids)
    multiple_choice: bool = True  # the items must be multiple-choice
    from_file: bool = True  # the order stage reads this source from a difficulty file
    order_column: str = "difficulty"  # the difficulty file's column the order stage orders by
    order_bucketing: str | None = None  # the order stage's default re-bucketing; None keeps the file's buckets
    input_files: tuple[str, ...] = ()  # settings naming a file the source reads (a grid checks they exist)
    scores_models: bool = False  # scores the `ensemble` models (a grid checks they can be found)
    # The order column is an IRT difficulty b (a logit scale): the adaptive ``ability`` strategy uses it as it is
    # rather than z-scoring it, so it asks the source instead of comparing names.
    irt_scale: bool = False
    # The source the order stage reads this one's artifact as when the order stage does not read it from a file
    # (``from_file`` False) but its settings need the stage (:meth:`needs_stage`): a grid passes it to the order
    # stage with the artifact.
    staged_as: str | None = None

    def needs_stage(self, settings: DifficultySettings) -> bool:
        """Whether a grid runs the difficulty stage for these settings. A source whose values the order stage reads
        from the items themselves (``human`` as the items carry it) needs the stage only for what the stage alone
        applies; a grid asks here rather than compare the source's name."""
        return True

    def check(self, settings: DifficultySettings) -> None:
        """Raise ``ValueError`` naming a setting the source needs and lacks (pydantic reports it on the key)."""

    def artifact_settings(self, settings: DifficultySettings, common: dict[str, Any]) -> dict[str, Any]:
        """The settings the artifact depends on (``common``: bucketing and split, which every source's has)."""
        return {"source": self.name, **common}

    computes: str = ""  # a built-in's "module:function", called as compute is

    def compute(self, settings: DifficultySettings, items: list[Item] | None, inputs: SourceInputs
                ) -> tuple[DifficultyResult, dict[str, Any]]:
        """The artifact for ``items`` (None when ``reads_items`` is False), and what the stage's summary adds."""
        if not self.computes:
            raise NotImplementedError(f"difficulty source '{self.name}' defines no compute")
        module, _, function = self.computes.partition(":")
        return getattr(importlib.import_module(module), function)(settings, items, inputs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _Human(DifficultySourceSpec):
    name = "human"
    description = "the items' own human_difficulty (or a table of it), in either direction"
    multiple_choice = False
    from_file = False
    input_files = ("human_file",)
    staged_as = "file"  # the stage's artifact is a difficulty file like an imported table's

    def needs_stage(self, s: DifficultySettings) -> bool:
        return bool(s.human_needs_stage())

    def artifact_settings(self, s: DifficultySettings, common: dict[str, Any]) -> dict[str, Any]:
        return {"source": "human", "higher_is": s.higher_is, "human_file": s.human_file, "human_key": s.human_key,
                "human_key_column": s.human_key_column, "human_value_column": s.human_value_column, **common}

    computes = "medtune.difficulty_stage:human_source"


class _Ensemble(DifficultySourceSpec):
    """``llm`` and ``irt``: one artifact from the ensemble's scores gives both columns; the order stage picks one."""

    scores_models = True

    def __init__(self, name: str, description: str, order_column: str, order_bucketing: str | None,
                 irt_scale: bool = False) -> None:
        self.name, self.description = name, description
        self.order_column, self.order_bucketing, self.irt_scale = order_column, order_bucketing, irt_scale

    def check(self, s: DifficultySettings) -> None:
        if not s.ensemble and s.crossfit is None:
            raise ValueError(f"difficulty source '{self.name}' needs `ensemble` (model specs) or `crossfit`")

    def artifact_settings(self, s: DifficultySettings, common: dict[str, Any]) -> dict[str, Any]:
        return {"source": "ensemble", "ensemble": list(s.ensemble), "mode": s.mode,
                "template": s.resolved_template(), "irt": s.irt, "irt_data": s.irt_data,
                "crossfit": s.crossfit.to_dict() if s.crossfit else None, **common}

    computes = "medtune.difficulty_stage:ensemble_source"


class _File(DifficultySourceSpec):
    name = "file"
    description = "an external difficulty table joined to the items"
    multiple_choice = False
    input_files = ("file",)

    def check(self, s: DifficultySettings) -> None:
        if not s.file:
            raise ValueError("difficulty source 'file' needs `file`")

    def artifact_settings(self, s: DifficultySettings, common: dict[str, Any]) -> dict[str, Any]:
        return {"source": "file", "file": s.file, "key": s.key, "key_column": s.key_column,
                "value_column": s.value_column, "one_minus": s.one_minus, "on_unmatched": s.on_unmatched, **common}

    computes = "medtune.difficulty_stage:file_source"


class _Responses(DifficultySourceSpec):
    name = "responses"
    description = "the paper's response files (per-question option log-likelihoods, one file per model)"
    reads_items = False

    def check(self, s: DifficultySettings) -> None:
        if not s.responses:
            raise ValueError("difficulty source 'responses' needs `responses` (response JSON files)")

    def artifact_settings(self, s: DifficultySettings, common: dict[str, Any]) -> dict[str, Any]:
        return {"source": "responses", "responses": list(s.responses), "irt": s.irt, "irt_data": s.irt_data,
                **common}

    computes = "medtune.difficulty_stage:responses_source"


SOURCES: Registry[DifficultySourceSpec] = Registry(
    "difficulty source", hint="a plugin registers more (register_difficulty_source)")
for _source in (_Human(),
                _Ensemble("llm", "1 − mean expected accuracy of the ensemble's models (and crossfit fine-tunes)",
                          "difficulty", None),
                _Ensemble("irt", "the IRT difficulty b fitted to the ensemble's scores (bucketed by terciles)",
                          "irt_b", "terciles", irt_scale=True),
                _File(), _Responses()):
    SOURCES.register(_source.name, _source)


def register_difficulty_source(source: DifficultySourceSpec, *, replace: bool = False) -> DifficultySourceSpec:
    """Make ``source`` available under ``source.name`` to the difficulty and order stages, the CLI and grids."""
    if source.name == NO_SOURCE:
        raise ValueError(f"'{NO_SOURCE}' is the order stage's 'no difficulty'; give the source another name")
    return SOURCES.register(source.name, source, replace=replace)


def get_difficulty_source(name: str) -> DifficultySourceSpec:
    """The source called ``name``; an unknown name is the registry's error (the known ones, a close match)."""
    return SOURCES.get(name)


def _known(name: str) -> str:
    """``name`` if a source is registered under it; pydantic reports the registry's error on the key."""
    if name not in SOURCES:
        raise ValueError(str(SOURCES.unknown(name)))
    return name


def _known_or_none(name: str) -> str:
    return name if name == NO_SOURCE else _known(name)


# The one type of a difficulty source name: a registered source (a plugin's too), checked when read.
DifficultySource = Annotated[str, AfterValidator(_known)]
# The order stage's: a source, or "none" for no difficulty.
OrderDifficultySource = Annotated[str, AfterValidator(_known_or_none)]
