"""Adaptive strategies as grid arms: their config entry, and the adaptive settings of a cell derived from it.

An entry ``{name: ability, adaptive: {every: 4, anchors: {n: 16}, options: {delta: 0.5}}}`` trains with the items
chosen during training by :mod:`medtune.adaptive` instead of a fixed order. The ``adaptive:`` section is made of
the fields of the adaptive stage's schema (:class:`medtune.adaptive.AdaptiveSettings`: ``options``, ``every``,
``anchor_mode``, ``score_batch``, ``rescore``) and is validated by it; what the schema takes as files or ids is
derived per cell: ``strategy`` is the entry's ``name``, ``anchors`` a sample the entry sizes
(:class:`GridAnchorSettings`), ``difficulty`` the cell's difficulty source. Its order stage writes the random
shuffle of the cell's seed (the candidate pool and the number of steps, the very artifact the random arm trains
on), so the adaptive arm and random shuffle take the same steps from the same pool and initialisation.

What ``ability`` needs, derived from the grid's own stages:

- item difficulty ``b``: the IRT ``irt_b`` column of the difficulty stage when the cell's source is ``irt`` (a
  source whose ``irt_scale`` says its order column is an IRT b); for any other source, the source's difficulty as
  a z-score over the training items (human levels easy/medium/hard as 0/1/2 first). Only ``irt`` puts b on the
  ability scale; otherwise θ and ``delta`` are in standard deviations of that difficulty.
- anchors: a fixed sample (``anchors.n`` items, ``anchors.seed``, the same for every cell) of the training items.
  They are never items a cell is tested on: the grid's difficulty stage estimates difficulty for training items
  only, and test items must not steer training.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from copy import copy
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from medtune.adaptive.stage import AdaptiveSettings
from medtune.difficulty_sources import NO_SOURCE, get_difficulty_source
from medtune.schema import DIFFICULTY_LEVELS, Item

B_COLUMN = "b"
B_FILE = "ability_b.parquet"


class GridAnchorSettings(BaseModel):
    """The ability estimate's anchor items: a fixed sample of the training items."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(16, ge=1, description="anchor items (all training items when fewer)")
    seed: int = Field(0, description="seed of the sample: fixed, so every cell and seed uses the same anchors")


GRID_FIELDS = ("options", "every", "anchor_mode", "score_batch", "rescore")  # the others are derived per cell


class _AdaptiveSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def settings(self, strategy: str, **derived: Any) -> AdaptiveSettings:
        """The stage's settings: this section's, for ``strategy``, plus what a cell derives (``derived``)."""
        from medtune.settings import validate_settings

        values = {"strategy": strategy, **self.model_dump(include=set(GRID_FIELDS)), **derived}
        return validate_settings(AdaptiveSettings, values, "adaptive")


GridAdaptiveSettings = create_model(
    "GridAdaptiveSettings", __base__=_AdaptiveSection,
    __doc__="A grid strategy's ``adaptive`` section: the fields of medtune.adaptive.AdaptiveSettings the grid sets "
            "(GRID_FIELDS, their defaults and ranges the schema's), and the size of the anchor sample.",
    **{name: (info.annotation, copy(info)) for name, info in AdaptiveSettings.model_fields.items()
       if name in GRID_FIELDS},
    anchors=(GridAnchorSettings, Field(default_factory=GridAnchorSettings, description="anchors (strategies estimating "
                                 "ability)")),
)


def validate_adaptive(name: str, entry: Any) -> None:
    """Raise ``ValueError`` (reported at the entry's place) for an unknown strategy or option, or a value the
    stage's schema refuses (``adaptive.rescore: ...``)."""
    from medtune.adaptive.strategies import ADAPTIVE, get_adaptive
    from medtune.errors import ConfigError

    if name not in ADAPTIVE:
        raise ValueError(str(ADAPTIVE.unknown(name)))
    try:
        entry.settings(name)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    try:
        get_adaptive(name, entry.options)
    except ConfigError as exc:
        raise ValueError(f"adaptive.options: {exc}") from None


def strategy_needs(name: str) -> tuple[str, ...]:
    """What adaptive strategy ``name`` scores (``b``: it reads item difficulty, so it gets a cell per source)."""
    from medtune.adaptive.strategies import get_adaptive

    return tuple(get_adaptive(name).needs)


def anchor_ids(items: Sequence[Item], anchors: GridAnchorSettings) -> list[str]:
    """The fixed anchor sample: ``anchors.n`` training ids drawn with ``anchors.seed`` from the sorted ids."""
    ids = sorted(it.id for it in items)
    return sorted(random.Random(anchors.seed).sample(ids, min(anchors.n, len(ids))))


def _z_scores(values: dict[str, float]) -> dict[str, float]:
    mean = sum(values.values()) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values.values()) / len(values)) or 1.0
    return {i: (v - mean) / sd for i, v in values.items()}


def ability_difficulty(source: str, table: Path | None, items: Sequence[Item]) -> dict[str, float]:
    """Each training item's b for ``ability`` (see the module docstring): irt_b, else a z-scored difficulty."""
    from medtune.errors import InputError
    from medtune.orders.inputs import read_difficulty_table

    spec = get_difficulty_source(source) if source != NO_SOURCE else None
    if spec is not None and spec.irt_scale:  # irt: its order column (irt_b) is b on the ability scale already
        if table is None:
            raise InputError(f"the {source} difficulty source wrote no difficulty table", field=spec.order_column)
        rows = read_difficulty_table(table, spec.order_column).rows
        return {it.id: rows[it.id]["difficulty"] for it in items if it.id in rows}
    raw: dict[str, float] = {}
    if table is not None:
        rows = read_difficulty_table(table).rows
        raw = {it.id: rows[it.id]["difficulty"] for it in items if rows.get(it.id, {}).get("difficulty") is not None}
    else:
        for it in items:
            h = it.human_difficulty
            if h is not None:
                raw[it.id] = float(DIFFICULTY_LEVELS.index(h)) if isinstance(h, str) else float(h)
    if not raw:
        raise InputError(f"difficulty source '{source}' gives no training item a difficulty (ability needs one)",
                         field="difficulty")
    return _z_scores(raw)


def write_b_table(b: dict[str, float], path: Path) -> Path:
    """The derived b of every training item as a difficulty table (``id``, ``b``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medtune.io import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(pa.table({"id": list(b), B_COLUMN: [float(v) for v in b.values()]}), tmp)
    return path


def cell_adaptive_settings(name: str, entry: Any, source: str, items_path: Path, table: Path | None,
                           stage_dir: Path) -> AdaptiveSettings:
    """The adaptive settings of one cell: ``entry``'s for strategy ``name``, plus what it needs of the grid.

    For a strategy that reads item difficulty or estimates ability, the b of every training item (from the cell's
    difficulty ``source`` and its ``table``, see the module docstring) is written to ``stage_dir/ability_b.parquet``
    and named relative to the run folder inside ``stage_dir`` (``../ability_b.parquet``: the training stage reads
    it with ``paths_from`` the run folder, and the stored stage folder can move); ability's anchors are the fixed
    sample of the training items.
    """
    from medtune.schema import read_items

    needs = strategy_needs(name)
    derived: dict[str, Any] = {}
    if "b" in needs or "theta" in needs:
        items = list(read_items(items_path))
        b = ability_difficulty(source, table, items)
        write_b_table(b, stage_dir / B_FILE)
        derived.update(difficulty=f"../{B_FILE}", difficulty_column=B_COLUMN)
        if "theta" in needs:
            derived["anchors"] = [",".join(anchor_ids([it for it in items if it.id in b], entry.anchors))]
    return entry.settings(name, **derived)
