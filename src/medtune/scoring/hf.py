"""The transformers backend (``hf:``): batched forward passes for letter, option and generate scoring.

The functions take already-tokenized rows and return plain Python numbers; :class:`HFBackend` puts them
behind the :class:`~medtune.scoring.backends.ScoringBackend` interface, so the engine (batching,
permutations, storage) stays independent of the backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


def _pad_right(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


MIN_SHARED_PREFIX = 8  # below this, a separate prefix pass costs more than it saves


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all rows share, leaving at least one own token per row."""
    first = rows[0]
    n = min(len(r) for r in rows) - 1
    for r in rows[1:]:
        k = 0
        while k < n and r[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def pad_id_of(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    return int(pad) if pad is not None else 0


@torch.inference_mode()
def last_token_logprobs(model, rows: Sequence[Sequence[int]], pad_id: int, share_prefix: bool = False
                        ) -> torch.Tensor:
    """Log-softmax over the vocabulary at each row's last real token: ``(batch, vocab)`` in fp32.

    Rows are right-padded, so real tokens never see padding and positions need no correction. With
    ``share_prefix`` a token prefix shared by all rows (the template's instruction) runs once and is reused
    from the KV cache; measured on SmolLM2 / 2 CPU threads this was slower (614 vs 675 tok/s without: the cache
    concatenation and the explicit mask cost more than the ~35 saved tokens per row), so it is off by default. Only
    the last real position of each row goes through the vocabulary projection (``logits_to_keep`` with a
    per-row position, supported by transformers 5 models that use ``slice_logits_to_keep``). Models that
    do not accept it fall back to the full logits, gathered afterwards.
    """
    device = _model_device(model)
    prefix = common_prefix_length(rows)
    cache = None
    if share_prefix and prefix >= MIN_SHARED_PREFIX and len(rows) > 1:
        # The template's instruction is the same for every question: run it once per batch and let every
        # row attend to its cached keys/values instead of recomputing them per row.
        shared = torch.tensor([list(rows[0][:prefix])], dtype=torch.long, device=device)
        try:
            cache = model(input_ids=shared, use_cache=True, logits_to_keep=1).past_key_values
            cache.batch_repeat_interleave(len(rows))
        except (AttributeError, TypeError):
            cache, prefix = None, 0
    else:
        prefix = 0
    ids, mask = _pad_right([r[prefix:] for r in rows], pad_id, device)
    last = mask.sum(dim=1) - 1
    if cache is not None:
        full_mask = torch.cat([torch.ones((len(rows), prefix), dtype=mask.dtype, device=device), mask], dim=1)
        logits = model(input_ids=ids, attention_mask=full_mask, past_key_values=cache, use_cache=True,
                       logits_to_keep=last[:, None]).logits
        if logits.shape[1] == 1:
            return torch.log_softmax(logits[:, 0, :].float(), dim=-1)
        return torch.log_softmax(logits[torch.arange(len(rows), device=logits.device), last].float(), dim=-1)
    try:
        out = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=last[:, None])
        logits = out.logits
        if logits.shape[1] != 1:
            raise TypeError("logits_to_keep ignored")
        logits = logits[:, 0, :]
    except TypeError:
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        logits = logits[torch.arange(len(rows), device=logits.device), last]
    return torch.log_softmax(logits.float(), dim=-1)


@torch.inference_mode()
def continuation_logliks(model, context: Sequence[int], continuations: Sequence[Sequence[int]], pad_id: int
                         ) -> list[tuple[float, int]]:
    """Sum of log-probabilities of each continuation after one shared context, and its token count.

    The context runs once; its KV cache is repeated for the continuations, which run together in one
    right-padded batch (as lm-evaluation-harness computes the same quantity, but without re-running the
    question for every option).
    """
    device = _model_device(model)
    ctx = torch.tensor([list(context)], dtype=torch.long, device=device)
    out = model(input_ids=ctx, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    cache = out.past_key_values
    n = len(continuations)
    cache.batch_repeat_interleave(n)
    ids, mask = _pad_right(continuations, pad_id, device)
    full_mask = torch.cat([torch.ones((n, ctx.shape[1]), dtype=mask.dtype, device=device), mask], dim=1)
    if ids.shape[1] > 1:
        logits = model(input_ids=ids[:, :-1], attention_mask=full_mask[:, :-1], past_key_values=cache,
                       use_cache=True).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
    results = []
    for i, cont in enumerate(continuations):
        total = first[cont[0]].item()
        if len(cont) > 1:
            targets = torch.tensor(cont[1:], device=device)
            total += logp[i, torch.arange(len(cont) - 1, device=device), targets].sum().item()
        results.append((total, len(cont)))
    return results


@torch.inference_mode()
def greedy_generate(model, tokenizer, rows: Sequence[Sequence[int]], max_new_tokens: int,
                    stop_strings: Sequence[str] | None = None) -> list[str]:
    """Greedy continuations of left-padded prompts (``generate`` derives positions from the mask)."""
    device = _model_device(model)
    pad_id = pad_id_of(tokenizer)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens, "do_sample": False, "num_beams": 1, "pad_token_id": pad_id,
        "temperature": None, "top_p": None, "top_k": None,
    }
    if stop_strings:
        kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
    new = out[:, width:]
    return [tokenizer.decode(row, skip_special_tokens=True) for row in new]


class HFBackend:
    """A loaded transformers model as a :class:`~medtune.scoring.backends.ScoringBackend`.

    ``loglikelihood`` groups its pairs by context: when every continuation of a context is one token (the
    letters " A", " B", ...), the context runs once and the continuations are read off the log-softmax at its
    last position — exactly their log-likelihood, in one forward pass for a whole batch of questions.
    Otherwise the context runs once and its KV cache is shared by the continuations.
    """

    name = "hf"
    MODES: ClassVar[dict[str, str]] = {
        "letter": "log-softmax over the vocabulary at the answer position, read at the letters' single tokens "
                  "(one forward pass per batch of questions)",
        "option": "summed log-probabilities of the option's tokens; the question's KV cache is shared by its "
                  "options",
        "generate": "greedy decoding with transformers' generate (left-padded batches)",
    }

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.spec = str(loaded.spec)
        self.pad_id = pad_id_of(self.tokenizer)
        self.model.eval()

    @property
    def dtype(self) -> Any:
        return self.loaded.dtype

    def loglikelihood(self, pairs: Sequence[tuple[str, str]], *, single_token_fast_path: bool = True
                      ) -> list[tuple[float, int]]:
        """Per pair: summed log-probability of the continuation after the context, and its token count.

        One call runs one batch: callers size it (``score_items`` does, by ``batch_tokens``).
        ``single_token_fast_path=False`` scores single-token continuations the general way (for checks).
        """
        from medtune.scoring.tokens import token_cache

        cache = token_cache(self.tokenizer)
        groups: dict[str, list[int]] = {}
        for k, (context, _) in enumerate(pairs):
            groups.setdefault(context, []).append(k)
        results: list[tuple[float, int] | None] = [None] * len(pairs)
        single: list[tuple[list[int], list[int], list[int]]] = []  # (context ids, pair indices, token ids)
        for context, members in groups.items():
            split = [cache.split(context, pairs[k][1]) for k in members]
            ctx = split[0][0]
            conts = [c for _, c in split]
            if single_token_fast_path and all(len(c) == 1 for c in conts):
                single.append((ctx, members, [c[0] for c in conts]))
                continue
            for k, res in zip(members, continuation_logliks(self.model, ctx, conts, self.pad_id), strict=True):
                results[k] = res
        if single:
            logp = last_token_logprobs(self.model, [ctx for ctx, _, _ in single], self.pad_id)
            for row, (_, members, tokens) in enumerate(single):
                values = logp[row, tokens].tolist()
                for k, v in zip(members, values, strict=True):
                    results[k] = (float(v), 1)
        done = [r for r in results if r is not None]
        assert len(done) == len(pairs)
        return done

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] | None = None
                 ) -> list[str]:
        from medtune.scoring.tokens import token_cache

        cache = token_cache(self.tokenizer)
        return greedy_generate(self.model, self.tokenizer, [cache.encode(p) for p in prompts], max_new_tokens, stop)
