"""Sampled answers and their majority vote (self-consistency) on the transformers backend, an OpenAI-compatible server
and vLLM's requests; the metrics of the votes."""

from __future__ import annotations

import copy
import random
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from tests.openai_stub import completions_server, prompts_of

from medtune.answer_extraction import extract_answer
from medtune.cot_prompts import ChainOfThought
from medtune.errors import ConfigError
from medtune.evaluation import compute_metrics
from medtune.models import LoadedModel
from medtune.prompts import LETTERS, PAPER, mcq_prompt, permuted_options
from medtune.scoring import load_backend, question_permutation, score_items
from medtune.scoring.sampling import Sampling, prompt_seed
from medtune.scoring.tokens import letter_token_ids
from medtune.scoring.vllm_backend import sample_params, sample_texts


@pytest.fixture(scope="module")
def letter_model(tiny) -> LoadedModel:
    """The tiny model with an output head that mostly writes letters: a bias of 10 on " A" ... " D" and small random
    rows for them (which letter then depends on the context and the draw), zero for every other token. Its random
    answers then name options, and votes have something to decide."""
    model = copy.deepcopy(tiny.model)
    letters = letter_token_ids(tiny.tokenizer, PAPER.answer_prefix, list(LETTERS[:4]))
    vocab, hidden = model.lm_head.weight.shape
    head = torch.nn.Linear(hidden, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[letters] = 0.2 * torch.randn((len(letters), hidden), generator=torch.Generator().manual_seed(0))
        head.bias[letters] = 10.0
    model.lm_head = head  # untied from the input embeddings
    model.eval()
    return LoadedModel(model, tiny.tokenizer, "tiny-letters", torch.float32, "cpu")


def _hand_vote(answers: list[int | None]) -> int | None:
    """The most frequent readable answer; of tied ones, the one a sample gave first."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def test_votes_are_the_majority_of_the_stored_samples_and_seeds_fix_the_samples(letter_model, four_option_items):
    items = four_option_items[:6]
    sampling = Sampling(n=5, temperature=1.5, top_p=0.95, seed=3)
    kwargs: dict[str, Any] = {"mode": "generate", "max_new_tokens": 3, "permute_seed": 5, "progress": False,
                              "cot": ChainOfThought("zero-shot")}
    frame = score_items(letter_model, items, sampling=sampling, batch_tokens=1 << 16, **kwargs)
    spread = 0
    for row, item in zip(frame.itertuples(), items, strict=True):
        assert len(row.samples) == 5 and len(row.sample_preds) == 5
        perm = question_permutation(item.id, len(item.options), 5)
        shown, _ = permuted_options(item, perm)
        answers = [None if (k := extract_answer(t, shown)) is None else perm[k] for t in row.samples]
        assert list(row.sample_preds) == answers
        expected = _hand_vote(answers)
        assert (row.pred if row.pred is not None and row.pred == row.pred else None) == expected
        assert row.generated == row.samples[answers.index(expected) if expected is not None else 0]
        assert row.correct == (expected == item.answer)
        spread += len({a for a in answers if a is not None}) > 1
    assert spread >= 2  # samples disagree, so the votes decide something

    # one question per batch, the same seed: the same samples; another seed: other samples
    again = score_items(letter_model, items, sampling=sampling, batch_tokens=1, **kwargs)
    assert [list(s) for s in again["samples"]] == [list(s) for s in frame["samples"]]
    other = score_items(letter_model, items[:3], sampling=Sampling(5, 1.5, 0.95, seed=4), **kwargs)
    assert [list(s) for s in other["samples"]] != [list(s) for s in frame["samples"][:3]]

    metrics = compute_metrics(frame, items, n_boot=200)
    sc = metrics["self_consistency"]
    per_item = [sum(a == it.answer for a in row) / 5 for row, it in zip(frame["sample_preds"], items, strict=True)]
    assert sc["samples"] == 5
    assert sc["per_sample_accuracy"]["accuracy"] == pytest.approx(sum(per_item) / len(items))
    assert sc["voted_accuracy"] == pytest.approx(metrics["accuracy"]["accuracy"])
    shares = [Counter(a for a in row if a is not None).most_common(1)[0][1] / 5 if any(a is not None for a in row)
              else 0.0 for row in frame["sample_preds"]]
    assert sc["vote_share"] == pytest.approx(sum(shares) / len(items))
    unread = sum(a is None for row in frame["sample_preds"] for a in row)
    assert metrics["unparsed"]["samples_share"] == pytest.approx(unread / 30)
    assert metrics["unparsed"]["share"] == pytest.approx(frame["pred"].isna().mean())


def test_sampling_is_for_generate_mode_on_a_backend_that_samples(tiny, five_option_items):
    with pytest.raises(ConfigError, match="sampling needs generate mode"):
        score_items(tiny, five_option_items[:2], mode="letter", sampling=Sampling(2), progress=False)
    with pytest.raises(ConfigError, match="temperature > 0"):
        Sampling(3, temperature=0)


_REPLIES = ["Therefore, the answer is B.", "The answer is (C).", "I think it's B", "A 45-year-old man, so A.",
            "Answer: d", "A patient with edema."]


def _reply(seed: Any, prompt: str, k: int) -> str:
    return random.Random(f"{seed}|{prompt}|{k}").choice(_REPLIES)


def _scripted(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A stand-in LLM: per prompt ``n`` answers picked by (seed, prompt, sample), numbered as OpenAI numbers them."""
    out = []
    for i, prompt in enumerate(prompts_of(body)):
        for k in range(body.get("n", 1)):
            out.append({"index": i * body.get("n", 1) + k, "text": _reply(body.get("seed"), prompt, k),
                        "finish_reason": "stop"})
    random.Random(0).shuffle(out)  # the index, not the order, says which sample is which
    return out


def test_sampling_through_an_openai_compatible_server_sends_n_seed_temperature_top_p(five_option_items):
    items = five_option_items[:5]
    with completions_server(_scripted, "scripted") as (url, requests):
        endpoint = load_backend(f"openai:{url}#scripted")
        frame = score_items(endpoint, items, mode="generate", max_new_tokens=16, progress=False,
                            sampling=Sampling(n=4, temperature=0.7, top_p=0.9, seed=11))
    assert requests and all((r["n"], r["seed"], r["temperature"], r["top_p"], r["max_tokens"]) == (4, 11, 0.7, 0.9, 16)
                            for r in requests)
    for row, item in zip(frame.itertuples(), items, strict=True):
        assert list(row.samples) == [_reply(11, mcq_prompt(item, "paper"), k) for k in range(4)]
        answers = [extract_answer(t, item.options) for t in row.samples]
        assert list(row.sample_preds) == answers
        assert (row.pred if row.pred == row.pred else None) == _hand_vote(answers)
    assert frame["pred"].notna().sum() >= 3


def test_vllm_requests_for_samples_and_reading_them_back():
    params = sample_params(["p1", "p2"], 64, ["\nQuestion:"], n=5, temperature=0.8, top_p=0.9, seed=2)
    assert [p["seed"] for p in params] == [prompt_seed(2, "p1"), prompt_seed(2, "p2")]
    assert params[0] == {"n": 5, "temperature": 0.8, "top_p": 0.9, "seed": prompt_seed(2, "p1"), "max_tokens": 64,
                         "stop": ["\nQuestion:"]}
    outputs = [SimpleNamespace(outputs=[SimpleNamespace(index=1, text="B"), SimpleNamespace(index=0, text="A")])]
    assert sample_texts(outputs, 2) == [["A", "B"]]


def test_cli_evaluates_with_a_chain_of_thought_and_five_samples(tiny, four_option_items, tmp_path, capsys):
    import json

    from medtune.cli import main
    from medtune.evaluation import read_predictions
    from medtune.evaluation_stage import EvalSettings, resolve_max_new_tokens
    from medtune.schema import write_items

    model_dir = tmp_path / "tiny"
    tiny.model.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    tests = [it for it in four_option_items if it.split == "test"][:3]
    train = [it for it in four_option_items if it.split == "train" and it.explanation][:6]
    items = write_items(tests + train, tmp_path / "items.parquet")
    common = [str(items), "--model", str(model_dir), "--split", "test", "--max-new-tokens", "4", "--no-progress",
              "--n-boot", "200"]
    out = tmp_path / "zero"
    assert main(["evaluate", "run", *common, "-o", str(out), "--cot", "zero-shot", "--samples", "5",
                 "--temperature", "0.7"]) == 0
    assert "per-sample accuracy" in capsys.readouterr().out
    frame = read_predictions(out / "predictions.parquet")
    assert list(frame["id"]) == [it.id for it in tests]
    assert all(len(s) == 5 for s in frame["samples"]) and all(len(p) == 5 for p in frame["sample_preds"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "generate" and metrics["self_consistency"]["samples"] == 5
    assert set(metrics["self_consistency"]) >= {"per_sample_accuracy", "voted_accuracy", "vote_share", "vote_margin"}
    assert 0 <= metrics["unparsed"]["samples_share"] <= 1
    assert metrics["run"]["cot"] == {"style": "zero-shot", "shots": []}
    assert metrics["run"]["sampling"] == {"samples": 5, "temperature": 0.7, "top_p": 1.0, "seed": 0}
    again = tmp_path / "again.json"  # recomputed from the file: the same numbers
    assert main(["evaluate", "metrics", str(out / "predictions.parquet"), "--items", str(items), "-o", str(again),
                 "--n-boot", "200"]) == 0
    recomputed = json.loads(again.read_text())
    assert recomputed["self_consistency"] == metrics["self_consistency"]
    assert recomputed["unparsed"] == metrics["unparsed"]

    # few-shot: worked examples from the file's train split, never a test item
    few = tmp_path / "few"
    assert main(["evaluate", "run", *common, "-o", str(few), "--cot", "few-shot", "--cot-shots", "2"]) == 0
    run = json.loads((few / "metrics.json").read_text())["run"]
    assert len(run["cot"]["shots"]) == 2 and set(run["cot"]["shots"]) <= {it.id for it in train}
    few_metrics = json.loads((few / "metrics.json").read_text())
    assert "sampling" not in run and "self_consistency" not in few_metrics
    assert few_metrics["unparsed"]["n"] == few_metrics["unanswered"] and "samples_share" not in few_metrics["unparsed"]
    capsys.readouterr()
    assert main(["evaluate", "run", *common, "-o", str(tmp_path / "bad"), "--samples", "3"]) == 2
    assert "temperature > 0" in capsys.readouterr().err
    assert resolve_max_new_tokens(EvalSettings(cot="zero-shot"), ChainOfThought("zero-shot")) == 512
    assert resolve_max_new_tokens(EvalSettings(cot="zero-shot", max_new_tokens=9), ChainOfThought("zero-shot")) == 9
    assert resolve_max_new_tokens(EvalSettings(), None) == 32


def test_sampling_under_chat_goes_through_the_chat_api_with_n_and_seed(five_option_items):
    from medtune.chat_format import ChatFormat

    item = five_option_items[0]

    def chat_choices(body: dict[str, Any]) -> list[dict[str, Any]]:
        content = body["messages"][-1]["content"]
        return [{"index": k, "message": {"role": "assistant", "content": _reply(body["seed"], content, k)}}
                for k in reversed(range(body["n"]))]

    with completions_server(chat_choices, "served-instruct") as (url, requests):
        endpoint = load_backend(f"openai:{url}")
        frame = score_items(endpoint, [item], mode="generate", chat=ChatFormat(), progress=False,
                            cot=ChainOfThought("zero-shot"), sampling=Sampling(n=3, temperature=0.5, seed=9))
    body = requests[-1]
    assert (body["n"], body["seed"], body["temperature"], body["top_p"]) == (3, 9, 0.5, 1.0)
    content = ChainOfThought("zero-shot").prompt(item, "paper")
    assert body["messages"] == [{"role": "user", "content": content}]
    assert list(frame["samples"][0]) == [_reply(9, content, k) for k in range(3)]
    answers = [extract_answer(t, item.options) for t in frame["samples"][0]]
    assert list(frame["sample_preds"][0]) == answers
