"""``score_items``: score multiple-choice (or free-text) items with a causal LM, batched by length, resumable.

Modes:

- ``letter`` — ``scores`` are the log-likelihoods of the continuations " A", " B", ... after the prompt
  (on transformers one forward pass per question: the full-vocabulary log-softmax at the answer position,
  read at the letters' single tokens, which is the same number), ``probs`` their softmax restricted to the
  letters (the paper's "expected accuracy" is ``probs[answer]``), ``pred`` the argmax.
- ``option`` — the log-likelihood of each option's text as a continuation of the prompt (the question
  runs once, its KV cache is shared by the options). ``scores`` are the summed log-probabilities,
  ``scores_norm`` the same divided by the option's token count; ``pred`` and ``probs`` follow
  ``option_score`` (``"norm"`` by default, because summed scores favour short options; ``"sum"`` gives the
  harnesses' plain ``acc``).
- ``generate`` — greedy generation; for MCQ items the answer is extracted from the text (a letter, "the
  answer is X", or an option's text); for free-text items (:class:`~medtune.schema.QAItem`) the text is
  the result (``pred``/``correct`` are null, ``answer`` is the reference text).

Batches are capped by padded tokens (``batch_tokens``). ``auto`` keeps the measured CPU value
(:data:`DEFAULT_BATCH_TOKENS`) off a GPU; on a GPU the backend estimates a budget from the free memory
(``auto_batch_tokens``, see :meth:`medtune.scoring.hf.HFBackend.auto_batch_tokens`). Whatever the budget, a batch
that runs out of GPU memory is scored again in smaller batches (:func:`lowered_budget`), and the lowered budget
is kept for the rest of the run and for later runs on the same backend. Batching never changes a value beyond
float rounding, so neither does the budget.

``scores``/``probs``/``scores_norm`` are always indexed by the ORIGINAL option index, also when options
were shown permuted (``permutation[i]`` = original index of the option shown at position ``i``).

The model is any :class:`~medtune.scoring.backends.ScoringBackend` (transformers, an OpenAI-compatible
endpoint, vLLM, or a plugin's); the modes are defined by its ``loglikelihood`` and ``generate``, and the
reduction from log-likelihoods to a prediction is :func:`~medtune.scoring.backends.reduce_scores` for all.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BeforeValidator

from medtune.chat_format import ChatFormat, as_prompt
from medtune.errors import ConfigError, InputError
from medtune.prompts import (
    MCQTemplate,
    extract_answer,
    get_template,
    letters_for,
    mcq_prompt,
    permuted_options,
    qa_prompt,
)
from medtune.schema import MCQItem, QAItem
from medtune.scoring.backends import (
    ScoringBackend,
    as_backend,
    continuations,
    reduce_scores,
    token_cache,
)
from medtune.scoring.batching import length_order, next_batch
from medtune.scoring.store import ScoredRowStore
from medtune.scoring.tokens import letter_token_ids

Mode = Literal["letter", "option", "generate"]
MODES: tuple[str, ...] = ("letter", "option", "generate")
COLUMNS = ["id", "mode", "answer", "pred", "correct", "scores", "probs", "permutation", "generated"]
DEFAULT_BATCH_TOKENS = 1024  # measured on SmolLM2, 2 threads: 614 tok/s vs 424 at 8192 (cache effects)
DEFAULT_MAX_NEW_TOKENS = 32


def _batch_tokens_value(value: Any) -> Any:
    """A settings value of ``batch_tokens`` (a positive integer, also written as text, or ``auto``), checked."""
    if value == "auto":
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"a positive number of padded tokens or 'auto', not {value!r}")


# A settings field's type for the batch budget: padded tokens, or ``auto`` (see the module docstring).
BatchTokens = Annotated[int | Literal["auto"], BeforeValidator(_batch_tokens_value)]

log = logging.getLogger(__name__)


def question_permutation(item_id: str, n_options: int, seed: int | None) -> list[int] | None:
    """The shown order of a question's options under ``seed`` (``None``: original order).

    Seeded by (seed, item id), so an item's permutation does not depend on which other items are scored
    or in what order.
    """
    if seed is None:
        return None
    perm = list(range(n_options))
    random.Random(f"{seed}:{item_id}").shuffle(perm)
    return perm


@dataclass
class _Prepared:
    index: int
    item: MCQItem | QAItem
    permutation: list[int] | None
    shown: list[str]
    prompt: str
    cost: int  # padded tokens this question adds to a batch (estimated from characters without a tokenizer)

    def pairs(self, mode: str) -> list[tuple[str, str]]:
        return [(self.prompt, c) for c in continuations(mode, self.shown)]


def _unpermute(values: Sequence[float], perm: list[int] | None) -> list[float]:
    if perm is None:
        return [float(v) for v in values]
    out = [0.0] * len(values)
    for shown, original in enumerate(perm):
        out[original] = float(values[shown])
    return out


def _check_items(items: Sequence[Any], mode: str) -> None:
    if len(items) == 0:
        raise InputError("no items to score (the item list is empty)")
    seen: set[str] = set()
    for i, it in enumerate(items):
        if not isinstance(it, MCQItem | QAItem):
            raise InputError(f"expected MCQItem or QAItem, got {type(it).__name__}", record=i)
        if isinstance(it, QAItem) and mode != "generate":
            raise InputError(f"free-text item '{it.id}' can only be scored in generate mode", record=i)
        if it.id in seen:
            raise InputError(f"duplicate id '{it.id}'", record=i, field="id")
        seen.add(it.id)


def _cost(tokenizer: Any, mode: str, prompt: str, shown: Sequence[str]) -> int:
    """A question's share of a batch: its prompt's tokens, plus (option mode) every option's tokens."""
    if tokenizer is None:  # a remote backend tokenizes; estimate from characters
        return max(1, len(prompt) // 4) * max(1, len(shown))
    cache = token_cache(tokenizer)
    if mode == "generate" or not shown:
        return len(cache.encode(prompt))
    splits = [cache.split(prompt, c) for c in continuations(mode, shown)]
    if mode == "letter":
        return len(splits[0][0])
    return len(splits[0][0]) + sum(len(c) for _, c in splits)


def question_prompt(item: MCQItem | QAItem, tpl: MCQTemplate | str, permutation: list[int] | None = None,
                    chat: ChatFormat | None = None) -> str:
    """The prompt a question is scored on: its template's text, as a :class:`~medtune.chat_format.ChatPrompt` under
    ``chat`` (every backend then encodes it with the chat template, as training does)."""
    text = qa_prompt(item) if isinstance(item, QAItem) else mcq_prompt(item, tpl, permutation)
    return as_prompt(text, chat)


def _prepare(items, tokenizer, mode: str, tpl: MCQTemplate, seed: int | None, chat: ChatFormat | None
             ) -> list[_Prepared]:
    out = []
    for i, item in enumerate(items):
        if isinstance(item, QAItem):
            perm, shown = None, []
        else:
            perm = question_permutation(item.id, len(item.options), seed)
            shown, _ = permuted_options(item, perm)
        prompt = question_prompt(item, tpl, perm, chat)
        out.append(_Prepared(i, item, perm, shown, prompt, _cost(tokenizer, mode, prompt, shown)))
    return out


def make_row(p: _Prepared, mode: str, pred_shown: int | None, scores_shown: Sequence[float] | None,
             probs_shown: Sequence[float] | None, generated: str | None = None,
             norm_shown: Sequence[float] | None = None) -> dict[str, Any]:
    """One output row; ``*_shown`` values are indexed by shown position and mapped back to original options."""
    item = p.item
    if isinstance(item, QAItem):
        answer: Any = item.answer
        pred = correct = None
    else:
        answer = item.answer
        pred = None if pred_shown is None else (p.permutation[pred_shown] if p.permutation else pred_shown)
        correct = pred is not None and pred == answer
    row = {
        "id": item.id, "mode": mode, "answer": answer, "pred": pred, "correct": correct,
        "scores": None if scores_shown is None else _unpermute(scores_shown, p.permutation),
        "probs": None if probs_shown is None else _unpermute(probs_shown, p.permutation),
        "permutation": p.permutation, "generated": generated,
    }
    if mode == "option":
        row["scores_norm"] = None if norm_shown is None else _unpermute(norm_shown, p.permutation)
    return row


class BatchRunner:
    """Scores one batch of prepared questions on a backend: one ``loglikelihood`` (or ``generate``) call."""

    def __init__(self, backend: ScoringBackend, mode: str, max_new_tokens: int, option_score: str,
                 stop_strings: Sequence[str] | None) -> None:
        self.backend = backend
        self.mode = mode
        self.max_new_tokens = max_new_tokens
        self.option_score = option_score
        self.stop_strings = stop_strings

    def run(self, batch: Sequence[_Prepared]) -> list[dict[str, Any]]:
        if self.mode == "generate":
            return self._generate(batch)
        pairs = [p.pairs(self.mode) for p in batch]
        results = self.backend.loglikelihood([pair for question in pairs for pair in question])
        if len(results) != sum(len(q) for q in pairs):
            raise InputError(f"backend '{self.backend.name}' returned {len(results)} log-likelihoods for "
                             f"{sum(len(q) for q in pairs)} continuations")
        rows, start = [], 0
        for p, question in zip(batch, pairs, strict=True):
            red = reduce_scores(self.mode, results[start:start + len(question)], self.option_score)
            start += len(question)
            rows.append(make_row(p, self.mode, red.pred, red.scores, red.probs, norm_shown=red.norms))
        return rows

    def _generate(self, batch: Sequence[_Prepared]) -> list[dict[str, Any]]:
        texts = self.backend.generate([p.prompt for p in batch], self.max_new_tokens, self.stop_strings)
        rows = []
        for p, text in zip(batch, texts, strict=True):
            pred = None if isinstance(p.item, QAItem) else extract_answer(text, p.shown)
            rows.append(make_row(p, "generate", pred, None, None, generated=text))
        return rows



def _check_letters(backend: ScoringBackend, tpl: MCQTemplate, items: Sequence[MCQItem | QAItem],
                   chat: ChatFormat | None = None) -> None:
    """Refuse letter mode before any work when a letter is not one token after the answer prefix.

    Only a local tokenizer can tell; with several tokens per letter "the letter's probability" would depend on
    how the letter is split, so letter scores would not be comparable across models.
    """
    if backend.tokenizer is None:
        return
    for n in sorted({len(it.options) for it in items if isinstance(it, MCQItem)}):
        letter_token_ids(backend.tokenizer, tpl.answer_prefix, letters_for(n), chat)


# ----------------------------------------------------------------------------------------------------------
# The batch budget: chosen for the device, lowered when a batch runs out of GPU memory

# Budgets lowered after running out of memory, by backend: a later run on the same model starts from them instead
# of meeting the same failure again (the estimate from free memory would be as high as before).
_LOWERED: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def lowered_budget(backend: Any) -> int | None:
    """The budget an out-of-memory batch lowered ``backend``'s scoring to (``None`` if none ran out)."""
    try:
        return _LOWERED.get(backend)
    except TypeError:  # a backend that cannot be weakly referenced
        return None


def _remember_budget(backend: Any, budget: int) -> None:
    with contextlib.suppress(TypeError):  # a backend that cannot be weakly referenced keeps no memory
        _LOWERED[backend] = budget


def _is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's out-of-memory error of an accelerator (a CPU allocation failure is not).

    torch is only consulted if it is already imported: otherwise nothing could have raised its error.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return oom is not None and isinstance(exc, oom)


def _release_accelerator_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def resolve_batch_tokens(backend: Any, batch_tokens: int | str, mode: str, costs: Sequence[int],
                         max_batch_size: int) -> int:
    """The padded-token budget a run starts with: ``batch_tokens`` itself, or for ``auto`` the backend's estimate
    (``auto_batch_tokens(mode, costs, max_batch_size)``, ``None`` for none) else :data:`DEFAULT_BATCH_TOKENS`;
    never above a budget an earlier run on this backend had to lower to."""
    if batch_tokens == "auto":
        estimate = getattr(backend, "auto_batch_tokens", None)
        chosen = estimate(mode, costs, max_batch_size) if callable(estimate) and costs else None
        budget, how = (DEFAULT_BATCH_TOKENS, "default") if chosen is None else (int(chosen), "estimated")
    elif isinstance(batch_tokens, int) and not isinstance(batch_tokens, bool) and batch_tokens >= 1:
        budget, how = batch_tokens, "given"
    else:
        raise ConfigError(f"batch_tokens must be a positive number of tokens or 'auto', not {batch_tokens!r}")
    lowered = lowered_budget(backend)
    if lowered is not None and lowered < budget:
        budget, how = lowered, "lowered earlier after running out of GPU memory"
    if batch_tokens == "auto":
        log.info("scoring with batch_tokens=%d (auto: %s, backend %s)", budget, how, getattr(backend, "name", "?"))
    return budget


def _frame(rows: list[dict[str, Any]], mode: str) -> pd.DataFrame:
    columns = COLUMNS + (["scores_norm"] if mode == "option" else [])
    frame = pd.DataFrame(rows, columns=columns)
    if mode == "generate":
        frame["pred"] = frame["pred"].astype("Int64")
        if frame["correct"].notna().all():
            frame["correct"] = frame["correct"].astype(bool)
    return frame


def _run_or_none(runner: BatchRunner, batch: Sequence[_Prepared]) -> list[dict[str, Any]] | None:
    """The batch's rows, or ``None`` when it ran out of accelerator memory (any other error propagates).

    The error is dropped before the caller retries: its traceback holds the failed pass's tensors.
    """
    try:
        return runner.run(batch)
    except Exception as exc:
        if not _is_out_of_memory(exc):
            raise
    return None


def _lower(backend: Any, batch: Sequence[_Prepared], budget: int) -> int:
    """Half the padded tokens of the batch that ran out of memory (so it splits), remembered for the backend.

    A batch of one question cannot be split: that is a :class:`ConfigError` naming its length.
    """
    _release_accelerator_memory()
    padded = len(batch) * max(p.cost for p in batch)
    if len(batch) == 1:
        item = batch[0]
        raise ConfigError(f"batch_tokens: question '{item.item.id}' alone ({item.cost} tokens) does not fit in the "
                          f"GPU's free memory (batch budget {budget}); free GPU memory, load the model quantized or "
                          "in a smaller dtype, or use a shorter template")
    lowered = max(1, min(budget, padded) // 2)
    _remember_budget(backend, lowered)
    log.warning("a batch of %d questions (%d padded tokens) ran out of GPU memory: scoring it again with "
                "batch_tokens=%d, kept for the rest of the run", len(batch), padded, lowered)
    return lowered


def _chat_for(backend: ScoringBackend, chat: bool | ChatFormat | None, mode: str) -> ChatFormat | None:
    """The chat format scoring uses (``None``: none), checked against what the backend can do before any work."""
    if chat is None or chat is False:
        return None
    fmt = chat if isinstance(chat, ChatFormat) else ChatFormat()
    if backend.tokenizer is not None:
        return fmt
    if not getattr(backend, "chat_api", False):
        raise ConfigError(f"chat: backend '{backend.name}' has no local tokenizer (its chat template) and no chat API; "
                          "use chat: false")
    if mode != "generate":
        raise ConfigError(f"chat: backend '{backend.name}' answers through a chat API, which gives no log-likelihoods "
                          f"of a prompt, so {mode} mode cannot be scored under chat; use mode: generate or chat: false")
    return fmt


def score_items(
    model: Any,
    items: Sequence[MCQItem | QAItem],
    *,
    mode: Mode = "letter",
    template: str | MCQTemplate = "paper",
    permute_seed: int | None = None,
    batch_tokens: int | Literal["auto"] = "auto",
    max_batch_size: int = 64,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    option_score: Literal["norm", "sum"] = "norm",
    stop_strings: Sequence[str] | None = None,
    chat: bool | ChatFormat | None = False,
    output: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Score ``items`` with ``model`` and return one row per item, in input order.

    ``model`` is a :class:`~medtune.scoring.backends.ScoringBackend`, a :class:`~medtune.models.LoadedModel`
    (scored by the transformers backend), or a model spec such as ``hf:PATH``, ``openai:http://HOST:PORT/v1``
    (created with :func:`~medtune.scoring.backends.load_backend` on its defaults). Rows are described in the module
    docstring and docs/ARTIFACTS.md. ``batch_tokens`` caps padded tokens per batch (rows × longest row;
    in option mode a question's prompt plus all its options); ``auto`` picks it for the device, and a batch that
    runs out of GPU memory is split (see the module docstring). With ``output`` the rows stream to a part
    file batch by batch and a rerun with the same settings resumes; the final file (Parquet, or JSON lines
    for ``.jsonl``) is written atomically. ``chat`` (``True`` or a :class:`~medtune.chat_format.ChatFormat` with a
    system prompt) wraps each prompt in the tokenizer's chat template exactly as training does
    (:mod:`medtune.chat_format`); a backend without a local tokenizer needs a chat API (``chat_api``) and generate
    mode.
    """
    if mode not in MODES:
        raise InputError(f"unknown scoring mode '{mode}' (use {', '.join(MODES)})")
    if option_score not in ("norm", "sum"):
        raise InputError(f"unknown option_score '{option_score}' (use norm or sum)")
    backend = as_backend(model)
    if mode not in backend.MODES:
        raise InputError(f"backend '{backend.name}' cannot score in {mode} mode (it supports "
                         f"{', '.join(backend.MODES)})")
    items = list(items)
    _check_items(items, mode)
    tpl = get_template(template)
    chat_fmt = _chat_for(backend, chat, mode)
    runner = BatchRunner(backend, mode, max_new_tokens, option_score, stop_strings)
    if mode == "letter":
        _check_letters(backend, tpl, items, chat_fmt)

    store = None
    if output is not None:
        settings = {"mode": mode, "template": tpl.name, "permute_seed": permute_seed,
                    "option_score": option_score if mode == "option" else None,
                    "max_new_tokens": max_new_tokens if mode == "generate" else None, "chat": chat_fmt is not None,
                    "model": str(backend.spec)}
        if chat_fmt is not None and chat_fmt.system_prompt:
            settings["system_prompt"] = chat_fmt.system_prompt
        store = ScoredRowStore(output, settings)
    done = store.done() if store else set()
    todo_items = [it for it in items if it.id not in done]

    prepared = _prepare(todo_items, backend.tokenizer, mode, tpl, permute_seed, chat_fmt)
    rows_by_id: dict[str, dict[str, Any]] = dict(store.rows) if store else {}
    if prepared:
        costs = [p.cost for p in prepared]
        budget = resolve_batch_tokens(backend, batch_tokens, mode, costs, max_batch_size)
        order = length_order(costs)
        from tqdm.auto import tqdm

        with tqdm(total=len(items), initial=len(items) - len(prepared), disable=not progress,
                  desc=f"scoring ({mode})", unit="q") as bar:
            start = 0
            while start < len(order):
                batch_idx = next_batch(costs, order, start, budget, max_batch_size)
                batch = [prepared[i] for i in batch_idx]
                rows = _run_or_none(runner, batch)
                if rows is None:  # out of GPU memory: the same questions again, in smaller batches
                    budget = _lower(backend, batch, budget)
                    continue
                start += len(batch_idx)
                if store:
                    store.append(rows)
                for r in rows:
                    rows_by_id[r["id"]] = r
                bar.update(len(rows))
    frame = _frame([rows_by_id[it.id] for it in items], mode)
    if store:
        store.finish(frame)
    return frame
