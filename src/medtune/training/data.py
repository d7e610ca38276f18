"""From items and an order file to the exact micro-batches each process runs, in the planned order.

Three jobs, each a pure function so the order guarantees can be tested without a model:

1. :func:`read_order` / :func:`planned_epochs` / :func:`plan_steps`: the order file (``medtune.order/1``,
   read and checked by :mod:`medtune.orders.orderfile`, whose ``read_order`` this module re-exports) becomes a
   list of optimizer steps; step ``s`` holds the next ``B`` ids of the planned sequence (``B`` = global batch),
   epochs are chunked separately (the last step of an epoch may be short), and ``max_steps`` truncates. The same
   function is used by the trainer and by ``verify-order``, so the check compares the realised log against an
   independent re-plan of the file.
2. :func:`encode_item`: prompt and completion come from :mod:`medtune.prompts` (exactly what the scorer
   renders, split into prompt/completion ids by :mod:`medtune.tokenization`, the scorer's own split); the
   labels are ``-100`` on the prompt, so the loss is on the completion (plus EOS) only. Under a chat template
   (:mod:`medtune.chat_format`) the prompt is the template's generation prompt and the labels cover exactly the
   assistant's turn: its content and the template's end-of-turn tokens (EOS is then not added again).
   Over-long items lose the *start* of the prompt (the options and the answer cue are at its end); under a chat
   template, the start of the user's text, after the template's head (BOS, the system turn), which is kept.
3. :func:`rank_slice` / :func:`micro_batches` / :func:`collate`: rank ``r`` of ``W`` takes a fixed
   contiguous slice of each global batch (independent of anything but ``B`` and ``W``), splits it into
   micro-batches without reordering — next-fit packing into rows of at most ``pack_tokens`` tokens, or
   chunks of ``batch_size`` items padded to the longest — and :func:`collate` builds tensors. Packed rows
   carry ``position_ids`` that restart at 0 for each item and no attention mask: transformers' mask
   builder (``find_packed_sequence_indices``) then keeps attention within each item (checked in
   tests/training/test_packing.py against per-item forward passes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtune.chat_format import ChatFormat, encode_turn, template_head_length
from medtune.errors import InputError
from medtune.orders.orderfile import FORMAT as ORDER_FORMAT
from medtune.orders.orderfile import OrderFile, read_order
from medtune.prompts import mcq_completion, mcq_prompt, qa_prompt
from medtune.schema import Item, MCQItem
from medtune.tokenization import split_prompt_completion

__all__ = ["IGNORE", "ORDER_FORMAT", "Encoded", "OrderFile", "PlannedStep", "check_ids_known", "check_order",
           "collate", "encode_item", "encode_items", "micro_batches", "pack_next_fit", "plan_steps",
           "planned_epochs", "prompt_and_completion", "rank_slice", "read_order", "split_ids"]

IGNORE = -100


# ----------------------------------------------------------------------------------------------------------
# Order file → steps


def check_order(order: Any, file: str | Path | None = None) -> dict[str, Any]:
    """Check an order object by the order file's one validation; returns it with defaults filled in."""
    return OrderFile.from_dict(order, file=file).to_dict()


def planned_epochs(order: Mapping[str, Any] | OrderFile, n_epochs: int | None = None) -> list[list[str]]:
    """The id sequence of each epoch the run will train on (ARTIFACTS.md: the last list repeats under
    ``repeat``; ``reshuffle`` refuses to invent epochs the order file does not hold)."""
    if isinstance(order, OrderFile):
        epochs, policy = order.epochs, order.epoch_policy
    else:
        epochs, policy = order["epochs"], order.get("epoch_policy", "repeat")
    if n_epochs is None:
        return [list(e) for e in epochs]
    if n_epochs > len(epochs):
        if policy == "reshuffle":
            raise InputError(
                f"the run asks for {n_epochs} epochs but the order file holds {len(epochs)} and its epoch_policy is "
                "'reshuffle'; build the order with more epochs (medtune order ... --epochs N)",
                field="epochs",
            )
        epochs = epochs + [epochs[-1]] * (n_epochs - len(epochs))
    return [list(e) for e in epochs[:n_epochs]]


@dataclass(frozen=True)
class PlannedStep:
    step: int  # 1-based optimizer step
    epoch: int  # 0-based
    start: int  # index of the first id within its epoch's list
    ids: tuple[str, ...]


def plan_steps(epochs: Sequence[Sequence[str]], global_batch: int, max_steps: int | None = None) -> list[PlannedStep]:
    steps: list[PlannedStep] = []
    for e, ids in enumerate(epochs):
        for start in range(0, len(ids), global_batch):
            if max_steps is not None and len(steps) >= max_steps:
                return steps
            steps.append(PlannedStep(len(steps) + 1, e, start, tuple(ids[start : start + global_batch])))
    return steps


def check_ids_known(epochs: Sequence[Sequence[str]], known: set[str], file: str | Path | None = None) -> None:
    for e, ids in enumerate(epochs):
        for i, item_id in enumerate(ids):
            if item_id not in known:
                raise InputError(f"id '{item_id}' is not in the items file", file=file, record=i,
                                 field=f"epochs.{e}", record_kind="position")


# ----------------------------------------------------------------------------------------------------------
# Items → token ids with completion-only labels


@dataclass(frozen=True)
class Encoded:
    id: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE on prompt tokens; already aligned with input_ids (not shifted)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_label_tokens(self) -> int:
        # positions whose *next-token* target is a label: the first token can never be a target
        return sum(1 for t in self.labels[1:] if t != IGNORE)


def prompt_and_completion(item: Item, target: str = "letter", template: str = "paper") -> tuple[str, str]:
    """The text pair the loss is computed on: the same prompt the scorer renders, and its answer."""
    if isinstance(item, MCQItem):
        return mcq_prompt(item, template), mcq_completion(item, target)  # type: ignore[arg-type]
    return qa_prompt(item), item.answer.strip()


def split_ids(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """Prompt ids and completion ids, split exactly as the scorer splits context and continuation.

    The one rule is :func:`medtune.tokenization.split_prompt_completion` (see its module for why), so the
    tokens labelled here are the tokens whose likelihood evaluation measures.
    """
    return split_prompt_completion(tokenizer, prompt, completion)


def encode_item(item: Item, tokenizer: Any, *, target: str = "letter", template: str = "paper",
                max_length: int = 512, add_eos: bool = True, chat: ChatFormat | None = None) -> Encoded:
    """An item's ids and labels; ``chat``: in the tokenizer's chat template (:func:`medtune.chat_format.encode_turn`,
    the split scoring uses), the completion ending with the template's end-of-turn tokens."""
    prompt, completion = prompt_and_completion(item, target, template)
    turn = encode_turn(tokenizer, prompt, completion, chat)
    p_ids, c_ids = turn.prompt, turn.completion
    if add_eos and not turn.end and tokenizer.eos_token_id is not None:
        c_ids.append(tokenizer.eos_token_id)
    if not c_ids:
        raise InputError("the completion is empty after tokenisation", record=item.id)
    if len(c_ids) > max_length - 1:  # keep at least one prompt token so the first answer token has a target
        c_ids = c_ids[: max_length - 1]
    room = max_length - len(c_ids)
    if len(p_ids) > room:
        # cut the prompt's start; under chat, the start of the user's text, after the template's head (BOS, system)
        head = template_head_length(tokenizer, p_ids, prompt, chat) if chat is not None else 0
        head = head if head < room else 0
        p_ids = p_ids[:head] + p_ids[len(p_ids) - (room - head):]
    return Encoded(item.id, tuple(p_ids + c_ids), tuple([IGNORE] * len(p_ids) + c_ids))


def encode_items(items: Sequence[Item], tokenizer: Any, **kwargs: Any) -> dict[str, Encoded]:
    return {it.id: encode_item(it, tokenizer, **kwargs) for it in items}


# ----------------------------------------------------------------------------------------------------------
# Global batch → this rank's micro-batches → tensors


def rank_slice(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous slice ``[lo, hi)`` of a global batch of ``n`` items for ``rank`` (sizes differ by ≤ 1)."""
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def pack_next_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Next-fit packing: consecutive indices go into the current bin until the next does not fit.

    Unlike best-fit (TRL's ``bfd``), it never reorders: concatenating the bins gives ``0..n-1``.
    An item longer than ``capacity`` gets a bin of its own.
    """
    bins: list[list[int]] = []
    used = capacity + 1
    for i, n in enumerate(lengths):
        if used + n > capacity or not bins:
            bins.append([i])
            used = n
        else:
            bins[-1].append(i)
            used += n
    return bins


def micro_batches(encoded: Sequence[Encoded], *, packing: bool, batch_size: int,
                  pack_tokens: int) -> list[list[Encoded]]:
    if not encoded:
        return []
    if packing:
        bins = pack_next_fit([e.n_tokens for e in encoded], pack_tokens)
        return [[encoded[i] for i in b] for b in bins]
    return [list(encoded[i : i + batch_size]) for i in range(0, len(encoded), batch_size)]


def collate(batch: Sequence[Encoded], *, packing: bool, pad_id: int, varlen: bool = False) -> dict[str, Any]:
    """Tensors for one micro-batch, built on the host (the loop moves them to the device in one go).

    Packed: one flat row, ``position_ids`` restarting per item and no attention mask — transformers keeps
    attention within each item (a block-diagonal mask under SDPA; with a flash-attention implementation the
    variable-length kernel runs on the flat sequence: ``varlen`` adds its cumulative sequence lengths, computed
    here so the device never has to report them back). Padded: rows padded to the longest item.

    ``label_index`` / ``label_targets``: the flat positions (row-major over rows × width) whose next token is a
    label, and those tokens. The loss applies the output head at these positions only, and counting them on the
    host spares the device a synchronisation per micro-batch.
    """
    import torch

    if packing:
        ids = [t for e in batch for t in e.input_ids]
        labels = [t for e in batch for t in e.labels]
        pos = [p for e in batch for p in range(e.n_tokens)]
        # The first token of each item must never be trained to follow the previous item's last token.
        starts, offset = [], 0
        for e in batch:
            starts.append(offset)
            offset += e.n_tokens
        for s in starts:
            labels[s] = IGNORE
        index = [i for i in range(len(labels) - 1) if labels[i + 1] != IGNORE]
        out: dict[str, Any] = {
            "input_ids": torch.tensor([ids]),
            "position_ids": torch.tensor([pos]),
            "attention_mask": None,
            "labels": torch.tensor([labels]),
            "label_index": torch.tensor(index, dtype=torch.long),
            "label_targets": torch.tensor([labels[i + 1] for i in index], dtype=torch.long),
        }
        if varlen:
            cu = torch.tensor([*starts, offset], dtype=torch.int32)
            longest = max(e.n_tokens for e in batch)
            out.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest)
        return out
    width = max(e.n_tokens for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    index, targets = [], []
    for r, e in enumerate(batch):
        n = e.n_tokens
        ids[r, :n] = torch.tensor(e.input_ids)
        labels[r, :n] = torch.tensor(e.labels)
        mask[r, :n] = 1
        for i in range(n - 1):
            if e.labels[i + 1] != IGNORE:
                index.append(r * width + i)
                targets.append(e.labels[i + 1])
    return {"input_ids": ids, "position_ids": None, "attention_mask": mask, "labels": labels,
            "label_index": torch.tensor(index, dtype=torch.long),
            "label_targets": torch.tensor(targets, dtype=torch.long)}
