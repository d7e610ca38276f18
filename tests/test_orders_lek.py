"""Every strategy on the paper's real LEK items with the paper's LEK difficulty table, joined by record position
through `medtune difficulty import`; bucket sizes checked against the raw table read independently here."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from medtune.cli import main
from medtune.orders import BUCKETS, STRATEGIES, order_items, read_difficulty_table, read_order
from medtune.schema import read_items, write_items
from shared_data import shared_path

LEK_FILE = "Llama-2-7b-chat-hf.json"
NEEDS_CATEGORY = [n for n, s in STRATEGIES.items() if "category" in s.needs]


@pytest.fixture(scope="module")
def lek(tmp_path_factory):
    """(items.parquet, difficulty.parquet, raw table {Index: llm_difficulty}) for the 874 LEK questions."""
    from medtune.data import load

    folder = tmp_path_factory.mktemp("lek")
    items_path = write_items(load("lek", shared_path("lek", LEK_FILE)).items, folder / "items.parquet")
    table = shared_path("oxford_llm_difficulty", "llm_difficulty_lek.csv")
    diff_path = folder / "difficulty.parquet"
    rc = main(["difficulty", "import", str(table), "--items", str(items_path), "--key-column", "Index",
               "--value-column", "llm_difficulty", "--key", "position", "-o", str(diff_path)])
    assert rc == 0
    with open(table, newline="") as f:
        raw = {int(row["Index"]): float(row["llm_difficulty"]) for row in csv.DictReader(f)}
    return items_path, diff_path, raw


def paper_bucket(v: float) -> str:
    return "easy" if v <= 0.66 else "medium" if v <= 0.80 else "hard"


def test_bucket_sizes_match_the_papers_thresholds_on_the_raw_table(lek):
    items_path, diff_path, raw = lek
    expected = Counter(paper_bucket(v) for v in raw.values())
    assert sum(expected.values()) == 874 and all(expected[b] > 0 for b in BUCKETS)
    items = read_items(items_path)
    oitems = order_items(items, difficulty=read_difficulty_table(diff_path))
    assert Counter(o.bucket for o in oitems) == expected
    # joined by record position, not question_index
    by_id = {o.id: o for o in oitems}
    for it in items:
        assert by_id[it.id].difficulty == pytest.approx(raw[it.meta["position"]])
    # re-bucketing by the same thresholds from the continuous values agrees
    again = order_items(items, difficulty=read_difficulty_table(diff_path), bucketing="thresholds")
    assert [o.bucket for o in again] == [o.bucket for o in oitems]
    # the curriculum's segments sit at the bucket boundaries
    out = diff_path.parent / "curriculum.json"
    assert main(["order", str(items_path), "-s", "curriculum", "--seed", "3", "--difficulty", str(diff_path),
                 "-o", str(out)]) == 0
    plan = read_order(out)
    assert [(s["label"], s["start"]) for s in plan["segments"]] == [
        ("easy", 0), ("medium", expected["easy"]), ("hard", expected["easy"] + expected["medium"])]


@pytest.mark.parametrize("name", [n for n in STRATEGIES if n not in NEEDS_CATEGORY])
def test_every_difficulty_strategy_runs_on_lek(lek, name, tmp_path):
    items_path, diff_path, _ = lek
    out = tmp_path / "order.json"
    rc = main(["order", str(items_path), "-s", name, "--seed", "5", "--difficulty", str(diff_path),
               "--epochs", "2", "--epoch-policy", "reshuffle", "-o", str(out)])
    assert rc == 0
    plan = read_order(out)
    ids = {it.id for it in read_items(items_path)}
    for epoch in plan["epochs"]:
        if STRATEGIES[name].permutation:
            assert sorted(epoch) == sorted(ids)
        else:
            assert set(epoch) <= ids
    assert plan["input_hashes"]["difficulty"] and plan["n_items"] == 874


@pytest.mark.slow
def test_every_strategy_runs_on_lek_with_clustered_categories(lek, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path / "cache"))
    items_path, diff_path, _ = lek
    cats = tmp_path / "categories.parquet"
    assert main(["categories", str(items_path), "-o", str(cats), "--trials", "3", "--seed", "0", "-q"]) == 0
    plans = []
    for name in STRATEGIES:
        out = tmp_path / f"{name}.json"
        assert main(["order", str(items_path), "-s", name, "--seed", "1", "--categories", str(cats),
                     "--difficulty", str(diff_path), "-o", str(out)]) == 0, name
        plans.append(str(out))
        assert len(read_order(out)["epochs"][0]) >= 874
    fig = tmp_path / "orders.png"
    assert main(["order", "plot", *plans, "--items", str(items_path), "--categories", str(cats),
                 "--difficulty", str(diff_path), "-o", str(fig)]) == 0
    assert fig.exists() and fig.with_suffix(".svg").exists()
    json.loads((tmp_path / "blocked.json").read_text())
    capsys.readouterr()
