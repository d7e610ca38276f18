"""One bad-input corpus that covers every command of the real command tree.

The leaf commands are found by walking ``medtune.cli.app``; each must have a case in ``CASES`` (a damaged version
of an artifact it reads) or be listed in ``NO_INPUT`` with the reason, so a command added later without a case
fails ``test_every_command_has_a_case``. Each case must stop with exit code 2 and one error line (no traceback)
naming the file and the place, and leave the files it names byte-identical — among them an earlier good output
at the target path of a command that writes one (a real artifact where the fixture makes one, else a stand-in
of the right kind), with nothing new written beside it.

Cases that show a defect of the commands are marked ``xfail(strict=True)`` with the defect as the reason; they turn
into failures once the defect is fixed, and the mark must then go.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from tests.test_bad_inputs import SMALL, error_line, run
from tests.test_option_bounds import _leaves
from tests.training.training_helpers import micro_cli_options

from medtune.cli import app, main

LEAVES = {" ".join(path): command for path, command in _leaves(typer.main.get_command(app))}
COMMANDS = set(LEAVES)
OUTPUT_PARAMS = {"output", "out", "json_out"}  # the options that name a file or folder a command writes
WRITERS = {name for name, command in LEAVES.items() if {p.name for p in command.params} & OUTPUT_PARAMS}

NO_INPUT: dict[str, str] = {
    "data sources": "lists the built-in data sources; reads no file",
    "demo": "builds its own synthetic data and runs on it; reads no user file",
}


@dataclass(frozen=True)
class Case:
    """A command given one damaged input.

    ``argv`` maps the fixture paths (plus ``out``, the earlier output, when ``earlier`` is set) to the argv.
    ``pattern`` is a regex the error line must match; ``{name}`` in it stands for the escaped path ``paths[name]``.
    ``earlier`` = (a fixture path to copy, the file name to copy it to): the earlier good output at the target.
    ``keep`` names fixture paths (inputs) that must be byte-identical after the run, too.
    """

    command: str
    label: str
    argv: Callable[[dict[str, Path]], list[Any]]
    pattern: str
    earlier: tuple[str, str] | None = None
    keep: tuple[str, ...] = field(default=())


def tree_hashes(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or ``path`` itself) by relative name → sha256; folders are listed too."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(path.rglob("*"))}


def _copy(src: Path, dest: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy(src, dest)
    return dest


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    """Good artifacts made by the CLI (items, order, a micro LoRA run, its predictions) and damaged versions."""
    d = tmp_path_factory.mktemp("corpus")
    p: dict[str, Path] = {"dir": d}
    p["items"] = d / "items.parquet"
    assert main(["data", "load", "synthetic", *SMALL, "-o", str(p["items"])]) == 0
    p["order"] = d / "order.json"
    assert main(["order", "build", str(p["items"]), "-s", "random", "--seed", "0", "-o", str(p["order"])]) == 0
    p["run"] = d / "run"
    assert main(["train", "--items", str(p["items"]), "--order", str(p["order"]), "-o", str(p["run"]),
                 "--method", "lora", "--max-steps", "1", "--batch-size", "4", "--no-progress",
                 *micro_cli_options()]) == 0
    p["eval"] = d / "eval"
    assert main(["evaluate", "run", str(p["items"]), "--run", str(p["run"]), "--split", "test", "-o",
                 str(p["eval"]), "--n-boot", "20", "--no-progress"]) == 0
    p["predictions"] = p["eval"] / "predictions.parquet"
    p["export"] = d / "export"
    assert main(["export", str(p["run"]), "--adapter", "-o", str(p["export"])]) == 0
    p["metrics"] = d / "metrics.json"
    p["metrics"].write_text(json.dumps({"an": "earlier metrics file"}) + "\n")
    p["csv"] = d / "earlier.csv"
    p["csv"].write_text("an,earlier\n1,2\n")
    p["png"] = d / "earlier.png"
    p["png"].write_bytes(b"\x89PNG\r\n\x1a\n an earlier plot")
    p["folder"] = d / "earlier-folder"
    p["folder"].mkdir()
    (p["folder"] / "keep.txt").write_text("an earlier output folder\n")

    # --- damaged artifacts ---
    p["not_parquet"] = d / "not.parquet"
    p["not_parquet"].write_text("this is not a parquet file\n")
    table = pq.read_table(p["items"])
    p["no_question"] = d / "no-question.parquet"
    pq.write_table(table.drop_columns(["question"]), p["no_question"])
    p["cut_order"] = d / "cut-order.json"
    p["cut_order"].write_text(p["order"].read_text()[:120])
    p["cut_run"] = d / "cut-run"
    shutil.copytree(p["run"], p["cut_run"])
    record = p["cut_run"] / "config.json"
    record.write_text(record.read_text()[: len(record.read_text()) // 2])
    p["cut_record"] = record
    p["cut_jsonl"] = d / "cut-generations.jsonl"
    p["cut_jsonl"].write_text(json.dumps({"prompt": "What treats X?", "reference": "Drug Y", "prediction": "Y"})
                              + "\n" + '{"prompt": "What tre')
    p["bad_letters"] = d / "letters.jsonl"
    p["bad_letters"].write_text(json.dumps({"id": "a", "answer": "A", "pred": "B"}) + "\n"
                                + json.dumps({"id": "b", "answer": "A", "pred": "yes"}) + "\n")
    p["cut_medqa"] = d / "medqa-test.jsonl"
    p["cut_medqa"].write_text('{"question": "cut sho')
    p["cut_anchors"] = d / "cut-anchors.json"
    p["cut_anchors"].write_text('{"format": "medtune.anchors/1", "ids": ["a", ')
    ids = [str(i) for i in table.column("id").to_pylist()]
    p["no_id_table"] = d / "no-id.csv"
    p["no_id_table"].write_text("item,difficulty\n" + "".join(f"{i},0.5\n" for i in ids))
    p["no_id_parquet"] = d / "no-id.parquet"
    pq.write_table(pa.table({"item": ids, "difficulty": [0.5] * len(ids)}), p["no_id_parquet"])
    p["cut_yaml"] = d / "cut-grid.yaml"
    p["cut_yaml"].write_text("name: tiny\nseeds: [0, 1\nmodels: []\n")
    p["grid_bad_results"] = d / "grid"
    (p["grid_bad_results"] / "cells").mkdir(parents=True)
    p["bad_results"] = p["grid_bad_results"] / "results.parquet"
    p["bad_results"].write_text("this is not a parquet file\n")
    p["grid_cut_cell"] = d / "grid-cut-cell"
    (p["grid_cut_cell"] / "cells").mkdir(parents=True)
    p["cut_cell"] = p["grid_cut_cell"] / "cells" / "c1.json"
    p["cut_cell"].write_text('{"cell_id": "c1", "status": "do')
    p["empty_parquet"] = d / "empty.parquet"
    p["empty_parquet"].write_bytes(b"")
    p["pred_no_id"] = d / "predictions-no-id.parquet"
    pq.write_table(pq.read_table(p["predictions"]).drop_columns(["id"]), p["pred_no_id"])
    p["responses_csv"] = d / "responses.csv"
    p["responses_csv"].write_text("id,correct\nq1,1\n")
    p["empty_folder"] = d / "empty-folder"
    p["empty_folder"].mkdir()
    p["bad_weights_run"] = _copy(p["run"], d / "bad-weights-run")
    weights = sorted((p["bad_weights_run"] / "adapter").glob("*.safetensors"))
    assert weights
    for w in weights:
        w.write_bytes(b"not safetensors")
    p["cut_adapter_run"] = _copy(p["run"], d / "cut-adapter-run")
    p["cut_adapter_config"] = p["cut_adapter_run"] / "adapter" / "adapter_config.json"
    p["cut_adapter_config"].write_text(p["cut_adapter_config"].read_text()[:40])
    p["row2_table"] = d / "row2-difficulty.csv"
    p["row2_table"].write_text("id,difficulty\n" + "".join(f"{i},{'hard' if k == 1 else 0.5}\n"
                                                           for k, i in enumerate(ids)))
    return p


def E(*argv: Any) -> Callable[[dict[str, Path]], list[Any]]:
    """An argv builder: each ``"@name"`` in ``argv`` becomes ``paths[name]``."""
    return lambda p: [p[a[1:]] if isinstance(a, str) and a.startswith("@") else a for a in argv]


MICRO_TRAIN = ["--method", "lora", "--max-steps", "1", "--batch-size", "4", "--no-progress"]

CASES: list[Any] = [
    Case("categories", "items not parquet", E("categories", "@not_parquet", "-o", "@out"), "{not_parquet}",
         earlier=("metrics", "categories.parquet")),
    Case("data describe", "items not parquet", E("data", "describe", "@not_parquet"), "{not_parquet}"),
    Case("data describe", "items without question column", E("data", "describe", "@no_question"),
         "{no_question}, field 'question'"),
    Case("data leakage", "train items without question column",
         E("data", "leakage", "@no_question", "@items"), "{no_question}, field 'question'", keep=("items",)),
    Case("data leakage", "test items not parquet, with --json",
         E("data", "leakage", "@items", "@not_parquet", "--json", "@out"), "{not_parquet}",
         earlier=("metrics", "leakage.json"), keep=("items",)),
    Case("data leakage", "test items not parquet", E("data", "leakage", "@items", "@not_parquet"), "{not_parquet}",
         keep=("items",)),
    Case("data load", "medqa file cut short", E("data", "load", "medqa", "@cut_medqa", "-o", "@out"),
         "{cut_medqa}.*line \\d+", earlier=("items", "items.parquet")),
    Case("data prepare", "items without question column", E("data", "prepare", "@no_question", "-o", "@out"),
         "{no_question}, field 'question'", earlier=("items", "prepared.parquet")),
    Case("difficulty compute", "items not parquet",
         E("difficulty", "compute", "@not_parquet", "--source", "human", "-o", "@out"), "{not_parquet}",
         earlier=("csv", "difficulty.parquet")),
    Case("difficulty from-responses", "responses not parquet",
         E("difficulty", "from-responses", "@not_parquet", "-o", "@out"), "{not_parquet}",
         earlier=("csv", "difficulty.parquet")),
    Case("difficulty from-responses", "a CSV, not a JSON responses file",
         E("difficulty", "from-responses", "@responses_csv", "-o", "@out"), "{responses_csv}.*JSON",
         earlier=("csv", "difficulty.parquet")),
    Case("difficulty human", "items not parquet", E("difficulty", "human", "@not_parquet", "-o", "@out"),
         "{not_parquet}", earlier=("csv", "difficulty.parquet")),
    Case("difficulty import", "table without id column",
         E("difficulty", "import", "@no_id_table", "--items", "@items", "-o", "@out"), "{no_id_table}.*'id'",
         earlier=("csv", "difficulty.parquet"), keep=("items",)),
    Case("difficulty import", "second row not a number",
                      E("difficulty", "import", "@row2_table", "--items", "@items", "-o", "@out"),
                      "{row2_table}, row 2, field 'difficulty'", earlier=("csv", "difficulty.parquet"),
                      keep=("items",)),
    Case("difficulty score", "items without question column",
         E("difficulty", "score", "@no_question", "-m", "tiny", "-o", "@out"), "{no_question}, field 'question'",
         earlier=("csv", "difficulty.parquet")),
    Case("evaluate anchors choose", "predictions not parquet",
         E("evaluate", "anchors", "choose", "@not_parquet", "@predictions", "-o", "@out", "--k", "2", "--method",
           "random"), "{not_parquet}", earlier=("metrics", "anchors.json"), keep=("predictions",)),
    Case("evaluate anchors choose", "predictions without id column",
         E("evaluate", "anchors", "choose", "@predictions", "@pred_no_id", "-o", "@out", "--k", "2", "--method",
           "random"), "{pred_no_id}.*missing column.*'id'", earlier=("metrics", "anchors.json"), keep=("predictions",)),
    Case("evaluate anchors estimate", "anchors file cut short",
         E("evaluate", "anchors", "estimate", "@predictions", "--anchors", "@cut_anchors", "-o", "@out"),
         "{cut_anchors}.*line \\d+", earlier=("metrics", "estimate.json"), keep=("predictions",)),
    Case("evaluate compare", "second predictions not parquet",
         E("evaluate", "compare", "@predictions", "@not_parquet", "-o", "@out"), "{not_parquet}",
         earlier=("metrics", "compare.json"), keep=("predictions",)),
    Case("evaluate compare", "first predictions an empty file",
         E("evaluate", "compare", "@empty_parquet", "@predictions", "-o", "@out"), "{empty_parquet}",
         earlier=("metrics", "compare.json"), keep=("predictions",)),
    Case("evaluate metrics", "items without question column",
         E("evaluate", "metrics", "@predictions", "--items", "@no_question", "-o", "@out", "--n-boot", "10"),
         "{no_question}, field 'question'", earlier=("metrics", "metrics.json"), keep=("predictions",)),
    Case("evaluate metrics", "predictions not parquet",
         E("evaluate", "metrics", "@not_parquet", "--items", "@items", "-o", "@out", "--n-boot", "10"),
         "{not_parquet}", earlier=("metrics", "metrics.json"), keep=("items",)),
    Case("evaluate power", "a training run, not a grid run", E("evaluate", "power", "@run", "-o", "@out"),
         "{run}.*cells", earlier=("csv", "power.csv"), keep=("run",)),
    Case("evaluate power", "grid results not parquet",
                      E("evaluate", "power", "@grid_bad_results", "-o", "@out"), "{bad_results}",
                      earlier=("csv", "power.csv")),
    Case("evaluate power", "a cell record cut short", E("evaluate", "power", "@grid_cut_cell", "-o",
                                                                      "@out"), "{cut_cell}",
                      earlier=("csv", "power.csv")),
    Case("evaluate run", "run record cut short",
         E("evaluate", "run", "@items", "--run", "@cut_run", "--split", "test", "-o", "@out", "--no-progress"),
         "{cut_record}.*line \\d+", earlier=("eval", "eval"), keep=("items",)),
    Case("evaluate run", "items without question column",
         E("evaluate", "run", "@no_question", "--run", "@run", "--split", "test", "-o", "@out", "--no-progress"),
         "{no_question}, field 'question'", earlier=("eval", "eval"), keep=("run",)),
    Case("evaluate run", "anchors file cut short",
         E("evaluate", "run", "@items", "--run", "@run", "--split", "test", "--anchors", "@cut_anchors", "-o",
           "@out", "--no-progress"), "{cut_anchors}.*line \\d+", earlier=("eval", "eval"), keep=("items", "run")),
    Case("evaluate run", "adapter weights not safetensors",
                      E("evaluate", "run", "@items", "--run", "@bad_weights_run", "--split", "test", "-o", "@out",
                        "--no-progress"), "{bad_weights_run}", earlier=("eval", "eval"), keep=("items",)),
    Case("evaluate score-file", "generations cut short",
         E("evaluate", "score-file", "@cut_jsonl", "-o", "@out"), "{cut_jsonl}.*line 2",
         earlier=("folder", "scores")),
    Case("evaluate score-file", "MCQ letters file with a pred that is no letter",
         E("evaluate", "score-file", "@bad_letters", "-o", "@out"), "{bad_letters}, line 2, field 'pred'",
         earlier=("folder", "scores")),
    Case("export", "run record cut short", E("export", "@cut_run", "--adapter", "-o", "@out"),
         "{cut_record}.*line \\d+", earlier=("export", "export")),
    Case("export", "a folder that is not a run", E("export", "@empty_folder", "--adapter", "-o", "@out"),
         "{empty_folder}", earlier=("export", "export")),
    Case("export", "adapter weights not safetensors",
                      E("export", "@bad_weights_run", "--merge", "-o", "@out"), "{bad_weights_run}",
                      earlier=("export", "export")),
    Case("export", "adapter config cut short",
                      E("export", "@cut_adapter_run", "--merge", "-o", "@out"), "{cut_adapter_config}",
                      earlier=("export", "export")),
    Case("generate", "run record cut short", E("generate", "@cut_run", "What treats X?"), "{cut_record}.*line \\d+"),
    Case("generate", "an empty folder as the model", E("generate", "@empty_folder", "What treats X?"),
                      "{empty_folder}"),
    Case("generate", "adapter config cut short",
                      E("generate", "@cut_adapter_run", "What treats X?", "--max-new-tokens", "2"),
                      "{cut_adapter_config}"),
    Case("merge", "run record cut short", E("merge", "@cut_run", "-o", "@out"), "{cut_record}.*line \\d+",
         earlier=("export", "merged")),
    Case("order build", "items not parquet",
         E("order", "build", "@not_parquet", "-s", "random", "--seed", "0", "-o", "@out"), "{not_parquet}",
         earlier=("order", "order.json")),
    Case("order build", "difficulty table without id column",
         E("order", "build", "@items", "-s", "curriculum-strict", "--seed", "0", "--difficulty", "@no_id_parquet",
           "-o", "@out"), "{no_id_parquet}, field 'id'", earlier=("order", "order.json"), keep=("items",)),
    Case("order plot", "order cut short", E("order", "plot", "@cut_order", "--items", "@items", "-o", "@out"),
         "{cut_order}.*line \\d+", earlier=("png", "order.png"), keep=("items",)),
    Case("order plot", "items not parquet", E("order", "plot", "@order", "--items", "@not_parquet", "-o", "@out"),
         "{not_parquet}", earlier=("png", "order.png"), keep=("order",)),
    Case("order plot", "difficulty table not parquet",
         E("order", "plot", "@order", "--items", "@items", "--difficulty", "@not_parquet", "-o", "@out"),
         "{not_parquet}", earlier=("png", "order.png"), keep=("order", "items")),
    Case("report", "a training run, not a grid run", E("report", "@run", "-o", "@out"), "{run}.*cells",
         earlier=("folder", "report"), keep=("run",)),
    Case("report", "grid results not parquet", E("report", "@grid_bad_results", "-o", "@out"),
                      "{bad_results}", earlier=("folder", "report")),
    Case("report", "a cell record cut short", E("report", "@grid_cut_cell", "-o", "@out"),
                      "{cut_cell}", earlier=("folder", "report")),
    Case("run", "grid config cut short", E("run", "@cut_yaml", "-o", "@out"), "{cut_yaml}.*line \\d+",
         earlier=("folder", "runs")),
    Case("train", "order cut short",
         E("train", "--items", "@items", "--order", "@cut_order", "-o", "@out", *MICRO_TRAIN),
         "{cut_order}.*line \\d+", earlier=("run", "run"), keep=("items",)),
    Case("train", "items not parquet",
         E("train", "--items", "@not_parquet", "--order", "@order", "-o", "@out", *MICRO_TRAIN),
         "{not_parquet}", earlier=("run", "run"), keep=("order",)),
    Case("train", "an adaptive input without --adaptive",
         E("train", "--items", "@items", "--order", "@order", "-o", "@out", "--difficulty", "@not_parquet",
           *MICRO_TRAIN), "--difficulty only apply with --adaptive", earlier=("run", "run"),
         keep=("items", "order")),
    Case("verify-order", "run record cut short", E("verify-order", "@cut_run"), "{cut_record}.*line \\d+"),
    Case("verify-order", "a folder that is not a run", E("verify-order", "@export"), "{export}.*config.json",
         keep=("export",)),
    Case("verify-order", "order cut short", E("verify-order", "@run", "--order", "@cut_order"),
         "{cut_order}.*line \\d+", keep=("run",)),
]


def _case_of(entry: Any) -> Case:
    return entry.values[0] if hasattr(entry, "values") else entry


def _id(entry: Any) -> str:
    case = _case_of(entry)
    return f"{case.command}: {case.label}"


def test_every_command_has_a_case():
    covered = {_case_of(c).command for c in CASES}
    assert {"data load", "train", "export", "evaluate run", "verify-order", "demo"} <= COMMANDS  # the walk works
    assert not covered & set(NO_INPUT), covered & set(NO_INPUT)
    assert covered | set(NO_INPUT) == COMMANDS, {"without a case": sorted(COMMANDS - covered - set(NO_INPUT)),
                                                 "not a command": sorted((covered | set(NO_INPUT)) - COMMANDS)}
    passing = {c.command for c in CASES if isinstance(c, Case)}  # not only a case marked as a known defect
    assert passing == covered, sorted(covered - passing)
    with_earlier = {_case_of(c).command for c in CASES if _case_of(c).earlier}
    assert {"train", "export", "data load"} <= WRITERS  # the output options are found
    assert WRITERS - set(NO_INPUT) <= with_earlier, sorted(WRITERS - set(NO_INPUT) - with_earlier)


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_case(paths, tmp_path, capsys, case: Case):
    p = dict(paths)
    watched = [p[k] for k in case.keep]
    if case.earlier is not None:
        source, name = case.earlier
        p["out"] = _copy(paths[source], tmp_path / name)
        watched.append(p["out"])
    before = {str(w): tree_hashes(w) for w in watched}
    listed = sorted(tmp_path.iterdir())
    code, _, err = run(capsys, *case.argv(p))
    assert code == 2, err
    line = error_line(err)
    pattern = re.sub(r"\{(\w+)\}", lambda m: re.escape(str(p[m.group(1)])), case.pattern)
    assert re.search(pattern, line), (pattern, line)
    assert {str(w): tree_hashes(w) for w in watched} == before
    assert sorted(tmp_path.iterdir()) == listed  # no new file or temporary folder beside the earlier output
