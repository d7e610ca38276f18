"""Streaming to disk: a scoring process killed with SIGKILL resumes without recomputing or losing rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from medtune.errors import InputError
from medtune.models import resolve_model
from medtune.schema import write_items
from medtune.scoring import engine, score_items
from medtune.scoring.store import part_path

CHILD = textwrap.dedent(
    """
    import sys, time
    from medtune.models import resolve_model
    from medtune.schema import read_items
    from medtune.scoring import score_items, store

    # Slow the run down after each batch is on disk, so the parent can kill it mid-run.
    original = store.ScoredRowStore.append
    def slow_append(self, rows):
        original(self, rows)
        time.sleep(0.25)
    store.ScoredRowStore.append = slow_append

    model_dir, items_path, out = sys.argv[1:4]
    score_items(resolve_model(model_dir), read_items(items_path), mode="letter", permute_seed=5,
                batch_tokens=700, output=out, progress=False)
    """
)


def _row_lines(part):
    return [json.loads(x) for x in part.read_text().splitlines()[1:]] if part.exists() else []


@pytest.fixture
def saved_tiny(tiny, tmp_path):
    path = tmp_path / "tiny-model"
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    return path


def test_sigkill_then_resume(saved_tiny, five_option_items, tmp_path, monkeypatch):
    items = five_option_items[:40]
    items_path = write_items(items, tmp_path / "items.parquet")
    out = tmp_path / "preds.parquet"
    part = part_path(out)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(saved_tiny), str(items_path), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(_row_lines(part)) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "child wrote no rows in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    done_before = [r["id"] for r in _row_lines(part)]
    assert 3 <= len(done_before) < len(items)
    assert len(set(done_before)) == len(done_before)

    computed: list[str] = []
    original_run = engine.BatchRunner.run

    def counting_run(self, batch):
        computed.extend(p.item.id for p in batch)
        return original_run(self, batch)

    monkeypatch.setattr(engine.BatchRunner, "run", counting_run)
    model = resolve_model(saved_tiny)
    resumed = score_items(model, items, mode="letter", permute_seed=5, batch_tokens=700, output=out,
                          progress=False)
    # Only the missing items were computed, and every item is in the output exactly once, in input order.
    assert set(computed).isdisjoint(done_before)
    assert sorted(computed + done_before) == sorted(it.id for it in items)
    assert list(resumed["id"]) == [it.id for it in items]
    assert not part.exists()
    on_disk = pq.read_table(out).to_pandas()
    assert list(on_disk["id"]) == [it.id for it in items]
    fresh = score_items(model, items, mode="letter", permute_seed=5, batch_tokens=700, progress=False)
    assert list(on_disk["pred"]) == list(fresh["pred"])
    for a, b in zip(on_disk["scores"], fresh["scores"], strict=True):
        assert list(a) == pytest.approx(list(b), abs=1e-5)
    assert [list(p) for p in on_disk["permutation"]] == [list(p) for p in fresh["permutation"]]


def test_partial_last_line_and_changed_settings(tiny, five_option_items, tmp_path):
    items = five_option_items[:6]
    out = tmp_path / "p.jsonl"
    full = score_items(tiny, items, mode="letter", output=out, batch_tokens=400, progress=False)
    assert out.exists() and len(pd.read_json(out, lines=True)) == 6
    # Simulate a run killed mid-write: header, two complete rows, half a third one.
    part = part_path(out)
    lines = [json.dumps({"__medtune_scoring__": 1, "settings": {
        "mode": "letter", "template": "paper", "permute_seed": None, "option_score": None, "max_new_tokens": None,
        "chat": False, "model": "tiny"}})]
    for r in full.head(2).to_dict(orient="records"):
        lines.append(json.dumps(r))
    part.write_text("\n".join(lines) + "\n" + '{"id": "medqa-te')
    again = score_items(tiny, items, mode="letter", output=out, batch_tokens=400, progress=False)
    assert list(again["id"]) == [it.id for it in items]
    assert list(again["pred"]) == list(full["pred"])
    assert not part.exists()
    # A leftover part file from other settings is refused, not mixed in.
    part.write_text(lines[0].replace('"letter"', '"option"') + "\n")
    with pytest.raises(InputError, match="different settings"):
        score_items(tiny, items, mode="letter", output=out, progress=False)
