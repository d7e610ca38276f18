"""The scoring-backend interface, its registry, and the one reduction of log-likelihoods to predictions.

A backend is anything that can answer two questions about text, in the spirit of lm-evaluation-harness's
model interface: *how likely is this continuation after this context* (:meth:`ScoringBackend.loglikelihood`)
and *what does the model write after this prompt* (:meth:`ScoringBackend.generate`). Every scoring mode is
defined in those terms, so a mode means the same on every backend:

- ``letter``: the log-likelihood of the continuation ``" X"`` (X the option's letter) after the prompt. A
  backend may compute it faster (transformers reads the letters' tokens off one forward pass), never differently.
- ``option``: the log-likelihood of ``" " + option text`` after the prompt, summed and per token.
- ``generate``: greedy decoding.

Backends are created from a *spec*: ``hf:PATH`` (the default without a prefix), ``openai:http://HOST:PORT/v1``
(optionally ``#model-name``), ``vllm:PATH``, or a name a plugin registered with :func:`register_backend`
(:data:`BACKENDS`, a :class:`medtune.registry.Registry`: the built-ins are imported on first use).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from medtune.errors import ConfigError, InputError
from medtune.prompts import letters_for
from medtune.registry import Registry, is_valid_name
from medtune.scoring.tokens import TokenCache, token_cache  # noqa: F401  (re-exported)

# The meaning every backend gives a mode (a backend's own MODES may say how it computes it, not what).
MODE_MEANINGS: dict[str, str] = {
    "letter": "log-likelihood of the continuation ' X' (X the option's letter) after the prompt",
    "option": "log-likelihood of the continuation ' <option text>' after the prompt (sum, and per token)",
    "generate": "greedy decoding; the answer is extracted from the text",
}


@runtime_checkable
class ScoringBackend(Protocol):
    """What :func:`medtune.scoring.score_items` needs from a model.

    ``tokenizer`` is the backend's local tokenizer (``None`` for a remote one): with it the scorer batches by
    exact token counts and can apply a chat template (a prompt that is a :class:`~medtune.chat_format.ChatPrompt` is
    encoded through :func:`token_cache`, as training encodes it; a remote backend answers one through its chat API
    when it sets ``chat_api = True``, in generate mode only). ``MODES`` maps each supported mode to how the backend
    computes it (the result must have the meaning of :data:`MODE_MEANINGS`).
    """

    name: str
    spec: str
    tokenizer: Any
    MODES: Mapping[str, str]

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        """Per ``(context, continuation)``: the summed log-probability of the continuation, and its token count."""
        ...

    def generate(self, prompts: Sequence[str], max_new_tokens: int,
                 stop: Sequence[str] | None = None) -> list[str]:
        """Greedy continuation of each prompt (at most ``max_new_tokens`` tokens, cut at a ``stop`` string)."""
        ...


# ----------------------------------------------------------------------------------------------------------
# From log-likelihoods to a prediction: one reduction for every backend


def softmax(xs: Sequence[float]) -> list[float]:
    m = max(xs)
    es = [math.exp(x - m) for x in xs]
    s = sum(es)
    return [e / s for e in es]


def argmax(xs: Sequence[float]) -> int:
    """Index of the largest value; ties go to the first (a deterministic rule shared by every backend)."""
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def continuations(mode: str, shown: Sequence[str]) -> list[str]:
    """The continuations a question's shown options are scored by: ``" A"``... (letter) or ``" text"`` (option)."""
    if mode == "letter":
        return [f" {x}" for x in letters_for(len(shown))]
    return [" " + o.strip() for o in shown]


@dataclass(frozen=True)
class Reduced:
    """A question's scores by shown position: what the prediction row is made of."""

    pred: int
    scores: list[float]
    probs: list[float]
    norms: list[float] | None = None


def reduce_scores(mode: str, results: Sequence[tuple[float, int]], option_score: str = "norm") -> Reduced:
    """Turn one question's ``(sum, n_tokens)`` per option into scores, probabilities and the argmax.

    Letter mode: scores are the sums, probabilities their softmax over the letters. Option mode adds the
    per-token norms; ``option_score`` (``norm`` or ``sum``) picks what the softmax and the argmax use.
    """
    sums = [float(s) for s, _ in results]
    if mode == "letter":
        return Reduced(argmax(sums), sums, softmax(sums))
    norms = [float(s) / n for s, n in results]
    chosen = norms if option_score == "norm" else sums
    return Reduced(argmax(chosen), sums, softmax(chosen), norms)


# ----------------------------------------------------------------------------------------------------------
# Registry

BackendFactory = Callable[..., ScoringBackend]
BACKENDS: Registry[BackendFactory] = Registry(
    "scoring backend",
    builtins={"hf": f"{__name__}:_hf_factory", "openai": f"{__name__}:_openai_factory",
              "vllm": f"{__name__}:_vllm_factory"},
    hint="a plugin module named in MEDTUNE_PLUGINS can register more",
)


def register_backend(name: str, factory: BackendFactory, *, replace: bool = False) -> BackendFactory:
    """Make ``name:TARGET`` specs create backends with ``factory(TARGET, *, dtype, device, quantization, adapter,
    trust_remote_code)``; returns ``factory``. A taken name (``hf``, ``openai`` and ``vllm`` too) is refused
    unless ``replace=True``, so a plugin overrides a built-in only when it says so."""
    return BACKENDS.register(name, factory, replace=replace)


def backend_names() -> list[str]:
    return sorted(BACKENDS.names())


def get_backend(name: str) -> BackendFactory:
    return BACKENDS.get(name)


# How a backend's weights get their precision, declared on its factory as ``precision`` (read by
# :func:`backend_precision`): the server's own (an endpoint), or as torch loads them on the device.
SERVED = "served"
TORCH = "torch"


def backend_precision(name: str) -> str | None:
    """:data:`SERVED`, :data:`TORCH`, or None when the backend takes dtype and quantization as given."""
    return getattr(get_backend(name), "precision", None)


def split_spec(spec: str | Path) -> tuple[str | None, str]:
    """``"openai:http://h/v1"`` → ``("openai", "http://h/v1")``; an existing path or no prefix → ``(None, spec)``.

    Only a registered backend name counts as a prefix, so hub names and local paths never lose a part; a
    prefix-shaped word that is not registered is an error rather than a model name.
    """
    text = str(spec)
    if isinstance(spec, Path) or Path(text).expanduser().exists():
        return None, text
    head, sep, rest = text.partition(":")
    if not sep or not is_valid_name(head):
        return None, text
    if head in BACKENDS:
        return head, rest
    where = f" in model spec '{text}'"
    if head in ("http", "https"):
        raise BACKENDS.unknown(head, where=where, hint=f"for an OpenAI-compatible server write 'openai:{text}'",
                               suggest=False)
    raise BACKENDS.unknown(head, where=where)


def backend_of(spec: str | Path, backend: str | None = None) -> tuple[str, str]:
    """(backend name, the spec without its prefix): ``backend`` wins over the prefix; ``hf`` by default."""
    prefix, target = split_spec(spec)
    name = backend or prefix or "hf"
    get_backend(name)  # a clear error for an unknown name
    return name, target


def load_backend(spec: str | Path, *, backend: str | None = None, dtype: str = "auto", device: str = "auto",
                 quantization: str | None = None, adapter: str | Path | None = None,
                 trust_remote_code: bool = False, vllm: Mapping[str, Any] | None = None) -> ScoringBackend:
    """Create the backend ``spec`` names (see the module docstring); ``backend`` overrides the spec's prefix.

    ``vllm``: engine options (``gpu_memory_utilization``, ``max_model_len``, ``tensor_parallel_size``,
    ``enforce_eager``...) for the ``vllm`` backend, passed to its factory as ``engine_options`` and to
    ``vllm.LLM``; other backends do not receive them, so one evaluation setting serves a grid of mixed backends.
    """
    name, target = backend_of(spec, backend)
    extra = {"engine_options": dict(vllm)} if name == "vllm" and vllm else {}
    made = get_backend(name)(target, dtype=dtype, device=device, quantization=quantization, adapter=adapter,
                             trust_remote_code=trust_remote_code, **extra)
    if not isinstance(made, ScoringBackend):
        raise ConfigError(f"backend '{name}' returned a {type(made).__name__}, which lacks the ScoringBackend "
                          "members (name, spec, tokenizer, MODES, loglikelihood, generate)")
    return made


def as_backend(model: Any) -> ScoringBackend:
    """A backend for what ``score_items`` was given: a backend, a :class:`~medtune.models.LoadedModel`, or a spec."""
    from medtune.models import LoadedModel

    if isinstance(model, str | Path):
        return load_backend(model)
    if isinstance(model, LoadedModel):
        from medtune.scoring.hf import HFBackend

        return HFBackend(model)
    if isinstance(model, ScoringBackend):
        return model
    raise InputError(f"cannot score with a {type(model).__name__}: pass a model spec, a LoadedModel or a "
                     "ScoringBackend (medtune.scoring.backends)")


def _hf_factory(target: str, *, dtype: str = "auto", device: str = "auto", quantization: str | None = None,
                adapter: str | Path | None = None, trust_remote_code: bool = False) -> ScoringBackend:
    from medtune.models import resolve_model
    from medtune.scoring.hf import HFBackend, auto_dtype

    # auto: bf16 only on a GPU with native bf16, fp16 on an older one (where bf16 would be emulated), fp32 on a CPU
    dtype = auto_dtype(device) if dtype == "auto" else dtype
    return HFBackend(resolve_model(target, dtype=dtype, device=device, quantization=quantization, adapter=adapter,
                                   trust_remote_code=trust_remote_code))


def _openai_factory(target: str, *, dtype: str = "auto", device: str = "auto", quantization: str | None = None,
                    adapter: str | Path | None = None, trust_remote_code: bool = False) -> ScoringBackend:
    from medtune.scoring.endpoint import Endpoint

    if adapter is not None or quantization is not None:
        raise ConfigError("an OpenAI-compatible endpoint serves its own weights: load the adapter or the "
                          "quantization in the server, not here")
    return Endpoint.from_spec(target)


def _vllm_factory(target: str, *, dtype: str = "auto", device: str = "auto", quantization: str | None = None,
                  adapter: str | Path | None = None, trust_remote_code: bool = False,
                  engine_options: Mapping[str, Any] | None = None) -> ScoringBackend:
    from medtune.scoring.vllm_backend import VLLMModel

    return VLLMModel(target, dtype=dtype, quantization=quantization, adapter=adapter,
                     trust_remote_code=trust_remote_code, **dict(engine_options or {}))


_hf_factory.precision = TORCH  # type: ignore[attr-defined]
_vllm_factory.precision = TORCH  # type: ignore[attr-defined]
_openai_factory.precision = SERVED  # type: ignore[attr-defined]
