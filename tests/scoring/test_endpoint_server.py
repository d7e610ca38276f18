"""The ``openai:`` backend against a real OpenAI-compatible server serving the tiny model, compared with ``hf``.

The server runs in the test (stdlib ``http.server`` on 127.0.0.1, port 0, a thread) and implements the part of
the legacy completions API the backend uses: ``echo`` with per-token ``logprobs`` and character ``text_offset``
(from the HF tokenizer's offsets), ``max_tokens``, greedy generation, and ``GET /v1/models``. Scoring the same
questions through it and in-process must give the same predictions and the same scores.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tests.openai_stub import completions_server, prompts_of

from medtune.scoring import load_backend, score_items
from medtune.scoring.endpoint import Endpoint


@torch.inference_mode()
def _completion(loaded, prompt: str, max_tokens: int, echo: bool, logprobs: int | None) -> dict[str, Any]:
    """One choice of a completions response: the prompt's token log-probabilities (echo) and greedy new text."""
    tok, model = loaded.tokenizer, loaded.model
    enc = tok(prompt, add_special_tokens=True, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [start for start, _ in enc["offset_mapping"]]
    x = torch.tensor([ids])
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_tokens, do_sample=False,
                         pad_token_id=tok.pad_token_id, return_dict_in_generate=True, output_scores=True)
    new = out.sequences[0, len(ids):].tolist()
    text = tok.decode(new, skip_special_tokens=True)
    choice: dict[str, Any] = {"text": (prompt + text) if echo else text, "finish_reason": "length"}
    if logprobs is not None:
        tokens, values, text_offset = [], [], []
        if echo:
            logp = torch.log_softmax(model(x).logits[0].double(), dim=-1)
            values = [None] + [logp[k - 1, ids[k]].item() for k in range(1, len(ids))]
            tokens = tok.convert_ids_to_tokens(ids)
            text_offset = offsets
        for step, token in enumerate(new):  # generated tokens lie after the prompt
            values.append(torch.log_softmax(out.scores[step][0].double(), dim=-1)[token].item())
            tokens.append(tok.convert_ids_to_tokens(token))
            text_offset.append(len(prompt) + len(tok.decode(new[:step], skip_special_tokens=True)))
        choice["logprobs"] = {"tokens": tokens, "token_logprobs": values, "text_offset": text_offset}
    return choice


@pytest.fixture(scope="module")
def served(tiny):
    def choices(body: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"index": i, **_completion(tiny, p, int(body.get("max_tokens", 16)), bool(body.get("echo")),
                                           body.get("logprobs"))} for i, p in enumerate(prompts_of(body))]

    with completions_server(choices, "tiny-served") as (url, requests):
        yield url, requests


@pytest.mark.parametrize("mode", ["letter", "option"])
def test_endpoint_scores_equal_in_process_scores(tiny, served, five_option_items, mode):
    url, requests = served
    items = five_option_items[:6]
    endpoint = load_backend(f"openai:{url}#tiny-served")
    assert isinstance(endpoint, Endpoint) and endpoint.model == "tiny-served"
    local = score_items(tiny, items, mode=mode, permute_seed=3, progress=False)
    remote = score_items(endpoint, items, mode=mode, permute_seed=3, progress=False)
    assert list(remote["pred"]) == list(local["pred"])
    for a, b in zip(remote.itertuples(), local.itertuples(), strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-4)
        assert a.probs == pytest.approx(b.probs, abs=1e-4)
        if mode == "option":
            assert a.scores_norm == pytest.approx(b.scores_norm, abs=1e-4)
    assert requests and all(r["echo"] is True and r["model"] == "tiny-served" for r in requests)


def test_endpoint_generate_and_model_discovery(tiny, served, five_option_items):
    url, _ = served
    endpoint = load_backend(f"openai:{url}")  # no #model: the server's first listed model
    assert endpoint.model == "tiny-served"
    items = five_option_items[:3]
    remote = score_items(endpoint, items, mode="generate", max_new_tokens=4, progress=False)
    local = score_items(tiny, items, mode="generate", max_new_tokens=4, progress=False)
    assert list(remote["generated"]) == list(local["generated"])
