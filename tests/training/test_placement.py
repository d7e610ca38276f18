"""Where a run's tensors live and how it computes: the strategy for several processes, the precision actually
used, the attention implementation, the labels indexed on the host, and the memory plan's refusal before any
model loads — each through the real loop on a tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from training_helpers import make_items, make_order, micro_cli_options, micro_config

from medtune.errors import ConfigError
from medtune.schema import write_items
from medtune.training import train
from medtune.training.data import IGNORE, Encoded, collate
from medtune.training.loop import _label_positions
from medtune.training.placement import choose_strategy

MEDTUNE = shutil.which("medtune") or os.path.join(os.path.dirname(sys.executable), "medtune")


def test_one_process_is_never_sharded_and_auto_shards_only_full_weight_training() -> None:
    assert choose_strategy("fsdp", trains_every_weight=True, standard_optimizer=True, world_size=1) == "ddp"
    assert choose_strategy("auto", trains_every_weight=True, standard_optimizer=True, world_size=8) == "fsdp"
    assert choose_strategy("auto", trains_every_weight=False, standard_optimizer=True, world_size=8) == "ddp"
    assert choose_strategy("auto", trains_every_weight=True, standard_optimizer=False, world_size=8) == "ddp"
    assert choose_strategy("ddp", trains_every_weight=True, standard_optimizer=True, world_size=8) == "ddp"
    with pytest.raises(ConfigError, match=r"distributed: fsdp.*GaLore"):
        choose_strategy("fsdp", trains_every_weight=True, standard_optimizer=False, world_size=2)


@st.composite
def _encoded_batches(draw: st.DrawFn) -> list[Encoded]:
    out = []
    for k in range(draw(st.integers(1, 5))):
        n = draw(st.integers(2, 12))
        prompt = draw(st.integers(1, n - 1))
        ids = tuple(draw(st.lists(st.integers(3, 99), min_size=n, max_size=n)))
        out.append(Encoded(f"i{k}", ids, tuple([IGNORE] * prompt) + ids[prompt:]))
    return out


@settings(max_examples=60, deadline=None)
@given(batch=_encoded_batches(), packing=st.booleans())
def test_labels_indexed_on_the_host_are_the_positions_the_labels_say(batch: list[Encoded], packing: bool) -> None:
    """The loop's host-side label index equals the one read back from the label tensor (which would need a
    device synchronisation), in both layouts, and counts what each item says it trains on."""
    got = collate(batch, packing=packing, pad_id=0)
    index, targets = _label_positions(got["labels"])
    assert got["label_index"].tolist() == index.tolist()
    assert got["label_targets"].tolist() == targets.tolist()
    assert len(index) <= sum(e.n_label_tokens for e in batch)
    if not packing:
        assert len(index) == sum(e.n_label_tokens for e in batch)


def test_varlen_boundaries_are_the_items(tmp_path) -> None:
    batch = [Encoded("a", (5, 6, 7), (IGNORE, 6, 7)), Encoded("b", (8, 9), (IGNORE, 9))]
    got = collate(batch, packing=True, pad_id=0, varlen=True)
    assert got["cu_seq_lens_q"].tolist() == [0, 3, 5] and got["max_length_q"] == 3
    assert got["cu_seq_lens_q"].dtype == torch.int32


def test_eager_attention_trains_to_the_same_losses_as_sdpa(tmp_path) -> None:
    items = make_items(16)
    order = make_order([it.id for it in items])
    runs = {}
    for impl in ("sdpa", "eager"):
        result = train(micro_config(method="full", attn_implementation=impl, max_steps=4), items, order,
                       tmp_path / impl)
        assert result.model.config._attn_implementation == impl
        assert json.loads((tmp_path / impl / "config.json").read_text())["attn_implementation"] == impl
        runs[impl] = result.losses
    assert runs["eager"] == pytest.approx(runs["sdpa"], rel=1e-4)


def test_fp16_on_a_cpu_computes_in_fp32_and_says_so(tmp_path) -> None:
    items = make_items(8)
    with pytest.warns(RuntimeWarning, match="fp16 mixed precision needs a GPU"):
        result = train(micro_config(method="lora", dtype="fp16", max_steps=2), items,
                       make_order([it.id for it in items]), tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["precision"]["dtype"] == "fp32" and meta["device"] == "cpu"
    assert {p.dtype for p in result.model.parameters()} == {torch.float32}
    assert meta["memory_plan"]["total"] > 0


def test_a_run_that_cannot_fit_its_gpu_is_refused_before_anything_is_written(tmp_path) -> None:
    """The memory plan runs before the model loads: a stated GPU too small ends the command with exit 2 and one
    line naming the estimate and what would fit; the run folder gets no log and no base model."""
    items = make_items(8)
    items_path = write_items(items, tmp_path / "items.parquet")
    order_path = tmp_path / "order.json"
    order_path.write_text(json.dumps(make_order([it.id for it in items])))
    res = subprocess.run([MEDTUNE, "train", "--items", str(items_path), "--order", str(order_path), "--method", "full",
                          "--gpu-memory", "0.001", "--no-progress", *micro_cli_options(), "-o", str(tmp_path / "run")],
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [x for x in res.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert "GiB" in lines[0] and "full" in lines[0]
    assert not (tmp_path / "run" / "train_log.jsonl").exists() and not (tmp_path / "run" / "base").exists()
