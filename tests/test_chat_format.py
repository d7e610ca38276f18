"""Chat templates (medtune.chat_format): the one (prompt, completion) → ids rule under a chat template, ``chat: auto``,
the settings type, letter scoring under chat, and the endpoint's chat API.

The tokenizer is a real byte-level BPE (tests/bpe_helpers.py) with ChatML control tokens and a template that writes
BOS itself while the tokenizer also prepends BOS by default: the case where encoding the rendered text again would
double the BOS.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpe_helpers import CHATML_WITH_BOS, chat_bpe_tokenizer
from medtune.chat_format import (
    ChatFormat,
    ChatPrompt,
    chat_record,
    encode_turn,
    is_instruct_name,
    known_model_names,
    prompt_token_ids,
    resolve_chat,
    template_sha256,
)
from medtune.errors import ConfigError, InputError
from medtune.evaluation_stage import EvalSettings
from medtune.prompts import mcq_completion, mcq_prompt
from medtune.schema import MCQItem
from medtune.scoring.engine import question_prompt
from medtune.scoring.tokens import letter_token_ids, token_cache
from medtune.settings import validate_settings
from medtune.tokenization import split_prompt_completion
from medtune.training.config import TrainSettings
from medtune.training.data import IGNORE, encode_item

ITEM = MCQItem(id="q1", question="Which drug treats the heart disease?", options=["Zorafen", "Quilmab", "Dextavir"],
               answer=1, source="test", split="test")
SYSTEM = "Answer with one letter."


@pytest.fixture(scope="module")
def tok():
    return chat_bpe_tokenizer()


def _template_ids(tok, messages, generation_prompt):
    return tok.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True,
                                   return_dict=False)


def test_chat_prompt_ids_are_the_templates_with_one_bos_and_the_completion_is_the_assistant_turn(tok):
    prompt = mcq_prompt(ITEM)
    turn = encode_turn(tok, prompt, mcq_completion(ITEM), ChatFormat(SYSTEM))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    assert turn.prompt == _template_ids(tok, messages, True)
    assert turn.prompt.count(tok.bos_token_id) == 1 and turn.prompt[0] == tok.bos_token_id
    # the text encoded again with the tokenizer's special tokens (what scoring did before) has two
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert tok(rendered)["input_ids"].count(tok.bos_token_id) == 2
    # the completion: the letter without its leading space, then the template's end of turn
    assert tok.decode(turn.answer) == "B" and len(turn.answer) == 1
    assert tok.decode(turn.end) == "<|im_end|>\n"
    full = _template_ids(tok, [*messages, {"role": "assistant", "content": "B"}], False)
    assert turn.prompt + turn.completion == full
    assert prompt_token_ids(tok, prompt, ChatFormat(SYSTEM)) == turn.prompt
    assert prompt_token_ids(tok, ChatPrompt(prompt, ChatFormat(SYSTEM))) == turn.prompt


@settings(max_examples=25, deadline=None)
@given(prompt=st.text(alphabet="abAB :\n?", min_size=1, max_size=20),
       completion=st.text(alphabet="abAB :\n", min_size=1, max_size=8))
def test_without_chat_the_split_is_unchanged(prompt, completion):
    tok = chat_bpe_tokenizer()
    turn = encode_turn(tok, prompt, completion, None)
    assert (turn.prompt, turn.answer) == split_prompt_completion(tok, prompt, completion) and turn.end == []


def test_training_labels_cover_exactly_the_assistant_turn(tok):
    encoded = encode_item(ITEM, tok, chat=ChatFormat(SYSTEM))
    n_prompt = sum(1 for t in encoded.labels if t == IGNORE)
    assert all(t == IGNORE for t in encoded.labels[:n_prompt])  # the prompt first, then only labels
    labelled = list(encoded.labels[n_prompt:])
    assert labelled == list(encoded.input_ids[n_prompt:]) and tok.decode(labelled) == "B<|im_end|>\n"
    assert tok.eos_token_id not in labelled  # the template's end of turn ends the answer, EOS is not added again
    plain = encode_item(ITEM, tok)  # without chat: today's ids, EOS appended
    assert plain.input_ids[-1] == tok.eos_token_id and tok.decode(plain.input_ids[:1]) == "<s>"


def test_letter_scoring_reads_the_first_token_of_the_assistant_turn(tok):
    chat = ChatFormat(SYSTEM)
    ids = letter_token_ids(tok, "### Answer:", ["A", "B", "C"], chat)
    assert [tok.decode([i]) for i in ids] == ["A", "B", "C"]
    prompt = question_prompt(ITEM, "paper", None, chat)
    ctx, cont = token_cache(tok).split(prompt, " B")  # the scorer's continuation of the letter B
    trained = encode_turn(tok, mcq_prompt(ITEM), mcq_completion(ITEM), chat)
    assert ctx == trained.prompt and cont == trained.answer == [ids[1]]
    # a plain prompt with the same text is cached apart from the chat prompt
    assert token_cache(tok).split(mcq_prompt(ITEM), " B") == split_prompt_completion(tok, mcq_prompt(ITEM), " B")


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "meta-llama/Llama-2-7b-chat-hf",
                                  "google/gemma-7b-it", "/models/Qwen2.5-7B-Instruct/", "tiny-chatml-instruct"])
def test_auto_is_chat_for_an_instruct_or_chat_model_with_a_template(tok, name):
    assert is_instruct_name(name)
    assert resolve_chat("auto", tok, [name]) is True


@pytest.mark.parametrize("name", ["meta-llama/Llama-2-7b-hf", "tiny", "HuggingFaceTB/SmolLM2-135M", "bitnet-b1",
                                  "/runs/chat-run/base", "epfl-llm/meditron-7b"])
def test_auto_is_no_chat_for_a_base_model(tok, name):
    assert not is_instruct_name(name)
    assert resolve_chat("auto", tok, [name]) is False


def test_auto_needs_a_template_and_true_without_one_is_an_error():
    plain = chat_bpe_tokenizer(template=None)
    assert resolve_chat("auto", plain, ["org/model-instruct"]) is False
    with pytest.raises(ConfigError, match="chat: true, but the tokenizer of org/model-instruct has no chat template"):
        resolve_chat(True, plain, ["org/model-instruct"])
    assert resolve_chat(False, chat_bpe_tokenizer(), ["org/model-instruct"]) is False


def test_the_model_names_auto_looks_at(tok):
    assert known_model_names(tok, "runs/r1", None) == ["runs/r1", "tiny-chatml-instruct"]


def test_a_template_whose_answer_turn_does_not_continue_its_generation_prompt_is_refused():
    odd = CHATML_WITH_BOS.replace("{{ m['role'] }}\n", "{{ 'bot' if m['role'] == 'assistant' else m['role'] }}\n")
    tok = chat_bpe_tokenizer(template=odd)
    with pytest.raises(ConfigError, match="does not start with its generation prompt"):
        encode_turn(tok, "Question?", " B", ChatFormat())


def test_the_chat_setting_takes_auto_true_and_false_in_training_and_evaluation():
    for cls in (TrainSettings, EvalSettings):
        assert cls().chat == "auto"
        assert validate_settings(cls, {"chat": True}, "x").chat is True
        assert validate_settings(cls, {"chat": "false"}, "x").chat is False  # as the command line gives it
        assert validate_settings(cls, {"chat": "auto", "system_prompt": "Be brief."}, "x").system_prompt == "Be brief."
        with pytest.raises(ConfigError, match="chat"):
            validate_settings(cls, {"chat": "sometimes"}, "x")


def test_the_record_names_the_template_by_its_hash(tok):
    record = chat_record(tok, ChatFormat(SYSTEM))
    assert record == {"enabled": True, "system_prompt": SYSTEM, "template_sha256": template_sha256(tok)}
    assert len(record["template_sha256"]) == 64
    assert chat_record(tok, None) == {"enabled": False, "system_prompt": None, "template_sha256": None}


def test_an_endpoint_answers_chat_through_its_chat_api_and_refuses_loglikelihoods_under_chat():
    from tests.openai_stub import completions_server

    from medtune.scoring import score_items
    from medtune.scoring.endpoint import Endpoint

    def choices(body):
        return [{"index": 0, "message": {"role": "assistant", "content": "B) Quilmab"}}]

    with completions_server(choices, "served-instruct") as (url, requests):
        endpoint = Endpoint.from_spec(url)
        frame = score_items(endpoint, [ITEM], mode="generate", chat=ChatFormat(SYSTEM), progress=False)
        assert frame["pred"].tolist() == [1]
        assert requests[-1]["messages"] == [{"role": "system", "content": SYSTEM},
                                            {"role": "user", "content": mcq_prompt(ITEM)}]
        with pytest.raises(ConfigError, match="gives no log-likelihoods of a prompt, so letter mode"):
            score_items(endpoint, [ITEM], mode="letter", chat=True, progress=False)
        with pytest.raises(InputError, match="no log-likelihoods under chat"):
            endpoint.loglikelihood([(ChatPrompt("Q?", ChatFormat()), " B")])


def test_an_over_long_chat_prompt_loses_the_start_of_the_question_not_the_templates_head(tok):
    """Truncation keeps BOS, the system turn and the user header, then the question's end and the answer turn."""
    long_item = ITEM.model_copy(update={"question": " ".join(["Which drug treats the heart disease?"] * 40)})
    chat = ChatFormat(SYSTEM)
    full = encode_item(long_item, tok, chat=chat, max_length=4096)
    cut = encode_item(long_item, tok, chat=chat, max_length=64)
    n_answer = sum(1 for t in full.labels if t != IGNORE)
    head = _template_ids(tok, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "."}], True)
    n_head = next(i for i, (a, b) in enumerate(zip(full.input_ids, head, strict=False)) if a != b)
    assert len(full.input_ids) > 64 and len(cut.input_ids) == 64
    assert cut.input_ids[:n_head] == full.input_ids[:n_head] and cut.input_ids.count(tok.bos_token_id) == 1
    assert SYSTEM in tok.decode(list(cut.input_ids[:n_head]))
    tail = 64 - n_head
    assert cut.input_ids[n_head:] == full.input_ids[-tail:] and cut.labels[-n_answer:] == full.labels[-n_answer:]
    # without chat the start is cut as before: the first ids are the question's, the end is kept
    plain = encode_item(long_item, tok, max_length=64)
    assert plain.input_ids == encode_item(long_item, tok, max_length=4096).input_ids[-64:]
