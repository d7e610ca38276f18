"""The run store: content-addressed stages computed once and atomically; result tables rebuilt from files."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtune.experiments.store import MANIFEST, RESULT_COLUMNS, ResultStore, Store


def test_stage_is_computed_once_per_key(tmp_path: Path) -> None:
    store = Store(tmp_path)
    calls: list[Path] = []

    def compute(out: Path) -> dict:
        calls.append(out)
        (out / "x.txt").write_text("hello")
        return {"n": 1}

    a = store.get_or_compute("data", {"seed": 0}, {"up": "k1"}, compute)
    b = store.get_or_compute("data", {"seed": 0}, {"up": "k1"}, compute)
    assert len(calls) == 1 and not a.cached and b.cached
    assert a.path == b.path == tmp_path / "data" / a.key
    assert (a.path / "x.txt").read_text() == "hello"
    assert a.manifest["config"] == {"seed": 0} and a.manifest["inputs"] == {"up": "k1"} and a.manifest["n"] == 1
    # Another config or another input key is another artifact.
    c = store.get_or_compute("data", {"seed": 1}, {"up": "k1"}, compute)
    d = store.get_or_compute("data", {"seed": 0}, {"up": "k2"}, compute)
    assert len({a.key, c.key, d.key}) == 3 and len(calls) == 3
    assert store.stages() == {"data": 3}


def test_failed_stage_leaves_nothing_and_is_retried(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def boom(out: Path) -> None:
        (out / "half.bin").write_bytes(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        store.get_or_compute("train", {"a": 1}, None, boom)
    assert list((tmp_path / "train").iterdir()) == []
    art = store.get_or_compute("train", {"a": 1}, None, lambda out: (out / "ok").write_text("1") and None)
    assert not art.cached and (art.path / "ok").exists()


def test_partial_folders_of_a_killed_run_are_ignored_and_cleaned(tmp_path: Path) -> None:
    store = Store(tmp_path)
    key = Store.key("order", {"s": 1})
    # What a SIGKILL mid-stage leaves: a temporary folder, and (older layout) a final folder without manifest.
    (tmp_path / "order" / f".tmp-{key}-123-abc").mkdir(parents=True)
    (tmp_path / "order" / key).mkdir()
    (tmp_path / "order" / key / "order.json").write_text("{")
    assert not store.has("order", key)
    art = store.get_or_compute("order", {"s": 1}, None, lambda out: (out / "order.json").write_text("{}") and None)
    assert not art.cached and (art.path / "order.json").read_text() == "{}" and (art.path / MANIFEST).exists()
    assert store.clean_partial() == 1
    assert [p.name for p in (tmp_path / "order").iterdir()] == [key]


def test_concurrent_writer_loses_the_race_gracefully(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def compute(out: Path) -> None:
        # Another process finishes the same key while we compute.
        other = Store(tmp_path)
        other.get_or_compute("eval", {"m": 1}, None, lambda o: (o / "who").write_text("other") and None)
        (out / "who").write_text("me")

    art = store.get_or_compute("eval", {"m": 1}, None, compute)
    assert art.cached and (art.path / "who").read_text() == "other"
    assert [p.name for p in (tmp_path / "eval").iterdir()] == [art.key]


def _record(cell: str, status: str, tests: list[str], acc: float = 0.5) -> dict:
    rec = {"cell_id": cell, "model": "m", "dataset": "d", "method": "lora", "strategy": cell, "difficulty": "none",
           "seed": 0, "key": "k", "status": status, "test_sets": tests}
    if status == "done":
        rec["tests"] = {t: {"accuracy": acc, "ci_low": acc - 0.1, "ci_high": acc + 0.1, "n_items": 10,
                            "n_correct": round(10 * acc), "metric": "accuracy"} for t in tests}
        rec["train"] = {"steps": 3, "final_loss": 1.5, "seconds": 0.1, "dir": "/x"}
    else:
        rec["error"] = "InputError: model path does not exist"
    return rec


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(st.tuples(st.sampled_from("abcde"), st.sampled_from(["done", "failed"]),
                                 st.floats(0, 1)), min_size=1, max_size=12))
def test_tables_have_one_row_per_cell_and_test_set_whatever_the_write_history(
        tmp_path_factory: pytest.TempPathFactory, writes: list[tuple[str, str, float]]) -> None:
    run = tmp_path_factory.mktemp("run")
    rs = ResultStore(run)
    tests = ["t1", "t2"]
    last: dict[str, tuple[str, float]] = {}
    for i, (cell, status, acc) in enumerate(writes):  # re-runs overwrite a cell's file
        rs.write(_record(cell, status, tests, acc))
        last[cell] = (status, acc)
        if i % 4 == 0:  # tables are rebuilt from the files, not appended to
            rs.build_tables()
    rs.build_tables()
    df = pd.read_parquet(run / "results.parquet")
    assert list(df.columns) == RESULT_COLUMNS
    assert str(df["n_correct"].dtype) == "Int64" and df["accuracy"].dtype == "float64"
    assert len(df) == len(last) * len(tests)
    assert not df.duplicated(["cell_id", "test_set"]).any()
    for cell, (status, acc) in last.items():
        rows = df[df["cell_id"] == cell]
        assert set(rows["status"]) == {status}
        if status == "done":
            assert rows["accuracy"].tolist() == pytest.approx([acc, acc])
        else:
            assert rows["accuracy"].isna().all() and rows["error"].str.contains("does not exist").all()
    with sqlite3.connect(run / "results.sqlite") as con:
        n = con.execute("select count(*) from results").fetchone()[0]
        cells = con.execute("select count(distinct cell_id), count(*) from cells").fetchone()
    assert n == len(df) and cells == (len(last), len(last))
    assert len(pd.read_csv(run / "results.csv")) == len(df)


def test_status_reads_key_and_result(tmp_path: Path) -> None:
    rs = ResultStore(tmp_path)
    assert rs.status("a", "k") == "pending"
    rs.write(_record("a", "done", ["t"]))
    assert rs.status("a", "k") == "done"
    assert rs.status("a", "other-key") == "stale"
    rs.write(_record("a", "failed", ["t"]))
    assert rs.status("a", "k") == "failed"
    # A torn file (impossible with atomic writes, but a user may edit one) reads as pending, not a crash.
    (tmp_path / "cells" / "b.json").write_text("{not json")
    assert rs.status("b", "k") == "pending"
    assert [r["cell_id"] for r in rs.all()] == ["a"]
    assert json.loads((tmp_path / "cells" / "a.json").read_text())["status"] == "failed"


def test_report_of_a_run_where_every_cell_failed(tmp_path: Path) -> None:
    from medtune.report import write_report

    rs = ResultStore(tmp_path)
    for cell in ("a", "b"):
        rs.write(_record(cell, "failed", ["t1"]))
    rep = write_report(tmp_path)
    page = rep.html.read_text()
    assert "No finished cell yet." in page and "does not exist" in page
    assert pd.read_csv(rep.tables["failed"])["cell_id"].tolist() == ["a", "b"]


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    from medtune.cli import main

    assert main(["report", str(tmp_path)]) == 2


def test_heatmap_rows_name_method_and_dataset_when_they_vary(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drawn cells are the table's: each (row, strategy) value in its place and in its colour on the PNG."""
    import matplotlib
    import matplotlib.image as mpimg
    import numpy as np

    from medtune.report import figures as report_figures

    gains = {("lora", "synthetic"): (-0.09, 0.03), ("full", "synthetic"): (0.06, -0.01),
             ("lora", "medqa"): (0.01, -0.06), ("full", "medqa"): (-0.03, 0.08)}  # every value its own colour
    labels = ("curriculum [human]", "blocked")
    rows = [{"model": "tiny", "dataset": dataset, "method": method, "test_set": "t", "label": label, "gain": g,
             "p_holm": 0.01 if g > 0.05 else 0.2}
            for (method, dataset), pair in gains.items() for label, g in zip(labels, pair, strict=True)]
    figures = []
    real = report_figures._fig_png
    monkeypatch.setattr(report_figures, "_fig_png", lambda fig: figures.append(fig) or real(fig))
    png = report_figures.heatmap_figure(pd.DataFrame(rows))
    (fig,) = figures
    ax = fig.axes[0]
    ylabels = [t.get_text() for t in ax.get_yticklabels()]
    xlabels = [t.get_text() for t in ax.get_xticklabels()]
    assert sorted(ylabels) == sorted(f"tiny / t / {m} / {d}" for m, d in gains) and sorted(xlabels) == sorted(labels)
    value = {(f"tiny / t / {m} / {d}", label): 100 * g
             for (m, d), pair in gains.items() for label, g in zip(labels, pair, strict=True)}
    expected = np.array([[value[(r, c)] for c in xlabels] for r in ylabels])
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), expected)
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert texts == {(i, j): f"{expected[i, j]:+.1f}" + ("*" if expected[i, j] > 5 else "")
                     for i in range(len(ylabels)) for j in range(len(xlabels))}

    # The PNG: each cell's colour (RdBu on a scale symmetric about 0, ±the largest |gain|) fills a block of
    # pixels, the blocks of one row side by side in the strategies' order, the rows stacked in the labels' order.
    img = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    lim = max(abs(v) for v in value.values())
    centre = {}
    for (r, c), v in value.items():
        rgb = np.asarray(matplotlib.colormaps["RdBu"]((v + lim) / (2 * lim))[:3])
        ys, xs = np.nonzero(np.abs(img - rgb).max(axis=2) < 1.5 / 255)
        assert ys.size > 1500, (r, c, v, ys.size)  # a cell, not the colour bar's thin stripe of that colour
        centre[(r, c)] = (float(np.median(xs)), float(np.median(ys)))
    for r in ylabels:
        xs = [centre[(r, c)][0] for c in xlabels]
        assert xs == sorted(xs) and max(centre[(r, c)][1] for c in xlabels) - min(
            centre[(r, c)][1] for c in xlabels) < 5, r
    for c in xlabels:
        ys = [centre[(r, c)][1] for r in ylabels]
        assert ys == sorted(ys) and max(centre[(r, c)][0] for r in ylabels) - min(
            centre[(r, c)][0] for r in ylabels) < 5, c


def test_keys_carry_the_package_and_stage_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After an upgrade (or a stage's fix bumps its number) a stored artifact is recomputed, never reused."""
    import medtune
    from medtune.experiments import store as store_mod

    store = Store(tmp_path)
    calls: list[str] = []

    def compute(out: Path) -> None:
        calls.append(medtune.__version__)
        (out / "x").write_text("1")

    first = store.get_or_compute("eval", {"mode": "letter"}, {"model": "m"}, compute)
    assert store.get_or_compute("eval", {"mode": "letter"}, {"model": "m"}, compute).cached
    assert first.manifest["code"] == {"medtune": medtune.__version__, "stage": store_mod.STAGE_VERSIONS["eval"]}
    monkeypatch.setattr(medtune, "__version__", medtune.__version__ + ".post1")
    upgraded = store.get_or_compute("eval", {"mode": "letter"}, {"model": "m"}, compute)
    assert not upgraded.cached and upgraded.key != first.key and len(calls) == 2
    monkeypatch.setitem(store_mod.STAGE_VERSIONS, "eval", store_mod.STAGE_VERSIONS["eval"] + 1)
    fixed = store.get_or_compute("eval", {"mode": "letter"}, {"model": "m"}, compute)
    assert not fixed.cached and fixed.key not in (first.key, upgraded.key) and len(calls) == 3


def test_a_failed_shared_stage_is_recorded_once_and_cells_fail_fast(tmp_path: Path) -> None:
    from medtune.experiments.store import SharedStageFailed

    store = Store(tmp_path)
    calls: list[int] = []

    def boom(out: Path) -> None:
        calls.append(1)
        raise ValueError("bad difficulty table")

    with pytest.raises(ValueError, match="bad difficulty table"):
        store.get_or_compute("difficulty", {"f": 1}, None, boom, record_failure=True)
    for _ in range(3):  # every later cell gets the recorded error without recomputing the stage
        with pytest.raises(SharedStageFailed, match="ValueError: bad difficulty table"):
            store.get_or_compute("difficulty", {"f": 1}, None, boom)
    assert calls == [1]
    assert store.clear_failures() == 1  # the next run tries again
    with pytest.raises(ValueError):
        store.get_or_compute("difficulty", {"f": 1}, None, boom)
    assert calls == [1, 1]
