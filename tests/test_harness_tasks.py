"""Harness tasks through medtune's own doors: the few-shot draw against lm-eval's samplers, `evaluate run --task
... --num-fewshot`, the `--suite open-medical-llm` run and its one-line errors. (The prompts and predictions against
lm-eval run for real are tests/test_harness_agreement.py.)"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtune.cli import main
from medtune.errors import ConfigError
from medtune.evaluation import read_predictions
from medtune.harness import get_task, score_task, suite_tasks
from medtune.harness.fewshot import fewshot_positions
from medtune.schema import MCQItem, write_items

N = 4  # questions per split


def _items(task: str, n: int = N) -> list[MCQItem]:
    """``n`` test and ``n`` few-shot items shaped for ``task`` (PubMedQA's carry the abstract the loader keeps)."""
    spec = get_task(task)
    out = []
    for split in (spec.test_split, spec.fewshot_split):
        for i in range(n):
            if task == "pubmedqa":
                extra = {"options": ["yes", "no", "maybe"], "answer": i % 3,
                         "meta": {"contexts": [f"Cells {i} grew.", "Doses rose."], "pubmed_question": f"Do {i}?"}}
            else:
                extra = {"options": [f"liver {i}", "renal artery", f"nerve {split}", "gene"], "answer": i % 4}
            out.append(MCQItem(id=f"{task}-{split}-{i}", question=f"Which lesion {i} in {split}?", source="test",
                               split=split, category=spec.subject, **extra))
    return out


@pytest.fixture(scope="module")
def harness_setup(tmp_path_factory):
    from medtune.models import build_tiny_model

    root = tmp_path_factory.mktemp("harness_cli")
    suite = root / "suite"
    suite.mkdir()
    texts = []
    for task in suite_tasks("open-medical-llm"):
        items = _items(task)
        write_items(items, suite / f"{task}.parquet")
        texts += [t for it in items for t in (it.question, *it.options)]
    model, tok = build_tiny_model([*texts, "Question: Answer: Abstract: Choices:"] * 3, vocab_size=400, seed=1,
                                  hidden_size=32, intermediate_size=64, num_attention_heads=2)
    bare = [it.model_copy(update={"meta": {}}) for it in _items("pubmedqa")]  # not from the pubmedqa loader
    write_items(bare, root / "pubmedqa_bare.parquet")
    model.save_pretrained(root / "tiny")
    tok.save_pretrained(root / "tiny")
    return {"root": root, "suite": suite, "model": str(root / "tiny")}


def test_task_with_fewshot_end_to_end(harness_setup, tmp_path, capsys):
    items = harness_setup["suite"] / "medqa_4options.parquet"
    out = tmp_path / "medqa"
    rc = main(["evaluate", "run", str(items), "--model", harness_setup["model"], "-o", str(out), "--task",
               "medqa_4options", "--num-fewshot", "3", "--fewshot-seed", "7", "--no-progress", "--n-boot", "200"])
    assert rc == 0
    assert "acc_norm" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    pred = read_predictions(out / "predictions.parquet")
    assert metrics["harness"] == {**metrics["harness"], "task": "medqa_4options", "num_fewshot": 3, "fewshot_seed": 7,
                                  "fewshot_split": "train", "sampler": "default"}
    assert metrics["run"]["mode"] == "harness" and metrics["n"] == N
    assert list(pred["id"]) == [f"medqa_4options-test-{i}" for i in range(N)]
    assert metrics["acc"]["accuracy"] == pytest.approx(pred["correct"].mean())
    assert metrics["acc_norm"]["accuracy"] == pytest.approx(pred["correct_norm"].mean())
    assert metrics["accuracy"]["accuracy"] == metrics["acc"]["accuracy"]
    for key in ("acc", "acc_norm"):
        assert metrics[key]["ci_low"] <= metrics[key]["accuracy"] <= metrics[key]["ci_high"]
    # three solved training questions, in the drawn order, then the question itself
    expected = fewshot_positions(get_task("medqa_4options"), [{"q": i} for i in range(N)], [{}] * N, 3, 7)
    assert [list(f) for f in pred["fewshot"]] == [[f"medqa_4options-train-{p}" for p in row] for row in expected]
    for prompt, shots in zip(pred["prompt"], pred["fewshot"], strict=True):
        assert prompt.count("\nAnswer: ") == 3 and prompt.endswith("\nAnswer:")
        assert prompt.startswith(f"Question: Which lesion {shots[0].rsplit('-', 1)[1]} in train?\nA. liver")


def test_suite_runs_every_task_and_summarises(harness_setup, tmp_path, capsys):
    out = tmp_path / "suite_out"
    rc = main(["evaluate", "run", str(harness_setup["suite"]), "--model", harness_setup["model"], "-o", str(out),
               "--suite", "open-medical-llm", "--num-fewshot", "1", "--no-progress", "--n-boot", "100"])
    assert rc == 0
    assert "mean" in capsys.readouterr().out
    tasks = list(suite_tasks("open-medical-llm"))
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["task"] for r in rows] == tasks
    summary = json.loads((out / "summary.json").read_text())
    for row, task in zip(rows, tasks, strict=True):
        metrics = json.loads((out / task / "metrics.json").read_text())
        assert metrics["harness"]["task"] == task and metrics["harness"]["num_fewshot"] == 1
        assert float(row["acc"]) == pytest.approx(metrics["acc"]["accuracy"])
        assert float(row["acc_norm"]) == pytest.approx(metrics["acc_norm"]["accuracy"])
    assert summary["mean"]["acc"] == pytest.approx(sum(float(r["acc"]) for r in rows) / len(rows))
    assert "| mean of 9 tasks |" in (out / "summary.md").read_text()
    mmlu = read_predictions(out / "mmlu_anatomy" / "predictions.parquet")
    assert mmlu["prompt"][0].startswith("The following are multiple choice questions (with answers) about anatomy.\n\n"
                                        "Which lesion 0 in dev?\nA. liver 0\n")
    assert [list(f) for f in mmlu["fewshot"]] == [["mmlu_anatomy-dev-0"]] * N  # first_n: the first dev question


@pytest.mark.parametrize(("items", "args", "says"), [
    ("medqa", ["--num-fewshot", "2"], "num_fewshot applies to a harness task"),
    ("medqa", ["--task", "medqa_4option"], "unknown harness task 'medqa_4option'; did you mean 'medqa_4options'?"),
    ("medqa", ["--task", "medqa_4options", "--num-fewshot", "9"], "num_fewshot 9 needs that many items in split"),
    ("medqa", ["--task", "medqa_4options", "--mode", "letter"], "mode: a harness task (medqa_4options) fixes its"),
    ("medqa", ["--task", "medqa_4options", "--chat", "true"], "chat: a harness task (medqa_4options) fixes its"),
    ("medqa", ["--task", "pubmedqa"], "options must be yes, no, maybe in this order"),
    ("bare", ["--task", "pubmedqa"], "meta.contexts"),
    ("medqa", ["--task", "mmlu_anatomy", "--split", "dev"], "no items in split 'dev'"),
    ("medqa", ["--suite", "open-medical-llm"], "a suite reads a folder"),
])
def test_bad_task_settings_are_one_line_errors(harness_setup, tmp_path, capsys, items, args, says):
    items = {"medqa": harness_setup["suite"] / "medqa_4options.parquet",
             "bare": harness_setup["root"] / "pubmedqa_bare.parquet"}[items]
    rc = main(["evaluate", "run", str(items), "--model", harness_setup["model"], "-o", str(tmp_path / "o"),
               "--no-progress", *args])
    err = capsys.readouterr().err
    assert rc == 2 and says in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_suite_names_every_missing_items_file_before_loading(harness_setup, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "medmcqa.parquet").write_bytes((harness_setup["suite"] / "medmcqa.parquet").read_bytes())
    rc = main(["evaluate", "run", str(partial), "--model", str(tmp_path / "no-such-model"), "-o", str(tmp_path / "o"),
               "--suite", "open-medical-llm"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing: medqa_4options.parquet, pubmedqa.parquet, mmlu_anatomy.parquet" in err
    assert "medmcqa.parquet," not in err


# ----------------------------------------------------------------------------------------------------------
# The few-shot draw against lm-eval's own samplers (the tasks' configurations never exclude the question itself,
# because their few-shot split is not their test split; the rule for when it is, is checked here)

@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed (the dev extra)")
@settings(max_examples=60, deadline=None)
@given(pool=st.lists(st.integers(0, 6), min_size=1, max_size=12), docs=st.lists(st.integers(0, 6), max_size=6),
       k=st.integers(0, 6), seed=st.integers(0, 2**31), exclude=st.booleans(),
       sampler=st.sampled_from(["default", "first_n"]))
def test_fewshot_draw_is_lm_evals(pool, docs, k, seed, exclude, sampler):
    task = dataclasses.replace(get_task("medqa_4options"), sampler=sampler)
    pool_docs, test_docs = [{"q": v} for v in pool], [{"q": v} for v in docs]
    need = k + 1 if exclude and sampler == "default" else k
    short = exclude and any(sum(p != d for p in pool_docs) < k for d in test_docs)
    if (k and need > len(pool)) or short:
        with pytest.raises(ConfigError, match=f"num_fewshot {k}"):  # the harness refuses these as well
            fewshot_positions(task, test_docs, pool_docs, k, seed, exclude=exclude)
        return
    from lm_eval.api import samplers

    ours = fewshot_positions(task, test_docs, pool_docs, k, seed, exclude=exclude)
    theirs = samplers.get_sampler(sampler)(list(pool_docs), rnd=seed)
    for doc, positions in zip(test_docs, ours, strict=True):
        assert [pool_docs[p] for p in positions] == list(theirs.sample(k, eval_doc=doc if exclude else None))


def test_a_batch_out_of_gpu_memory_is_scored_again_in_smaller_batches(harness_setup):
    """torch's out-of-memory error (raised on the CPU by a forward hook above a pass size) splits the batch; the
    values are those of an unlimited run, and one question too long alone is a one-line batch_tokens error."""
    import numpy as np
    import torch

    from medtune.evaluation_stage import harness_items
    from medtune.models import resolve_model
    from medtune.scoring.hf import HFBackend

    loaded = resolve_model(harness_setup["model"])
    task = get_task("medqa_4options")
    test, pool = harness_items(task, harness_setup["suite"] / "medqa_4options.parquet", None, 2)
    unlimited = score_task(HFBackend(loaded), task, test, pool, num_fewshot=2, batch_tokens=1 << 16)
    longest = max(len(loaded.tokenizer(p)["input_ids"]) for p in unlimited["prompt"])
    failed: list[int] = []

    def out_of_memory_above(limit: int):
        def hook(module, args, kwargs):
            if kwargs["input_ids"].numel() > limit:
                failed.append(kwargs["input_ids"].numel())
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (played on the CPU)")
        return hook

    handle = loaded.model.register_forward_pre_hook(out_of_memory_above(2 * longest), with_kwargs=True)
    try:
        got = score_task(HFBackend(loaded), task, test, pool, num_fewshot=2, batch_tokens=1 << 16)
    finally:
        handle.remove()
    assert failed, "the first batch must have been too large"
    np.testing.assert_allclose(np.stack(got["scores"]), np.stack(unlimited["scores"]), atol=1e-5)
    assert list(got["pred"]) == list(unlimited["pred"]) and list(got["prompt"]) == list(unlimited["prompt"])
    handle = loaded.model.register_forward_pre_hook(out_of_memory_above(1), with_kwargs=True)
    try:
        with pytest.raises(ConfigError) as err:
            score_task(HFBackend(loaded), task, test, pool, num_fewshot=2, batch_tokens=1 << 16)
    finally:
        handle.remove()
    assert str(err.value).startswith("batch_tokens: question 'medqa_4options-test-") and "\n" not in str(err.value)


def test_mmlu_evaluated_on_its_fewshot_split_leaves_each_question_out_of_its_examples(harness_setup):
    """MMLU names its few-shot split (dev): evaluating dev, the harness's first_n takes the first k *other* questions;
    a task that falls back to its training split never leaves anything out (its few-shot split is not named)."""
    from medtune.evaluation_stage import harness_items
    from medtune.models import resolve_model

    loaded = resolve_model(harness_setup["model"])
    mmlu = get_task("mmlu_anatomy")
    test, pool = harness_items(mmlu, harness_setup["suite"] / "mmlu_anatomy.parquet", "dev", 2)
    frame = score_task(loaded, mmlu, test, pool, num_fewshot=2)
    dev = [f"mmlu_anatomy-dev-{i}" for i in range(N)]
    assert [list(f) for f in frame["fewshot"]] == [[d for d in dev if d != own][:2] for own in dev]
    assert mmlu.excludes_question("dev") and not mmlu.excludes_question("test")
    assert not get_task("medqa_4options").excludes_question("train")
