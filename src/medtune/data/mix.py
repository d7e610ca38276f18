"""Data mixtures: items drawn from several items files by share or by count, seeded, with exact counts.

Studies train on mixtures (MedQA with MMLU, flashcards, MedQuAD ...); a mixture here is one items file made of
parts, each an items file with a **share** (a fraction of the mix, e.g. ``0.5``) or a **count** (a number of
items, e.g. ``300``). The rule that turns them into counts, the same on the command line (``medtune data mix``)
and in a grid's ``datasets: [{name: ..., mix: [...]}]`` entry:

* A value with a decimal point (``0.5``, ``1.0``) is a share; a whole number (``300``) is a count.
* Counts are taken as they are. The share parts split what the counts leave of the total, ``total − Σcounts``,
  by the largest-remainder method (exact integer counts that add up; a tie goes to the part listed first);
  their shares must sum to 1.
* The total is ``total`` when given, else the counts plus ``min(size ÷ share)`` over the share parts rounded
  down: the most share items the parts give without replacement (the part that runs out first limits the mix;
  the same default with ``replace``). With only counts the total is their sum.
* Without replacement a part gives each of its items at most once (a count or share larger than the file is an
  error); with ``replace`` it draws with replacement, and an item drawn again gets the id ``ID#2``, ``ID#3`` ...
* Each part's draw is seeded by the mix seed and the part's label, so the same seed gives the same file, and
  adding a part leaves the others' draws as they were.

From a file holding several splits a part takes its ``train`` split (or ``split`` when given): a mixture is
training data, and test sets stay as configured. Every item keeps its own ``source`` field; ``meta.source`` is
the part's label (the file stem, or the name given as ``name=path:share``), which the order strategies can
block or interleave by (``by: source``) and the evaluation breaks accuracy down by. An id found in more than one
part is prefixed with the part's label (``medqa:q12``); an item whose id changed keeps the old one in
``meta.source_id``. MCQ and free-text items are never mixed (an items file holds one kind).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from medtune.data.registry import LoadResult, register_loader
from medtune.errors import ConfigError, InputError
from medtune.schema import Item, read_items
from medtune.settings import Settings

MIX_METADATA_KEY = "medtune.mix"  # Parquet schema metadata of a mixed items file: its provenance (JSON)
TRAIN_SPLIT = "train"
SHARE_TOLERANCE = 1e-6  # shares given as decimals may miss 1 by rounding
_LABEL = re.compile(r"^[A-Za-z0-9][\w.\-]*$")


class MixPartSettings(Settings):
    """One part of a mixture: an items file and its share of the mix or its count of items."""

    items: str = Field(description="an items Parquet file (`medtune data load` writes one)")
    share: float | None = Field(None, gt=0, le=1, description="fraction of the mix (the share parts' shares "
                                "sum to 1)")
    count: int | None = Field(None, ge=0, description="number of items drawn from this file")
    name: str | None = Field(None, description="label of the part in meta.source (default: the file's stem)")

    @model_validator(mode="after")
    def _share_or_count(self) -> MixPartSettings:
        if (self.share is None) == (self.count is None):
            raise ValueError("give a part either `share` (a fraction) or `count` (a number of items)")
        if self.name is not None and not _LABEL.match(self.name):
            raise ValueError(f"name must be letters, digits, '.', '_' or '-', got {self.name!r}")
        return self

    @property
    def label(self) -> str:
        return self.name or Path(self.items).stem


class MixSettings(Settings):
    """A whole mixture: its parts, the seed of the draw, with or without replacement, the total, the split."""

    parts: list[MixPartSettings] = Field(min_length=1, description="the items files mixed, each with a share "
                                         "or a count")
    seed: int = Field(0, ge=0, description="seed of the draw")
    replace: bool = Field(False, description="draw with replacement (an item may appear several times)")
    total: int | None = Field(None, ge=1, description="items in the mix (default: as many as the share parts "
                              "allow without replacement, plus the counts)")
    split: str | None = Field(None, description="the split taken from each file (default: train when a file "
                              "holds several splits, else all of it)")

    @model_validator(mode="after")
    def _distinct_labels(self) -> MixSettings:
        labels = [p.label for p in self.parts]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"parts: two parts are labelled {dup[0]!r}; give them distinct names "
                             "(name=PATH:SHARE on the command line, `name:` in a grid)")
        shares = [Fraction(str(p.share)) for p in self.parts if p.share is not None]
        if shares and abs(float(sum(shares)) - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"parts: the shares sum to {float(sum(shares)):g}; they must sum to 1 (they split "
                             "what the counts leave of the total)")
        return self


def parse_part(text: str) -> MixPartSettings:
    """``PATH:SHARE``, ``PATH:COUNT`` or ``NAME=PATH:...`` (the command line's form) as a part; a
    :class:`ConfigError` quoting the argument otherwise."""
    where = f"argument {text!r}"
    name: str | None = None
    head, eq, rest = text.partition("=")
    if eq and _LABEL.match(head) and "/" not in head:
        name, text = head, rest
    path, colon, value = text.rpartition(":")
    if not colon or not path:
        raise ConfigError(f"{where}: expected PATH:SHARE (e.g. a.parquet:0.5) or PATH:COUNT (a.parquet:300)")
    value = value.strip()
    if re.fullmatch(r"\d+", value):
        values: dict[str, Any] = {"count": int(value)}
    else:
        try:
            share = float(value)
        except ValueError:
            raise ConfigError(f"{where}: the share {value!r} is not a number (a share is a fraction such as 0.5, "
                              "a count a whole number such as 300)") from None
        if not 0 < share <= 1:
            raise ConfigError(f"{where}: a share must be in (0, 1], got {value}")
        values = {"share": share}
    if name is not None and not _LABEL.match(name):
        raise ConfigError(f"{where}: the name must be letters, digits, '.', '_' or '-'")
    return MixPartSettings(items=path, name=name, **values)


def largest_remainder(total: int, weights: Sequence[Fraction]) -> list[int]:
    """``total`` split in proportion to ``weights`` into whole numbers that sum to ``total``: every part gets the
    floor of its quota, and the rest go one each to the largest remainders (ties: the part listed first)."""
    s = sum(weights)
    if total == 0 or not weights:
        return [0] * len(weights)
    quotas = [Fraction(total) * w / s for w in weights]
    counts = [int(q) for q in quotas]  # floor: quotas are non-negative
    rest = total - sum(counts)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[:rest]:
        counts[i] += 1
    return counts


def share_capacity(shares: Sequence[Fraction], sizes: Sequence[int]) -> int:
    """The default number of share items: the largest T with T·share ≤ size for every share part, i.e. the
    smallest of size ÷ share (the part that runs out first limits the mix). Its largest-remainder counts never
    exceed a part's size, since each count is at most its quota rounded up."""
    s = sum(shares)
    return min(int(Fraction(n) * s / w) for w, n in zip(shares, sizes, strict=True))


def mix_counts(parts: Sequence[MixPartSettings], sizes: Sequence[int], *, total: int | None = None,
               replace: bool = False) -> list[int]:
    """The exact number of items each part gives (the rule of the module docstring); errors name the part."""
    fixed = sum(p.count or 0 for p in parts)
    share_idx = [i for i, p in enumerate(parts) if p.share is not None]
    shares = [Fraction(str(parts[i].share)) for i in share_idx]
    if not share_idx and total is not None and total != fixed:
        raise ConfigError(f"total: the counts make {fixed} items, not {total}; give shares for the rest or leave "
                          "the total out")
    if total is not None and total < fixed:
        raise ConfigError(f"total: {total} is fewer than the counts' {fixed} items")
    counts = [p.count or 0 for p in parts]
    if share_idx:
        rest = (total - fixed) if total is not None else share_capacity(shares, [sizes[i] for i in share_idx])
        for i, c in zip(share_idx, largest_remainder(rest, shares), strict=True):
            counts[i] = c
    if not replace:
        for p, c, n in zip(parts, counts, sizes, strict=True):
            if c > n:
                given = f"count {p.count}" if p.count is not None else f"share {p.share:g}"
                raise ConfigError(f"part '{p.label}' ({p.items}): its {given} needs {c} items, the file gives "
                                  f"{n}; draw with replacement or ask for fewer")
    return counts


def part_pool(items: Sequence[Item], split: str | None, file: str | Path) -> list[Item]:
    """The items a part draws from: ``split`` when given, else the train split of a file holding several."""
    splits = Counter(it.split for it in items)
    if split is None:
        if len(splits) <= 1:
            return list(items)
        split = TRAIN_SPLIT
    pool = [it for it in items if it.split == split]
    if not pool:
        held = ", ".join(f"{s}={n}" for s, n in sorted(splits.items()))
        raise InputError(f"no items in split '{split}' (the file holds {held}); a mix takes the train split of a "
                         "file with several (or the split given)", file=file, field="split")
    return pool


def draw(n: int, count: int, *, seed: int, label: str, replace: bool) -> list[int]:
    """Positions drawn from a part of ``n`` items, in the file's order; seeded by (seed, label) alone."""
    rng = random.Random(f"medtune.mix/{seed}/{label}")
    if replace:
        return sorted(rng.choices(range(n), k=count)) if n else []
    return sorted(rng.sample(range(n), count))


@dataclass
class MixResult:
    """A mixture: its items (the parts in the order given, each in its file's order) and its provenance."""

    items: list[Item]
    provenance: dict[str, Any]
    textbook: list[str] | None = None
    counts: dict[str, int] = field(default_factory=dict)


def _relabelled(picked: list[tuple[str, Item]]) -> list[Item]:
    """Copies with unique ids (repeats ``#k``, ids in several parts prefixed by the label) and meta.source."""
    seen: Counter[tuple[str, str]] = Counter()
    local: list[str] = []
    for label, it in picked:
        seen[(label, it.id)] += 1
        k = seen[(label, it.id)]
        local.append(it.id if k == 1 else f"{it.id}#{k}")
    owners: dict[str, set[str]] = {}
    for (label, _), new_id in zip(picked, local, strict=True):
        owners.setdefault(new_id, set()).add(label)
    out: list[Item] = []
    for (label, it), new_id in zip(picked, local, strict=True):
        final = f"{label}:{new_id}" if len(owners[new_id]) > 1 else new_id
        meta = {**it.meta, "source": label}
        if final != it.id:
            meta["source_id"] = it.id
        out.append(it.model_copy(update={"id": final, "meta": meta}))
    return out


def mix_items(parts: Sequence[MixPartSettings], pools: Sequence[Sequence[Item]], *, seed: int = 0,
              replace: bool = False, total: int | None = None) -> tuple[list[Item], list[int]]:
    """The mixture of ``pools`` (one list of items per part) and each part's count."""
    kinds = {p.label: {it.kind for it in pool} for p, pool in zip(parts, pools, strict=True)}
    every = set().union(*kinds.values())
    if len(every) > 1:
        mcq = [k for k, v in kinds.items() if "mcq" in v]
        qa = [k for k, v in kinds.items() if "qa" in v]
        raise ConfigError(f"cannot mix multiple-choice items ({', '.join(mcq)}) with free-text items "
                          f"({', '.join(qa)}): an items file holds one kind")
    counts = mix_counts(parts, [len(p) for p in pools], total=total, replace=replace)
    picked: list[tuple[str, Item]] = []
    for part, pool, count in zip(parts, pools, counts, strict=True):
        if count and not pool:
            raise ConfigError(f"part '{part.label}' ({part.items}) has no items to draw {count} from")
        picked += [(part.label, pool[i]) for i in draw(len(pool), count, seed=seed, label=part.label,
                                                        replace=replace)]
    return _relabelled(picked), counts


def mix_files(settings: MixSettings, *, root: Path | None = None) -> MixResult:
    """Read every part's items file (relative paths from ``root``) and mix them under ``settings``."""
    from medtune.io import sha256_file
    from medtune.textbook import read_textbook

    pools: list[list[Item]] = []
    files: list[Path] = []
    textbook: list[str] = []
    seen: set[str] = set()
    has_textbook = False
    for part in settings.parts:
        path = Path(part.items).expanduser()
        path = path if path.is_absolute() or root is None else root / path
        if not path.is_file():
            raise InputError(f"part '{part.label}': items file not found" if not path.exists() else
                             f"part '{part.label}': expected an items Parquet file, got a folder", file=path)
        pools.append(part_pool(read_items(path), settings.split, path))
        files.append(path)
        sentences = read_textbook(path)
        if sentences is not None:  # the parts' background text, joined (a sentence once)
            has_textbook = True
            textbook += [s for s in sentences if not (s in seen or seen.add(s))]  # type: ignore[func-returns-value]
    items, counts = mix_items(settings.parts, pools, seed=settings.seed, replace=settings.replace,
                              total=settings.total)
    provenance = {
        "seed": settings.seed, "replace": settings.replace, "split": settings.split, "total": len(items),
        "total_given": settings.total,
        "parts": [{"label": p.label, "items": str(f), "sha256": sha256_file(f), "share": p.share, "count": p.count,
                   "available": len(pool), "drawn": c}
                  for p, f, pool, c in zip(settings.parts, files, pools, counts, strict=True)],
    }
    return MixResult(items, provenance, textbook if has_textbook else None,
                     {p.label: c for p, c in zip(settings.parts, counts, strict=True)})


def read_mix_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance a mixed items file records (None for an items file that is not a mixture)."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(MIX_METADATA_KEY.encode())
    return json.loads(raw) if raw else None


@register_loader("mix", needs_path=False, options=(),
                 description="a mixture of items files (a grid data set's `mix:` list; `medtune data mix`)")
def load_mix(path: Path | None = None, *, on_error: str = "raise") -> LoadResult:
    """The name a mixing data set goes by; the data stage mixes its `mix:` parts itself (:func:`mix_files`)."""
    raise ConfigError("the source 'mix' is a data set's `mix:` list of items files (in a grid), or `medtune data "
                      "mix` on the command line")


__all__ = ["MIX_METADATA_KEY", "MixPartSettings", "MixResult", "MixSettings", "draw", "largest_remainder",
           "mix_counts", "mix_files", "mix_items", "parse_part", "part_pool", "read_mix_provenance",
           "share_capacity"]
