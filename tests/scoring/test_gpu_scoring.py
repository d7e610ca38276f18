"""Scoring sized for the device: the batch budget (``batch_tokens: auto``), splitting a batch that runs out of GPU
memory, the precision ``auto`` loads in, and the vLLM backend's settings and one-request-per-question letter mode.

This machine has no GPU and cannot install vLLM, so the device is played by real code on the CPU where that is
faithful: a forward pre-hook on the real tiny model raises torch's out-of-memory error for batches over a size (the
same exception class CUDA raises), and the GPU's compute capability is patched where only a number is read. The
vLLM engine is a stand-in answering ``generate`` with objects shaped like vLLM's ``RequestOutput`` from the tiny
transformers model's own log-probabilities; that is acceptable only because vLLM cannot be installed here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import typer
from transformers import LlamaConfig

from medtune.errors import ConfigError
from medtune.evaluation_stage import EvalSettings, ModelRef, describe_precision, load_model
from medtune.models import LoadedModel
from medtune.prompts import mcq_prompt
from medtune.scoring import backends, score_items
from medtune.scoring.backends import reduce_scores
from medtune.scoring.batching import (
    MAX_AUTO_BATCH_TOKENS,
    MIN_AUTO_BATCH_TOKENS,
    PassMemory,
    estimate_batch_tokens,
    length_batches,
)
from medtune.scoring.engine import DEFAULT_BATCH_TOKENS, lowered_budget, resolve_batch_tokens
from medtune.scoring.hf import HFBackend, auto_dtype, pass_memory
from medtune.scoring.tokens import token_cache
from medtune.scoring.vllm_backend import (
    VLLM_SETTINGS,
    VLLMModel,
    engine_kwargs,
    next_token_logprobs,
    next_token_params,
    plan_loglikelihood,
    prompt_logprob_params,
    read_next_token,
    vllm_options,
)

GiB = 1 << 30


@pytest.fixture(scope="module")
def items(five_option_items, four_option_items):
    return five_option_items[:24] + four_option_items[:16]


def _letter_costs(loaded: LoadedModel, items) -> list[int]:
    """Each question's tokens in letter mode (its prompt's), as the scorer counts them for a batch."""
    cache = token_cache(loaded.tokenizer)
    return [len(cache.split(mcq_prompt(it, "paper"), " A")[0]) for it in items]


def _same_rows(a, b, tol: float = 1e-5) -> None:
    assert list(a["id"]) == list(b["id"])
    assert list(a["pred"]) == list(b["pred"])
    for x, y in zip(a.itertuples(), b.itertuples(), strict=True):
        assert x.scores == pytest.approx(y.scores, abs=tol)
        assert x.probs == pytest.approx(y.probs, abs=tol)


# ----------------------------------------------------------------------------------------------------------
# The budget on a CPU, and values that never depend on it


def test_auto_on_a_cpu_is_the_measured_default_and_batches_exactly_as_it(tiny, items):
    backend = HFBackend(tiny)
    assert backend.auto_batch_tokens("letter", [100, 200], 64) is None  # no GPU: the scorer's own default
    assert resolve_batch_tokens(backend, "auto", "letter", [100, 200], 64) == DEFAULT_BATCH_TOKENS == 1024
    passes = []
    handle = tiny.model.register_forward_pre_hook(lambda m, a, kw: passes.append(kw["input_ids"].shape),
                                                  with_kwargs=True)
    try:
        auto = score_items(backend, items[:24], mode="letter", progress=False)
        fixed = score_items(backend, items[:24], mode="letter", batch_tokens=1024, progress=False)
    finally:
        handle.remove()
    expected = length_batches(_letter_costs(tiny, items[:24]), 1024, 64)
    assert [s[0] for s in passes] == [len(b) for b in expected] * 2  # the same batches, run twice
    assert auto.equals(fixed)  # the same numbers to the bit


@pytest.mark.parametrize("mode", ["letter", "option"])
def test_every_budget_gives_the_same_values(tiny, items, mode):
    chosen = items[:8] if mode == "option" else items[:16] + items[-8:]
    ref = score_items(tiny, chosen, mode=mode, batch_tokens=1, progress=False)  # one question per batch
    for budget in (700, 2500, 1 << 16, "auto"):
        _same_rows(score_items(tiny, chosen, mode=mode, batch_tokens=budget, progress=False), ref, tol=1e-4)


def test_a_budget_that_is_not_a_positive_count_or_auto_is_refused(tiny, items):
    for bad in (0, -5, "big"):
        with pytest.raises(ConfigError, match="batch_tokens"):
            score_items(tiny, items[:2], batch_tokens=bad, progress=False)


# ----------------------------------------------------------------------------------------------------------
# Running out of GPU memory: split the batch, same values, remember the budget


class OutOfMemoryAbove:
    """A forward pre-hook that raises torch's out-of-memory error for a pass over more than ``limit`` tokens."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failed: list[int] = []
        self.ran: list[int] = []

    def __call__(self, module, args, kwargs):
        n = kwargs["input_ids"].numel()
        if n > self.limit:
            self.failed.append(n)
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (a pass of {n} tokens; played on the CPU)")
        self.ran.append(n)


def test_torch_exposes_the_cuda_out_of_memory_error_on_a_cpu_build():
    assert issubclass(torch.cuda.OutOfMemoryError, RuntimeError)
    assert torch.cuda.OutOfMemoryError is torch.OutOfMemoryError


@pytest.mark.parametrize("mode", ["letter", "option"])
def test_a_batch_that_runs_out_of_memory_is_scored_again_in_smaller_batches(tiny, items, mode, caplog):
    chosen = items if mode == "letter" else items[:12]
    unlimited = score_items(tiny, chosen, mode=mode, batch_tokens=1 << 16, progress=False)
    # Letter mode: a pass is the batch (rows x longest prompt). Option mode: the backend's own passes (two contexts
    # of a pack, then their options) fail until the scorer hands it one question at a time.
    longest = max(_letter_costs(tiny, chosen))
    limit = 2 * longest if mode == "letter" else longest + 1
    backend = HFBackend(tiny)
    backend.auto_batch_tokens = lambda mode, lengths, max_batch_size: 1 << 16  # a GPU's generous estimate
    hook = OutOfMemoryAbove(limit)
    handle = tiny.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with caplog.at_level(logging.WARNING, logger="medtune.scoring.engine"):
            got = score_items(backend, chosen, mode=mode, progress=False)
        assert hook.failed, "the first batches must have been too large"
        assert max(hook.ran) <= limit
        assert lowered_budget(backend) is not None and lowered_budget(backend) < 1 << 16
        if mode == "letter":  # the budget counts exactly the tokens of the pass
            assert lowered_budget(backend) <= limit
        assert "ran out of GPU memory" in caplog.text
        _same_rows(got, unlimited, tol=1e-4)
        # The lowered budget holds for the rest of the run and for the next run on this backend.
        hook.failed.clear()
        again = score_items(backend, chosen, mode=mode, progress=False)
        assert hook.failed == []
        _same_rows(again, unlimited, tol=1e-4)
    finally:
        handle.remove()


def test_a_question_too_long_to_fit_alone_is_a_config_error_naming_it(tiny, items):
    costs = _letter_costs(tiny, items)
    longest = max(range(len(items)), key=lambda i: costs[i])
    handle = tiny.model.register_forward_pre_hook(OutOfMemoryAbove(costs[longest] - 1), with_kwargs=True)
    try:
        with pytest.raises(ConfigError) as err:
            score_items(HFBackend(tiny), items, mode="letter", batch_tokens=4096, progress=False)
    finally:
        handle.remove()
    message = str(err.value)
    assert message.startswith("batch_tokens:") and "\n" not in message
    assert f"'{items[longest].id}' alone ({costs[longest]} tokens)" in message


def test_other_errors_are_not_retried(tiny, items):
    calls = []

    def fail(module, args, kwargs):
        calls.append(1)
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")  # a CPU's, not an accelerator's

    handle = tiny.model.register_forward_pre_hook(fail, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="DefaultCPUAllocator"):
            score_items(HFBackend(tiny), items, mode="letter", progress=False)
    finally:
        handle.remove()
    assert calls == [1]


# ----------------------------------------------------------------------------------------------------------
# The estimate from free memory


def llama3_8b() -> LlamaConfig:
    return LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=14336, vocab_size=128256)


def _needs(memory: PassMemory, budget: int, shortest: int, max_rows: int) -> float:
    return budget * memory.per_token + min(max_rows, budget / shortest) * memory.per_row


def test_pass_memory_counts_the_logits_row_and_the_kv_cache_where_it_is_kept():
    cfg = llama3_8b()
    letter = pass_memory(cfg, torch.bfloat16, "letter")
    option = pass_memory(cfg, torch.bfloat16, "option")
    assert letter.per_row == 128256 * (2 + 8)  # bf16 logits row + its fp32 copy + the fp32 log-softmax
    assert letter.per_token == 2 * (6 * 4096 + 3 * 14336 + 2 * 8 * 128)  # one layer's activations and K/V
    assert option.per_token - letter.per_token == 2 * 2 * 8 * 128 * 31  # every other layer's K/V, kept
    assert pass_memory(cfg, torch.float32, "letter").per_token == 2 * letter.per_token
    cfg._attn_implementation = "eager"
    assert pass_memory(cfg, torch.bfloat16, "letter", longest=900).per_token > letter.per_token


@pytest.mark.parametrize(("free_gib", "shortest", "max_rows"), [(62, 100, 64), (1.5, 100, 64), (62, 40, 4096),
                                                                (0.01, 100, 64)])
def test_the_estimate_fits_the_usable_memory(free_gib, shortest, max_rows):
    memory = pass_memory(llama3_8b(), torch.bfloat16, "letter")
    free = int(free_gib * GiB)
    budget = estimate_batch_tokens(free, memory, shortest=shortest, max_rows=max_rows)
    assert MIN_AUTO_BATCH_TOKENS <= budget <= MAX_AUTO_BATCH_TOKENS
    if MIN_AUTO_BATCH_TOKENS < budget < MAX_AUTO_BATCH_TOKENS:
        assert _needs(memory, budget, shortest, max_rows) <= 0.7 * free  # fits...
        assert _needs(memory, int(budget * 1.02) + 1, shortest, max_rows) > 0.7 * free  # ...and is not far below


def test_the_estimate_grows_with_free_memory_and_sizes_an_h100_and_a_t4_sensibly():
    memory = pass_memory(llama3_8b(), torch.bfloat16, "letter")
    budgets = [estimate_batch_tokens(int(g * GiB), memory, shortest=100, max_rows=64) for g in (0.5, 2, 8, 32, 62)]
    assert budgets == sorted(budgets) and len(set(budgets)) == len(budgets)
    assert budgets[-1] >= 64 * 900  # an H100 after the weights: a full batch of long MedQA prompts
    t4 = estimate_batch_tokens(int(1.5 * GiB), pass_memory(llama3_8b(), torch.float16, "letter"), shortest=100,
                               max_rows=64)
    assert 1024 < t4 < 64 * 900  # a T4 next to a 7B model: more than the CPU's 1024, less than a full batch


# ----------------------------------------------------------------------------------------------------------
# Precision: dtype auto


def _gpu(monkeypatch, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.version, "hip", None)


def test_auto_dtype_is_fp32_on_a_cpu():
    assert auto_dtype("auto") == "auto" and auto_dtype("cpu") == "auto"
    assert describe_precision(EvalSettings(), "hf:some/model")["dtype"] == "fp32"


@pytest.mark.parametrize(("capability", "dtype"), [((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp16"),
                                                   ((7, 0), "fp16")])
def test_auto_dtype_is_bf16_only_where_the_gpu_has_it(monkeypatch, capability, dtype):
    """A T4 (7.5) or V100 (7.0) would accept bf16 tensors (``torch.cuda.is_bf16_supported()`` says yes: emulated),
    so the compute capability decides."""
    _gpu(monkeypatch, capability)
    assert auto_dtype("auto") == auto_dtype("cuda:0") == dtype
    assert auto_dtype("cpu") == "auto"
    assert describe_precision(EvalSettings(), "hf:some/model")["dtype"] == dtype


def test_the_hf_backend_loads_auto_in_the_gpus_precision(monkeypatch, tiny):
    _gpu(monkeypatch, (7, 5))
    seen = {}

    def fake_resolve(target, **kwargs):
        seen.update(kwargs)
        return tiny

    import medtune.models

    monkeypatch.setattr(medtune.models, "resolve_model", fake_resolve)
    backends.load_backend("hf:some/model", device="cuda")
    assert seen["dtype"] == "fp16"
    backends.load_backend("hf:some/model", dtype="fp32", device="cuda")
    assert seen["dtype"] == "fp32"  # an explicit dtype is kept


# ----------------------------------------------------------------------------------------------------------
# vLLM engine settings: from the CLI and the grid to vllm.LLM's arguments


def test_engine_kwargs_carry_the_settings_in_vllms_names():
    settings = EvalSettings(vllm_gpu_memory_utilization=0.8, vllm_max_model_len=4096, vllm_tensor_parallel_size=2,
                            vllm_enforce_eager=True)
    kwargs = engine_kwargs("org/model", dtype="bf16", quantization="4bit", **vllm_options(settings))
    assert kwargs == {"model": "org/model", "dtype": "bfloat16", "quantization": "bitsandbytes",
                      "trust_remote_code": False, "gpu_memory_utilization": 0.8, "max_model_len": 4096,
                      "tensor_parallel_size": 2, "enforce_eager": True}
    unset = engine_kwargs("m", dtype="auto", **vllm_options(EvalSettings()))
    assert unset == {"model": "m", "dtype": "auto", "quantization": None, "trust_remote_code": False,
                     "enforce_eager": False}  # vLLM's defaults for the rest
    assert engine_kwargs("m", dtype="fp16", seed=3)["seed"] == 3  # any other engine argument passes through
    with pytest.raises(ConfigError, match="logprobs_mode 'raw_logits'"):
        engine_kwargs("m", logprobs_mode="raw_logits")
    with pytest.raises(ConfigError, match="quantization 'gptq'"):
        engine_kwargs("m", quantization="gptq")


@dataclass
class Recorder:
    """A backend factory that records its arguments (the real vLLM factory needs vLLM)."""

    calls: list

    def __call__(self, target, **kwargs):
        self.calls.append((target, kwargs))
        return SimpleNamespace(name="rec", spec=target, tokenizer=None, MODES={"letter": "x"},
                               loglikelihood=lambda pairs: [], generate=lambda *a, **k: [])


def test_engine_options_reach_the_vllm_backend_only(monkeypatch):
    vllm, hf = Recorder([]), Recorder([])
    settings = {"vllm_gpu_memory_utilization": 0.75, "vllm_max_model_len": 2048}
    with backends.BACKENDS.scoped():
        backends.register_backend("vllm", vllm, replace=True)
        backends.register_backend("hf", hf, replace=True)
        load_model(ModelRef(spec="vllm:org/model"), settings)
        load_model(ModelRef(spec="hf:org/model"), settings)
    assert vllm.calls[0][0] == "org/model"
    assert vllm.calls[0][1]["engine_options"] == {"gpu_memory_utilization": 0.75, "max_model_len": 2048,
                                                  "enforce_eager": False}
    assert "engine_options" not in hf.calls[0][1]


def test_the_cli_takes_the_vllm_settings(monkeypatch, tmp_path):
    import medtune.cli.difficulty
    import medtune.evaluation_stage
    from medtune.cli import main

    seen = []

    def fake_run(settings, *args, **kwargs):
        seen.append(settings)
        raise typer.Exit(0)

    monkeypatch.setattr(medtune.evaluation_stage, "run_evaluation", fake_run)
    monkeypatch.setattr(medtune.cli.difficulty, "run_difficulty", fake_run)
    items = tmp_path / "items.parquet"
    assert main(["evaluate", "run", str(items), "-o", str(tmp_path / "out"), "-m", "vllm:org/model",
                 "--vllm-gpu-memory-utilization", "0.8", "--vllm-max-model-len", "4096",
                 "--vllm-tensor-parallel-size", "2", "--vllm-enforce-eager", "--batch-tokens", "auto"]) == 0
    assert main(["difficulty", "score", str(items), "-m", "vllm:org/model", "--vllm-gpu-memory-utilization", "0.6",
                 "--batch-tokens", "2048"]) == 0
    ev, diff = seen
    assert vllm_options(ev) == {"gpu_memory_utilization": 0.8, "max_model_len": 4096, "tensor_parallel_size": 2,
                                "enforce_eager": True}
    assert ev.batch_tokens == "auto"
    assert vllm_options(diff)["gpu_memory_utilization"] == 0.6 and diff.batch_tokens == 2048
    assert main(["evaluate", "run", str(items), "-o", str(tmp_path / "out"), "-m", "m",
                 "--vllm-gpu-memory-utilization", "1.5"]) == 2  # validated by the schema


def test_the_grid_takes_the_vllm_settings_and_refuses_unknown_keys(tmp_path):
    from medtune.experiments import config_from_dict
    from medtune.experiments.pipeline import difficulty_settings, eval_settings

    base = {"name": "x", "output_dir": str(tmp_path), "models": [{"name": "m", "spec": "vllm:org/model"}],
            "datasets": [{"source": "synthetic"}], "test_sets": [{"source": "synthetic"}],
            "strategies": ["random"], "seeds": [0]}
    cfg = config_from_dict({**base, "evaluation": {"vllm_gpu_memory_utilization": 0.85, "vllm_max_model_len": 8192,
                                                   "vllm_tensor_parallel_size": 4, "batch_tokens": "auto"},
                            "difficulty": {"sources": ["llm"], "ensemble": ["vllm:org/model"],
                                           "vllm_enforce_eager": True, "batch_tokens": 4096}})
    ev = eval_settings(cfg)
    assert vllm_options(ev) == {"gpu_memory_utilization": 0.85, "max_model_len": 8192, "tensor_parallel_size": 4,
                                "enforce_eager": False}
    diff = difficulty_settings(cfg, "llm")
    assert diff.vllm_enforce_eager is True and diff.batch_tokens == 4096
    with pytest.raises(ConfigError, match=r"evaluation\.vllm_gpu_memory: unknown key"):
        config_from_dict({**base, "evaluation": {"vllm_gpu_memory": 0.5}})
    assert set(VLLM_SETTINGS) <= set(EvalSettings.model_fields)


# ----------------------------------------------------------------------------------------------------------
# vLLM letter mode: one request per question, the same numbers as the transformers backend


@dataclass
class FakeSamplingParams:
    """The fields of ``vllm.SamplingParams`` the backend sets."""

    max_tokens: int = 16
    temperature: float = 1.0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    stop: Any = None


class FakeLLM:
    """Answers ``generate`` as ``vllm.LLM`` does (``RequestOutput``-shaped objects), from a transformers model.

    Next-token ``logprobs``: the top ``k`` of the full-vocabulary log-softmax plus the sampled (greedy) token;
    ``prompt_logprobs=0``: each prompt token's own log-probability, ``None`` for the first.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.requests: list[tuple[int, FakeSamplingParams]] = []

    def get_tokenizer(self):
        return self.tokenizer

    @torch.inference_mode()
    def generate(self, prompts, params, use_tqdm=True):
        self.requests.append((len(prompts), params))
        outs = []
        for prompt in prompts:
            ids = prompt["prompt_token_ids"]
            logp = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), dim=-1)
            last = logp[-1]
            token = int(last.argmax())
            sample = None
            if params.logprobs is not None:
                top = torch.topk(last, params.logprobs)
                step = {int(t): SimpleNamespace(logprob=float(v)) for v, t in zip(top.values, top.indices, strict=True)}
                step.setdefault(token, SimpleNamespace(logprob=float(last[token])))
                sample = [step]
            prompt_lp = None
            if params.prompt_logprobs is not None:
                prompt_lp = [None] + [{ids[k]: SimpleNamespace(logprob=float(logp[k - 1, ids[k]]))}
                                      for k in range(1, len(ids))]
            outs.append(SimpleNamespace(prompt_token_ids=list(ids), prompt_logprobs=prompt_lp,
                                        outputs=[SimpleNamespace(token_ids=[token], logprobs=sample, text="")]))
        return outs


def test_letter_requests_ask_for_the_raw_next_token_distribution():
    params = next_token_params(20)
    assert params == {"max_tokens": 1, "temperature": 0, "logprobs": 20}
    assert "allowed_token_ids" not in params  # restricting would drop or renormalise the letters' log-probs
    assert prompt_logprob_params() == {"max_tokens": 1, "temperature": 0, "prompt_logprobs": 0}


def test_reading_a_request_output_and_renormalising_over_the_letters():
    split = {("Q1", " A"): ([1, 2, 3], [10]), ("Q1", " B"): ([1, 2, 3], [11]), ("Q1", " C"): ([1, 2, 3], [12]),
             ("Q2", " A"): ([1, 4], [10]), ("Q2", " B"): ([1, 4], [11]),
             ("Q3", " fever"): ([1, 5], [20, 21])}
    pairs = list(split)
    plan = plan_loglikelihood(pairs, lambda c, x: split[(c, x)])
    assert plan.next_token == [([1, 2, 3], [0, 1, 2], [10, 11, 12]), ([1, 4], [3, 4], [10, 11])]
    assert plan.pairs == {5: ([1, 5], [20, 21])}
    q1 = {10: SimpleNamespace(logprob=-1.0), 12: SimpleNamespace(logprob=-2.5), 11: SimpleNamespace(logprob=-0.5),
          99: SimpleNamespace(logprob=-0.1)}
    q2 = {11: -0.7, 42: -0.2}  # plain floats are accepted too; letter 10 is not among the top k
    outputs = [SimpleNamespace(outputs=[SimpleNamespace(logprobs=[q1])]),
               SimpleNamespace(outputs=[SimpleNamespace(logprobs=[q2])])]
    assert next_token_logprobs(outputs[1], [10, 11]) == [None, -0.7]
    results: list = [None] * len(pairs)
    read_next_token(outputs, plan, results)
    assert results[:3] == [(-1.0, 1), (-0.5, 1), (-2.5, 1)] and results[4] == (-0.7, 1) and results[3] is None
    assert plan.pairs[3] == ([1, 4], [10])  # the missing letter goes to the prompt log-probability path
    reduced = reduce_scores("letter", results[:3])
    z = math.exp(-1.0) + math.exp(-0.5) + math.exp(-2.5)
    assert reduced.scores == [-1.0, -0.5, -2.5] and reduced.pred == 1
    assert reduced.probs == pytest.approx([math.exp(-1.0) / z, math.exp(-0.5) / z, math.exp(-2.5) / z], abs=1e-12)


@torch.inference_mode()
def _letters_outside_top(loaded: LoadedModel, items, k: int) -> int:
    """How many (question, letter) pairs have a letter that is neither among the top ``k`` nor the greedy token."""
    cache, outside = token_cache(loaded.tokenizer), 0
    for it in items:
        prompt = mcq_prompt(it, "paper")
        ids = cache.split(prompt, " A")[0]
        last = loaded.model(torch.tensor([ids])).logits[0, -1]
        kept = set(torch.topk(last, k).indices.tolist()) | {int(last.argmax())}
        outside += sum(cache.split(prompt, f" {x}")[1][0] not in kept for x in "ABCDEFGHIJ"[: len(it.options)])
    return outside


@pytest.mark.parametrize("top_k", [1024, 300, 1])
def test_vllm_letter_mode_equals_the_transformers_backend_with_one_request_per_question(tiny, items, top_k):
    """With every letter among the top ``k`` one next-token request per question does it all; with a smaller ``k``
    exactly the letters outside it come from prompt log-probabilities, and the numbers stay the same."""
    chosen = items[:16]
    llm = FakeLLM(tiny)
    model = VLLMModel.from_llm(llm, spec="tiny", sampling_params=FakeSamplingParams, top_logprobs=top_k)
    got = score_items(model, chosen, mode="letter", progress=False)
    _same_rows(got, score_items(tiny, chosen, mode="letter", progress=False), tol=1e-4)
    next_token = [(n, p) for n, p in llm.requests if p.logprobs is not None]
    fallback = [(n, p) for n, p in llm.requests if p.prompt_logprobs is not None]
    assert sum(n for n, _ in next_token) == len(chosen)  # one request per question
    assert all(p.max_tokens == 1 and p.temperature == 0 and p.logprobs == top_k for _, p in next_token)
    outside = _letters_outside_top(tiny, chosen, top_k)
    assert sum(n for n, _ in fallback) == outside  # one request per letter outside the top k, no more
    if top_k >= len(tiny.tokenizer):
        assert outside == 0
    elif top_k == 300:
        assert 0 < outside < sum(len(it.options) for it in chosen)  # some letters each way


def test_vllm_option_mode_equals_the_transformers_backend(tiny, items):
    chosen = items[:4]
    model = VLLMModel.from_llm(FakeLLM(tiny), spec="tiny", sampling_params=FakeSamplingParams)
    got = score_items(model, chosen, mode="option", progress=False)
    ref = score_items(tiny, chosen, mode="option", progress=False)
    for x, y in zip(got.itertuples(), ref.itertuples(), strict=True):
        assert x.scores == pytest.approx(y.scores, abs=1e-3, rel=1e-5)
        assert x.pred == y.pred
