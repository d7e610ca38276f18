"""medtune's harness tasks against lm-evaluation-harness 0.4.13 itself, run for real and offline.

The same questions are written twice by the test: in each source's published format, read by medtune's loaders
into items files, and in each task's hub dataset layout (local JSON lines), read by lm-eval through the task's own
YAML configuration with only its dataset path replaced. The same tiny model then scores both at 0 and 5 shots with
the harness's default few-shot seed. For every task and question: the prompts and continuations are the ones lm-eval
logs byte for byte (so the few-shot examples are the same, in the same order), the log-likelihoods agree, and so do
the per-question predictions of ``acc`` and ``acc_norm``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lm_eval")

from medtune.data import load
from medtune.evaluation_stage import harness_items
from medtune.harness import get_task, score_task, suite_tasks
from medtune.harness.tasks import MMLU_MEDICAL_SUBJECTS
from medtune.schema import write_items

N = 6  # questions per split
SHOTS = (0, 5)
WORDS = ("renal", "artery", "acute", "fever", "the", "nerve", "chronic", "cell", "dose", "liver", "which", "of",
         "most", "likely", "lesion", "patient", "enzyme", "gene", "plasma", "tissue")


def _text(rnd: random.Random, lo: int, hi: int) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(lo, hi)))


def _question(rnd: random.Random) -> tuple[str, list[str], int]:
    return _text(rnd, 4, 9).capitalize() + "?", [_text(rnd, 1, 4) for _ in range(4)], rnd.randrange(4)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _write_sources(root: Path, rnd: random.Random) -> tuple[dict[str, Path], dict[str, dict]]:
    """Per task: the medtune items file and lm-eval's configuration overrides for its local hub-layout files."""
    items_files, hub = {}, {}
    # MedQA: medtune reads the published JSON lines; the hub copy has sent1, ending0-3, label
    raw, layout = root / "medqa", root / "hub_medqa"
    raw.mkdir(), layout.mkdir()
    files, items = {}, []
    for split in ("train", "test"):
        records = [_question(rnd) for _ in range(N)]
        _jsonl(raw / f"{split}.jsonl", [{"question": q, "options": dict(zip("ABCD", o, strict=True)),
                                         "answer_idx": "ABCD"[a], "answer": o[a], "meta_info": "step1"}
                                        for q, o, a in records])
        files[split] = str(_jsonl(layout / f"{split}.json", [
            {"id": f"{split}-{i}", "sent1": q, "sent2": "", **{f"ending{k}": o[k] for k in range(4)}, "label": a}
            for i, (q, o, a) in enumerate(records)]))
        items += load("medqa", raw / f"{split}.jsonl").items
    files["validation"] = files["test"]
    items_files["medqa_4options"] = write_items(items, root / "medqa_4options.parquet")
    hub["medqa_4options"] = files
    # MedMCQA: the original 1-based files; the hub copy is 0-based, its "validation" split is the "dev" file
    raw, layout = root / "medmcqa", root / "hub_medmcqa"
    raw.mkdir(), layout.mkdir()
    files, items = {}, []
    for split, hub_split in (("train", "train"), ("dev", "validation")):
        records = [_question(rnd) for _ in range(N)]
        rows = [{"id": f"{split}{i}", "question": q, **dict(zip(("opa", "opb", "opc", "opd"), o, strict=True)),
                 "choice_type": "single", "subject_name": "Anatomy", "topic_name": None, "exp": None}
                for i, (q, o, _) in enumerate(records)]
        _jsonl(raw / f"{split}.json", [{**r, "cop": a + 1} for r, (_, _, a) in zip(rows, records, strict=True)])
        files[hub_split] = str(_jsonl(layout / f"{hub_split}.json",
                                      [{**r, "cop": a} for r, (_, _, a) in zip(rows, records, strict=True)]))
        items += load("medmcqa", raw / f"{split}.json").items
    items_files["medmcqa"] = write_items(items, root / "medmcqa.parquet")
    hub["medmcqa"] = files
    # PubMedQA: ori_pqal.json + test_ground_truth.json; bigbio's source layout (QUESTION, CONTEXTS, ...)
    raw, layout = root / "pubmedqa", root / "hub_pubmedqa"
    raw.mkdir(), layout.mkdir()
    records = {str(1000 + i): {"QUESTION": _text(rnd, 4, 8) + "?", "CONTEXTS": [_text(rnd, 5, 12) + "."
                                                                                for _ in range(rnd.randint(1, 3))],
                               "LABELS": ["BACKGROUND", "RESULTS", "METHODS"][:1], "MESHES": ["Humans"],
                               "YEAR": "2001", "reasoning_required_pred": "yes", "reasoning_free_pred": "no",
                               "final_decision": rnd.choice(["yes", "no", "maybe"]), "LONG_ANSWER": _text(rnd, 3, 6)}
               for i in range(2 * N)}
    for record in records.values():
        record["LABELS"] = ["BACKGROUND"] * len(record["CONTEXTS"])
    test_ids = list(records)[N:]
    (raw / "ori_pqal.json").write_text(json.dumps(records), encoding="utf-8")
    (raw / "test_ground_truth.json").write_text(json.dumps({p: records[p]["final_decision"] for p in test_ids}))
    files = {"train": str(_jsonl(layout / "train.json", [records[p] for p in records if p not in test_ids])),
             "test": str(_jsonl(layout / "test.json", [records[p] for p in test_ids]))}
    files["validation"] = files["test"]
    pubmed = load("pubmedqa", raw / "ori_pqal.json").items
    order = {pmid: k for k, pmid in enumerate(records)}  # the hub files keep ori_pqal's order
    items_files["pubmedqa"] = write_items(sorted(pubmed, key=lambda it: order[it.meta["pmid"]]),
                                          root / "pubmedqa.parquet")
    hub["pubmedqa"] = files
    # MMLU: the release's headerless CSVs; the hub copy has question, subject, choices, answer
    for subject in MMLU_MEDICAL_SUBJECTS:
        raw, layout = root / f"mmlu_{subject}", root / f"hub_mmlu_{subject}"
        raw.mkdir(), layout.mkdir()
        files, items = {}, []
        for split in ("dev", "test"):
            records = [_question(rnd) for _ in range(N)]
            lines = [",".join(json.dumps(c) for c in (q + " ", *o, "ABCD"[a])) for q, o, a in records]
            (raw / f"{subject}_{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
            files[split] = str(_jsonl(layout / f"{split}.json", [
                {"question": q + " ", "subject": subject, "choices": o, "answer": a} for q, o, a in records]))
            items += load("mmlu", raw / f"{subject}_{split}.csv").items
        items_files[f"mmlu_{subject}"] = write_items(items, root / f"mmlu_{subject}.parquet")
        hub[f"mmlu_{subject}"] = files
    return items_files, hub


def _lm_eval_config(task: str, data_files: dict[str, str], cache: Path) -> dict:
    """The task's own YAML configuration (includes and !function resolved), reading the local files instead."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    root = Path(lm_eval.__file__).parent / "tasks"
    yaml = {"medqa_4options": root / "medqa" / "medqa.yaml", "medmcqa": root / "medmcqa" / "medmcqa.yaml",
            "pubmedqa": root / "pubmedqa" / "pubmedqa.yaml"}.get(task, root / "mmlu" / "default" / f"{task}.yaml")
    config = load_yaml(yaml, resolve_func=True)
    assert config["task"] == task
    config.update({"dataset_path": "json", "dataset_name": None,
                   "dataset_kwargs": {"data_files": data_files, "cache_dir": str(cache)}})
    return config


@pytest.fixture(scope="module")
def agreement(tmp_path_factory):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from medtune.models import LoadedModel, build_tiny_model
    from medtune.scoring.hf import HFBackend

    root = tmp_path_factory.mktemp("harness")
    items_files, hub = _write_sources(root, random.Random(11))
    tasks = list(suite_tasks("open-medical-llm"))
    assert sorted(tasks) == sorted(items_files)
    # a tokenizer trained on the prompts' own words keeps the 5-shot prompts short
    texts = [*WORDS, "Question: Answer: Abstract: Choices: yes no maybe The following are multiple choice questions "
             "(with answers) about", *MMLU_MEDICAL_SUBJECTS] * 20
    model, tok = build_tiny_model(texts, vocab_size=640, seed=3, hidden_size=32, intermediate_size=64,
                                  num_attention_heads=2)
    model.eval()
    configs = [_lm_eval_config(t, hub[t], root / "cache") for t in tasks]
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=16)
    backend = HFBackend(LoadedModel(model, tok, "tiny", model.dtype, "cpu"))
    manager = TaskManager(include_defaults=False)  # the configurations are given: no index of every task's YAML
    theirs, ours = {}, {}
    for k in SHOTS:
        result = simple_evaluate(model=lm, tasks=[dict(c) for c in configs], num_fewshot=k, log_samples=True,
                                 bootstrap_iters=0, fewshot_random_seed=1234, task_manager=manager)
        for t in tasks:
            theirs[t, k] = sorted(result["samples"][t], key=lambda s: s["doc_id"])
            task = get_task(t)
            test, pool = harness_items(task, items_files[t], None, k)
            ours[t, k] = score_task(backend, task, test, pool, num_fewshot=k, fewshot_seed=1234)
    return tasks, theirs, ours


@pytest.mark.slow
def test_prompts_fewshot_and_predictions_agree_with_lm_eval(agreement):
    tasks, theirs, ours = agreement
    assert sorted(theirs) == sorted((t, k) for t in tasks for k in SHOTS)
    for (name, k), samples in theirs.items():
        frame = ours[name, k]
        task = get_task(name)
        assert len(samples) == len(frame) == N, (name, k)
        for sample, row in zip(samples, frame.itertuples(), strict=True):
            where = f"{name} {k}-shot question {sample['doc_id']}"
            contexts = {ctx for ctx, _ in sample["arguments"]}
            assert contexts == {row.prompt}, where  # the prompt, few-shot examples included, byte for byte
            choices = task.choices(sample["doc"])
            assert [cont for _, cont in sample["arguments"]] == [task.target_delimiter + c for c in choices], where
            lls = np.array([resp[0][0] for resp in sample["resps"]])
            np.testing.assert_allclose(row.scores, lls, atol=1e-4, err_msg=where)
            assert float(row.correct) == sample["acc"], where
            # acc_norm: lm-eval's own where its configuration reports it, else its definition on its numbers
            lengths = np.array([len(c) for c in choices], dtype=float)
            gold = sample["target"]
            gold = choices.index(gold) if gold in choices else int(gold)
            assert row.answer == gold, where
            norm = sample.get("acc_norm", float(np.argmax(lls / lengths) == gold))
            assert float(row.correct_norm) == norm, where
            assert row.pred_norm == int(np.argmax(lls / lengths)), where
            np.testing.assert_allclose(row.scores_norm, lls / lengths, atol=1e-4, err_msg=where)
        if k:
            assert all(len(f) == k for f in frame["fewshot"]), name
    # the default sampler moves on from question to question; first_n (MMLU) shows the same examples to all
    assert len({tuple(f) for f in ours["medqa_4options", 5]["fewshot"]}) > 1
    assert len({tuple(f) for f in ours["mmlu_anatomy", 5]["fewshot"]}) == 1
    assert ours["mmlu_anatomy", 5]["prompt"][0].startswith(
        "The following are multiple choice questions (with answers) about anatomy.\n\n")
