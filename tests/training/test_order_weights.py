"""The trained weights follow the planned order: the order is a real input of training, not only of its log.

The run log records which ids each step saw; these tests check the weights themselves. Two orders of the same items
give two models, and a plain PyTorch loop written here from the model's forward — the order file's epochs cut into
global batches, AdamW, gradient clipping, the summed cross-entropy over answer tokens divided by the step's answer
tokens — reproduces the weights medtune's trainer ends with. A trainer that reordered, dropped or repeated a batch
would log what the plan says yet end with other weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from training_helpers import make_items, make_order, micro_config

from medtune.training import train
from medtune.training.data import IGNORE, encode_items
from medtune.training.runlog import read_log

N_ITEMS = 12


def _config(**kw):
    # fp32 and padded micro-batches: the reference below computes exactly what the trainer computes.
    return micro_config(method="full", dtype="fp32", packing=False, batch_size=2, grad_accum=2, lr=3e-3,
                        weight_decay=0.01, max_grad_norm=1.0, **kw)


def _weights(result) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}


def test_the_same_items_in_another_order_give_other_weights(tmp_path):
    items = make_items(N_ITEMS)
    ids = [it.id for it in items]
    forward = _weights(train(_config(), items, make_order(ids), tmp_path / "forward"))
    again = _weights(train(_config(), items, make_order(ids), tmp_path / "again"))
    backward = _weights(train(_config(), items, make_order(ids[::-1]), tmp_path / "backward"))
    assert forward.keys() == again.keys() == backward.keys()
    # the same order twice: the same weights, so what differs below is the order alone
    assert all(torch.equal(forward[k], again[k]) for k in forward)
    differs = [k for k in forward if not torch.allclose(forward[k], backward[k], rtol=1e-4, atol=1e-6)]
    assert len(differs) > len(forward) // 2, differs


def _planned_batches(order: dict, global_batch: int) -> list[list[str]]:
    """The order file's epochs, each cut into consecutive global batches (the last of an epoch may be short)."""
    return [list(epoch[i:i + global_batch]) for epoch in order["epochs"] for i in range(0, len(epoch), global_batch)]


def _reference_training(base_dir, items, order, config) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32, attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = encode_items(items, tokenizer, target=config.target, template=config.template,
                           max_length=config.max_length, add_eos=config.add_eos)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    for batch_ids in _planned_batches(order, config.global_batch):
        # the step's loss: summed next-token cross-entropy over every answer token of the step, divided by their count
        n_answer = sum(sum(t != IGNORE for t in encoded[i].labels[1:]) for i in batch_ids)
        for lo in range(0, len(batch_ids), config.batch_size):
            rows = [encoded[i] for i in batch_ids[lo:lo + config.batch_size]]
            width = max(len(e.input_ids) for e in rows)
            input_ids = torch.tensor([list(e.input_ids) + [pad_id] * (width - len(e.input_ids)) for e in rows])
            labels = torch.tensor([list(e.labels) + [IGNORE] * (width - len(e.labels)) for e in rows])
            mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in rows])
            logits = model(input_ids=input_ids, attention_mask=mask).logits
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=IGNORE, reduction="sum")
            (loss / n_answer).backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_trainer_ends_with_the_weights_of_a_plain_loop_over_the_planned_batches(tmp_path):
    items = make_items(N_ITEMS)
    ids = [it.id for it in items]
    ids = ids[1::2] + ids[::2]  # neither the file's order nor its reverse
    order = make_order(ids, epochs=2)
    config = _config()
    result = train(config, items, order, tmp_path / "run")
    got = _weights(result)
    want = _reference_training(result.run_dir / "base", items, order, config)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.allclose(got[k], want[k], rtol=1e-5, atol=1e-6), f"{k}: {(got[k] - want[k]).abs().max():.2e}"
    # and training moved the weights far more than that tolerance (equal untrained weights would prove nothing)
    initial = load_file(str(result.run_dir / "base" / "model.safetensors"))
    moved = [k for k in initial if not torch.allclose(initial[k], want[k], rtol=1e-3, atol=1e-4)]
    assert len(moved) > len(initial) // 2, moved
    planned = _planned_batches(order, config.global_batch)
    assert len(planned) == 6 and [r["ids"] for r in read_log(result.run_dir)] == planned
