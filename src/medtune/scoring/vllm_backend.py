"""The optional ``vllm:`` backend (GPU machines): the model served in-process by vLLM.

vLLM cannot be installed on this CPU-only machine, so constructing :class:`VLLMModel` here raises a clear
:class:`~medtune.errors.UnsupportedOnThisMachine`. The parts that do not need vLLM itself (the engine's arguments,
the requests, reading vLLM's log-probabilities back) are pure functions and are tested.

Letter mode: one request per question, not one per letter. The context alone is the prompt, with
``SamplingParams(max_tokens=1, temperature=0, logprobs=k)``; vLLM returns the ``k`` most likely next tokens with
their log-probabilities, and a letter found among them is read off directly. Those are the *raw* log-probabilities
(fp32 log-softmax over the whole vocabulary), the same number the transformers backend reads at the answer
position, for two reasons that hold on vLLM 0.10 and later:

- no ``allowed_token_ids``, penalties or temperature are set, so nothing processes the logits: vLLM's
  ``logprobs_mode`` ``raw_logprobs`` (the default) and ``processed_logprobs`` give the same values (only the
  ``*_logits`` modes, which return logits, are refused). Restricting the request to the letters with
  ``allowed_token_ids`` would not help: in the default mode the log-probabilities are taken *before* the
  restriction (so the top ``k`` need not contain the letters), and in ``processed_logprobs`` they would be
  renormalised over the letters, losing the log-likelihood the ``scores`` column holds;
- with no ``prompt_logprobs`` the request can reuse the KV cache of an identical prefix (vLLM skips prefix
  caching for requests that want prompt log-probabilities), so the context costs one prefill.

A letter outside the top ``k`` (``k`` = :data:`VLLM_TOP_LOGPROBS`, vLLM's default ``max_logprobs``) falls back,
for that letter only, to the general path: the prompt log-probability of ``context + " X"`` (``prompt_logprobs``).
The softmax over the letters is :func:`medtune.scoring.backends.reduce_scores`, the same for every backend.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field

from medtune.errors import ConfigError, MedtuneError, UnsupportedOnThisMachine

VLLM_TOP_LOGPROBS = 20  # vLLM's default max_logprobs: the most next-token log-probabilities a request may ask for
VLLM_BATCH_TOKENS = 1 << 16  # vLLM schedules its own memory: hand it many questions per call

# ----------------------------------------------------------------------------------------------------------
# Engine settings: fields of the evaluation and difficulty settings (``--vllm-...`` options, ``vllm_...`` keys)

VllmGpuMemoryUtilization = Annotated[float | None, Field(
    gt=0, le=1, description="vllm backend: share of the GPU's memory vLLM takes for the weights and its KV cache "
    "(default: vLLM's, 0.9)")]
VllmMaxModelLen = Annotated[int | None, Field(
    ge=1, description="vllm backend: the longest prompt + answer in tokens; lower it when the model's context "
    "does not fit the KV cache (default: the model's)")]
VllmTensorParallelSize = Annotated[int | None, Field(
    ge=1, description="vllm backend: GPUs the model is split across (default: 1)")]
VllmEnforceEager = Annotated[bool, Field(
    description="vllm backend: run without CUDA graphs (less memory, faster start, slower scoring)")]

VLLM_SETTINGS: tuple[str, ...] = ("vllm_gpu_memory_utilization", "vllm_max_model_len", "vllm_tensor_parallel_size",
                                  "vllm_enforce_eager")


def vllm_options(settings: Any) -> dict[str, Any]:
    """The engine options ``settings`` sets (its ``vllm_*`` fields that are not ``None``), by vLLM's names."""
    return {name.removeprefix("vllm_"): value for name in VLLM_SETTINGS
            if (value := getattr(settings, name, None)) is not None}


_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_QUANTIZATIONS = {"4bit": "bitsandbytes", "8bit": "bitsandbytes"}


def engine_kwargs(spec: str, *, dtype: str = "auto", quantization: str | None = None,
                  trust_remote_code: bool = False, **options: Any) -> dict[str, Any]:
    """The keyword arguments of ``vllm.LLM(...)`` for a model, medtune's names turned into vLLM's.

    ``dtype`` is medtune's (``fp32``, ``bf16``, ``fp16``) or ``auto``; ``options`` are engine arguments
    (``gpu_memory_utilization``, ``max_model_len``, ``tensor_parallel_size``, ``enforce_eager``, or any other of
    vLLM's), ``None`` meaning vLLM's default. A ``logprobs_mode`` that returns logits is refused: scoring reads
    log-probabilities.
    """
    if quantization is not None and quantization not in _QUANTIZATIONS:
        raise ConfigError(f"quantization '{quantization}' is not one the vllm backend loads (use 4bit or 8bit)")
    kwargs: dict[str, Any] = {"model": spec, "dtype": _DTYPES.get(dtype, dtype),
                              "quantization": _QUANTIZATIONS.get(quantization or ""),
                              "trust_remote_code": trust_remote_code}
    kwargs.update({k: v for k, v in options.items() if v is not None})
    if str(kwargs.get("logprobs_mode", "raw_logprobs")).endswith("_logits"):
        raise ConfigError(f"logprobs_mode {kwargs['logprobs_mode']!r} returns logits, not log-probabilities: "
                          "scoring needs raw_logprobs (vLLM's default)")
    return kwargs


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


# ----------------------------------------------------------------------------------------------------------
# Requests and what comes back


def next_token_params(top_logprobs: int = VLLM_TOP_LOGPROBS) -> dict[str, Any]:
    """``SamplingParams`` of a letter request: one greedy token and the ``top_logprobs`` most likely next tokens."""
    return {"max_tokens": 1, "temperature": 0, "logprobs": top_logprobs}


def prompt_logprob_params() -> dict[str, Any]:
    """``SamplingParams`` of a continuation request: the prompt's own tokens' log-probabilities."""
    return {"max_tokens": 1, "temperature": 0, "prompt_logprobs": 0}


def _value(entry: Any) -> float:
    return float(getattr(entry, "logprob", entry))


def next_token_logprobs(output: Any, token_ids: Sequence[int]) -> list[float | None]:
    """Log-probability of each of ``token_ids`` as the next token after the prompt, from a ``RequestOutput``.

    ``output.outputs[0].logprobs[0]`` maps token ids to ``Logprob`` objects (or floats): the top ``k`` and the
    sampled token. A token not among them is ``None``.
    """
    steps = output.outputs[0].logprobs if output.outputs else None
    first: Mapping[int, Any] = steps[0] if steps else {}
    return [_value(first[t]) if t in first else None for t in token_ids]


def continuation_from_prompt_logprobs(prompt_token_ids: Sequence[int], prompt_logprobs: Sequence[Any],
                                      n_context: int) -> tuple[float, int]:
    """Sum of the log-probabilities vLLM reports for the prompt tokens after the first ``n_context``.

    ``prompt_logprobs[k]`` is ``None`` for the first token and otherwise maps token ids to objects with a
    ``logprob`` attribute (or to plain floats), always including the actual token ``prompt_token_ids[k]``.
    """
    if not 0 < n_context < len(prompt_token_ids):
        raise MedtuneError(f"context of {n_context} tokens leaves no continuation in {len(prompt_token_ids)} tokens")
    total = 0.0
    for k in range(n_context, len(prompt_token_ids)):
        entry = prompt_logprobs[k]
        if entry is None or prompt_token_ids[k] not in entry:
            raise MedtuneError(f"vLLM returned no log-probability for prompt token {k}")
        total += _value(entry[prompt_token_ids[k]])
    return total, len(prompt_token_ids) - n_context


Split = Callable[[str, str], tuple[list[int], list[int]]]


@dataclass
class LoglikPlan:
    """How a ``loglikelihood`` call's pairs are requested.

    ``next_token``: one request per context whose continuations are all one token (the letters), as
    ``(context ids, pair indices, token ids)``; ``pairs``: pair index → ``(context ids, continuation ids)`` of the
    pairs scored by their prompt log-probabilities (longer continuations, and letters a next-token request did not
    return).
    """

    next_token: list[tuple[list[int], list[int], list[int]]] = field(default_factory=list)
    pairs: dict[int, tuple[list[int], list[int]]] = field(default_factory=dict)


def plan_loglikelihood(pairs: Sequence[tuple[str, str]], split: Split) -> LoglikPlan:
    """Group ``pairs`` by context as the transformers backend does: single-token continuations of one context make
    one next-token request (the context's own tokens, shared by its continuations), the rest one request each."""
    groups: dict[str, list[int]] = {}
    for k, (context, _) in enumerate(pairs):
        groups.setdefault(context, []).append(k)
    plan = LoglikPlan()
    for context, members in groups.items():
        splits = [split(context, pairs[k][1]) for k in members]
        if all(len(cont) == 1 for _, cont in splits):
            plan.next_token.append((splits[0][0], members, [cont[0] for _, cont in splits]))
        else:
            plan.pairs.update(zip(members, splits, strict=True))
    return plan


def read_next_token(outputs: Sequence[Any], plan: LoglikPlan, results: list[tuple[float, int] | None]) -> None:
    """Fill ``results`` from the next-token requests' outputs (one per ``plan.next_token`` entry, in order); a
    continuation whose token vLLM did not return moves to ``plan.pairs``, to be scored by its prompt log-probs."""
    if len(outputs) != len(plan.next_token):
        raise MedtuneError(f"vLLM returned {len(outputs)} outputs for {len(plan.next_token)} requests")
    for out, (ctx, members, tokens) in zip(outputs, plan.next_token, strict=True):
        for k, token, value in zip(members, tokens, next_token_logprobs(out, tokens), strict=True):
            if value is None:
                plan.pairs[k] = (ctx, [token])
            else:
                results[k] = (value, 1)


# ----------------------------------------------------------------------------------------------------------
# The backend


class VLLMModel:
    """A model served in-process by vLLM as a :class:`~medtune.scoring.backends.ScoringBackend`.

    ``score_items(VLLMModel("meta-llama/Llama-2-7b-hf"), items)``, ``load_backend("vllm:PATH")``, or an engine
    made elsewhere: ``VLLMModel.from_llm(vllm.LLM(...))``. ``engine_options`` are passed to ``vllm.LLM``
    (see :func:`engine_kwargs`).
    """

    name = "vllm"
    MODES: ClassVar[dict[str, str]] = {
        "letter": "one request per question: the letters' next-token log-probabilities among the top "
                  f"{VLLM_TOP_LOGPROBS} (logprobs); a letter outside them from the prompt log-probabilities of "
                  "context + ' X'",
        "option": "prompt log-probabilities of context + ' <option text>' (prompt_logprobs), summed over the "
                  "option",
        "generate": "greedy sampling (temperature 0)",
    }

    def __init__(self, spec: str, *, dtype: str = "auto", quantization: str | None = None,
                 adapter: str | Path | None = None, trust_remote_code: bool = False, **engine_options: Any) -> None:
        if not vllm_available():
            raise UnsupportedOnThisMachine(
                "the vLLM backend needs the 'vllm' package, which is not installed here (it needs a CUDA GPU; "
                "pip install 'medtune[gpu]' there). On this machine use the transformers backend "
                "(hf:MODEL), or serve the model elsewhere with 'vllm serve' and score through "
                "openai:http://HOST:PORT/v1"
            )
        if adapter is not None:  # pragma: no cover - needs a GPU machine
            raise ConfigError("the vllm backend scores merged models: merge the adapter first "
                              "(medtune export RUN --merge) and pass the merged folder")
        from vllm import LLM, SamplingParams  # pragma: no cover - needs a GPU machine

        from medtune.scoring.hf import auto_dtype  # pragma: no cover

        # auto: the precision the transformers backend would use here (bf16 only where native), so the two agree.
        resolved = auto_dtype("cuda") if dtype == "auto" else dtype  # pragma: no cover
        llm = LLM(**engine_kwargs(spec, dtype=resolved, quantization=quantization,
                                  trust_remote_code=trust_remote_code, **engine_options))  # pragma: no cover
        self._attach(llm, spec, SamplingParams,
                     engine_options.get("max_logprobs") or VLLM_TOP_LOGPROBS)  # pragma: no cover

    @classmethod
    def from_llm(cls, llm: Any, *, spec: str = "vllm", sampling_params: Any = None,
                 top_logprobs: int = VLLM_TOP_LOGPROBS) -> VLLMModel:
        """Score with an engine made elsewhere (``vllm.LLM`` or anything with its ``generate`` and
        ``get_tokenizer``); ``sampling_params`` is the class requests are made of (default: vLLM's)."""
        if sampling_params is None:  # pragma: no cover - needs vLLM
            from vllm import SamplingParams as sampling_params
        self = cls.__new__(cls)
        self._attach(llm, spec, sampling_params, top_logprobs)
        return self

    def _attach(self, llm: Any, spec: str, sampling_params: Any, top_logprobs: int) -> None:
        self.llm = llm
        self.spec = spec
        self.tokenizer = llm.get_tokenizer()
        self._params = sampling_params
        self.top_logprobs = max(1, int(top_logprobs))

    def auto_batch_tokens(self, mode: str, lengths: Sequence[int], max_batch_size: int) -> int:
        """vLLM fits its batches to the memory it reserved itself: the scorer hands it as many questions as
        ``max_batch_size`` allows."""
        return VLLM_BATCH_TOKENS

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        """Per pair: summed log-probability of the continuation and its token count (see the module docstring)."""
        from medtune.scoring.tokens import token_cache

        plan = plan_loglikelihood(pairs, token_cache(self.tokenizer).split)
        results: list[tuple[float, int] | None] = [None] * len(pairs)
        if plan.next_token:
            outs = self.llm.generate([{"prompt_token_ids": list(ctx)} for ctx, _, _ in plan.next_token],
                                     self._params(**next_token_params(self.top_logprobs)), use_tqdm=False)
            read_next_token(outs, plan, results)
        if plan.pairs:
            keys = list(plan.pairs)
            outs = self.llm.generate([{"prompt_token_ids": [*plan.pairs[k][0], *plan.pairs[k][1]]} for k in keys],
                                     self._params(**prompt_logprob_params()), use_tqdm=False)
            for k, out in zip(keys, outs, strict=True):
                results[k] = continuation_from_prompt_logprobs(out.prompt_token_ids, out.prompt_logprobs,
                                                               len(plan.pairs[k][0]))
        done = [r for r in results if r is not None]
        if len(done) != len(pairs):
            raise MedtuneError(f"vLLM left {len(pairs) - len(done)} of {len(pairs)} continuations unscored")
        return done

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] | None = None
                 ) -> list[str]:
        from medtune.chat_format import ChatPrompt
        from medtune.scoring.tokens import token_cache

        params = self._params(max_tokens=max_new_tokens, temperature=0, stop=list(stop) if stop else None)
        # A chat prompt goes as the ids its chat template gives (the same ids training and the other backends use).
        cache = token_cache(self.tokenizer)
        requests = [{"prompt_token_ids": cache.encode(p)} if isinstance(p, ChatPrompt) else p for p in prompts]
        return [o.outputs[0].text for o in self.llm.generate(requests, params, use_tqdm=False)]

