"""The KnowTuning run: facts → KA pairs → the KA run (standard loop) → merge → KC triples → DPO → ``model/``.

Folder layout (docs/EXTENDING.md, "KnowTuning"), everything inspectable:

``RUN_DIR/ka/``
    ``facts.jsonl`` (each item's facts, their perplexity under the base model, kept or not), ``ka_pairs.jsonl``
    (the new pairs), ``items.parquet`` (originals + pairs), ``order.json`` (the run's order with each item's
    pairs after it), and the KA run itself — ``config.json``, ``train_log.jsonl``, ``adapter/`` + ``base/``
    (LoRA) or ``model/`` (full) — written by the standard loop, so ``medtune verify-order RUN_DIR/ka`` checks
    it; ``merged/``: the KA model with its adapter folded in (LoRA; with full training ``model/`` is that
    model already). ``stage.json`` marks the stage done.
``RUN_DIR/kc/``
    ``triples.jsonl`` and ``skipped.jsonl`` (:mod:`.corruption`), ``train_log.jsonl`` and ``metrics.json``
    (the DPO run), ``reference_logprobs.jsonl`` (:mod:`.preference`).
``ka/generator.jsonl``, ``kc/generator.jsonl``
    with ``knowtuning.generator`` set, every prompt sent to the generator and its reply (:mod:`.generator`);
    each fact, pair and triple says in ``how`` whether a rule or the generator made it.
``RUN_DIR/model/`` and ``RUN_DIR/config.json``
    the KC model, merged, in safetensors, and the run record (``train``: the settings, method ``knowtuning``;
    ``knowtuning``: what each stage did), so evaluation reads the run as any full-model run.

With ``resume``, a finished KA stage (``ka/stage.json``) is kept and KC runs again; an unfinished KA run
continues from its latest checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medtune.errors import ConfigError, InputError
from medtune.io import write_json_atomic, write_text_atomic
from medtune.schema import QAItem, write_items
from medtune.training.methods.base import save_pretrained_atomic
from medtune.training.methods.knowtuning import augmentation as ka
from medtune.training.methods.knowtuning.corruption import KINDS, build_triples
from medtune.training.methods.knowtuning.facts import Fact, item_facts
from medtune.training.methods.knowtuning.inner import INNER_LORA

if TYPE_CHECKING:
    from medtune.training.config import TrainSettings
    from medtune.training.methods.base import StandardLoop
    from medtune.training.methods.knowtuning.generator import Generator


def _jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def stage_config(config: TrainSettings) -> TrainSettings:
    """The KA stage's settings: the run's, with the inner method and the KA learning rate and epochs."""
    data = {**config.model_dump(), "preset": None,
            "method": INNER_LORA if config.knowtuning.inner_method == "lora" else "full",
            "lr": config.knowtuning.ka_lr or config.lr,
            "epochs": config.knowtuning.ka_epochs or config.epochs}
    return type(config).from_dict(data, where="knowtuning KA stage")


def _check_inputs(items: Sequence[Any], run_dir: Path, resume: bool, items_path: Any) -> list[QAItem]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("knowtuning runs in one process (its KC stage is TRL's DPOTrainer); run it without torchrun")
    for k, it in enumerate(items):
        if not isinstance(it, QAItem):
            raise InputError("knowtuning trains on free-text items (an answer made of facts); this is a "
                             f"{it.kind} item", file=items_path, record=it.id if it.id else k, field="kind")
    done = [p for p in (run_dir / "ka" / "train_log.jsonl", run_dir / "model") if p.exists()]
    if done and not resume:
        raise InputError("the run folder already holds a KnowTuning run; use --resume to continue it, or another "
                         "output folder", file=run_dir)
    return list(items)


def _facts(items: Sequence[QAItem], items_path: Any, generator: Generator | None = None) -> dict[str, list[Fact]]:
    if generator is not None and generator.does("facts"):
        return generator.facts(items, file=items_path)
    return {it.id: item_facts(it, file=items_path) for it in items}


def run_ka(config: TrainSettings, items: list[QAItem], facts: dict[str, list[Fact]], order: dict[str, Any],
           run_dir: Path, *, loop: StandardLoop, model: Any, tokenizer: Any, textbook: Any, resume: bool,
           progress: bool, generator: Generator | None = None) -> dict[str, Any]:
    """The KA stage (module docstring); returns its summary (also ``ka/stage.json``)."""
    from medtune.models import LoadedModel
    from medtune.scoring.backends import as_backend

    ka_dir = run_dir / "ka"
    ka_cfg = stage_config(config)
    base, tok, base_source = loop.load_base_model(ka_cfg, items, ka_dir, model=model, tokenizer=tokenizer,
                                                  textbook=textbook)
    backend = as_backend(LoadedModel(base, tok, str(base_source), torch.float32, str(base.device)))
    scored = ka.select_hardest(ka.score_facts(backend, items, facts), config.knowtuning.ka_share)
    rewrites = generator.rewrites(items, scored) if generator is not None and generator.does("rewrite") else None
    pairs, records = ka.ka_pairs(items, scored, rewrites)
    _jsonl(ka_dir / "facts.jsonl", ka.facts_records(items, scored))
    _jsonl(ka_dir / "ka_pairs.jsonl", records)
    if generator is not None:
        _jsonl(ka_dir / "generator.jsonl", generator.exchanges(("facts", "rewrite")))
    items_path = write_items([*items, *pairs], ka_dir / "items.parquet")
    pairs_of: dict[str, list[str]] = {}
    for r in records:
        pairs_of.setdefault(r["source_id"], []).append(r["id"])
    order_file = ka.ka_order(order, ka_cfg.epochs, pairs_of)
    order_path = order_file.write(ka_dir / "order.json")
    ka_cfg = type(ka_cfg).from_dict({**ka_cfg.model_dump(), "epochs": len(order_file.epochs)}, "knowtuning KA stage")
    base.train()
    result = loop.train(ka_cfg, [*items, *pairs], order_file.to_dict(), ka_dir, model=base, tokenizer=tok,
                        textbook=textbook, resume=resume, progress=progress, items_path=items_path,
                        order_path=order_path)
    if config.knowtuning.inner_method == "lora":
        merged = result.model.merge_and_unload()
        save_pretrained_atomic(merged, result.tokenizer, ka_dir / "merged")
        model_dir = "ka/merged"
    else:
        model_dir = "ka/model"
    summary = {"dir": "ka", "method": ka_cfg.method, "model": model_dir, "base_model": str(base_source),
               "lr": ka_cfg.lr, "epochs": ka_cfg.epochs, "share": config.knowtuning.ka_share,
               "facts": len(scored), "kept": sum(s.kept for s in scored), "pairs": len(pairs),
               "pairs_from_fact_questions": sum(r["made_by"] == "fact question" for r in records),
               "pairs_from_generator": sum(r["made_by"] == "generator" for r in records),
               "facts_from_generator": sum(s.fact.how.startswith("generator:") for s in scored),
               "generator": generator.counts(("facts", "rewrite")) if generator is not None else None,
               "steps": result.steps, "final_loss": result.losses[-1] if result.losses else None,
               "tokens": result.tokens, "seconds": round(result.seconds, 3)}
    write_json_atomic(ka_dir / "stage.json", summary)
    return summary


def run_knowtuning(config: TrainSettings, items: Sequence[Any], order: dict[str, Any], run_dir: Path, *,
                   loop: StandardLoop, model: Any = None, tokenizer: Any = None, textbook: Any = None,
                   resume: bool = False, progress: bool = False, items_path: Any = None,
                   order_path: Any = None) -> Any:
    """Both stages and the final ``model/``; returns the trainer's ``TrainResult`` for the KC model."""
    from medtune.training.methods.knowtuning.generator import load_generator, read_facts
    from medtune.training.methods.knowtuning.preference import run_kc

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    qa_items = _check_inputs(items, run_dir, resume, items_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    generator = load_generator(config)  # None: the offline rules, and no backend is contacted
    stage_file = run_dir / "ka" / "stage.json"
    if resume and stage_file.exists():
        ka_summary = json.loads(stage_file.read_text(encoding="utf-8"))
        facts = (read_facts(run_dir / "ka" / "facts.jsonl", qa_items, file=items_path)
                 if generator is not None and generator.does("facts") else _facts(qa_items, items_path))
    else:
        facts = _facts(qa_items, items_path, generator)
        ka_summary = run_ka(config, qa_items, facts, order, run_dir, loop=loop, model=model, tokenizer=tokenizer,
                            textbook=textbook, resume=resume, progress=progress, generator=generator)

    revisions = (generator.revisions(qa_items, facts, config.seed)
                 if generator is not None and generator.does("revise") else None)
    triples, skipped = build_triples(qa_items, facts, config.seed, revisions)
    kc_dir = run_dir / "kc"
    _jsonl(kc_dir / "triples.jsonl", [t.to_dict() for t in triples])
    _jsonl(kc_dir / "skipped.jsonl", skipped)
    if generator is not None:
        _jsonl(kc_dir / "generator.jsonl", generator.exchanges(("revise",)))
    if not triples:
        raise InputError("no comparison triple could be built (every item has one fact and no revisable value); "
                         "see kc/skipped.jsonl", file=items_path)
    kc_model, kc_tok, kc_summary = run_kc(config, triples, run_dir / ka_summary["model"], kc_dir,
                                          progress=progress)
    spec_out = save_pretrained_atomic(kc_model, kc_tok, run_dir / "model")

    kc_record = {k: v for k, v in kc_summary.items() if k != "log_history"}
    kc_record.update({"dir": "kc", "lr": config.knowtuning.kc_lr or config.lr,
                      "epochs": config.knowtuning.kc_epochs or config.epochs or 1,
                      "by_kind": {k: v for k, v in Counter(t.kind for t in triples).items()},
                      "skipped": {k: sum(s["kind"] == k for s in skipped) for k in KINDS},
                      "revisions_from_generator": sum(t.how.startswith("generator:") for t in triples),
                      "generator": generator.counts(("revise",)) if generator is not None else None})
    meta = {
        "train": config.to_dict(),
        # KC trains in fp32 whatever the KA stage used (ka/config.json records its own precision).
        "precision": {"dtype": "fp32", "base_quantization": None},
        "items": str(items_path) if items_path else None,
        "order": str(order_path) if order_path else None,
        "order_strategy": order.get("strategy"),
        "base_model": ka_summary["base_model"],
        "world_size": 1,
        "planned_steps": int(ka_summary["steps"]) + int(kc_record["steps"]),
        "knowtuning": {
            "inner_method": config.knowtuning.inner_method,
            "lora_targets": config.knowtuning.lora_targets,
            "items": len(qa_items),
            "structured_items": sum(all(f.structured for f in facts[it.id]) for it in qa_items),
            "generator": generator.describe() if generator is not None else None,
            "ka": ka_summary,
            "kc": kc_record,
        },
    }
    write_json_atomic(run_dir / "config.json", meta)
    losses = [float(h["loss"]) for h in kc_summary["log_history"] if "loss" in h]
    return loop_result(loop, run_dir, kc_model, kc_tok, ka_summary, kc_record, losses,
                       time.perf_counter() - t0, spec_out)


def loop_result(loop: StandardLoop, run_dir: Path, model: Any, tokenizer: Any, ka_summary: dict[str, Any],
                kc_record: dict[str, Any], losses: list[float], seconds: float, output_dir: Path) -> Any:
    """The run's ``TrainResult`` (the trainer's own class, reached through ``loop`` so no import is needed)."""
    result_type = loop.result_type
    return result_type(run_dir, model, tokenizer, int(ka_summary["steps"]) + int(kc_record["steps"]), losses,
                       int(ka_summary.get("tokens") or 0), seconds, output_dir)
