"""The transformers backend's log-likelihoods batched across contexts equal the one-context-at-a-time path.

A tiny real Llama (random weights) scores real MedQA text. ``context_sharing="per_context"`` is the reference
(a context's KV cache shared by its continuations, one context at a time); the batched paths (``always``:
contexts batched with their caches shared, ``never``: every pair as one full sequence, ``auto``: the rule) must
give the same summed log-probabilities (to 1e-4) and token counts, in the input order.
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtune.models import LoadedModel
from medtune.scoring.hf import HFBackend, flat_logliks, shared_logliks
from medtune.scoring.tokens import token_cache

BATCHED = ("always", "never", "auto")
TOL = 1e-4


def _cut(text: str, words: int) -> str:
    return " ".join(text.split()[:words])


@pytest.fixture(scope="module")
def distinct(five_option_items) -> list[tuple[str, str]]:
    """Pairs with their own contexts and multi-token answers of different lengths (an item's training loss): the
    answer followed by its explanation, cut to 1-6 words."""
    return [(f"Case {i}. " + _cut(it.question, 12 + 3 * (i % 7)),
             " " + _cut(f"{it.options[it.answer]}. {it.explanation}", 1 + i % 6))
            for i, it in enumerate(five_option_items[:24])]


@pytest.fixture(scope="module")
def options(five_option_items) -> list[tuple[str, str]]:
    """Four-option questions: each context has several continuations (option mode), each of several tokens (a
    full stop after the option text: an invented name alone can be one token of the tiny vocabulary)."""
    return [(_cut(it.question, 20), " " + _cut(o, 4) + ".") for it in five_option_items[30:38] for o in it.options[:4]]


def _check(loaded: LoadedModel, pairs, **kwargs) -> list[tuple[float, int]]:
    """Every batched mode against the per-context reference; returns the reference."""
    ref = HFBackend(loaded, context_sharing="per_context").loglikelihood(pairs, **kwargs)
    for mode in BATCHED:
        got = HFBackend(loaded, context_sharing=mode).loglikelihood(pairs, **kwargs)
        assert [n for _, n in got] == [n for _, n in ref], mode
        diff = max(abs(a - b) for (a, _), (b, _) in zip(got, ref, strict=True))
        assert diff <= TOL, (mode, diff)
    return ref


def test_distinct_contexts_with_multi_token_continuations_of_different_lengths(tiny, distinct):
    ref = _check(tiny, distinct)
    assert len({n for _, n in ref}) >= 4  # continuations really differ in length
    assert all(v < 0 for v, _ in ref)


def test_groups_with_several_continuations(tiny, options):
    ref = _check(tiny, options)
    assert max(n for _, n in ref) > 1


def test_mixed_single_and_multi_token_continuations(tiny, distinct, options, five_option_items):
    letters = [(_cut(five_option_items[50].question, 15), f" {x}") for x in "ABCD"]  # one-token continuations
    cache = token_cache(tiny.tokenizer)
    ctx = _cut(five_option_items[51].question, 18)
    mixed_group = [(ctx, " A"), (ctx, " " + five_option_items[51].options[0]), (ctx, " B")]
    lone_letter = [(_cut(five_option_items[52].question, 9), " C")]
    pairs = distinct[:5] + letters + mixed_group + options[:8] + lone_letter
    assert {len(cache.split(c, t)[1]) for c, t in mixed_group} - {1}  # the group mixes 1 and more tokens
    _check(tiny, pairs)
    _check(tiny, pairs, single_token_fast_path=False)


def test_a_batch_of_one(tiny, distinct, options):
    _check(tiny, distinct[:1])
    _check(tiny, options[:1])


def test_results_come_back_in_input_order(tiny, distinct, options):
    pairs = distinct[:10] + options[:12]
    backend = HFBackend(tiny)
    ref = backend.loglikelihood(pairs)
    order = list(range(len(pairs)))
    random.Random(0).shuffle(order)
    got = backend.loglikelihood([pairs[i] for i in order])
    for pos, i in enumerate(order):
        assert got[pos][1] == ref[i][1]
        assert abs(got[pos][0] - ref[i][0]) <= TOL


def test_small_passes_give_the_same_values(tiny, distinct, options):
    """A ``max_batch_tokens`` below one row splits every call into many passes, with the same values."""
    pairs = distinct[:8] + options[:8]
    ref = HFBackend(tiny, context_sharing="per_context").loglikelihood(pairs)
    for mode in BATCHED:
        got = HFBackend(tiny, context_sharing=mode, max_batch_tokens=40).loglikelihood(pairs)
        assert max(abs(a - b) for (a, _), (b, _) in zip(got, ref, strict=True)) <= TOL


def _forward_calls(loaded: LoadedModel, backend: HFBackend, pairs) -> int:
    calls = []
    handle = loaded.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        backend.loglikelihood(pairs)
    finally:
        handle.remove()
    return len(calls)


def test_batched_paths_run_few_forward_passes(tiny, distinct, options):
    """What makes them fast: distinct contexts cost one pass, not two per context; options two, not two per
    question."""
    assert _forward_calls(tiny, HFBackend(tiny, context_sharing="per_context"), distinct) == 2 * len(distinct)
    assert _forward_calls(tiny, HFBackend(tiny), distinct) == 1
    assert _forward_calls(tiny, HFBackend(tiny), options) == 2
    assert _forward_calls(tiny, HFBackend(tiny, context_sharing="never"), options) == 1


def test_flat_equals_the_definition(tiny, distinct):
    """Independently of the backend: a pair's value is the sum of log-softmax(full logits) at its tokens."""
    cache = token_cache(tiny.tokenizer)
    rows = [cache.split(c, t) for c, t in distinct[:6]]
    got = flat_logliks(tiny.model, rows, tiny.tokenizer.pad_token_id)
    with torch.inference_mode():
        for (ctx, cont), (value, n) in zip(rows, got, strict=True):
            ids = torch.tensor([ctx + cont])
            logp = torch.log_softmax(tiny.model(input_ids=ids).logits[0].float(), dim=-1)
            want = sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))
            assert n == len(cont)
            assert abs(value - want) <= TOL


def test_shared_falls_back_for_a_sliding_window_cache(five_option_items):
    """A sliding-window cache counts padding slots: such a model is scored one context at a time, still right."""
    from transformers import MistralConfig, MistralForCausalLM

    from medtune.models import train_tokenizer

    tok = train_tokenizer([it.question for it in five_option_items[:50]], vocab_size=512)
    config = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=2, sliding_window=8,
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    loaded = LoadedModel(MistralForCausalLM(config).eval(), tok, "mistral-tiny", torch.float32, "cpu")
    pairs = [(_cut(it.question, 6 + 2 * k), " " + _cut(o, 3)) for k, it in enumerate(five_option_items[:3])
             for o in it.options[:3]]
    _check(loaded, pairs)
    cache = token_cache(tok)
    groups = [(cache.split(c, pairs[3 * g][1])[0], [cache.split(c, t)[1] for c, t in pairs[3 * g:3 * g + 3]])
              for g, c in enumerate(p[0] for p in pairs[::3])]
    assert [len(vs) for vs in shared_logliks(loaded.model, groups, tok.pad_token_id)] == [3, 3, 3]


def test_unknown_context_sharing_is_refused(tiny):
    with pytest.raises(ValueError, match="context_sharing"):
        HFBackend(tiny, context_sharing="sometimes")  # type: ignore[arg-type]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 11)), min_size=1, max_size=14))
def test_any_pair_set_agrees_with_the_per_context_path(tiny, five_option_items, picks):
    """Random pair sets from 6 contexts × 12 continuations (repeats, shared contexts, 1-token letters included)."""
    contexts = [_cut(it.question, 5 + 4 * i) for i, it in enumerate(five_option_items[60:66])]
    texts = five_option_items[70].options + five_option_items[71].options
    conts = ([" A", " B", *(" " + _cut(o, 1 + k % 5) for k, o in enumerate(texts))] * 2)[:12]
    _check(tiny, [(contexts[c], conts[t]) for c, t in picks])
