"""Length-bucketed batches: sort by token length, pad each batch only to its own longest row.

Padding every prompt to one global maximum (as the reference difficulty script did) wastes most of the
compute on MedQA, whose prompts range from ~60 to ~900 tokens. Batches here are capped by padded tokens
(rows × longest row), so short prompts travel in large batches and long ones in small batches.

The cap itself (``batch_tokens``) is a fixed number on a CPU, where larger batches only cost cache misses; on a
GPU the right cap depends on the free memory and the model, so :func:`estimate_batch_tokens` derives a starting
value from them and the scorer lowers it when a batch still runs out of memory (:func:`next_batch` lets it
re-pack the remaining rows under the lowered cap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices longest first, ties broken by index: the order every batch is cut from."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def next_batch(lengths: Sequence[int], order: Sequence[int], start: int, batch_tokens: int,
               max_batch_size: int = 256) -> list[int]:
    """The batch that begins at ``order[start]``: the following rows while rows × longest ≤ ``batch_tokens``.

    ``order`` is :func:`length_order`'s, so the first row is the batch's longest; a row longer than
    ``batch_tokens`` gets a batch of its own.
    """
    if batch_tokens < 1 or max_batch_size < 1:
        raise ValueError("batch_tokens and max_batch_size must be positive")
    width = lengths[order[start]]
    end = start + 1
    while end < len(order) and end - start < max_batch_size and (end - start + 1) * width <= batch_tokens:
        end += 1
    return list(order[start:end])


def length_batches(lengths: Sequence[int], batch_tokens: int, max_batch_size: int = 256) -> list[list[int]]:
    """Group indices into batches of similar length, longest first, each with rows × max length ≤ batch_tokens.

    A row longer than ``batch_tokens`` gets a batch of its own. The grouping depends only on the lengths
    (ties broken by index), so a resumed run rebuilds exactly the same batches.
    """
    if batch_tokens < 1 or max_batch_size < 1:
        raise ValueError("batch_tokens and max_batch_size must be positive")
    order = length_order(lengths)
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        batch = next_batch(lengths, order, start, batch_tokens, max_batch_size)
        batches.append(batch)
        start += len(batch)
    return batches


# ----------------------------------------------------------------------------------------------------------
# A starting budget from the free accelerator memory


@dataclass(frozen=True)
class PassMemory:
    """Bytes a scoring forward pass holds per padded token and per row whose next-token logits are kept.

    ``per_token``: one layer's activations (what inference keeps alive at a time) plus, where the pass keeps a KV
    cache, every layer's keys and values. ``per_row``: the kept logits row, its fp32 copy and the fp32
    log-softmax, i.e. about ``vocab × (dtype bytes + 8)`` — for a 128k vocabulary ~1.3 MB a row, as much as ten
    or more tokens of activations, which is why short rows (many per batch) are charged for it.
    """

    per_token: int
    per_row: int


MIN_AUTO_BATCH_TOKENS = 64
MAX_AUTO_BATCH_TOKENS = 1 << 18


def estimate_batch_tokens(free_bytes: int, memory: PassMemory, *, shortest: int, max_rows: int,
                          usable_share: float = 0.7) -> int:
    """Largest padded-token budget whose pass fits in ``usable_share`` of ``free_bytes``.

    A batch of budget ``B`` holds at most ``min(max_rows, B / shortest)`` rows, so it needs
    ``B × per_token + rows × per_row`` bytes; solved for ``B`` and kept within
    [:data:`MIN_AUTO_BATCH_TOKENS`, :data:`MAX_AUTO_BATCH_TOKENS`]. The share left over covers the allocator's
    fragmentation and what the estimate leaves out (attention workspaces, the framework's own buffers); a batch
    that still does not fit is split by the scorer, so the estimate may err but never silently changes a value.
    """
    usable = free_bytes * usable_share
    shortest = max(1, shortest)
    per_token = max(1, memory.per_token)
    budget = usable / (per_token + memory.per_row / shortest)
    if budget / shortest > max_rows:  # the row cap binds first: the logits of at most max_rows rows
        budget = (usable - max_rows * memory.per_row) / per_token
    return int(min(MAX_AUTO_BATCH_TOKENS, max(MIN_AUTO_BATCH_TOKENS, budget)))
