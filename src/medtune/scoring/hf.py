"""The transformers backend (``hf:``): batched forward passes for letter, option and generate scoring.

The functions take already-tokenized rows and return plain Python numbers; :class:`HFBackend` puts them
behind the :class:`~medtune.scoring.backends.ScoringBackend` interface, so the engine (batching,
permutations, storage) stays independent of the backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

from medtune.scoring.batching import PassMemory, estimate_batch_tokens, length_batches


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


def auto_dtype(device: str = "auto") -> str:
    """What ``dtype: auto`` loads a scoring model in: bf16 on a GPU that computes it natively, fp16 on an older GPU.

    Only compute capability 8 and later (Ampere, Hopper...) have bf16 matrix units. ``torch.cuda.is_bf16_supported()``
    also says yes on a T4 or V100, where bf16 is emulated and several times slower than fp16, so the capability
    decides. Elsewhere ``auto`` is returned unchanged (fp32 on a CPU, by :func:`medtune.models.resolve_dtype`).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return "auto"
    if torch.version.hip:  # ROCm GPUs medtune runs on (MI200 and later) compute bf16 natively
        return "bf16"
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    return "bf16" if major >= 8 else "fp16"


def pass_memory(config: Any, dtype: torch.dtype, mode: str, longest: int = 0) -> PassMemory:
    """Bytes a forward pass of a model with this ``config`` holds per padded token and per kept logits row.

    Per token: one layer's activations (attention projections and the MLP's gate/up/product) and the keys and
    values — of one layer in letter mode (no cache is kept), of every layer where a KV cache is (option,
    generate); eager attention adds its ``heads × longest`` score matrix. Per row: the logits row, its fp32 copy
    and the fp32 log-softmax. See :func:`medtune.scoring.batching.estimate_batch_tokens`.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    layers = int(getattr(text, "num_hidden_layers", 1) or 1)
    heads = int(getattr(text, "num_attention_heads", 1) or 1)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or (hidden // heads if heads else 0))
    intermediate = int(getattr(text, "intermediate_size", None) or 4 * hidden)
    vocab = int(getattr(text, "vocab_size", 0) or 0)
    size = torch.empty((), dtype=dtype).element_size()
    kv = 2 * kv_heads * head_dim * (1 if mode == "letter" else layers)
    per_token = size * (6 * hidden + 3 * intermediate + kv)
    if getattr(text, "_attn_implementation", None) == "eager":
        per_token += heads * max(longest, 1) * (2 * size + 4)
    return PassMemory(per_token=per_token, per_row=vocab * (size + 8))


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


LSE_CHUNK = 2048  # kept positions per fp32 logsumexp: bounds the fp32 copy of the logits to a chunk


def _kept_logits(model, keep: torch.Tensor, **inputs: Any) -> tuple[torch.Tensor, Any]:
    """Logits at the ``True`` positions of ``keep``, flattened row-major to ``(keep.sum(), vocab)``, and the output.

    A boolean ``logits_to_keep`` (transformers 5's ``slice_logits_to_keep``) sends only those positions through
    the vocabulary projection. A model that ignores it returns every position, indexed here; one that refuses it
    runs again without it (it refuses before running, so a cache in ``inputs`` is not extended twice).
    """
    try:
        out = model(**inputs, logits_to_keep=keep)
    except TypeError:
        out = model(**inputs)
    logits = out.logits
    if logits.ndim == 2 and logits.shape[0] == int(keep.sum()):
        return logits, out
    if logits.ndim == 3 and tuple(logits.shape[:2]) == tuple(keep.shape):
        return logits[keep], out
    raise RuntimeError(f"model returned logits of shape {tuple(logits.shape)} for inputs of shape {tuple(keep.shape)}")


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """fp32 log-probability of each row's target: its logit minus the row's logsumexp, without a log-softmax.

    Only the gathered logit and one logsumexp per row are kept; the fp32 copy of the logits exists for one chunk
    of rows at a time.
    """
    out = torch.empty(len(targets), dtype=torch.float32, device=logits.device)
    for s in range(0, len(targets), LSE_CHUNK):
        chunk = logits[s:s + LSE_CHUNK].float()
        picked = chunk.gather(1, targets[s:s + LSE_CHUNK, None])[:, 0]
        out[s:s + LSE_CHUNK] = picked - torch.logsumexp(chunk, dim=-1)
    return out


@torch.inference_mode()
def _flat_pass(model, rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> list[float]:
    """One right-padded forward pass over ``context + continuation`` rows; each row's summed continuation log-prob.

    The logits at positions ``len(ctx) - 1 .. len(ctx) + len(cont) - 2`` predict the continuation's tokens.
    Right padding under causal attention leaves real tokens blind to the padding, and positions start at 0 in
    every row, so each row computes what it would alone.
    """
    device = _model_device(model)
    ids, mask = _pad_right([[*ctx, *cont] for ctx, cont in rows], pad_id, device)
    keep = torch.zeros(ids.shape, dtype=torch.bool)
    for i, (ctx, cont) in enumerate(rows):
        keep[i, len(ctx) - 1: len(ctx) + len(cont) - 1] = True
    keep = keep.to(device)
    targets = torch.tensor([t for _, cont in rows for t in cont], dtype=torch.long, device=device)
    logits, _ = _kept_logits(model, keep, input_ids=ids, attention_mask=mask, use_cache=False)
    logp = _token_logprobs(logits, targets)
    return _row_sums(logp, [len(cont) for _, cont in rows])


def _row_sums(logp: torch.Tensor, counts: Sequence[int], start: torch.Tensor | None = None) -> list[float]:
    """Sums of consecutive runs of ``counts`` values of ``logp`` (plus ``start`` per row), in float64 on the CPU.

    The per-token values are fp32 either way; summing in float64 keeps long continuations from adding rounding
    of their own (and the CPU has float64 whatever the accelerator).
    """
    sums = torch.zeros(len(counts), dtype=torch.float64) if start is None else start.detach().cpu().double()
    owner = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(list(counts), dtype=torch.long))
    return sums.index_add_(0, owner, logp.detach().cpu().double()).tolist()


def flat_logliks(model, rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
                 max_batch_tokens: int = 8192) -> list[tuple[float, int]]:
    """Summed log-probability and token count of each ``(context ids, continuation ids)`` row, batched across rows.

    Unlike :func:`continuation_logliks` (one context, its KV cache shared by its continuations, two passes of
    batch 1), every row runs as one full sequence; rows are sorted by length and packed into passes of at most
    ``max_batch_tokens`` padded tokens, so many distinct contexts cost a few forward passes instead of two each.
    Results come back in the order of ``rows``.
    """
    if any(len(ctx) == 0 or len(cont) == 0 for ctx, cont in rows):
        raise ValueError("flat_logliks needs a non-empty context and continuation in every row")
    results: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    lengths = [len(ctx) + len(cont) for ctx, cont in rows]
    for batch in length_batches(lengths, max_batch_tokens):
        sums = _flat_pass(model, [rows[i] for i in batch], pad_id)
        for i, v in zip(batch, sums, strict=True):
            results[i] = (float(v), len(rows[i][1]))
    return results


def _plain_attention_cache(cache: Any) -> bool:
    """Whether every layer of ``cache`` is a plain full-attention KV cache (``DynamicLayer``, no window, no state).

    Only then may the continuations of a right-padded context batch skip the padding by the mask alone: a sliding
    window counts the padding slots, and a recurrent state has absorbed the padding tokens.
    """
    from transformers.cache_utils import DynamicCache, DynamicLayer

    layers = getattr(cache, "layers", None)
    return type(cache) is DynamicCache and bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


@torch.inference_mode()
def _shared_pass(model, groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], pad_id: int
                 ) -> list[list[float]] | None:
    """Contexts batched in one pass, then all their continuations in one pass over the contexts' KV cache.

    Contexts are right-padded; each continuation row gets its context's cache rows, an attention mask that hides
    the padding between its context's end and its own tokens, and positions that continue its context's, so every
    row computes what :func:`continuation_logliks` computes for it alone. ``None`` when the model's cache is not
    a plain attention cache (see :func:`_plain_attention_cache`).
    """
    device = _model_device(model)
    ctx_ids, ctx_mask = _pad_right([ctx for ctx, _ in groups], pad_id, device)
    lengths = ctx_mask.sum(dim=1)
    last = torch.zeros(ctx_ids.shape, dtype=torch.bool, device=device)
    last[torch.arange(len(groups), device=device), lengths - 1] = True
    first, out = _kept_logits(model, last, input_ids=ctx_ids, attention_mask=ctx_mask, use_cache=True)
    cache = out.past_key_values
    if not _plain_attention_cache(cache):
        return None
    conts = [cont for _, cs in groups for cont in cs]
    owner = torch.tensor([g for g, (_, cs) in enumerate(groups) for _ in cs], dtype=torch.long, device=device)
    firsts = torch.tensor([cont[0] for cont in conts], dtype=torch.long, device=device)
    logp = _token_logprobs(first[owner], firsts)
    width = max(len(c) for c in conts)
    if width > 1:
        cache.batch_select_indices(owner)
        ids, mask = _pad_right(conts, pad_id, device)
        keep = mask[:, 1:].bool()
        positions = lengths[owner][:, None] + torch.arange(width - 1, device=device)[None, :]
        full_mask = torch.cat([ctx_mask[owner], mask[:, :-1]], dim=1)
        logits, _ = _kept_logits(model, keep, input_ids=ids[:, :-1], attention_mask=full_mask,
                                 position_ids=positions, past_key_values=cache, use_cache=True)
        targets = torch.tensor([t for c in conts for t in c[1:]], dtype=torch.long, device=device)
        values = _row_sums(_token_logprobs(logits, targets), [len(c) - 1 for c in conts], start=logp)
    else:
        values = logp.double().tolist()
    out_rows, start = [], 0
    for _, cs in groups:
        out_rows.append(values[start:start + len(cs)])
        start += len(cs)
    return out_rows


def shared_logliks(model, groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], pad_id: int,
                   max_batch_tokens: int = 8192) -> list[list[tuple[float, int]]]:
    """Per ``(context ids, [continuation ids, ...])`` group: each continuation's summed log-prob and token count.

    Like :func:`continuation_logliks` (a context runs once, its continuations reuse its KV cache), but batched
    across contexts: groups are sorted by context length and packed so that continuation rows × (longest context
    + longest continuation) stays within ``max_batch_tokens``; each pack costs two forward passes. Models whose
    cache cannot skip padding by the mask (sliding windows, recurrent state) fall back to one context at a time.
    """
    order = sorted(range(len(groups)), key=lambda g: (-len(groups[g][0]), g))
    results: list[list[tuple[float, int]]] = [[] for _ in groups]
    pack: list[int] = []
    rows = widest_ctx = widest_cont = 0
    batched = True

    def flush() -> None:
        nonlocal batched
        values = _shared_pass(model, [groups[g] for g in pack], pad_id) if batched else None
        if values is None:
            batched = False
            for g in pack:
                results[g] = continuation_logliks(model, groups[g][0], groups[g][1], pad_id)
            return
        for g, vs in zip(pack, values, strict=True):
            results[g] = [(float(v), len(c)) for v, c in zip(vs, groups[g][1], strict=True)]

    for g in order:
        ctx, conts = groups[g]
        n_rows, ctx_w, cont_w = rows + len(conts), max(widest_ctx, len(ctx)), max(widest_cont, *map(len, conts))
        if pack and n_rows * (ctx_w + cont_w) > max_batch_tokens:
            flush()
            pack, n_rows, ctx_w, cont_w = [], len(conts), len(ctx), max(map(len, conts))
        pack.append(g)
        rows, widest_ctx, widest_cont = n_rows, ctx_w, cont_w
    if pack:
        flush()
    return results


ContextSharing = Literal["auto", "always", "never", "per_context"]
CONTEXT_SHARING: tuple[str, ...] = ("auto", "always", "never", "per_context")


@torch.inference_mode()
def greedy_generate(model, tokenizer, rows: Sequence[Sequence[int]], max_new_tokens: int,
                    stop_strings: Sequence[str] | None = None, logits_processor: Any = None) -> list[str]:
    """Greedy continuations of left-padded prompts (``generate`` derives positions from the mask).

    ``logits_processor`` (transformers') runs last on each step's scores before the argmax: sampling plugs in here.
    """
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
    if logits_processor is not None:
        kwargs["logits_processor"] = logits_processor
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
    new = out[:, width:]
    return [tokenizer.decode(row, skip_special_tokens=True) for row in new]


class RowSeededSampler(LogitsProcessor):
    """Samples each row's next token with a torch generator of the row's own, then leaves only that token possible.

    Handed to greedy decoding as its last logits processor, it turns the argmax into a draw from the row's
    distribution at ``temperature`` within the nucleus ``top_p``. transformers' own sampling draws every row from one
    global generator, so a row's tokens would depend on the rows beside it; here row ``i`` uses ``seeds[i]`` only,
    so a prompt's samples are the same in any batch (up to the float rounding of padded batches, as greedy answers).
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: Any) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.temperature = float(temperature)
        self.nucleus = TopPLogitsWarper(top_p) if top_p < 1 else None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.temperature
        if self.nucleus is not None:
            logits = self.nucleus(input_ids, logits)
        probs = torch.softmax(logits, dim=-1)
        drawn = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)])
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(drawn), device=out.device), drawn] = 0.0
        return out


def sampled_generate(model, tokenizer, rows: Sequence[Sequence[int]], max_new_tokens: int,
                     stop_strings: Sequence[str] | None, seeds: Sequence[int], temperature: float,
                     top_p: float = 1.0) -> list[str]:
    """One sampled continuation per row, row ``i`` drawn with ``seeds[i]`` (:class:`RowSeededSampler`)."""
    sampler = RowSeededSampler(seeds, temperature, top_p, _model_device(model))
    return greedy_generate(model, tokenizer, rows, max_new_tokens, stop_strings,
                           logits_processor=LogitsProcessorList([sampler]))


class HFBackend:
    """A loaded transformers model as a :class:`~medtune.scoring.backends.ScoringBackend`.

    ``loglikelihood`` groups its pairs by context: when every continuation of a context is one token (the
    letters " A", " B", ...), the context runs once and the continuations are read off the log-softmax at its
    last position — exactly their log-likelihood, in one forward pass for a whole batch of questions.
    Otherwise ``context_sharing`` decides how contexts are run:

    - ``"auto"`` (the default): a context with one continuation (an item's training loss) runs flat, a context
      with several (the options of a question) shares its KV cache;
    - ``"always"``: every context shares its KV cache with its continuations, batched across contexts
      (:func:`shared_logliks`: one pass for the contexts, one for all continuations);
    - ``"never"``: every pair runs as one full sequence, all pairs batched together (:func:`flat_logliks`);
    - ``"per_context"``: one context at a time, its cache shared by its continuations (:func:`continuation_logliks`,
      two passes of batch 1 per context): the reference the batched paths are checked against.

    The batched paths pack their rows into passes of at most ``max_batch_tokens`` padded tokens. All four give
    the same values up to float rounding. Measured (``benchmarks/bench_loglik_batching.py``, fp32 on 2 CPU
    threads, random-weight Llamas, 100-token contexts): for distinct contexts flat and shared are within noise of
    each other and several times faster than one context at a time; for four 5-token options per context, shared
    beats per-context and flat (flat runs every option's context again).
    """

    name = "hf"
    MODES: ClassVar[dict[str, str]] = {
        "letter": "log-softmax over the vocabulary at the answer position, read at the letters' single tokens "
                  "(one forward pass per batch of questions)",
        "option": "summed log-probabilities of the option's tokens; the question's KV cache is shared by its "
                  "options",
        "generate": "greedy decoding with transformers' generate (left-padded batches); sampling draws each row "
                    "with a generator of its own (RowSeededSampler)",
    }

    def __init__(self, loaded: Any, *, context_sharing: ContextSharing = "auto", max_batch_tokens: int = 8192
                 ) -> None:
        if context_sharing not in CONTEXT_SHARING:
            raise ValueError(f"context_sharing must be one of {', '.join(CONTEXT_SHARING)}, not {context_sharing!r}")
        if max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be positive")
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.spec = str(loaded.spec)
        self.pad_id = pad_id_of(self.tokenizer)
        self.context_sharing: ContextSharing = context_sharing
        self.max_batch_tokens = max_batch_tokens
        self.model.eval()

    @property
    def dtype(self) -> Any:
        return self.loaded.dtype

    def _route(self, n_continuations: int) -> str:
        """``"flat"``, ``"shared"`` or ``"per_context"``: how a context with ``n_continuations`` is scored.

        ``auto`` shares a context's KV cache only when it has several continuations: a lone continuation gains
        nothing from a cache, and one full-sequence pass costs less than a context pass plus a continuation pass.
        """
        if self.context_sharing == "per_context":
            return "per_context"
        if self.context_sharing == "never" or (self.context_sharing == "auto" and n_continuations == 1):
            return "flat"
        return "shared"

    def loglikelihood(self, pairs: Sequence[tuple[str, str]], *, single_token_fast_path: bool = True
                      ) -> list[tuple[float, int]]:
        """Per pair: summed log-probability of the continuation after the context, and its token count.

        One call runs one batch: callers size it (``score_items`` does, by ``batch_tokens``); within it, the
        flat rows and the shared groups are packed into passes of at most ``max_batch_tokens`` padded tokens.
        ``single_token_fast_path=False`` scores single-token continuations the general way (for checks).
        """
        from medtune.scoring.tokens import token_cache

        cache = token_cache(self.tokenizer)
        groups: dict[str, list[int]] = {}
        for k, (context, _) in enumerate(pairs):
            groups.setdefault(context, []).append(k)
        results: list[tuple[float, int] | None] = [None] * len(pairs)
        single: list[tuple[list[int], list[int], list[int]]] = []  # (context ids, pair indices, token ids)
        flat: list[tuple[int, list[int], list[int]]] = []  # (pair index, context ids, continuation ids)
        shared: list[tuple[list[int], list[int], list[list[int]]]] = []  # (context ids, pair indices, continuations)
        for context, members in groups.items():
            split = [cache.split(context, pairs[k][1]) for k in members]
            ctx = split[0][0]
            conts = [c for _, c in split]
            route = self._route(len(members))
            if single_token_fast_path and all(len(c) == 1 for c in conts):
                single.append((ctx, members, [c[0] for c in conts]))
            elif route == "flat":
                flat += [(k, c, t) for k, (c, t) in zip(members, split, strict=True)]
            elif route == "shared":
                shared.append((ctx, members, conts))
            else:
                for k, res in zip(members, continuation_logliks(self.model, ctx, conts, self.pad_id), strict=True):
                    results[k] = res
        if flat:
            values = flat_logliks(self.model, [(c, t) for _, c, t in flat], self.pad_id, self.max_batch_tokens)
            for (k, _, _), res in zip(flat, values, strict=True):
                results[k] = res
        if shared:
            per_group = shared_logliks(self.model, [(ctx, conts) for ctx, _, conts in shared], self.pad_id,
                                       self.max_batch_tokens)
            for (_, members, _), values in zip(shared, per_group, strict=True):
                for k, res in zip(members, values, strict=True):
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

    def auto_batch_tokens(self, mode: str, lengths: Sequence[int], max_batch_size: int) -> int | None:
        """The padded-token budget ``batch_tokens: auto`` starts from: ``None`` (the scorer's CPU default) off a
        GPU; on one, the estimate from the free memory and the model's shape (:func:`pass_memory`).

        ``lengths`` are the batch costs of the questions to score (their shortest decides how many logits rows a
        batch may hold). Weights are loaded by now, so the free memory is what the passes can use.
        """
        device = _model_device(self.model)
        if device.type != "cuda" or not lengths:
            return None
        free, _ = torch.cuda.mem_get_info(device)
        dtype = getattr(self.model, "dtype", None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            dtype = torch.float32
        memory = pass_memory(self.model.config, dtype, mode, longest=max(lengths))
        return estimate_batch_tokens(free, memory, shortest=min(lengths), max_rows=max_batch_size)

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] | None = None
                 ) -> list[str]:
        from medtune.scoring.tokens import token_cache

        cache = token_cache(self.tokenizer)
        return greedy_generate(self.model, self.tokenizer, [cache.encode(p) for p in prompts], max_new_tokens, stop)

    def sample(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] | None, sampling: Any
               ) -> list[list[str]]:
        """``sampling.n`` sampled continuations per prompt (a :class:`~medtune.scoring.sampling.Sampling`), each
        drawn with its own seed (:func:`~medtune.scoring.sampling.sample_seed`), all rows in one ``generate``."""
        from medtune.scoring.sampling import sample_seed
        from medtune.scoring.tokens import token_cache

        cache = token_cache(self.tokenizer)
        rows, seeds = [], []
        for p in prompts:
            ids = cache.encode(p)
            for k in range(sampling.n):
                rows.append(ids)
                seeds.append(sample_seed(sampling.seed, p, k))
        texts = sampled_generate(self.model, self.tokenizer, rows, max_new_tokens, stop, seeds, sampling.temperature,
                                 sampling.top_p)
        return [texts[i * sampling.n:(i + 1) * sampling.n] for i in range(len(prompts))]
