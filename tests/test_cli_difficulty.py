"""`medtune difficulty score | from-responses | import` through medtune.cli.main."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from medtune.cli import main
from medtune.cli.difficulty import scores_dir
from medtune.difficulty import difficulty_from_responses, read_difficulty
from medtune.schema import write_items
from shared_data import shared_path

FULL_LEK = ("Llama-2-7b-chat-hf", "Mixtral-8x7B-v0.1", "meditron-7b")


def lek_files():
    return [str(shared_path("lek", f"{m}.json")) for m in FULL_LEK]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_from_responses_writes_artifact_and_plot(tmp_path):
    out, png = tmp_path / "difficulty.parquet", tmp_path / "hist.png"
    assert main(["difficulty", "from-responses", *lek_files(), "-o", str(out), "--plot", str(png)]) == 0
    got = read_difficulty(out)
    expected = difficulty_from_responses(lek_files())
    pd.testing.assert_frame_equal(got.table, expected.table)
    assert got.meta["thresholds"] == [0.66, 0.80] and got.bucket_sizes() == {"easy": 419, "medium": 209, "hard": 246}
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["difficulty", "from-responses", *lek_files(), "-o", str(out), "--quantiles", "--irt", "none"]) == 0
    q = read_difficulty(out)
    assert q.bucket_sizes() == {"easy": 292, "medium": 291, "hard": 291} and q.table["irt_b"].isna().all()
    assert main(["difficulty", "from-responses", *lek_files(), "-o", str(out), "--thresholds", "0.5,0.7",
                 "--irt", "2pl", "--irt-data", "correct"]) == 0
    t = read_difficulty(out)
    d = t.table["difficulty"]
    assert t.bucket_sizes()["easy"] == int((d <= 0.5).sum()) and t.meta["irt"]["model"] == "2pl"


def test_from_responses_bad_input_exit_2(tmp_path, capsys):
    gemma = str(shared_path("lek", "gemma-7b-it.json"))  # a partial run: question_index 0-9 only
    out = tmp_path / "d.parquet"
    assert main(["difficulty", "from-responses", lek_files()[0], gemma, "-o", str(out)]) == 2
    line = one_error_line(capsys)
    assert "gemma-7b-it.json" in line and "question_index 10" in line and "missing" in line
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"questions": [{"question_index": 0, "correct_answer": "G",
                                              "clls": [-1.0, -2.0, -3.0, -4.0, -5.0]}]}))
    assert main(["difficulty", "from-responses", str(bad), "-o", str(out)]) == 2
    line = one_error_line(capsys)
    assert "bad.json" in line and "record 0" in line and "correct_answer" in line
    assert main(["difficulty", "from-responses", *lek_files(), "-o", str(out), "--thresholds", "0.9,0.1"]) == 2
    assert "thresholds" in one_error_line(capsys)
    assert main(["difficulty", "from-responses", *lek_files(), "-o", str(out), "--thresholds", "0.5,0.7",
                 "--quantiles"]) == 2
    assert "either --thresholds or --quantiles" in one_error_line(capsys)
    assert not out.exists()


@pytest.fixture(scope="module")
def lek_items_file(tmp_path_factory):
    from medtune.data import load

    path = tmp_path_factory.mktemp("lek") / "lek.parquet"
    write_items(load("lek", shared_path("lek", f"{FULL_LEK[0]}.json")).items, path)
    return path


def test_import_paper_table(tmp_path, lek_items_file, capsys):
    table = shared_path("oxford_llm_difficulty", "llm_difficulty_lek.csv")
    out = tmp_path / "d.parquet"
    rc = main(["difficulty", "import", str(table), "--items", str(lek_items_file), "--key-column", "Index",
               "--key", "position", "--value-column", "llm_difficulty", "-o", str(out)])
    assert rc == 0
    got = read_difficulty(out)
    d = pd.read_csv(table)["llm_difficulty"]
    assert got.bucket_sizes() == {"easy": int((d <= 0.66).sum()), "medium": int(((d > 0.66) & (d <= 0.8)).sum()),
                                  "hard": int((d > 0.8).sum())}
    assert got.meta["source"] == "import" and got.meta["key"] == "position"
    # A key that does not exist on the items, and a wrong column: exit 2, one line.
    capsys.readouterr()
    assert main(["difficulty", "import", str(table), "--items", str(lek_items_file), "--key-column", "Index",
                 "--key", "id", "--value-column", "llm_difficulty", "-o", str(out)]) == 2
    line = one_error_line(capsys)
    assert "llm_difficulty_lek.csv" in line and "match no item" in line
    assert main(["difficulty", "import", str(table), "--items", str(lek_items_file), "--key-column", "Idx",
                 "--value-column", "llm_difficulty", "-o", str(out)]) == 2
    assert "no column 'Idx'" in one_error_line(capsys)


def test_import_report_mode_on_a_subset(tmp_path, capsys):
    from medtune.schema import MCQItem

    items = [MCQItem(id=f"x{i}", question="q?", options=["a", "b"], answer=0, source="t", split="train",
                     meta={"position": i}) for i in range(3)]
    items_path = tmp_path / "items.parquet"
    write_items(items, items_path)
    table = tmp_path / "t.csv"
    pd.DataFrame({"Index": [0, 1, 2, 3, 4], "v": [0.1, 0.7, 0.9, 0.2, 0.3]}).to_csv(table, index=False)
    out = tmp_path / "d.parquet"
    args = ["difficulty", "import", str(table), "--items", str(items_path), "--key-column", "Index",
            "--key", "position", "--value-column", "v", "-o", str(out)]
    assert main(args) == 2
    assert "2 key(s)" in one_error_line(capsys)
    assert main([*args, "--on-unmatched", "report"]) == 0
    assert "2 table key(s) without an item" in capsys.readouterr().out
    assert list(read_difficulty(out).table["bucket"]) == ["easy", "medium", "hard"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Two tiny Llamas (different seeds) saved as safetensors folders, and MedQA items."""
    from medtune.data import load
    from medtune.models import build_tiny_model

    items = load("medqa", shared_path("medqa", "test.jsonl")).items[:8]
    root = tmp_path_factory.mktemp("models")
    dirs = []
    for seed in (0, 1):
        model, tok = build_tiny_model([it.question for it in items], vocab_size=600, seed=seed)
        d = root / f"tiny{seed}"
        model.save_pretrained(d)
        tok.save_pretrained(d)
        dirs.append(d)
    items_path = root / "items.parquet"
    write_items(items, items_path)
    return items, items_path, dirs


def test_score_ensemble_matches_scorer_and_resumes(tmp_path, tiny_models):
    from medtune.models import resolve_model
    from medtune.scoring import score_items

    items, items_path, dirs = tiny_models
    out = tmp_path / "run" / "difficulty.parquet"
    args = ["difficulty", "score", str(items_path), "--model", str(dirs[0]), "--model", str(dirs[1]), "-o", str(out),
            "--no-progress", "--quantiles"]
    assert main(args) == 0
    got = read_difficulty(out)
    assert got.models == ["tiny0", "tiny1"] and list(got.table["id"]) == [it.id for it in items]
    expected = []
    for d in dirs:
        frame = score_items(resolve_model(str(d)), items, mode="letter", template="paper", progress=False)
        p = [probs[a] for probs, a in zip(frame["probs"], frame["answer"], strict=True)]
        expected.append(p)
        np.testing.assert_allclose(got.table[f"p_correct__{d.name}"], p, rtol=1e-5)
    np.testing.assert_allclose(got.table["difficulty"], 1 - np.mean(expected, axis=0), rtol=1e-5)
    assert got.meta["mode"] == "letter" and got.meta["rule"] == "quantile"
    score_files = sorted(p.name for p in (out.parent / "difficulty.scores").iterdir())
    assert score_files == ["tiny0.letter.paper.parquet", "tiny1.letter.paper.parquet"]
    # A rerun reuses the score files: it works even with the models gone.
    moved = [d.with_name(d.name + "-away") for d in dirs]
    for d, m in zip(dirs, moved, strict=True):
        shutil.move(d, m)
    try:
        assert args[-1] == "--quantiles"
        assert main([*args[:-1], "--thresholds", "0.7,0.8"]) == 0
    finally:
        for d, m in zip(dirs, moved, strict=True):
            shutil.move(m, d)
    again = read_difficulty(out)
    pd.testing.assert_series_equal(again.table["difficulty"], got.table["difficulty"])
    assert again.meta["rule"] == "fixed"


def test_score_bad_input(tmp_path, tiny_models, capsys):
    _, items_path, dirs = tiny_models
    out = tmp_path / "d.parquet"
    assert main(["difficulty", "score", str(items_path), "--model", str(tmp_path / "nope"), "-o", str(out),
                 "--no-progress"]) == 2
    assert "does not exist" in one_error_line(capsys)
    assert main(["difficulty", "score", str(items_path), "--model", str(dirs[0]), "--split", "dev", "-o", str(out),
                 "--no-progress"]) == 2
    assert "no items in split 'dev'" in one_error_line(capsys)


def test_score_interrupted_run_resumes_without_rescoring(tmp_path, tiny_models, monkeypatch):
    from medtune.scoring import engine

    items, items_path, dirs = tiny_models
    out = tmp_path / "difficulty.parquet"
    args = ["difficulty", "score", str(items_path), "--model", str(dirs[0]), "-o", str(out), "--no-progress",
            "--batch-tokens", "64"]  # one question per batch
    real_run = engine.BatchRunner.run
    scored: list[str] = []

    def interrupted(self, batch):
        if len(scored) >= 3:
            raise KeyboardInterrupt
        rows = real_run(self, batch)
        scored.extend(r["id"] for r in rows)
        return rows

    monkeypatch.setattr(engine.BatchRunner, "run", interrupted)
    assert main(args) == 130
    assert not out.exists()
    part = scores_dir(out) / ".tiny0.letter.paper.parquet.part.jsonl"
    assert part.exists() and len(part.read_text().splitlines()) == 1 + 3
    first = list(scored)
    scored.clear()

    def counting(self, batch):
        rows = real_run(self, batch)
        scored.extend(r["id"] for r in rows)
        return rows

    monkeypatch.setattr(engine.BatchRunner, "run", counting)
    assert main(args) == 0
    assert sorted(first + scored) == sorted(it.id for it in items)  # nothing scored twice, nothing lost
    assert not part.exists()
    resumed = read_difficulty(out)
    clean = tmp_path / "clean" / "difficulty.parquet"
    assert main(["difficulty", "score", str(items_path), "--model", str(dirs[0]), "-o", str(clean),
                 "--no-progress"]) == 0
    np.testing.assert_allclose(resumed.table["p_correct__tiny0"], read_difficulty(clean).table["p_correct__tiny0"],
                               rtol=1e-5)
