"""A command killed (SIGKILL) at any moment leaves its output either as the earlier one or as the new one, whole.

Each command runs as a subprocess over an earlier output and is killed at a few seeded random moments in the
later part of its run (where it writes; the start is imports and loading), each time over the earlier output.
After each kill the output is compared with the earlier one and with the new one of an uninterrupted run (file
hashes); after a final run to completion no temporary file or folder of the output rule is left beside it. An
output of several files is compared whole: ``data load``'s items with the textbook and fact sheet that its readers
take as theirs, ``order -o DIR``'s order with its per-item file.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.test_output_rule import leftovers, made, tree_hashes  # noqa: F401 (the module fixture)

pytestmark = pytest.mark.slow

KILLS_PER_COMMAND = 2
CLI = "import sys; from medtune.cli import main; sys.exit(main(sys.argv[1:]))"


def medtune(*argv: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLI, *map(str, argv)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def run_to_completion(argv: list[object]) -> float:
    start = time.monotonic()
    proc = medtune(*argv)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    return time.monotonic() - start


def state(out: Path, old: dict[str, str], new: dict[str, str]) -> str:
    """Which output is at ``out``: 'old' or 'new' (whole); fails on anything else."""
    if out.suffix == ".parquet":
        got = item_set(out)
        assert got in (old, new), f"{out}: neither the earlier items set nor the new one: {got}"
        return "old" if got == old else "new"
    if not out.exists():  # killed between the swap's two renames: the old output waits beside it, whole
        displaced = [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.old-")]
        assert len(displaced) == 1 and tree_hashes(displaced[0]) == old, sorted(p.name for p in out.parent.iterdir())
        return "old (displaced)"
    got = tree_hashes(out)
    assert got in (old, new), f"{out}: neither the earlier output nor the new one: {got}"
    return "old" if got == old else "new"


def item_set(items: Path) -> dict[str, str]:
    """The items file with the textbook and fact sheet its readers take as its own (file → hash of the content)."""
    from medtune.factsheet import read_factsheet
    from medtune.textbook import read_textbook

    facts = read_factsheet(items)
    return {"items": hashlib.sha256(items.read_bytes()).hexdigest(),
            "textbook": hashlib.sha256(json.dumps(read_textbook(items)).encode()).hexdigest(),
            "facts": hashlib.sha256(json.dumps(facts.to_dict() if facts else None).encode()).hexdigest()}


def commands(m: dict[str, Path], tmp: Path) -> dict[str, tuple[list[object], Path]]:
    """name → (argv, OUT)."""
    return {
        "export --merge": (["export", m["run"], "--merge", "-o", tmp / "merged"], tmp / "merged"),
        "export --adapter": (["export", m["run"], "--adapter", "-o", tmp / "adapter"], tmp / "adapter"),
        "evaluate run": (["evaluate", "run", m["items"], "--run", m["run"], "--split", "test", "-o", tmp / "eval",
                          "--n-boot", "20", "--no-progress"], tmp / "eval"),
        "data load": (["data", "load", "synthetic", "--seed", "3", "--option", "n_systems=2", "--option",
                       "diseases_per_system=4", "-o", tmp / "items.parquet"], tmp / "items.parquet"),
        "order": (["order", m["items"], "-s", "random", "--seed", "0", "-o", tmp / "order"], tmp / "order"),
    }


def earlier_output(out: Path, argv: list[object]) -> None:
    """An earlier output of the right kind that no run of the command would write."""
    if out.suffix == ".parquet":  # an earlier set of another seed (items, textbook, fact sheet), kept aside
        kept = out.parent / "earlier"
        if not kept.exists():
            run_to_completion([*argv[:argv.index("--seed") + 1], "4", *argv[argv.index("--seed") + 2:]])
            kept.mkdir()
            for p in out.parent.glob(f"{out.stem}.*"):
                shutil.move(p, kept / p.name)
        for p in kept.iterdir():
            shutil.copy(p, out.parent / p.name)
        return
    out.mkdir()
    if out.name == "order":  # an earlier pair
        (out / "order.json").write_text('{"earlier": true}\n')
        (out / "order_items.json").write_text("[]\n")
        return
    if out.name == "eval":  # the files an evaluation writes (other files in its folder are never touched)
        (out / "predictions.parquet").write_bytes(b"PAR1 earlier predictions PAR1")
        (out / "metrics.json").write_text('{"earlier": true}\n')
        return
    (out / "earlier.txt").write_text("the earlier output\n")
    (out / "weights.bin").write_bytes(bytes(range(256)) * 64)


@pytest.mark.parametrize("name", ["export --merge", "export --adapter", "evaluate run", "data load", "order"])
def test_a_killed_command_leaves_the_earlier_or_the_new_output(made, tmp_path, name):  # noqa: F811
    rng = random.Random(f"kill {name}")
    argv, out = commands(made, tmp_path)[name]
    duration = run_to_completion(argv)  # the new output, whole
    snapshot = item_set if out.suffix == ".parquet" else tree_hashes
    new, new_files = snapshot(out), tree_hashes(out.parent)
    old: dict[str, str] = {}
    seen = []
    for _ in range(KILLS_PER_COMMAND):
        for p in out.parent.iterdir():  # each kill starts from the earlier output again (and nothing else of it)
            if p.name == out.name or p.name.startswith((f".{out.name}.", f"{out.stem}.", f".{out.stem}.")):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        earlier_output(out, argv)
        old = snapshot(out)
        proc = medtune(*argv)
        time.sleep(rng.uniform(0.3, 1.0) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(state(out, old, new))
    run_to_completion(argv)
    print(name, f"{duration:.1f} s", seen)
    assert state(out, old, new) == "new", seen
    assert {k: v for k, v in tree_hashes(out.parent).items() if not k.startswith("earlier")} == new_files
    assert leftovers(out) == []
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []
