"""The loss curve of a run (and its validation loss, when it validated), with the order's segment boundaries
(category or bucket changes) marked.

Segments come from order.json (``segments``: item positions in epoch 0); an item at position ``i`` is
trained in step ``i // B + 1``, so each boundary is drawn at that step, labelled, and epoch starts are
drawn as dotted lines. Written with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from medtune.io import atomic_path
from medtune.run_record import read_run_record
from medtune.training.runlog import read_log, read_log_records


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_log(run_dir)
    cfg = read_run_record(run_dir)["train"]
    order = json.loads((run_dir / "order.json").read_text(encoding="utf-8"))
    batch = cfg["batch_size"] * cfg["grad_accum"]
    steps = [r["step"] for r in records]
    losses = [r["loss"] for r in records]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.plot(steps, losses, lw=1, color="tab:blue", label="loss")
    if len(losses) >= 10:  # a running mean makes the trend readable at batch-level noise
        k = max(2, len(losses) // 25)
        smooth = [sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1])
                  for i in range(len(losses))]
        ax.plot(steps, smooth, lw=2, color="tab:orange", label=f"mean of {k}")
    validations = [r for r in read_log_records(run_dir, "validation") if r.get("val_loss") is not None]
    if validations:  # the held-out loss, on the same scale (the same answer-token loss)
        ax.plot([r["step"] for r in validations], [r["val_loss"] for r in validations], marker="o", ms=3, lw=1.2,
                color="tab:green", label="validation loss")
    top = max(losses) if losses else 1.0
    for seg in order.get("segments") or []:
        s = int(seg.get("start", 0)) // batch + 1
        if steps and steps[0] <= s <= steps[-1]:
            ax.axvline(s, color="grey", lw=0.8, ls="--")
            ax.text(s, top, str(seg.get("label", "")), rotation=90, va="top", ha="right", fontsize=7)
    for prev, cur in itertools.pairwise(records):
        if cur.get("epoch") != prev.get("epoch"):
            ax.axvline(cur["step"], color="black", lw=0.8, ls=":")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("answer-token loss")
    ax.set_title(f"{cfg['method']} · {order.get('strategy', '?')} (seed {order.get('seed', '?')})")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "loss.png"
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
