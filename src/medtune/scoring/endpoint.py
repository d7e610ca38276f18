"""The ``openai:`` backend: score through an OpenAI-compatible completions endpoint (vLLM ``serve``, llama.cpp...).

Log-likelihoods come from the legacy ``/v1/completions`` API with ``echo=true`` and ``logprobs``: the
server returns the log-probability of every prompt token, and the continuation's score is the sum over the
tokens that start at or after the end of the context (by character offset), as lm-evaluation-harness
does for its ``local-completions`` model. Letter mode scores the continuations " A", " B", ... that way
(exact, not limited to the server's top-k), option mode the options' texts, generate mode asks for a
greedy completion. Under chat (prompts that are :class:`~medtune.chat_format.ChatPrompt`), generate mode sends the
conversation's messages to ``/v1/chat/completions``: the server applies the model's own chat template. The chat API
returns no log-probabilities of a prompt, so letter and option mode under chat are refused before any request
(:func:`medtune.scoring.engine.score_items`).

Request building and response parsing are pure functions (tested without a network); :class:`Endpoint`
only adds the HTTP calls. Spec: ``openai:http://HOST:PORT/v1#model-name``; without ``#model-name`` the
server's first model (``GET /models``) is used. The key, if the server wants one, is read from
``OPENAI_API_KEY``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from medtune.chat_format import ChatPrompt
from medtune.errors import InputError, MedtuneError


def build_loglik_request(model: str, contexts: Sequence[str], continuations: Sequence[str]) -> dict[str, Any]:
    """One completions request scoring ``context + continuation`` pairs (the prompt list keeps their order)."""
    if len(contexts) != len(continuations):
        raise ValueError("contexts and continuations differ in length")
    return {
        "model": model,
        "prompt": [c + x for c, x in zip(contexts, continuations, strict=True)],
        "max_tokens": 1,  # some servers refuse 0; the generated token is ignored
        "temperature": 0,
        "logprobs": 1,
        "echo": True,
    }


def _choices_in_order(response: dict[str, Any], n: int) -> list[dict[str, Any]]:
    choices = response.get("choices")
    if not isinstance(choices, list) or len(choices) != n:
        got = len(choices) if isinstance(choices, list) else "no"
        raise MedtuneError(f"endpoint returned {got} choices for {n} prompts")
    return sorted(choices, key=lambda c: c.get("index", 0))


def parse_loglik_response(response: dict[str, Any], contexts: Sequence[str], continuations: Sequence[str]
                          ) -> list[tuple[float, int]]:
    """Per prompt: (sum of the continuation tokens' log-probabilities, number of continuation tokens).

    The continuation's tokens are those whose character offset lies in ``[len(context), len(context +
    continuation))``; the echoed prompt is followed by one generated token, which lies past that range.
    """
    out = []
    choices = _choices_in_order(response, len(contexts))
    for ctx, cont, choice in zip(contexts, continuations, choices, strict=True):
        lp = choice.get("logprobs") or {}
        offsets, values = lp.get("text_offset"), lp.get("token_logprobs")
        if offsets is None or values is None:
            raise MedtuneError("endpoint response has no echoed prompt log-probabilities (needs echo + logprobs)")
        start, stop = len(ctx), len(ctx) + len(cont)
        picked = [v for off, v in zip(offsets, values, strict=True) if start <= off < stop]
        if not picked:
            raise MedtuneError(f"continuation {cont!r} has no tokens in the endpoint's response")
        if any(v is None for v in picked):
            raise MedtuneError("endpoint gave no log-probability for a continuation token")
        out.append((float(sum(picked)), len(picked)))
    return out


def build_generate_request(model: str, prompts: Sequence[str], max_tokens: int,
                           stop: Sequence[str] | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {"model": model, "prompt": list(prompts), "max_tokens": max_tokens, "temperature": 0}
    if stop:
        req["stop"] = list(stop)
    return req


def parse_generate_response(response: dict[str, Any], n: int) -> list[str]:
    return [str(c.get("text", "")) for c in _choices_in_order(response, n)]


def build_chat_request(model: str, messages: Sequence[dict[str, str]], max_tokens: int,
                       stop: Sequence[str] | None = None) -> dict[str, Any]:
    """One chat-completions request (greedy) answering a conversation: the server applies the chat template."""
    req: dict[str, Any] = {"model": model, "messages": list(messages), "max_tokens": max_tokens, "temperature": 0}
    if stop:
        req["stop"] = list(stop)
    return req


def parse_chat_response(response: dict[str, Any]) -> str:
    choices = _choices_in_order(response, 1)
    message = choices[0].get("message") or {}
    return str(message.get("content") or "")


@dataclass
class Endpoint:
    """An OpenAI-compatible server as a :class:`~medtune.scoring.backends.ScoringBackend`.

    ``Endpoint("http://127.0.0.1:8000/v1", "my-model")``, or ``load_backend("openai:http://127.0.0.1:8000/v1")``.
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 120.0
    info: dict[str, Any] = field(default_factory=dict)

    name: ClassVar[str] = "openai"
    tokenizer: ClassVar[Any] = None  # the server tokenizes: batches are sized by characters
    chat_api: ClassVar[bool] = True  # chat prompts are answered through /chat/completions (generate mode)
    MODES: ClassVar[dict[str, str]] = {
        "letter": "legacy completions with echo + logprobs: the log-probabilities of the prompt tokens that "
                  "start in the continuation ' X' (by character offset), summed (exact, not limited to top-k)",
        "option": "the same for ' <option text>'",
        "generate": "a greedy completion (temperature 0)",
    }

    @classmethod
    def from_spec(cls, target: str, *, timeout: float = 120.0) -> Endpoint:
        """``http://HOST:PORT/v1#model-name`` (without ``#model-name``: the server's first listed model)."""
        base_url, _, model = target.partition("#")
        if not base_url.startswith(("http://", "https://")):
            raise InputError(f"an OpenAI-compatible endpoint is an http(s) URL such as http://127.0.0.1:8000/v1, "
                             f"got '{target}'")
        endpoint = cls(base_url, model, api_key=os.environ.get("OPENAI_API_KEY") or None, timeout=timeout)
        if not model:
            endpoint.model = endpoint.first_model()
        return endpoint

    @property
    def spec(self) -> str:
        return f"{self.base_url}#{self.model}"

    def _request(self, route: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        url = self.base_url.rstrip("/") + "/" + route.lstrip("/")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(url, data=data, headers=headers, method="GET" if payload is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")[:300]
            raise MedtuneError(f"endpoint {url} answered HTTP {exc.code}: {body}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise InputError(f"cannot reach endpoint {url}: {exc}") from None

    def post(self, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self._request(route, payload)

    def first_model(self) -> str:
        """The id of the first model the server lists (``GET /models``)."""
        listed = self._request("models", None).get("data") or []
        if not listed or not isinstance(listed[0], dict) or not listed[0].get("id"):
            raise InputError(f"endpoint {self.base_url} lists no model: name one as {self.base_url}#MODEL")
        return str(listed[0]["id"])

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        if any(isinstance(c, ChatPrompt) for c, _ in pairs):
            raise InputError("an OpenAI-compatible endpoint gives no log-likelihoods under chat (its chat API "
                             "returns none for a prompt): use generate mode or chat: false")
        contexts = [c for c, _ in pairs]
        conts = [x for _, x in pairs]
        resp = self.post("completions", build_loglik_request(self.model, contexts, conts))
        return parse_loglik_response(resp, contexts, conts)

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] | None = None) -> list[str]:
        if any(isinstance(p, ChatPrompt) for p in prompts):
            return [parse_chat_response(self.post("chat/completions", build_chat_request(
                self.model, p.messages() if isinstance(p, ChatPrompt) else [{"role": "user", "content": p}],
                max_new_tokens, stop))) for p in prompts]
        resp = self.post("completions", build_generate_request(self.model, prompts, max_new_tokens, stop))
        return parse_generate_response(resp, len(prompts))
