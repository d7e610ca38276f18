"""The order stage: :class:`OrderSettings` and :func:`run_order`, called alike by ``medtune order`` and the grid.

``run_order`` reads an items file (plus, optionally, difficulty.parquet and categories.parquet), keeps the
split to train on, builds the strategy's view of each item, plans the order and writes ``order.json`` and
``order_items.json`` (what the strategy saw per item, for plots). Everything that decides the order is in
the settings; the files are hashed into ``input_hashes``, so an order file says what it was made from.

Which split: an items file may hold several (the synthetic source writes train and test). Ordering all of
them would train on the test questions, so by default the ``train`` split is taken when the file holds
several, and the summary says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from medtune.bucketing import DEFAULT_QUANTILES, PAPER_THRESHOLDS, Bucketing
from medtune.difficulty_sources import NO_SOURCE, SOURCES, OrderDifficultySource, get_difficulty_source
from medtune.errors import ConfigError, InputError
from medtune.io import sha256_file, write_json_atomic
from medtune.orders.inputs import Lookup, order_items, read_categories_table, read_difficulty_table
from medtune.orders.orderfile import EPOCH_POLICIES, OrderFile
from medtune.orders.plan import build_order
from medtune.orders.strategies import BUCKETS, OrderItem, get_strategy
from medtune.settings import Settings, validate_settings

TRAIN_SPLIT = "train"
ALL_SPLITS = "all"
ORDER_NAME, ORDER_ITEMS_NAME = "order.json", "order_items.json"


def reads_difficulty_file(source: str) -> bool:
    """Whether the order stage reads ``source`` from a difficulty file (llm, irt, file...; not human or none)."""
    return source != NO_SOURCE and get_difficulty_source(source).from_file


def file_sources() -> list[str]:
    """The sources read from a difficulty file, in registration order (for messages)."""
    return [name for name in SOURCES.names() if SOURCES.get(name).from_file]


class OrderSettings(Settings):
    """What decides a learning order: the strategy and its options, the seed, epochs, and where difficulty
    and buckets come from."""

    strategy: str = Field(description="strategy name (medtune order --help lists them)")
    options: dict[str, Any] = Field(default_factory=dict, validate_default=True,
                                    description="the strategy's own options, e.g. k=3; defaults filled in")
    seed: int = Field(ge=0, description="the run's seed: category order and within-bucket orders follow it")
    epochs: int = Field(1, ge=1, description="number of epochs to plan")
    epoch_policy: Literal["repeat", "reshuffle"] = Field(
        "repeat", description="same order every epoch, or within-bucket shuffles re-drawn per epoch")
    difficulty_source: OrderDifficultySource | None = Field(
        None, description="human: the items' human_difficulty; llm/file: the difficulty file's difficulty and "
        "bucket; irt: its irt_b, bucketed by terciles; a plugin's source: as it declares "
        "(medtune.difficulty_sources); none: no difficulty (difficulty-free strategies only). "
        "Default: llm when a difficulty file is given, else human")
    bucketing: Literal["thresholds", "quantiles", "terciles"] | None = Field(
        None, description="re-bucket continuous difficulty by thresholds, quantiles or terciles. Default: a "
        "difficulty file's own buckets, other numbers by thresholds (irt: terciles)")
    thresholds: tuple[float, float] = Field(PAPER_THRESHOLDS, description="easy ≤ t1 < medium ≤ t2 < hard")
    quantiles: tuple[float, float] = Field(DEFAULT_QUANTILES, description="cut points for bucketing 'quantiles'")
    split: str | None = Field(
        None, description="which split of the items file to order ('all': every item). Default: the file's only "
        "split, or 'train' when it holds several")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        try:
            return get_strategy(v).name
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("options")
    @classmethod
    def _strategy_options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Parsed by the strategy's own resolver (the error names the option); stored with defaults filled
        in, so equal settings are equal however they were written."""
        if "strategy" not in info.data:  # the strategy itself was refused
            return v
        try:
            return get_strategy(info.data["strategy"]).resolve_options(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("difficulty_source")
    @classmethod
    def _none_means_no_difficulty(cls, v: str | None, info: ValidationInfo) -> str | None:
        known = "strategy" in info.data and "options" in info.data
        if v == "none" and known and get_strategy(info.data["strategy"]).reads_difficulty(info.data["options"]):
            raise ValueError(f"strategy '{info.data['strategy']}' orders by difficulty; 'none' gives it none "
                             "(choose human, llm, irt or file)")
        return v

    @field_validator("thresholds", "quantiles")
    @classmethod
    def _increasing(cls, v: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        try:
            if info.field_name == "quantiles":
                Bucketing.by_quantiles(v)
            else:
                Bucketing.fixed(v)
        except InputError as exc:
            raise ValueError(exc.reason) from None
        return v

    @model_validator(mode="after")
    def _quantiles_need_their_rule(self) -> OrderSettings:
        if "quantiles" in self.model_fields_set and self.bucketing != "quantiles":
            raise ValueError("quantiles are used only with bucketing 'quantiles'")
        return self

    def source(self, difficulty_path: Path | None) -> str:
        """The difficulty source in effect, checked against whether a difficulty file is given."""
        source = self.difficulty_source or ("llm" if difficulty_path is not None else "human")
        if reads_difficulty_file(source) and difficulty_path is None:
            raise ConfigError(f"difficulty_source '{source}' reads a difficulty file (medtune difficulty); "
                              "give one (--difficulty FILE)")
        if not reads_difficulty_file(source) and difficulty_path is not None:
            raise ConfigError(f"difficulty_source '{source}' does not read the difficulty file {difficulty_path}; "
                              f"choose one of {', '.join(file_sources())} or leave the file out")
        return source

    def rule(self, source: str) -> Bucketing | None:
        """The bucketing to apply to every continuous difficulty; None keeps a file's own buckets."""
        if self.bucketing == "thresholds":
            return Bucketing.fixed(self.thresholds)
        if self.bucketing == "quantiles":
            return Bucketing.by_quantiles(self.quantiles)
        # a source's own default, e.g. irt: IRT b is on a logit scale, only ranks mean anything
        if self.bucketing == "terciles" or (source != NO_SOURCE
                                            and get_difficulty_source(source).order_bucketing == "terciles"):
            return Bucketing.terciles()
        return None


# ----------------------------------------------------------------------------------------------------------
# Inputs


def select_split(items: Sequence[Any], split: str | None, file: Path | None = None
                 ) -> tuple[list[Any], str, dict[str, int]]:
    """(the items of the split to order, the split taken, items per split in the file)."""
    counts = dict(Counter(it.split for it in items))
    if split == ALL_SPLITS:
        return list(items), ALL_SPLITS, counts
    if split is None:
        if len(counts) <= 1:
            return list(items), next(iter(counts), ALL_SPLITS), counts
        if TRAIN_SPLIT not in counts:
            raise ConfigError(f"{file or 'the items'} holds the splits {_describe(counts)} and none is "
                              f"'{TRAIN_SPLIT}': choose the split to order (--split NAME, or --split all)")
        split = TRAIN_SPLIT
    if split not in counts:
        raise ConfigError(f"split '{split}' is not in {file or 'the items'} (its splits: {_describe(counts)})")
    return [it for it in items if it.split == split], split, counts


def _describe(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} ({n})" for name, n in counts.items())


def read_tables(source: str, categories_path: Path | None, difficulty_path: Path | None
                ) -> tuple[Lookup | None, Lookup | None]:
    """The categories and difficulty tables the source reads (its ``order_column``; irt: ``irt_b``)."""
    cats = read_categories_table(categories_path) if categories_path is not None else None
    diff = None
    if difficulty_path is not None and reads_difficulty_file(source):
        diff = read_difficulty_table(difficulty_path, get_difficulty_source(source).order_column)
    return cats, diff


def strategy_view(items: Sequence[Any], settings: OrderSettings, source: str, *, categories: Lookup | None = None,
                  difficulty: Lookup | None = None, file_ids: Sequence[str] | None = None) -> list[OrderItem]:
    """The :class:`OrderItem` s a strategy sees for ``items`` under ``settings`` and ``source``.

    ``file_ids``: every id of the items file; a table row naming another id is an error (a row for an item of
    another split of the same file is not).
    """
    return order_items(items, categories=categories, difficulty=difficulty, bucketing=settings.rule(source),
                       thresholds=settings.thresholds, file_ids=file_ids)


def category_names(categories: Lookup | None) -> dict[str, str]:
    """Category → "id: readable name" from a categories file's ``name`` column (for plot legends)."""
    names: dict[str, str] = {}
    if categories is not None:
        for row in categories.rows.values():
            if row.get("name"):
                names[str(row["category"])] = f"{row['category']}: {row['name']}"
    return names


def input_hashes(items_path: Path, categories_path: Path | None, difficulty_path: Path | None) -> dict[str, str]:
    """SHA-256 of each input file, by role: the same meaning whoever plans the order."""
    hashes = {"items": sha256_file(items_path)}
    if categories_path is not None:
        hashes["categories"] = sha256_file(categories_path)
    if difficulty_path is not None:
        hashes["difficulty"] = sha256_file(difficulty_path)
    return hashes


# ----------------------------------------------------------------------------------------------------------
# The stage


def run_order(
    settings: OrderSettings | Mapping[str, Any],
    items_path: Path,
    out: Path,
    *,
    difficulty_path: Path | None = None,
    categories_path: Path | None = None,
    order_name: str = ORDER_NAME,
    items_name: str | None = ORDER_ITEMS_NAME,
) -> dict[str, Any]:
    """Plan the order of ``items_path``'s split under ``settings``; write ``out/order.json`` and
    ``out/order_items.json`` (``items_name`` None: only the order); returns a JSON-able summary.

    Nothing is written when anything fails.
    """
    from medtune.schema import read_items

    settings = validate_settings(OrderSettings, settings, "order")
    items_path, out = Path(items_path), Path(out)
    difficulty_path = Path(difficulty_path) if difficulty_path is not None else None
    categories_path = Path(categories_path) if categories_path is not None else None
    source = settings.source(difficulty_path)
    all_items = read_items(items_path)
    chosen, split, splits = select_split(all_items, settings.split, items_path)
    if not chosen:
        raise InputError("no items to order", file=items_path)
    cats, diff = read_tables(source, categories_path, difficulty_path)
    oitems = strategy_view(chosen, settings, source, categories=cats, difficulty=diff,
                           file_ids=[it.id for it in all_items])
    hashes = input_hashes(items_path, categories_path, difficulty_path if diff is not None else None)
    plan = build_order(oitems, settings.strategy, settings.seed, epochs=settings.epochs,
                       epoch_policy=settings.epoch_policy, input_hashes=hashes, **settings.options)
    order = OrderFile.from_dict(plan)
    out.mkdir(parents=True, exist_ok=True)
    order_path = order.write(out / order_name)
    items_file = None
    if items_name:
        items_file = out / items_name
        several = len({it.source for it in oitems}) > 1  # a mixture: each item's source too
        write_json_atomic(items_file, [{"id": it.id, "category": it.category, "difficulty": it.difficulty,
                                        "bucket": it.bucket, **({"source": it.source} if several else {})}
                                       for it in oitems], indent=None)
    buckets = Counter(it.bucket for it in oitems if it.bucket is not None)
    return {
        "order": str(order_path),
        "order_items": str(items_file) if items_file else None,
        "strategy": order.strategy,
        "seed": order.seed,
        "options": order.options,
        "epochs": len(order.epochs),
        "epoch_policy": order.epoch_policy,
        "difficulty_source": source,
        "split": split,
        "splits": splits,
        "n_items": order.n_items,
        "n_items_in_file": len(all_items),
        "positions_per_epoch": len(order.epochs[0]),
        "n_positions": sum(len(e) for e in order.epochs),
        "segments": len(order.segments),
        "buckets": {b: buckets[b] for b in BUCKETS if buckets[b]},
    }


def describe_split(summary: Mapping[str, Any]) -> str:
    """One phrase saying which items were ordered, e.g. "576 items of split 'train' (of 1008: train 576, test
    432; --split to choose)"."""
    n, total, split, splits = summary["n_items"], summary["n_items_in_file"], summary["split"], summary["splits"]
    if len(splits) <= 1:
        return f"{n} items" + (f" (split '{split}')" if split != ALL_SPLITS else "")
    others = ", ".join(f"{name} {k}" for name, k in splits.items())
    if split == ALL_SPLITS:
        return f"{n} items of all splits ({others})"
    return f"{n} items of split '{split}' (the file holds {total}: {others}; --split NAME or --split all to choose)"


__all__ = ["ALL_SPLITS", "EPOCH_POLICIES", "OrderSettings", "category_names",
           "describe_split", "input_hashes", "read_tables", "run_order", "select_split", "strategy_view"]
