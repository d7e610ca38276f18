"""The learning-order strategies: pure functions ``(items, seed, **options) -> list[str]`` of item ids.

Implemented from the paper's description (its Figure 1), not from the paper's reference code:
every strategy takes the run's seed, and all randomness comes from streams derived from it, so the
category order and the within-bucket orders change with the seed and nothing else. The strategies that
order categories also take ``category_order``: ``seeded`` (the default) draws the block order from the
seed; ``sorted`` (label order) and ``size`` (largest category first) fix it for every seed, as the
paper's reference code does (``configs/yang2024-orders.yaml`` maps each of its ordering functions to a
strategy and options here).

Two random streams are derived from the seed. The *structure* stream (category order) is fixed for a
seed; the *shuffle* stream (within-bucket orders, tie-breaks, sampling) also depends on the ``epoch``
option, which is how :func:`medtune.orders.plan.build_order` re-draws within-bucket shuffles per epoch
while keeping the block structure. Items are put in a canonical order (sorted by id) first, so an order
depends on the *set* of items, not on how the input file happened to list them.
"""

from __future__ import annotations

import heapq
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from medtune.errors import ConfigError, InputError
from medtune.orders.options import OptionSpec, choice, count, float_in, optional_length, parse_k, positive_int
from medtune.registry import Registry
from medtune.schema import DIFFICULTY_LEVELS

BUCKETS: tuple[str, ...] = DIFFICULTY_LEVELS  # easiest first: the curriculum order
_BUCKET_RANK = {b: i for i, b in enumerate(BUCKETS)}
CATEGORY_ORDERS: tuple[str, ...] = ("seeded", "sorted", "size")  # how blocks of categories are ordered
GROUPINGS: tuple[str, ...] = ("category", "source")  # what blocked and interleaved orders group items by


@dataclass(frozen=True)
class OrderItem:
    """What a strategy needs to know about an item: its id, category and difficulty (continuous and bucketed),
    and its source (a mixture's part, ``meta.source``, else the item's own ``source``) for ``by: source``."""

    id: str
    category: str | None = None
    difficulty: float | None = None
    bucket: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if self.bucket is not None and self.bucket not in _BUCKET_RANK:
            raise InputError(f"bucket must be one of {', '.join(BUCKETS)}, got {self.bucket!r}",
                             record=self.id, field="bucket")
        if self.difficulty is not None and not math.isfinite(self.difficulty):
            raise InputError("difficulty must be a finite number", record=self.id, field="difficulty")


# ----------------------------------------------------------------------------------------------------------
# Randomness and input checks


def _rng(seed: int, *stream: int | str) -> np.random.Generator:
    """An independent generator for (seed, stream...): the same inputs always give the same draws."""
    words = [int(seed)] + [zlib.crc32(s.encode()) if isinstance(s, str) else int(s) for s in stream]
    return np.random.default_rng(np.random.SeedSequence(words))


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")


def _canonical(items: Sequence[OrderItem]) -> list[OrderItem]:
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise InputError(f"duplicate item id '{it.id}'", record=it.id, field="id")
        seen.add(it.id)
    return sorted(items, key=lambda it: it.id)


_NEED_HINT = {
    "category": "give a categories file (medtune categories) or items with a category",
    "bucket": "give a difficulty file (medtune difficulty) or items with human_difficulty",
    "difficulty": "give a difficulty file (medtune difficulty) or items with a numeric human_difficulty",
    "source": "give items with a source (a mixture's items carry their part in meta.source)",
}


def require(items: Sequence[OrderItem], strategy: str, needs: Sequence[str]) -> None:
    """Raise :class:`InputError` naming the first item that lacks a field the strategy needs."""
    for need in needs:
        for it in items:
            if getattr(it, need) is None:
                raise InputError(
                    f"strategy '{strategy}' needs a {need} for every item, but item '{it.id}' has none "
                    f"({_NEED_HINT[need]})",
                    record=it.id,
                    field=need,
                )


def _shuffled(ids: Sequence[str], rng: np.random.Generator) -> list[str]:
    return [ids[i] for i in rng.permutation(len(ids))]


def _category_order(items: Sequence[OrderItem], seed: int, rule: str = "seeded") -> list[str]:
    """The order of the category blocks under ``rule`` (one of :data:`CATEGORY_ORDERS`).

    ``seeded``: a permutation drawn from the seed (labels sorted first, so only the seed decides).
    ``sorted``: label order, the same for every seed. ``size``: most items first, the same for every
    seed; equal sizes keep label order, because items have no file order here to break the tie by.
    """
    cats = sorted({it.category for it in items if it.category is not None})
    if rule == "sorted":
        return cats
    if rule == "size":
        sizes: dict[str, int] = {}
        for it in items:
            if it.category is not None:
                sizes[it.category] = sizes.get(it.category, 0) + 1
        return sorted(cats, key=lambda c: -sizes[c])  # stable: ties stay in label order
    if rule == "seeded":
        return _shuffled(cats, _rng(seed, "categories"))
    raise ConfigError(f"category_order must be one of {', '.join(CATEGORY_ORDERS)}, got {rule!r}")


def _by_category(items: Sequence[OrderItem]) -> dict[str, list[OrderItem]]:
    groups: dict[str, list[OrderItem]] = {}
    for it in items:
        groups.setdefault(it.category, []).append(it)  # type: ignore[arg-type]
    return groups


def _by_bucket(items: Sequence[OrderItem]) -> dict[str, list[OrderItem]]:
    groups: dict[str, list[OrderItem]] = {b: [] for b in BUCKETS}
    for it in items:
        groups[it.bucket].append(it)  # type: ignore[index]
    return groups


def _ids(items: Sequence[OrderItem]) -> list[str]:
    return [it.id for it in items]


def _grouped_by(items: Sequence[OrderItem], by: str, strategy: str) -> list[OrderItem]:
    """The items as the category strategies see them: with ``by="source"`` each item's source is its group (in
    place of its category), so the same blocks and rounds are made of sources."""
    if by == "category":
        return list(items)
    if by != "source":
        raise ConfigError(f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    require(items, strategy, ["source"])
    return [replace(it, category=it.source) for it in items]


def interleave(groups: Sequence[Sequence[str]], k: int | str) -> list[str]:
    """Round-robin over groups: ``k`` chunks per group (chunk r of every group, then chunk r + 1), or
    item by item with ``k="items"``. A group that runs out simply drops out of later rounds."""
    if k == "items":
        rounds = max((len(g) for g in groups), default=0)
        return [g[r] for r in range(rounds) for g in groups if r < len(g)]
    chunked = [[list(c) for c in np.array_split(np.asarray(g, dtype=object), k)] for g in groups]
    return [x for r in range(int(k)) for chunks in chunked for x in chunks[r]]


# ----------------------------------------------------------------------------------------------------------
# The strategies (each: items, seed, epoch, options -> ids)


def random_order(items: Sequence[OrderItem], seed: int, *, epoch: int = 0) -> list[str]:
    return _shuffled(_ids(_canonical(items)), _rng(seed, "shuffle", epoch))


def blocked(items: Sequence[OrderItem], seed: int, *, category_order: str = "seeded", by: str = "category",
            epoch: int = 0) -> list[str]:
    items = _grouped_by(_canonical(items), by, "blocked")
    require(items, "blocked", ["category"])
    groups = _by_category(items)
    rng = _rng(seed, "shuffle", epoch)
    return [x for c in _category_order(items, seed, category_order) for x in _shuffled(_ids(groups[c]), rng)]


def interleaved(items: Sequence[OrderItem], seed: int, *, k: int | str = 3, category_order: str = "seeded",
                by: str = "category", epoch: int = 0, _name: str = "interleaved") -> list[str]:
    items = _grouped_by(_canonical(items), by, _name)
    require(items, _name, ["category"])
    groups = _by_category(items)
    rng = _rng(seed, "shuffle", epoch)
    return interleave([_shuffled(_ids(groups[c]), rng) for c in _category_order(items, seed, category_order)], k)


def interleaved_items(items: Sequence[OrderItem], seed: int, *, category_order: str = "seeded",
                      by: str = "category", epoch: int = 0) -> list[str]:
    return interleaved(items, seed, k="items", category_order=category_order, by=by, epoch=epoch,
                       _name="interleaved-items")


def _bucketed(items: Sequence[OrderItem], seed: int, epoch: int, order: Sequence[str], name: str) -> list[str]:
    items = _canonical(items)
    require(items, name, ["bucket"])
    groups = _by_bucket(items)
    rng = _rng(seed, "shuffle", epoch)
    return [x for b in order for x in _shuffled(_ids(groups[b]), rng)]


def curriculum(items: Sequence[OrderItem], seed: int, *, epoch: int = 0) -> list[str]:
    return _bucketed(items, seed, epoch, BUCKETS, "curriculum")


def anti_curriculum(items: Sequence[OrderItem], seed: int, *, epoch: int = 0) -> list[str]:
    return _bucketed(items, seed, epoch, BUCKETS[::-1], "anti-curriculum")


def _by_difficulty(items: Sequence[OrderItem], rng: np.random.Generator, reverse: bool = False) -> list[str]:
    """Ids by continuous difficulty (easiest first, or hardest with ``reverse``); equal difficulties in an
    order drawn from ``rng``, so a tie is never settled by the ids' spelling."""
    ties = rng.random(len(items))
    sign = -1.0 if reverse else 1.0
    keyed = sorted(zip(items, ties, strict=True), key=lambda p: (sign * p[0].difficulty, p[1]))  # type: ignore[operator]
    return [it.id for it, _ in keyed]


def _strict(items: Sequence[OrderItem], seed: int, epoch: int, name: str, reverse: bool) -> list[str]:
    items = _canonical(items)
    require(items, name, ["difficulty"])
    return _by_difficulty(items, _rng(seed, "shuffle", epoch), reverse)


def curriculum_strict(items: Sequence[OrderItem], seed: int, *, epoch: int = 0) -> list[str]:
    return _strict(items, seed, epoch, "curriculum-strict", reverse=False)


def anti_curriculum_strict(items: Sequence[OrderItem], seed: int, *, epoch: int = 0) -> list[str]:
    return _strict(items, seed, epoch, "anti-curriculum-strict", reverse=True)


def blocked_curriculum(items: Sequence[OrderItem], seed: int, *, category_order: str = "seeded",
                       epoch: int = 0) -> list[str]:
    items = _canonical(items)
    require(items, "blocked-curriculum", ["category", "bucket"])
    groups = _by_category(items)
    rng = _rng(seed, "shuffle", epoch)
    out: list[str] = []
    for c in _category_order(items, seed, category_order):
        by_bucket = _by_bucket(groups[c])
        for b in BUCKETS:
            out.extend(_shuffled(_ids(by_bucket[b]), rng))
    return out


def interleaved_curriculum(items: Sequence[OrderItem], seed: int, *, k: int | str = 3,
                           category_order: str = "seeded", epoch: int = 0) -> list[str]:
    """Buckets easy → medium → hard; within each, the categories interleaved in one category order for all
    buckets. ``k=1`` gives each category one block per bucket (three rounds in all)."""
    items = _canonical(items)
    require(items, "interleaved-curriculum", ["category", "bucket"])
    cat_order = _category_order(items, seed, category_order)
    rng = _rng(seed, "shuffle", epoch)
    out: list[str] = []
    for b in BUCKETS:
        groups = _by_category(_by_bucket(items)[b])
        out.extend(interleave([_shuffled(_ids(groups[c]), rng) for c in cat_order if c in groups], k))
    return out


def _categories_by_difficulty(items: Sequence[OrderItem], seed: int, epoch: int, category_order: str,
                              name: str) -> list[list[str]]:
    """Each category's ids easiest first (seeded tie-break), the categories in ``category_order``."""
    items = _canonical(items)
    require(items, name, ["category", "difficulty"])
    groups = _by_category(items)
    rng = _rng(seed, "shuffle", epoch)
    return [_by_difficulty(groups[c], rng) for c in _category_order(items, seed, category_order)]


def blocked_curriculum_strict(items: Sequence[OrderItem], seed: int, *, category_order: str = "seeded",
                              epoch: int = 0) -> list[str]:
    """One block per category, each sorted by continuous difficulty, easiest first."""
    groups = _categories_by_difficulty(items, seed, epoch, category_order, "blocked-curriculum-strict")
    return [x for g in groups for x in g]


def interleaved_curriculum_strict(items: Sequence[OrderItem], seed: int, *, k: int | str = 3,
                                  category_order: str = "seeded", epoch: int = 0) -> list[str]:
    """Each category sorted by continuous difficulty and cut into ``k`` chunks, emitted round-robin: round r
    holds the r-th easiest share of every category, so difficulty rises across rounds, not within one."""
    groups = _categories_by_difficulty(items, seed, epoch, category_order, "interleaved-curriculum-strict")
    return interleave(groups, k)


def difficulty_ranking(items: Sequence[OrderItem], rng: np.random.Generator, name: str) -> list[OrderItem]:
    """Items from easiest to hardest: by continuous difficulty when every item has one, else by bucket;
    ties broken by ``rng``."""
    ties = rng.random(len(items))
    if all(it.difficulty is not None for it in items):
        key: Callable[[tuple[OrderItem, float]], tuple[float, float]] = lambda p: (p[0].difficulty, p[1])  # type: ignore[assignment,return-value]  # noqa: E731
    else:
        require(items, name, ["bucket"])
        key = lambda p: (_BUCKET_RANK[p[0].bucket], p[1])  # type: ignore[index]  # noqa: E731
    return [it for it, _ in sorted(zip(items, ties, strict=True), key=key)]


def competence(t: float, schedule: str, c0: float, ramp: float, steps: int) -> float:
    """Share of the difficulty-ranked items eligible at training progress ``t`` in [0, 1] (Platanios et al.
    2019): linear and root grow from ``c0`` to 1 at ``t = ramp``; step opens ``steps`` equal slices in turn."""
    x = min(1.0, t / ramp) if ramp > 0 else 1.0
    if schedule == "linear":
        return min(1.0, c0 + (1.0 - c0) * x)
    if schedule == "root":
        return min(1.0, math.sqrt(c0 * c0 + (1.0 - c0 * c0) * x))
    if schedule == "step":
        return min(1.0, (math.floor(x * steps) + 1) / steps)
    raise ConfigError(f"unknown pacing schedule {schedule!r} (linear, root, step)")


def pool_sizes(n: int, length: int, schedule: str, c0: float, ramp: float, steps: int) -> list[int]:
    """Eligible pool size at each position of a pacing sequence of ``length`` over ``n`` ranked items."""
    return [max(1, min(n, math.ceil(competence(p / length, schedule, c0, ramp, steps) * n - 1e-9)))
            for p in range(length)]


def pacing(items: Sequence[OrderItem], seed: int, *, schedule: str = "linear", c0: float = 0.2, ramp: float = 0.8,
           steps: int = 3, length: int | None = None, sampling: str = "balanced", epoch: int = 0) -> list[str]:
    """Competence-based curriculum: position p draws from the easiest ``c(p / length)`` share of the items.

    ``sampling="balanced"`` draws the least-drawn eligible item (seeded tie-break), so every item appears
    once the pool has covered it; ``"uniform"`` draws uniformly with replacement, as Platanios et al. do.
    """
    items = _canonical(items)
    if not items:
        return []
    rng = _rng(seed, "shuffle", epoch)
    ranked = [it.id for it in difficulty_ranking(items, rng, "pacing")]
    n = len(ranked)
    length = n if length is None else length
    sizes = pool_sizes(n, length, schedule, c0, ramp, steps)
    if sampling == "uniform":
        draws = rng.random(length)
        return [ranked[int(d * s)] for d, s in zip(draws, sizes, strict=True)]
    heap: list[tuple[int, float, int]] = []  # (times drawn, random tie-break, rank)
    opened = 0
    out: list[str] = []
    for size in sizes:
        while opened < size:
            heapq.heappush(heap, (0, float(rng.random()), opened))
            opened += 1
        count, _, rank = heapq.heappop(heap)
        out.append(ranked[rank])
        heapq.heappush(heap, (count + 1, float(rng.random()), rank))
    return out


def review_gaps(reviews: int, first_interval: int, growth: float) -> list[int]:
    """Minimum distance (in positions) from an item's m-th occurrence to its next: first_interval·growth^m."""
    return [max(1, round(first_interval * growth**m)) for m in range(reviews)]


def spaced_repetition(items: Sequence[OrderItem], seed: int, *, reviews: int = 2, first_interval: int = 1,
                      growth: float = 2.0, base: str = "random", length: int | None = None,
                      epoch: int = 0) -> list[str]:
    """Each item (in the order of the ``base`` strategy) is shown, then revisited ``reviews`` times, the m-th
    revisit at least ``first_interval·growth^(m-1)`` positions after the previous showing. A due revisit goes
    before the next new item; once no new items are left, pending revisits follow in due order (their gaps
    may then be shorter). Length ``n·(1 + reviews)``, or the first ``length`` positions of it. With batched
    training, a ``first_interval`` near the batch size keeps a revisit out of its item's own batch."""
    spec = get_strategy(base)
    if not spec.permutation:
        raise ConfigError(f"spaced-repetition base must be a permutation strategy, not '{base}'")
    base_order = spec.func(items, seed, epoch=epoch, **spec.resolve_options({}))
    gaps = review_gaps(reviews, first_interval, growth)
    due: list[tuple[int, int, str, int]] = []  # (due position, sequence number, id, occurrences so far)
    out: list[str] = []
    new = iter(base_order)
    remaining_new = len(base_order)
    seq = 0
    while remaining_new or due:
        p = len(out)
        if due and (due[0][0] <= p or not remaining_new):
            _, _, item_id, shown = heapq.heappop(due)
        else:
            item_id, shown = next(new), 0
            remaining_new -= 1
        out.append(item_id)
        if shown < reviews:
            heapq.heappush(due, (p + gaps[shown], seq, item_id, shown + 1))
            seq += 1
    if length is not None:
        if length > len(out):
            raise ConfigError(f"spaced-repetition length {length} exceeds the full sequence ({len(out)} = "
                              f"{len(base_order)} items × {1 + reviews} showings); raise reviews instead")
        out = out[:length]
    return out


# ----------------------------------------------------------------------------------------------------------
# Segments: where a strategy's structure changes, for plots


def runs(order: Sequence[str], label: Callable[[str], str]) -> list[dict[str, Any]]:
    """Segments at each change of ``label`` along the order."""
    segs: list[dict[str, Any]] = []
    for p, item_id in enumerate(order):
        lab = label(item_id)
        if not segs or segs[-1]["label"] != lab:
            segs.append({"start": p, "label": lab})
    return segs


def rounds(order: Sequence[str], category: Callable[[str], str]) -> list[dict[str, Any]]:
    """Segments at the start of each round of an item-level round-robin (a category comes up again)."""
    segs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for p, item_id in enumerate(order):
        c = category(item_id)
        if not segs or c in seen:
            segs.append({"start": p, "label": f"round {len(segs) + 1}"})
            seen = set()
        seen.add(c)
    return segs


def _pacing_segments(order: Sequence[str], by_id: Mapping[str, OrderItem], opts: Mapping[str, Any]) -> list[dict]:
    n = len(by_id)
    sizes = pool_sizes(n, len(order), opts["schedule"], opts["c0"], opts["ramp"], opts["steps"])
    segs: list[dict[str, Any]] = []
    for p, s in enumerate(sizes):
        if opts["schedule"] == "step":  # one segment per opened slice
            label = f"pool {round(100 * s / n)}%"
        else:  # linear and root grow every position: mark the quartiles
            quartile = math.floor(100 * s / n / 25) * 25
            label = "pool < 25%" if not quartile else "pool 100%" if quartile == 100 else f"pool ≥ {quartile}%"
        if not segs or segs[-1]["label"] != label:
            segs.append({"start": p, "label": label})
    return segs


# ----------------------------------------------------------------------------------------------------------
# The registry


def _strategy_name(v: Any) -> str:
    get_strategy(str(v))
    return str(v)


@dataclass(frozen=True)
class StrategySpec:
    """A named strategy: the function, a one-line description, what it needs, and its options."""

    name: str
    func: Callable[..., list[str]]
    description: str
    needs: tuple[str, ...] = ()
    options: Mapping[str, OptionSpec] = field(default_factory=dict)
    permutation: bool = True  # False: ids may repeat (pacing, spaced repetition)
    # False: nothing is shuffled; the seed only breaks ties and, where categories are blocked, draws their
    # order, so distinct inputs give few orders
    random: bool = True
    segments: Callable[[Sequence[str], Mapping[str, OrderItem], Mapping[str, Any]], list[dict]] | None = None

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults filled in and every value parsed; unknown names are an error listing the known ones."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise ConfigError(f"strategy '{self.name}' has no option {', '.join(map(repr, unknown))} "
                              f"(its options: {known})")
        resolved = {k: (o.parse(given[k]) if k in given else o.default) for k, o in self.options.items()}
        return {k: v for k, v in resolved.items()
                if not (self.options[k].omit_default and v == self.options[k].default)}

    def reads_difficulty(self, options: Mapping[str, Any] | None = None) -> bool:
        """Whether the order depends on difficulty (its own needs, or a ``base`` strategy's, e.g. spaced
        repetition over a curriculum): a difficulty-free strategy gives one order whatever the source."""
        if any("difficulty" in n or "bucket" in n for n in self.needs):
            return True
        base = (options or {}).get("base")
        return isinstance(base, str) and base != self.name and get_strategy(base).reads_difficulty()

    def __call__(self, items: Sequence[OrderItem], seed: int, **options: Any) -> list[str]:
        _check_seed(seed)
        epoch = options.pop("epoch", 0)
        return self.func(items, seed, epoch=epoch, **self.resolve_options(options))


def _label_segments(attr: str) -> Callable[..., list[dict]]:
    def seg(order: Sequence[str], by_id: Mapping[str, OrderItem], opts: Mapping[str, Any]) -> list[dict]:
        return runs(order, lambda i: str(getattr(by_id[i], attr)))

    return seg


def _group_of(by_id: Mapping[str, OrderItem], opts: Mapping[str, Any]) -> Callable[[str], str]:
    """An item's group under the ``by`` option: its category, or its source."""
    attr = opts.get("by", "category")
    return lambda i: str(getattr(by_id[i], attr))


def _blocked_segments(order: Sequence[str], by_id: Mapping[str, OrderItem], opts: Mapping[str, Any]) -> list[dict]:
    return runs(order, _group_of(by_id, opts))


def _pair_segments(order: Sequence[str], by_id: Mapping[str, OrderItem], opts: Mapping[str, Any]) -> list[dict]:
    return runs(order, lambda i: f"{by_id[i].category} / {by_id[i].bucket}")


def _interleaved_segments(order: Sequence[str], by_id: Mapping[str, OrderItem], opts: Mapping[str, Any]) -> list[dict]:
    if opts.get("k") == "items":
        return rounds(order, _group_of(by_id, opts))
    return runs(order, _group_of(by_id, opts))


_K = OptionSpec(3, parse_k, "chunks per category, emitted round-robin (paper: 3); 'items' = item by item")
_K_PER_BUCKET = OptionSpec(3, parse_k, "chunks per category in each bucket, emitted round-robin; 1 = one block "
                           "per category per bucket (the reference code's interleaved_emh); 'items' = item by item")
_K_STRICT = OptionSpec(3, parse_k, "difficulty-sorted chunks per category, emitted round-robin (reference code: 3)")
_CATEGORY_ORDER = OptionSpec("seeded", choice("category_order", CATEGORY_ORDERS),
                             "order of the category blocks: seeded (drawn from the seed), sorted (label order) or "
                             "size (most items first, ties by label); sorted and size ignore the seed",
                             omit_default=True)
_BY_CATEGORY = {"category_order": _CATEGORY_ORDER}
_GROUP_BY = OptionSpec("category", choice("by", GROUPINGS),
                       "what makes the blocks: category, or source (a mixture's parts, meta.source; else the "
                       "items' source); category_order then orders the sources", omit_default=True)
_BY_GROUP = {**_BY_CATEGORY, "by": _GROUP_BY}
_PACING_OPTIONS = {
    "schedule": OptionSpec("linear", choice("schedule", ("linear", "root", "step")),
                           "how the eligible pool grows: linear, root (fast early) or step"),
    "c0": OptionSpec(0.2, float_in("c0", 0.0, 1.0, lo_open=True), "initial eligible share (linear, root)"),
    "ramp": OptionSpec(0.8, float_in("ramp", 0.0, 1.0, lo_open=True),
                       "share of the sequence after which every item is eligible"),
    "steps": OptionSpec(3, positive_int("steps"), "number of equal pool slices opened in turn (step)"),
    "length": OptionSpec(None, optional_length, "positions in the sequence (default: number of items)"),
    "sampling": OptionSpec("balanced", choice("sampling", ("balanced", "uniform")),
                           "balanced: least-drawn eligible item next; uniform: with replacement"),
}
_SPACED_OPTIONS = {
    "reviews": OptionSpec(2, count("reviews"), "revisits per item after its first showing"),
    "first_interval": OptionSpec(1, positive_int("first_interval"), "positions before the first revisit"),
    "growth": OptionSpec(2.0, float_in("growth", 1.0, 1e6), "factor by which each interval grows"),
    "base": OptionSpec("random", _strategy_name, "strategy giving the order of first showings"),
    "length": OptionSpec(None, optional_length, "cut the sequence to this many positions"),
}

STRATEGIES: Registry[StrategySpec] = Registry("strategy", hint="a plugin registers more (register_strategy)")

for _spec in [
        StrategySpec("random", random_order, "uniform random permutation under the seed (the baseline)",
                     segments=lambda o, b, opts: [{"start": 0, "label": "random"}] if o else []),
        StrategySpec("blocked", blocked, "one category (or source, by: source) after another (seeded order), "
                     "shuffled within", ("category",), _BY_GROUP, segments=_blocked_segments),
        StrategySpec("interleaved", interleaved, "categories (or sources, by: source) alternate: k chunks per "
                     "category emitted round-robin", ("category",), {"k": _K, **_BY_GROUP},
                     segments=_interleaved_segments),
        StrategySpec("interleaved-items", interleaved_items, "categories (or sources, by: source) alternate item "
                     "by item (round-robin)", ("category",), _BY_GROUP,
                     segments=lambda o, b, opts: rounds(o, _group_of(b, opts))),
        StrategySpec("curriculum", curriculum, "easy → medium → hard buckets, shuffled within each bucket",
                     ("bucket",), segments=_label_segments("bucket")),
        StrategySpec("curriculum-strict", curriculum_strict,
                     "by continuous difficulty, easiest first (seeded tie-break)", ("difficulty",), random=False,
                     segments=_label_segments("bucket")),
        StrategySpec("anti-curriculum", anti_curriculum, "hard → medium → easy buckets, shuffled within each",
                     ("bucket",), segments=_label_segments("bucket")),
        StrategySpec("anti-curriculum-strict", anti_curriculum_strict,
                     "by continuous difficulty, hardest first (seeded tie-break)", ("difficulty",), random=False,
                     segments=_label_segments("bucket")),
        StrategySpec("blocked-curriculum", blocked_curriculum,
                     "blocked by category, easy → medium → hard within each block", ("category", "bucket"),
                     _BY_CATEGORY, segments=_pair_segments),
        StrategySpec("blocked-curriculum-strict", blocked_curriculum_strict,
                     "blocked by category, by continuous difficulty (easiest first) within each block",
                     ("category", "difficulty"), _BY_CATEGORY, random=False, segments=_label_segments("category")),
        StrategySpec("interleaved-curriculum", interleaved_curriculum,
                     "easy → medium → hard buckets, categories interleaved within each", ("category", "bucket"),
                     {"k": _K_PER_BUCKET, **_BY_CATEGORY}, segments=_label_segments("bucket")),
        StrategySpec("interleaved-curriculum-strict", interleaved_curriculum_strict,
                     "each category by continuous difficulty, cut in k chunks emitted round-robin (easiest first)",
                     ("category", "difficulty"), {"k": _K_STRICT, **_BY_CATEGORY}, random=False,
                     segments=_interleaved_segments),
        StrategySpec("pacing", pacing,
                     "competence-based: draw from the easiest c(t) share, growing linear/root/step (ids repeat)",
                     ("difficulty or bucket",), _PACING_OPTIONS, permutation=False, segments=_pacing_segments),
        StrategySpec("spaced-repetition", spaced_repetition,
                     "each item revisited at growing intervals (1, 2, 4 … positions later; ids repeat)",
                     (), _SPACED_OPTIONS, permutation=False,
                     segments=lambda o, b, opts: [{"start": 0, "label": "spaced repetition"}] if o else []),
]:
    STRATEGIES.register(_spec.name, _spec)


def register_strategy(spec: StrategySpec, *, replace: bool = False) -> StrategySpec:
    """Make ``spec`` available under ``spec.name`` to the order stage, the CLI and grids (the registry's rules:
    a taken name is refused unless ``replace=True``); returns ``spec``."""
    return STRATEGIES.register(spec.name, spec, replace=replace)


def get_strategy(name: str) -> StrategySpec:
    """The strategy called ``name``; an unknown name is the registry's error (every known one, a close match)."""
    return STRATEGIES.get(name)


def available_strategies() -> dict[str, str]:
    """Name → one-line description, in registry order."""
    return {name: s.description for name, s in STRATEGIES.items()}
