"""Small real-format inputs for the adaptive tests: synthetic items, an order file, a difficulty table."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medtune.data.synthetic_questions import generate_synthetic
from medtune.schema import write_items

# A very small Llama (as in tests/training): the tests check plumbing and determinism, not learning.
MICRO = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
LEVEL_B = {"easy": -1.0, "medium": 0.0, "hard": 1.0}


def micro_cli_options() -> list[str]:
    return ["--model", "tiny", "--tiny-vocab-size", "400", "--target", "option", "--max-length", "128",
            "--batch-size", "4", "--lr", "1e-3", *[x for k, v in MICRO.items() for x in ("--tiny-option", f"{k}={v}")]]


def write_inputs(folder: Path, *, n_train: int = 24, epochs: int = 1) -> dict[str, Path]:
    """items.parquet (train + test), order.json over the train ids, difficulty.parquet with an irt_b column."""
    data = generate_synthetic(0, n_systems=2, diseases_per_system=4, train_per_level=2, test_per_level=1)
    train = [it for it in data.items if it.split == "train"][:n_train]
    test = [it for it in data.items if it.split == "test"][:8]
    items = train + test
    paths = {"items": write_items(items, folder / "items.parquet"), "order": folder / "order.json",
             "difficulty": folder / "difficulty.parquet", "dir": folder}
    ids = [it.id for it in train]
    paths["order"].write_text(json.dumps({
        "format": "medtune.order/1", "strategy": "hand", "seed": 0, "options": {}, "epoch_policy": "repeat",
        "epochs": [ids for _ in range(epochs)], "n_items": len(ids), "segments": [{"start": 0, "label": "all"}],
        "input_hashes": {}}))
    # b from the human level plus a small per-item offset, so the difficulties are distinct
    b = [LEVEL_B[it.human_difficulty or "medium"] + 0.01 * k for k, it in enumerate(items)]
    pq.write_table(pa.table({"id": [it.id for it in items], "difficulty": b, "irt_b": b}), paths["difficulty"])
    paths["anchor_ids"] = ",".join(it.id for it in test)  # type: ignore[assignment]
    return paths


def strategy_args(strategy: str, paths: dict) -> list[str]:
    args = ["--adaptive", strategy, "--every", "2"]
    if strategy == "ability":
        args += ["--anchors", str(paths["anchor_ids"]), "--difficulty", str(paths["difficulty"]),
                 "--adaptive-option", "delta=0.5", "--adaptive-option", "delta_start=-0.5",
                 "--adaptive-option", "pacing=linear"]
    if strategy == "self-paced":
        args += ["--adaptive-option", "start_quantile=0.5"]
    return args


def tamper(path: Path, line: int, edit) -> None:
    """Apply ``edit`` to the JSON record on line ``line`` (0-based) of a JSON-lines log, in place."""
    lines = path.read_text().splitlines()
    rec = json.loads(lines[line])
    edit(rec)
    lines[line] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
