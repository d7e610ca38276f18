"""`medtune evaluate score-file` on the files other tools write: LLaMA-Factory's predictions, lm-eval's sample logs
(generate_until and multiple choice, made by running lm_eval offline on a tiny model), MCQ letters, and
``--fields``; MCQ files become prediction files that `evaluate compare` and :mod:`medtune.stats` take."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtune.cli import main
from medtune.evaluation import qa_metrics, read_predictions, token_prf
from medtune.foreign_predictions import parse_fields, read_foreign_predictions
from medtune.schema import MCQItem, write_items
from medtune.stats import compare_runs

CHOICES = ["aspirin", "insulin", "heparin", "metformin"]
DOCS = [{"id": f"q{i}", "question": f"Which drug treats condition {i}?", "choices": CHOICES, "gold": i % 4,
         "answer": CHOICES[i % 4]} for i in range(8)]


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model saved to disk, the docs as medtune items, and medtune's own predictions of them."""
    from medtune.models import build_tiny_model

    root = tmp_path_factory.mktemp("foreign")
    model, tok = build_tiny_model([d["question"] + " " + " ".join(CHOICES) for d in DOCS], vocab_size=300, seed=0)
    model_dir = root / "tiny"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    items = [MCQItem(id=d["id"], question=d["question"], options=CHOICES, answer=d["gold"], source="test",
                     split="test") for d in DOCS]
    write_items(items, root / "items.parquet")
    assert main(["evaluate", str(root / "items.parquet"), "--model", str(model_dir), "-o", str(root / "medtune"),
                 "--no-progress", "--n-boot", "100"]) == 0
    return {"root": root, "model": model, "tokenizer": tok, "medtune": root / "medtune" / "predictions.parquet"}


@pytest.fixture(scope="module")
def made(tiny):
    """lm-eval 0.4.13's own sample logs of the tiny model, run offline: a multiple-choice task on docs with an
    ``id`` field and a generate_until task on docs without one, written by lm-eval's EvaluationTracker."""
    pytest.importorskip("lm_eval")
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    root = tiny["root"]
    with_ids = _write_jsonl(root / "docs.jsonl", DOCS)
    without_ids = _write_jsonl(root / "docs_noid.jsonl", [{k: v for k, v in d.items() if k != "id"} for d in DOCS])
    text = "Question: {{question}}\nAnswer:"
    cache = str(root / "datasets_cache")  # the json datasets' Arrow cache stays in the test's folder
    mc = {"task": "tiny_mc", "dataset_path": "json",
          "dataset_kwargs": {"data_files": {"test": str(with_ids)}, "cache_dir": cache},
          "test_split": "test", "output_type": "multiple_choice", "doc_to_text": text,
          "doc_to_choice": "{{choices}}", "doc_to_target": "gold",
          "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}
    gen = {"task": "tiny_gen", "dataset_path": "json",
           "dataset_kwargs": {"data_files": {"test": str(without_ids)}, "cache_dir": cache},
           "test_split": "test", "output_type": "generate_until", "doc_to_text": text, "doc_to_target": "answer",
           "generation_kwargs": {"until": ["\n"], "max_gen_toks": 6, "do_sample": False},
           "metric_list": [{"metric": "exact_match"}]}
    mutual = {**mc, "task": "tiny_mi", "metric_list": [{"metric": "acc"}, {"metric": "acc_mutual_info"}]}
    tracker = EvaluationTracker(output_path=str(root / "lm_eval"))
    lm = HFLM(pretrained=tiny["model"], tokenizer=tiny["tokenizer"], batch_size=8, max_length=128)
    results = simple_evaluate(model=lm, tasks=[mc, gen, mutual], log_samples=True, bootstrap_iters=0,
                              evaluation_tracker=tracker, task_manager=TaskManager(include_defaults=False))
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)  # as lm_eval's CLI: names the files
    for task, task_samples in samples.items():
        tracker.save_results_samples(task_name=task, samples=task_samples)
    logs = {p.name.split("_")[2]: p for p in (root / "lm_eval").rglob("samples_*.jsonl")}
    return {"mc": logs["mc"], "gen": logs["gen"], "mi": logs["mi"]}


def _score(capsys, *args):
    code = main(["evaluate", "score-file", *map(str, args), "--n-boot", "200"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_an_lm_eval_multiple_choice_log_becomes_predictions_with_acc_and_acc_norm(tiny, made, tmp_path, capsys):
    out = tmp_path / "mc"
    code, printed, err = _score(capsys, made["mc"], "-o", out)
    assert code == 0, err
    assert "accuracy_norm" in printed
    samples = _lines(made["mc"])
    pred = read_predictions(out / "predictions.parquet")
    norm = read_predictions(out / "predictions_norm.parquet")
    assert list(pred["id"]) == [s["doc"]["id"] for s in samples]  # the docs' own ids, not doc_id
    for row, row_norm, s in zip(pred.itertuples(), norm.itertuples(), samples, strict=True):
        lls = [float(r[0]) for r in s["filtered_resps"]]
        assert row.mode == "option" and row.answer == int(s["target"]) and list(row.scores) == lls
        assert row.pred == int(np.argmax(lls)) and row.correct == bool(s["acc"])
        lengths = [len(s["arguments"][f"gen_args_{i}"]["arg_1"]) - 1 for i in range(len(lls))]  # " " + choice
        assert row_norm.pred == int(np.argmax(np.array(lls) / lengths)) and row_norm.correct == bool(s["acc_norm"])
        assert math.isclose(sum(row.probs), 1.0) and int(np.argmax(row_norm.probs)) == row_norm.pred
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"]["accuracy"] == pytest.approx(np.mean([s["acc"] for s in samples]))
    assert metrics["accuracy_norm"]["accuracy"] == pytest.approx(np.mean([s["acc_norm"] for s in samples]))
    assert metrics["run"]["format"] == "lm-eval" and metrics["run"]["task_kind"] == "multiple_choice"
    assert metrics["run"]["id_field"] == "doc.id" and "calibration" in metrics
    # lm-eval's acc against its acc_norm, and against medtune's own scoring of the same items, paired by id.
    assert main(["evaluate", "compare", str(out / "predictions.parquet"), str(out / "predictions_norm.parquet"),
                 "--n-boot", "200"]) == 0
    assert main(["evaluate", "compare", str(tiny["medtune"]), str(out / "predictions.parquet"),
                 "--n-boot", "200", "-o", str(tmp_path / "cmp.json")]) == 0
    assert json.loads((tmp_path / "cmp.json").read_text())["B"] == metrics["accuracy"]["accuracy"]


def test_an_lm_eval_log_with_acc_mutual_info_keeps_the_choices_only(made):
    samples = _lines(made["mi"])
    assert len(samples[0]["arguments"]) == 2 * len(CHOICES)  # lm-eval adds ("", choice) per choice
    read = read_foreign_predictions(made["mi"])
    assert all(it.options == CHOICES for it in read.items)
    assert read.predictions["correct"].tolist() == [bool(s["acc"]) for s in samples]
    assert [list(r) for r in read.predictions["scores"]] == [
        [float(r[0]) for r in s["filtered_resps"][:len(CHOICES)]] for s in samples]


def test_an_lm_eval_generate_until_log_is_scored_as_free_text(made, tmp_path, capsys):
    out = tmp_path / "gen"
    code, _, err = _score(capsys, made["gen"], "-o", out, "--no-bertscore")
    assert code == 0, err
    samples = _lines(made["gen"])
    read = read_foreign_predictions(made["gen"])
    assert read.kind == "qa" and read.source["task_kind"] == "generate_until" and read.source["id_field"] == "doc_id"
    assert [g["id"] for g in read.generations] == [str(s["doc_id"]) for s in samples]
    assert [g["reference"] for g in read.generations] == [s["doc"]["answer"] for s in samples]
    assert [g["prediction"] for g in read.generations] == [s["filtered_resps"][0] for s in samples]
    assert read.generations[0]["prompt"] == f"Question: {samples[0]['doc']['question']}\nAnswer:"
    items = pd.read_parquet(out / "item_metrics.parquet")
    expected = [token_prf(s["filtered_resps"][0], s["target"])[2] for s in samples]
    np.testing.assert_allclose(items["token_f1"], expected)
    assert json.loads((out / "metrics.json").read_text())["run"]["format"] == "lm-eval"


def test_a_llamafactory_predictions_file_is_scored_as_it_is(tmp_path, capsys):
    rows = [("<|im_start|>user\nWhat causes the flu?<|im_end|>\n<|im_start|>assistant\n",
             "The influenza virus.", "Influenza viruses cause the flu."),
            ("<|im_start|>user\nQuelle est la fièvre normale ?<|im_end|>\n<|im_start|>assistant\n",
             "", "Environ 37 °C."),
            ("<|im_start|>user\nIs there a vaccine?<|im_end|>\n<|im_start|>assistant\n",
             "Yes, a yearly flu vaccine.", "Yes, a yearly flu vaccine.")]
    src = tmp_path / "generated_predictions.jsonl"
    with open(src, "w", encoding="utf-8") as f:  # LLaMA-Factory's writer (do_predict)
        for text, pred, label in rows:
            f.write(json.dumps({"prompt": text, "predict": pred, "label": label}, ensure_ascii=False) + "\n")
    assert "°C" in src.read_text(encoding="utf-8")
    out = tmp_path / "scored"
    code, _, err = _score(capsys, src, "-o", out, "--no-bertscore")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    expected = qa_metrics([p for _, p, _ in rows], [label for _, _, label in rows])
    for key in ("f1", "precision", "recall", "exact_match", "rougeL"):
        assert metrics["qa"][key] == pytest.approx(expected[key])
    assert metrics["qa"]["exact_match"] == pytest.approx(1 / 3)
    assert list(pd.read_parquet(out / "item_metrics.parquet")["id"]) == ["line-1", "line-2", "line-3"]
    assert metrics["run"]["format"] == "llamafactory" and not (out / "predictions.parquet").exists()


def test_mcq_letters_of_another_tool_compare_with_a_medtune_predictions_file(tiny, tmp_path, capsys):
    ours = read_predictions(tiny["medtune"])
    theirs = ["A", "(B)", "c", None, "A", "B.", "C", ""]  # written as tools write them; null/empty: unanswered
    letters = [{"question_id": d["id"], "answer_idx": "ABCD"[d["gold"]], "model_answer": p}
               for d, p in zip(reversed(DOCS), reversed(theirs), strict=True)]  # another order: matched by id
    src = _write_jsonl(tmp_path / "other_tool.jsonl", letters)
    out = tmp_path / "letters"
    code, _, err = _score(capsys, src, "-o", out)
    assert code == 0, err
    pred = read_predictions(out / "predictions.parquet")
    by_id = {d["id"]: ("ABCD".index(p.strip("().").upper()) if p else None) for d, p in zip(DOCS, theirs,
                                                                                              strict=True)}
    assert [None if pd.isna(v) else int(v) for v in pred["pred"]] == [by_id[i] for i in pred["id"]]
    assert set(pred.columns) >= {"id", "mode", "answer", "pred", "correct", "scores", "probs"}
    their_correct = {d["id"]: by_id[d["id"]] == d["gold"] for d in DOCS}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"]["accuracy"] == pytest.approx(np.mean(list(their_correct.values())))
    assert metrics["unanswered"] == 2 and metrics["run"]["format"] == "mcq"
    code = main(["evaluate", "compare", str(tiny["medtune"]), str(out / "predictions.parquet"),
                 "--n-boot", "200", "-o", str(tmp_path / "cmp.json")])
    assert code == 0
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    ours_correct = dict(zip(ours["id"], ours["correct"], strict=True))
    assert cmp["n"] == len(DOCS) and cmp["B"] == pytest.approx(np.mean(list(their_correct.values())))
    assert cmp["mcnemar"]["a_only"] == sum(ours_correct[i] and not their_correct[i] for i in their_correct)
    assert cmp["mcnemar"]["b_only"] == sum(their_correct[i] and not ours_correct[i] for i in their_correct)
    # A gold letter that is not the item's: not the same items, named in file B.
    letters[0]["answer_idx"] = "ABCD"[(DOCS[-1]["gold"] + 1) % 4]
    _write_jsonl(src, letters)
    assert main(["evaluate", "score-file", str(src), "-o", str(out), "--n-boot", "50"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "compare", str(tiny["medtune"]), str(out / "predictions.parquet")]) == 2
    assert "gold answers differ" in capsys.readouterr().err


def test_letters_files_of_several_seeds_take_the_seed_aware_comparison(tmp_path, capsys):
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 4, 30)
    runs: dict[str, dict[int, np.ndarray]] = {"a": {}, "b": {}}
    for arm, skill in (("a", 0.8), ("b", 0.4)):
        for seed in (0, 1, 2):
            right = rng.random(30) < skill
            pred = np.where(right, gold, (gold + 1) % 4)
            rows = [{"id": f"i{k}", "answer": "ABCD"[g], "pred": "ABCD"[p]}
                    for k, (g, p) in enumerate(zip(gold, pred, strict=True))]
            src = _write_jsonl(tmp_path / f"{arm}{seed}.jsonl", rows)
            assert main(["evaluate", "score-file", str(src), "-o", str(tmp_path / f"{arm}{seed}"),
                         "--n-boot", "50"]) == 0
            frame = read_predictions(tmp_path / f"{arm}{seed}" / "predictions.parquet").set_index("id")
            runs[arm][seed] = frame.loc[[f"i{k}" for k in range(30)], "correct"].to_numpy(dtype=float)
            assert runs[arm][seed].tolist() == right.astype(float).tolist()
    res = compare_runs(runs["a"], runs["b"], n_boot=200)
    assert res["seeds"] == 3 and res["test"] == "paired t (per-seed gains)" and res["p_value"] == res["p_value"]
    expected = np.mean([runs["a"][s].mean() - runs["b"][s].mean() for s in (0, 1, 2)])
    assert res["gain"] == pytest.approx(expected) and res["n_items"] == 30
    capsys.readouterr()


def test_fields_map_any_names_for_free_text_and_letters(tmp_path, capsys):
    rows = [{"uid": "x1", "question": "What lowers blood sugar?", "gold_answer": "Insulin lowers it.",
             "output": "insulin"},
            {"uid": "x2", "question": "What thins the blood?", "gold_answer": "Heparin.", "output": None}]
    src = _write_jsonl(tmp_path / "custom.jsonl", rows)
    out = tmp_path / "text"
    code, _, err = _score(capsys, src, "-o", out, "--no-bertscore",
                          "--fields", "prompt=question, reference=gold_answer,prediction=output,id=uid")
    assert code == 0, err
    assert list(pd.read_parquet(out / "item_metrics.parquet")["id"]) == ["x1", "x2"]
    f1 = json.loads((out / "metrics.json").read_text())["qa"]["f1"]
    assert f1 == pytest.approx(qa_metrics(["insulin", None], ["Insulin lowers it.", "Heparin."])["f1"])
    # Letters under other names, one reached by a dotted path; and a LLaMA-Factory file of letters read as MCQ.
    letters = _write_jsonl(tmp_path / "keyed.jsonl", [{"q": {"num": 3}, "key": "B", "choice": "B"},
                                                      {"q": {"num": 4}, "key": "A", "choice": "C"}])
    code, _, err = _score(capsys, letters, "-o", tmp_path / "keyed", "--fields", "id=q.num,answer=key,pred=choice")
    assert code == 0, err
    pred = read_predictions(tmp_path / "keyed" / "predictions.parquet")
    assert list(pred["id"]) == ["3", "4"] and list(pred["correct"]) == [True, False] and list(pred["pred"]) == [1, 2]
    lf = tmp_path / "generated_predictions.jsonl"
    lf.write_text("".join(json.dumps({"prompt": f"Q{i}", "predict": p, "label": g}, ensure_ascii=False) + "\n"
                          for i, (p, g) in enumerate([("A", "A"), ("D", "B"), ("B", "B")])), encoding="utf-8")
    code, _, err = _score(capsys, lf, "-o", tmp_path / "lf", "--format", "mcq", "--fields", "answer=label,pred=predict")
    assert code == 0, err
    assert json.loads((tmp_path / "lf" / "metrics.json").read_text())["accuracy"]["accuracy"] == pytest.approx(2 / 3)


def _lm_eval_lines(request, change):
    """The first two samples of the multiple-choice log, the second changed."""
    first, second = _lines(request.getfixturevalue("made")["mc"])[:2]
    change(second)
    return [first, second]


@pytest.mark.parametrize(("case", "where", "reason"), [
    ("lf-missing", "line 2, field 'label'", "required field is missing"),
    ("lf-empty", "line 2, field 'label'", "non-empty string"),
    ("letter-bad", "line 2, field 'pred'", "expected a letter A-J"),
    ("letter-missing", "line 2, field 'answer'", "required field is missing"),
    ("mapped-missing", "line 2, field 'gold_answer'", "required field is missing"),
    ("lm-eval-target", "line 2, field 'target'", "neither the index"),
    ("lm-eval-acc", "line 2, field 'acc'", "does not match its own log-likelihoods"),
    ("lm-eval-resps", "line 2, field 'filtered_resps'", "log-likelihood"),
    ("unknown-format", "line 1", "cannot tell the format"),
])
def test_bad_records_name_file_line_and_field(request, tmp_path, capsys, case, where, reason):
    ok_lf = {"prompt": "p", "predict": "x", "label": "y"}
    lm_eval_changes = {
        "lm-eval-target": lambda s: s.update(target="7"),
        "lm-eval-acc": lambda s: s.update(acc=1 - s["acc"]),
        "lm-eval-resps": lambda s: s["filtered_resps"][0].__setitem__(0, "n/a"),
    }
    other_cases = {
        "lf-missing": ([ok_lf, {"prompt": "p", "predict": "x"}], []),
        "lf-empty": ([ok_lf, {**ok_lf, "label": ""}], []),
        "letter-bad": ([{"id": 1, "answer": "A", "pred": "B"}, {"id": 2, "answer": "A", "pred": "Z"}], []),
        "letter-missing": ([{"id": 1, "answer": "A", "pred": "B"}, {"id": 2, "pred": "B"}], []),
        "mapped-missing": ([{"q": "q", "gold_answer": "a", "out": "b"}, {"q": "q", "out": "b"}],
                           ["--fields", "prompt=q,reference=gold_answer,prediction=out"]),
        "unknown-format": ([{"question": "q", "text": "t"}], []),
    }
    lines, extra = ((_lm_eval_lines(request, lm_eval_changes[case]), []) if case in lm_eval_changes
                    else other_cases[case])
    src = tmp_path / "bad.jsonl"
    src.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    code, _, err = _score(capsys, src, "-o", tmp_path / "o", "--no-bertscore", *extra)
    assert code == 2
    assert len(err.splitlines()) == 1 and f"bad.jsonl, {where}" in err and reason in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--fields", "prompt"], "--fields: 'prompt' is not ROLE=FIELD"),
    (["--fields", "question=q"], "--fields: unknown role 'question'"),
    (["--format", "csv"], "--format must be one of auto, medtune, llamafactory, lm-eval, mcq"),
    (["--format", "llamafactory", "--fields", "pred=x"], "the llamafactory format takes"),
    (["--filter", "strict-match"], "--filter is for lm-eval samples logs"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    src = _write_jsonl(tmp_path / "gen.jsonl", [{"prompt": "p", "predict": "x", "label": "y"}])
    code, _, err = _score(capsys, src, "-o", tmp_path / "o", *args)
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_an_lm_eval_log_of_several_filters_needs_one_chosen(made, tmp_path, capsys):
    samples = _lines(made["gen"])
    both = samples + [{**s, "filter": "strict-match", "filtered_resps": ["heparin"]} for s in samples]
    src = _write_jsonl(tmp_path / "samples_tiny_gen.jsonl", both)
    code, _, err = _score(capsys, src, "-o", tmp_path / "o", "--no-bertscore")
    assert code == 2 and "several filters (none, strict-match)" in err and "--filter" in err
    code, _, err = _score(capsys, src, "-o", tmp_path / "o", "--no-bertscore", "--filter", "strict-match")
    assert code == 0, err
    expected = np.mean([token_prf("heparin", s["target"])[2] for s in samples])
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["qa"]["f1"] == pytest.approx(expected)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.one_of(st.none(), st.integers(0, 9))), min_size=1, max_size=12),
       st.booleans())
def test_letters_accuracy_is_the_share_of_matching_letters(tmp_path_factory, pairs, lower):
    src = tmp_path_factory.mktemp("letters") / "l.jsonl"
    letters = "ABCDEFGHIJ"
    _write_jsonl(src, [{"id": k, "answer": letters[g], "pred": None if p is None else
                        (letters[p].lower() if lower else letters[p])} for k, (g, p) in enumerate(pairs)])
    read = read_foreign_predictions(src)
    assert read.kind == "mcq" and read.format == "mcq"
    assert read.predictions["correct"].tolist() == [p == g for g, p in pairs]
    assert all(len(it.options) == max(2, max(max(g, -1 if p is None else p) for g, p in pairs) + 1)
               for it in read.items)


def test_parse_fields_reads_roles():
    assert parse_fields(" id = doc.qid , pred=choice") == {"id": "doc.qid", "pred": "choice"}
    assert parse_fields(None) == {} and parse_fields("") == {}


def test_a_letters_table_in_csv_is_read_like_json_lines(tmp_path, capsys):
    src = tmp_path / "answers.csv"
    src.write_text("question_id,answer,pred,notes\nq1,A,A,\nq2,B,,skipped\n\nq3,C,\"(D)\",\"two\nlines\"\n",
                   encoding="utf-8")
    code, _, err = _score(capsys, src, "-o", tmp_path / "o")
    assert code == 0, err
    pred = read_predictions(tmp_path / "o" / "predictions.parquet")
    assert list(pred["id"]) == ["q1", "q2", "q3"] and list(pred["correct"]) == [True, False, False]
    assert pd.isna(pred["pred"].iloc[1]) and pred["pred"].iloc[2] == 3
    src.write_text("question_id,answer,pred\nq1,A,A\nq2,B,B\nq3,C,maybe\n", encoding="utf-8")
    code, _, err = _score(capsys, src, "-o", tmp_path / "o2")
    assert code == 2 and "answers.csv, line 4, field 'pred'" in err and len(err.splitlines()) == 1
    src.write_text("question_id,answer,pred\nq1,A,A,extra\n", encoding="utf-8")
    code, _, err = _score(capsys, src, "-o", tmp_path / "o2")
    assert code == 2 and "answers.csv, line 2: 4 cells for 3 columns" in err
