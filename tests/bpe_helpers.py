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
