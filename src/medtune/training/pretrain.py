"""Plain causal-LM training on raw text: teaches a tiny model a (synthetic) textbook before fine-tuning.

The demo's model starts from random weights, so it must first read the textbook that holds the facts
(about 100 epochs at lr 3e-3 store them in the 0.6 M-parameter tiny Llama). Lines are tokenised with an EOS
after each, concatenated and cut into ``seq_len`` blocks (the "wrapped" layout: no padding, attention across
sentence ends is harmless here because every sentence is self-contained); block order is reshuffled each epoch from
``seed``, the learning rate decays on a cosine to 10 % of ``lr``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from medtune.errors import InputError


def _blocks(tokenizer: Any, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for t in texts:
        if t.strip():
            ids += tokenizer(t.strip(), add_special_tokens=False)["input_ids"]
            if eos is not None:
                ids.append(eos)
    n = len(ids) // seq_len
    if n == 0:
        raise InputError(f"the texts hold {len(ids)} tokens, fewer than one block of {seq_len}")
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


def pretrain_causal_lm(model: Any, tokenizer: Any, texts: Sequence[str], *, epochs: int = 100, lr: float = 3e-3,
                       batch_size: int = 16, seq_len: int = 64, seed: int = 0,
                       weight_decay: float = 0.0) -> list[float]:
    """Train ``model`` in place on ``texts`` (next-token loss on every token); returns the mean loss per epoch."""
    blocks = _blocks(tokenizer, texts, seq_len)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(blocks) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    device = next(model.parameters()).device  # the blocks go where the model is (a GPU when it was loaded there)
    model.train()
    history: list[float] = []
    for _ in range(epochs):
        order = list(range(len(blocks)))
        rng.shuffle(order)
        losses = []
        for i in range(0, len(order), batch_size):
            x = blocks[order[i : i + batch_size]].to(device)
            logits = model(input_ids=x, use_cache=False).logits
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1))
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        values = torch.stack(losses).tolist()  # one host sync per epoch, not per step
        history.append(sum(values) / len(values))
    model.eval()
    return history
