"""The data stage: one data set's settings, and the one function that turns them into ``items.parquet``.

``medtune data load`` and the experiment grid both go through :func:`load_data` / :func:`run_data`, so a
split, a portion or a limit means the same thing on the command line and in a grid's ``datasets:`` entry:
load with the registered loader, keep the split, keep the portion, keep the first ``limit`` items.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from medtune.data.mix import MIX_METADATA_KEY, MixPartSettings, MixResult, MixSettings, mix_files
from medtune.data.parsing import SPLIT_WORDS
from medtune.data.registry import get_loader, load
from medtune.errors import ConfigError, InputError
from medtune.factsheet import SUFFIX as FACTS_SUFFIX
from medtune.factsheet import FactSheet, factsheet_path, write_factsheet_file
from medtune.schema import Item
from medtune.settings import Settings
from medtune.textbook import SUFFIX as TEXTBOOK_SUFFIX
from medtune.textbook import textbook_path, write_textbook_file

ITEMS_FILE = "items.parquet"


class DataSettings(Settings):
    """One data set: a registered loader, its input, and the split/portion/size to keep."""

    name: str | None = Field(None, description="label in results and ids; defaults to the source name")
    source: str = Field(description="a registered loader (`medtune data sources` lists them)")
    path: str | None = Field(None, validate_default=True,
                             description="file or folder the loader reads (none for synthetic)")
    split: str | None = Field(None, description="keep only items of this split after loading")
    portion: tuple[float, float] | None = Field(
        None,
        description="keep items whose seeded id hash falls in [a, b): disjoint train/test parts of one file "
        "(e.g. [0, 0.8] and [0.8, 1] with the same portion_seed)",
    )
    portion_seed: int = Field(0, description="seed of the id hash that portion cuts")
    folds: int | None = Field(None, ge=2, description="k-fold cross-validation: cut the items (after split and "
                              "portion) into this many folds of equal size (±1), by the seeded id hash")
    fold: int | None = Field(None, ge=0, description="the fold this data set is about (with `folds`)")
    fold_part: Literal["train", "test"] = Field(
        "train", description="with `fold`: train = every fold but this one, test = this fold only")
    limit: int | None = Field(None, ge=1, description="keep the first N items (after split and portion)")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the loader")
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="raise: stop at the first bad record; skip: skip bad records and report each")
    mix: list[MixPartSettings] | None = Field(
        None, description="a mixture instead of a loader: items files each with a `share` or a `count` "
        "(medtune.data.mix; the source is then `mix`)")
    seed: int | None = Field(None, ge=0, description="with `mix`: the seed of the draw (default 0)")
    replace: bool | None = Field(None, description="with `mix`: draw with replacement")
    total: int | None = Field(None, ge=1, description="with `mix`: items in the mix (default: as many as the "
                              "share parts allow without replacement, plus the counts)")

    @model_validator(mode="before")
    @classmethod
    def _mix_is_its_source(cls, data: Any) -> Any:
        # A data set given by `mix:` needs no `source:`; it is the 'mix' source.
        if isinstance(data, dict) and data.get("mix") is not None and "source" not in data:
            return {**data, "source": "mix"}
        return data

    @model_validator(mode="after")
    def _mix_settings(self) -> DataSettings:
        if self.mix is None:
            if self.source == "mix":
                raise ValueError("mix: the source 'mix' needs a `mix:` list of items files with shares or counts")
            given = [k for k in ("seed", "replace", "total") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"{given[0]}: only a data set with `mix:` takes it")
            return self
        if self.source != "mix":
            raise ValueError(f"mix: a data set is a mix or reads source '{self.source}', not both")
        if self.path is not None or self.options:
            raise ValueError(f"{'path' if self.path is not None else 'options'}: a mix reads the items files of "
                             "its `mix:` list")
        try:
            self.mix_settings()  # the rules of the whole mix (labels, shares)
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"].removeprefix("Value error, ").removeprefix("parts: ")
            raise ValueError(f"mix: {msg}") from None
        return self

    @field_validator("portion")
    @classmethod
    def _portion_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not (0.0 <= v[0] < v[1] <= 1.0):
            raise ValueError("portion must be [a, b) with 0 <= a < b <= 1")
        return v

    @model_validator(mode="after")
    def _fold_in_range(self) -> DataSettings:
        if self.fold is not None and (self.folds is None or self.fold >= self.folds):
            raise ValueError(f"fold {self.fold} needs `folds` greater than it (folds: {self.folds})")
        return self

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        try:
            get_loader(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("path")
    @classmethod
    def _path_when_needed(cls, v: str | None, info: ValidationInfo) -> str | None:
        source = info.data.get("source")
        if source is not None and v is None and get_loader(source).needs_path:
            raise ValueError(f"source '{source}' reads a file or folder; set path")
        return v

    @field_validator("options")
    @classmethod
    def _loader_takes_options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # Checked here, not when the file is read, so that a misspelt option fails before any work starts.
        source = info.data.get("source")
        if source is None:  # the source itself is invalid and reported
            return v
        if "on_error" in v:
            raise ValueError("on_error is a setting of the data set, not an option of the loader")
        try:
            get_loader(source).check_options(v)
        except InputError as exc:
            raise ValueError(exc.reason) from None
        return v

    def to_dict(self) -> dict[str, Any]:
        """The settings as stored and hashed; without cross-validation the fold fields are left out, and without a
        mix the mix fields, so a data set's key is the one it had before folds and mixes existed."""
        d = super().to_dict()
        if self.folds is None:
            for key in ("folds", "fold", "fold_part"):
                d.pop(key, None)
        if self.mix is None:
            for key in ("mix", "seed", "replace", "total"):
                d.pop(key, None)
        return d

    def mix_settings(self) -> MixSettings:
        """The mixture this data set draws (its `mix:` parts, seed, replacement, total and split)."""
        if self.mix is None:
            raise ConfigError(f"data set '{self.label}' is not a mix")
        return MixSettings(parts=self.mix, seed=self.seed or 0, replace=bool(self.replace), total=self.total,
                           split=self.split)

    @property
    def label(self) -> str:
        return self.name or (f"{self.source}-{self.split}" if self.split else self.source)


def id_fraction(item_id: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) per (seed, id): portions of one file never overlap."""
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_folds(items: Sequence[Item], folds: int, seed: int) -> dict[str, int]:
    """Each item's fold: items ranked by their seeded id hash, cut into ``folds`` parts of equal size (±1).

    Ranking (not cutting the hash at k/folds) makes the folds as equal as the item count allows, as k-fold
    cross-validation does; the hash makes the assignment independent of the file's order.
    """
    ranked = sorted(items, key=lambda it: (id_fraction(it.id, seed), it.id))
    return {it.id: rank * folds // len(ranked) for rank, it in enumerate(ranked)}


def select_items(items: list[Item], settings: DataSettings) -> list[Item]:
    """The split, the portion, the fold, then the first ``limit`` items (the order of the loader is kept)."""
    kept = [it for it in items if settings.split is None or it.split == settings.split]
    if settings.portion is not None:
        lo, hi = settings.portion
        kept = [it for it in kept if lo <= id_fraction(it.id, settings.portion_seed) < hi]
    if settings.folds is not None and settings.fold is not None and kept:
        folds = assign_folds(kept, settings.folds, settings.portion_seed)
        in_fold = settings.fold_part == "test"
        kept = [it for it in kept if (folds[it.id] == settings.fold) == in_fold]
    if settings.limit:
        kept = kept[: settings.limit]
    return kept


@dataclass
class LoadedData:
    """What :func:`load_data` produced: the kept items, the skipped records, the loader's textbook and fact
    sheet."""

    items: list[Item]
    skipped: list[InputError] = field(default_factory=list)
    textbook: list[str] | None = None
    n_loaded: int = 0
    facts: FactSheet | None = None
    # Parquet schema metadata written with the items (key → JSON text), e.g. a mixture's provenance.
    metadata: dict[str, str] = field(default_factory=dict)

    def splits(self) -> dict[str, int]:
        """Items per split, train first and test last (the order a reader expects), others by name."""
        counts: dict[str, int] = {}
        for it in self.items:
            counts[it.split] = counts.get(it.split, 0) + 1
        rank = {s: i for i, s in enumerate(SPLIT_WORDS)}
        return dict(sorted(counts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))

    def summary(self) -> dict[str, Any]:
        return {"n_items": len(self.items), "skipped": len(self.skipped), "splits": self.splits()}


def _resolve(path: str | None, root: Path | None) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() or root is None else root / p


def load_data(settings: DataSettings, *, root: Path | None = None) -> LoadedData:
    """Load and select the items of one data set; an error when nothing is left.

    ``root``: the folder a relative ``path`` is relative to (a grid config's folder); default: the working
    directory.
    """
    if settings.mix is not None:
        return _load_mix(settings, root)
    path = _resolve(settings.path, root)
    result = load(settings.source, path, on_error=settings.on_error, **settings.options)
    items = select_items(result.items, settings)
    if not items:
        kept = []
        if settings.split is not None:
            kept.append(f"split '{settings.split}'")
        if settings.portion is not None:
            kept.append(f"portion {list(settings.portion)}")
        if settings.fold is not None:
            kept.append(f"fold {settings.fold} of {settings.folds} ({settings.fold_part})")
        why = f" in {' and '.join(kept)} (of {len(result.items)} loaded)" if kept else ""
        skipped = f" ({len(result.skipped)} skipped)" if result.skipped else ""
        raise InputError(f"data set '{settings.label}' has no items{why}{skipped}", file=path)
    textbook = result.extras.get("textbook")
    return LoadedData(items, list(result.skipped), list(textbook) if textbook is not None else None,
                      len(result.items), result.extras.get("facts"))


def _load_mix(settings: DataSettings, root: Path | None) -> LoadedData:
    """A mixing data set: the mixture of its parts (:func:`medtune.data.mix.mix_files`), then the portion, fold
    and limit like any data set (its split is the one each part gave)."""
    mixed = mix_files(settings.mix_settings(), root=root)
    items = select_items(mixed.items, settings.model_copy(update={"split": None}))
    if not items:
        raise InputError(f"data set '{settings.label}' keeps no items of its mix ({len(mixed.items)} mixed)")
    return LoadedData(items, textbook=mixed.textbook, n_loaded=len(mixed.items), metadata=mix_metadata(mixed))


def mix_metadata(mixed: MixResult) -> dict[str, str]:
    """The Parquet metadata a mixed items file records: its provenance (parts, shares, counts, seed)."""
    return {MIX_METADATA_KEY: json.dumps(mixed.provenance, sort_keys=True)}


def write_data(data: LoadedData, items_path: Path) -> dict[str, Any]:
    """Write the items (and the textbook and fact sheet beside them, when there are) as one set; returns
    :meth:`LoadedData.summary`.

    The three files are one output: the items file records the hash of each side file it was written with (or that
    it has none), the side files are renamed in first and the items file last, and the old side files are kept until
    then. So a kill at any point leaves the old set or the new one, and :func:`~medtune.textbook.read_textbook` /
    :func:`~medtune.factsheet.read_factsheet` never read a side file with items it does not belong to.
    """
    import pyarrow.parquet as pq

    from medtune.io import SIDE_RECORD_KEY, atomic_file_set, sha256_file
    from medtune.schema import check_unique_ids, items_to_table

    items_path = Path(items_path)
    try:
        check_unique_ids(data.items)
        table = items_to_table(data.items)
    except InputError as exc:
        raise exc.located(file=items_path) from None
    sides = {TEXTBOOK_SUFFIX: textbook_path(items_path), FACTS_SUFFIX: factsheet_path(items_path)}
    with atomic_file_set(items_path, sides, suffix=".parquet") as (items_tmp, side_tmps):
        if data.textbook is not None:
            write_textbook_file(side_tmps[TEXTBOOK_SUFFIX], data.textbook)
        if data.facts is not None:
            write_factsheet_file(side_tmps[FACTS_SUFFIX], data.facts)
        record = {key: sha256_file(tmp) if tmp.exists() else None for key, tmp in side_tmps.items()}
        metadata = {**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in data.metadata.items()},
                    SIDE_RECORD_KEY: json.dumps(record).encode()}
        pq.write_table(table.replace_schema_metadata(metadata), items_tmp)
    return data.summary()


def run_data(settings: DataSettings, out: Path, *, root: Path | None = None) -> dict[str, Any]:
    """The data stage: ``out/items.parquet`` (+ ``out/items.textbook.txt``, ``out/items.facts.json``) from ``settings``.

    Returns ``{"n_items", "skipped", "splits": {split: n}}``.
    """
    out = Path(out)
    return write_data(load_data(settings, root=root), out / ITEMS_FILE)


__all__ = ["ITEMS_FILE", "DataSettings", "LoadedData", "id_fraction", "load_data", "mix_metadata", "run_data",
           "select_items", "write_data"]
