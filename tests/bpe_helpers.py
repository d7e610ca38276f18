"""Tokenizers whose merges a test chooses."""

from __future__ import annotations


def bpe_tokenizer(merges: list[tuple[str, str]]):  # -> transformers.PreTrainedTokenizerFast
    """A byte-level BPE with exactly ``merges`` (no pre-tokenizer splits), BOS prepended: tokenizers whose
    merges a test chooses, e.g. " A" as one token, or ':' joined with the space after it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<pad>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate([*specials, *alphabet, *(a + b for a, b in merges)])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


# ChatML with the BOS written by the template itself (as Llama-3's ``<|begin_of_text|>``): a tokenizer that also
# prepends BOS by default would double it if the rendered text were encoded again with special tokens.
CHATML_WITH_BOS = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_bpe_tokenizer(template: str = CHATML_WITH_BOS, name: str = "tiny-chatml-instruct"):
    """:func:`bpe_tokenizer` with the letters' " A".." J" merges, ChatML's control tokens and a chat template, named
    ``name`` (its ``name_or_path``). It prepends BOS by default, and the template writes BOS too."""
    tok = bpe_tokenizer([("Ġ", letter) for letter in "ABCDEFGHIJ"])
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = template
    tok.name_or_path = name
    return tok
