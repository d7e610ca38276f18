"""The optional ``vllm:`` backend (GPU machines): the model served in-process by vLLM.

vLLM cannot be installed on this CPU-only machine, so constructing :class:`VLLMModel` here raises a clear
:class:`~medtune.errors.UnsupportedOnThisMachine`. The parts that do not need vLLM itself (turning its
``prompt_logprobs`` into continuation log-likelihoods) are pure functions and are tested.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from medtune.errors import ConfigError, MedtuneError, UnsupportedOnThisMachine
from medtune.scoring.tokens import split_continuation


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


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
        value = entry[prompt_token_ids[k]]
        total += float(getattr(value, "logprob", value))
    return total, len(prompt_token_ids) - n_context


class VLLMModel:
    """A model served in-process by vLLM as a :class:`~medtune.scoring.backends.ScoringBackend`.

    ``score_items(VLLMModel("meta-llama/Llama-2-7b-hf"), items)``, or ``load_backend("vllm:PATH")``.
    """

    name = "vllm"
    MODES: ClassVar[dict[str, str]] = {
        "letter": "prompt log-probabilities of context + ' X' (prompt_logprobs), summed over the continuation",
        "option": "the same for ' <option text>'",
        "generate": "greedy sampling (temperature 0)",
    }

    def __init__(self, spec: str, *, dtype: str = "auto", quantization: str | None = None,
                 adapter: str | Path | None = None, trust_remote_code: bool = False, **engine_kwargs: Any) -> None:
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
        from vllm import LLM  # pragma: no cover - needs a GPU machine

        self.spec = spec  # pragma: no cover
        vllm_quant = {"4bit": "bitsandbytes", "8bit": "bitsandbytes"}.get(quantization or "")  # pragma: no cover
        self.llm = LLM(model=spec, dtype={"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype),
                       quantization=vllm_quant, trust_remote_code=trust_remote_code,
                       **engine_kwargs)  # pragma: no cover
        self.tokenizer = self.llm.get_tokenizer()  # pragma: no cover

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:  # pragma: no cover
        from vllm import SamplingParams

        prompts, n_ctx = [], []
        for c, x in pairs:
            ctx, cont = split_continuation(self.tokenizer, c, x)
            prompts.append({"prompt_token_ids": ctx + cont})
            n_ctx.append(len(ctx))
        params = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0)
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        return [continuation_from_prompt_logprobs(o.prompt_token_ids, o.prompt_logprobs, n)
                for o, n in zip(outs, n_ctx, strict=True)]

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] | None = None
                 ) -> list[str]:  # pragma: no cover
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_new_tokens, temperature=0, stop=list(stop) if stop else None)
        return [o.outputs[0].text for o in self.llm.generate(list(prompts), params, use_tqdm=False)]
