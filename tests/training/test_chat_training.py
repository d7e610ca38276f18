"""An instruct-style tiny model trained and evaluated under its chat template, end to end.

The tokenizer (tests/bpe_helpers.py) prepends BOS by default and its ChatML template writes BOS too. Training must
see the template's prompt with exactly one BOS and label exactly the assistant's turn; the evaluation of the run
must reuse the chat format the run recorded without being told, and score the very prompt ids training saw.
"""

from __future__ import annotations

import io
import json

import pytest
import torch
from training_helpers import make_items, make_order

from bpe_helpers import chat_bpe_tokenizer
from medtune.chat_format import ChatFormat, template_sha256
from medtune.cli import main
from medtune.evaluation_stage import EvalSettings, resolve_eval_chat
from medtune.model_ref import ModelRef, load_model
from medtune.prompts import mcq_completion
from medtune.schema import write_items
from medtune.scoring.engine import question_prompt
from medtune.scoring.tokens import token_cache
from medtune.training.config import TrainSettings
from medtune.training.data import IGNORE, encode_item
from medtune.training.trainer import train

SYSTEM = "Answer with one letter."


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    """A LoRA run of 2 steps on a 2-layer Llama (hidden 32) with the chat tokenizer; chat on, a system prompt."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("chat")
    tok = chat_bpe_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=True))
    items = make_items(8)
    config = TrainSettings(method="lora", chat=True, system_prompt=SYSTEM, batch_size=4, max_steps=2, max_length=512,
                           target="letter")
    order = make_order([it.id for it in items])
    run_dir = root / "run"
    train(config, items, order, run_dir, model=model, tokenizer=tok)
    items_path = write_items([it.model_copy(update={"split": "test"}) for it in items[:4]], root / "test.parquet")
    return {"run": run_dir, "items": items[:4], "items_path": items_path, "tok": tok, "root": root}


def test_the_run_records_its_chat_format(chat_run):
    record = json.loads((chat_run["run"] / "config.json").read_text())
    assert record["chat"] == {"enabled": True, "system_prompt": SYSTEM,
                              "template_sha256": template_sha256(chat_run["tok"])}
    ref = ModelRef.from_run(chat_run["run"])
    assert ref.train_chat == record["chat"]


def test_training_and_scoring_see_the_same_prompt_ids_with_one_bos(chat_run):
    item = chat_run["items"][0]
    ref = ModelRef.from_run(chat_run["run"])
    backend = load_model(ref, EvalSettings())
    chat = resolve_eval_chat(EvalSettings(), ref, backend)  # chat: auto, system prompt unset: the run's
    assert chat == ChatFormat(SYSTEM)
    tok = backend.tokenizer  # the run's saved tokenizer, as evaluation loads it
    encoded = encode_item(item, tok, target="letter", template="paper", chat=chat)
    n_prompt = sum(1 for t in encoded.labels if t == IGNORE)
    train_prompt = list(encoded.input_ids[:n_prompt])
    assert train_prompt.count(tok.bos_token_id) == 1 and train_prompt[0] == tok.bos_token_id
    # the labels are the assistant's turn, exactly
    assert tok.decode(list(encoded.labels[n_prompt:])) == mcq_completion(item).strip() + "<|im_end|>\n"
    # the scorer's context and continuation of the right letter (letter mode), through the backend's tokenizer
    ctx, cont = token_cache(tok).split(question_prompt(item, "paper", None, chat), mcq_completion(item))
    assert ctx == train_prompt and cont == list(encoded.input_ids[n_prompt:n_prompt + 1])
    # generate mode starts from the same ids
    assert token_cache(tok).encode(question_prompt(item, "paper", None, chat)) == train_prompt


def test_evaluate_run_reuses_the_runs_chat_without_being_told(chat_run, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "run", str(chat_run["items_path"]), "--run", str(chat_run["run"]), "-o", str(out),
                 "--n-boot", "50"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["chat"] == {"enabled": True, "system_prompt": SYSTEM,
                                      "template_sha256": template_sha256(chat_run["tok"])}


def test_an_explicit_setting_against_the_runs_chat_wins_with_a_warning(chat_run, tmp_path):
    from medtune.evaluation_stage import run_evaluation

    with pytest.warns(UserWarning, match="contradicts the run, which was trained with its chat template"):
        summary = run_evaluation({"chat": False, "bootstrap": 50}, chat_run["items_path"],
                                 ModelRef.from_run(chat_run["run"]), tmp_path / "plain")
    assert summary["chat"] is False
    metrics = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert metrics["run"]["chat"]["enabled"] is False


def test_generate_asks_a_run_in_its_chat_format(chat_run):
    from medtune.chat_format import prompt_token_ids
    from medtune.generation import build_prompt, resolve_generation_chat, stream_answer
    from medtune.training.export import load_trained

    item = chat_run["items"][0]
    loaded = load_trained(chat_run["run"])
    chat = resolve_generation_chat(str(chat_run["run"]), loaded.tokenizer, None)  # no --chat: the run's format
    assert chat == ChatFormat(SYSTEM)
    prompt = build_prompt(item.question, item.options, "paper", loaded.tokenizer, chat)
    trained = encode_item(item, loaded.tokenizer, target="letter", template="paper", chat=chat)
    ids = prompt_token_ids(loaded.tokenizer, prompt)
    assert ids == list(trained.input_ids[:sum(1 for t in trained.labels if t == IGNORE)])
    text = stream_answer(loaded, prompt, max_new_tokens=3, out=io.StringIO())
    x = torch.tensor([ids])
    with torch.no_grad():
        ref = loaded.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=3, do_sample=False,
                                    pad_token_id=loaded.tokenizer.pad_token_id)
    assert text == loaded.tokenizer.decode(ref[0, len(ids):], skip_special_tokens=True)
    assert resolve_generation_chat(str(chat_run["run"]), loaded.tokenizer, False) is None  # --no-chat


def test_the_model_being_trained_is_scored_in_the_runs_chat_format(chat_run):
    """What an adaptive decision point and the anchor check measure (medtune.training.scores) under chat equals the
    evaluation's scoring under chat."""
    from medtune.scoring import score_items
    from medtune.training.export import load_trained
    from medtune.training.scores import anchor_answers, backend_for, item_losses

    items, chat = chat_run["items"], ChatFormat(SYSTEM)
    loaded = load_trained(chat_run["run"])
    backend = backend_for(loaded.model, loaded.tokenizer)
    frame = score_items(backend, items, mode="letter", chat=chat, progress=False)
    assert anchor_answers(backend, items, mode="letter", template="paper", chat=chat) == \
        [int(c) for c in frame["correct"]]
    losses = item_losses(backend, items, target="letter", template="paper", chat=chat)
    right = [scores[it.answer] for scores, it in zip(frame["scores"], items, strict=True)]
    assert losses == pytest.approx([-s for s in right], abs=1e-5)
    plain = item_losses(backend, items, target="letter", template="paper")
    assert plain != pytest.approx(losses, abs=1e-5)  # without chat the prompt, and so the loss, differ


def test_auto_on_a_model_folder_follows_the_models_name(chat_run, tmp_path):
    """The run's base (a chat template, no run record) is scored without chat under its own name and with chat under
    an instruct name."""
    from medtune.evaluation_stage import run_evaluation

    base = chat_run["run"] / "base"
    instruct = tmp_path / "tiny-chatml-Instruct"
    instruct.symlink_to(base, target_is_directory=True)
    for folder, expected in ((base, False), (instruct, True)):
        summary = run_evaluation({"bootstrap": 50}, chat_run["items_path"], str(folder), tmp_path / f"eval-{expected}")
        assert summary["chat"] is expected
