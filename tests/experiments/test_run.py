"""A real grid on the synthetic data: kill and resume, a failing cell, Ray vs local, dry run, the report.

One module-scoped run serves most tests (CPU budget): ``medtune run`` is started as a subprocess, killed
with SIGKILL once a cell is done, and re-run through the CLI until the grid completes. The grid has a
tiny model (base + 2 strategies x 2 seeds) and a model whose path does not exist (its cells must fail
while the others finish).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medtune.cli import main
from medtune.experiments import RunSummary, load_config, run_experiment
from medtune.report import write_report

REPO = Path(__file__).resolve().parents[2]
# A model folder that exists (so the grid's pre-run checks let it through) but holds no model: its cells fail
# when they load it, and must be recorded as failed with the error.
BROKEN = "/tmp/medtune-test-broken-model"
N_TINY, N_BROKEN = 5, 5


def _config(tmp: Path, out: Path) -> Path:
    data = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    data["output_dir"] = str(out)
    Path(BROKEN).mkdir(exist_ok=True)
    data["models"].append({"name": "broken", "spec": BROKEN})
    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _done_files(run: Path) -> dict[str, str]:
    out = {}
    for p in sorted((run / "cells").glob("*.json")):
        text = p.read_text()
        if json.loads(text)["status"] == "done":
            out[p.stem] = text
    return out


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("grid")
    run = tmp / "run"
    cfg = _config(tmp, run)
    exe = Path(sys.executable).with_name("medtune")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([str(exe), "run", str(cfg), "--no-report"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if _done_files(run):
                break
            time.sleep(0.05)
        killed_running = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: no worker left behind
    finally:
        proc.wait(timeout=30)
    before = _done_files(run)
    cells_before = sorted(p.stem for p in (run / "cells").glob("*.json"))
    t0 = time.time()
    code = main(["run", str(cfg), "--no-report"])
    return {"cfg": cfg, "run": run, "before": before, "cells_before": cells_before, "code": code,
            "killed_running": killed_running, "stderr": proc.stderr.read().decode() if proc.stderr else "",
            "resume_seconds": time.time() - t0}


def test_kill_then_rerun_completes_without_recomputing_or_duplicating(resumed: dict) -> None:
    run: Path = resumed["run"]
    assert resumed["killed_running"], f"the run finished before it could be killed: {resumed['stderr'][-2000:]}"
    before = resumed["before"]
    assert before, "no cell was done when the process was killed"
    assert len(resumed["cells_before"]) < N_TINY + N_BROKEN, "the kill came after the last cell"
    # Finished cells were skipped: their result files are byte-identical after the re-run.
    after = _done_files(run)
    for cell_id, text in before.items():
        assert after[cell_id] == text
    # The grid is complete: one row per cell and test set, none duplicated or lost.
    df = pd.read_parquet(run / "results.parquet")
    assert len(df) == N_TINY + N_BROKEN
    assert not df.duplicated(["cell_id", "test_set"]).any()
    assert set(df["test_set"]) == {"synthetic-test"}
    tiny = df[df["model"] == "tiny"]
    assert (tiny["status"] == "done").all() and tiny["accuracy"].between(0, 1).all()
    assert set(tiny["strategy"]) == {"base", "random", "curriculum"}
    # No half-written stage survived the kill.
    assert not list((run / "store").glob("*/.tmp-*"))
    # The exit code says some cell failed (the broken model), after finishing the others.
    assert resumed["code"] == 1


def test_failing_cells_are_recorded_with_their_error(resumed: dict) -> None:
    df = pd.read_parquet(resumed["run"] / "results.parquet")
    broken = df[df["model"] == "broken"]
    assert len(broken) == N_BROKEN and (broken["status"] == "failed").all()
    assert broken["error"].str.contains(BROKEN, regex=False).all()
    assert broken["accuracy"].isna().all()
    rec = json.loads((resumed["run"] / "cells" / f"{broken['cell_id'].iloc[0]}.json").read_text())
    assert "Traceback" in rec["traceback"] and rec["status"] == "failed"


def test_second_rerun_skips_finished_cells(resumed: dict) -> None:
    run = resumed["run"]
    done = _done_files(run)
    summary = run_experiment(load_config(resumed["cfg"]), retry_failed=False)
    assert summary.ran == [] and len(summary.skipped) == N_TINY + N_BROKEN
    assert _done_files(run) == done
    summary = run_experiment(load_config(resumed["cfg"]))  # failed cells are retried by default, and fail again
    assert sorted(summary.ran) == sorted(s.cell.id for s in summary.statuses if s.cell.model == "broken")
    assert _done_files(run) == done
    assert len(pd.read_parquet(run / "results.parquet")) == N_TINY + N_BROKEN


def test_dry_run_shows_what_is_done(resumed: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(resumed["cfg"]), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"{N_TINY + N_BROKEN} cells" in out
    assert "done 5" in out and "failed 5" in out
    assert re.search(r"tiny__synthetic__lora__curriculum__human__s1 fp32 fp32 lr 0.001, batch 4×1, constant "
                     r"synthetic-test done", out)


def test_report_from_a_real_run(resumed: dict) -> None:
    run = resumed["run"]
    rep = write_report(run)
    page = rep.html.read_text()
    for sid in ("overview", "failed", "summary", "gains", "heatmap", "best", "levels", "loss", "orders"):
        assert f"<section id='{sid}'>" in page, sid
    # Self-contained: every figure is embedded, nothing is fetched.
    assert not re.search(r"""(src|href)\s*=\s*['"](?!data:|#)""", page)
    assert "<link" not in page and "<script" not in page
    assert page.count("data:image/png;base64,") >= 4
    # The failing cells and their error are in the report.
    assert BROKEN in page and "broken__synthetic__lora__random__none__s0" in page
    # Numbers come from the run: the summary's mean accuracy is the mean of the cells' accuracies.
    res = pd.read_parquet(run / "results.parquet")
    summary = pd.read_csv(rep.tables["summary"])
    for strategy in ("random", "curriculum", "base"):
        expect = res[(res["model"] == "tiny") & (res["strategy"] == strategy)]["accuracy"].mean()
        got = summary[(summary["model"] == "tiny") & (summary["strategy"] == strategy)]["accuracy"].iloc[0]
        assert got == pytest.approx(expect)
    gains = pd.read_csv(rep.tables["gains"])
    cur = gains[gains["strategy"] == "curriculum"].iloc[0]
    acc = {s: res[(res["model"] == "tiny") & (res["strategy"] == s)].set_index("seed")["accuracy"]
           for s in ("random", "curriculum")}
    assert cur["gain"] == pytest.approx((acc["curriculum"] - acc["random"]).mean())
    assert cur["seeds"] == 2 and 0 <= cur["p_bootstrap"] <= 1 and 0 <= cur["p_mcnemar"] <= 1
    levels = pd.read_csv(rep.tables["levels"])
    assert {"easy", "medium", "hard", "heldout", "seen"} <= set(levels.columns)
    level_gains = pd.read_csv(rep.tables["level_gains"]).set_index("label")
    lv = levels[levels["model"] == "tiny"].set_index("label")
    for col in ("easy", "hard", "heldout"):
        assert level_gains.loc["curriculum [human]", col] == pytest.approx(
            lv.loc["curriculum [human]", col] - lv.loc["random", col])
    head = rep.headline.set_index("strategy")
    assert head.loc["curriculum [human]", "gain"] == pytest.approx(cur["gain"])
    assert "curriculum [human]" in rep.headline_text()
    md = rep.markdown.read_text()
    assert "## Gain over random shuffle" in md and "| curriculum [human]" in md
    for name in ("gains_heatmap", "gains_forest", "levels", "loss_curves"):
        assert rep.figures[name].stat().st_size > 2000


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)")
def test_report_in_a_headless_browser(resumed: dict, tmp_path: Path) -> None:
    rep = write_report(resumed["run"], tmp_path / "report")
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]
    profile = tempfile.mkdtemp()
    try:
        subprocess.run([str(CHROMIUM), *flags, f"--user-data-dir={profile}", f"--screenshot={shot}",
                        "--window-size=1280,4000", f"file://{rep.html}"], check=True, timeout=120,
                       capture_output=True)
        dom = subprocess.run([str(CHROMIUM), *flags, f"--user-data-dir={profile}", "--dump-dom",
                              f"file://{rep.html}"], check=True, timeout=120, capture_output=True, text=True).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    assert "Gain over random shuffle" in dom and "<section id=\"heatmap\">" in dom
    # The forest plot (each strategy's seed-aware interval and per-seed gains) is rendered, embedded.
    forest = dom.split("<section id=\"forest\">", 1)[1].split("</section>", 1)[0]
    assert "data:image/png;base64," in forest and "forest plot of gains" in forest


def _small_grid(resumed: dict, out: Path) -> Path:
    """The tiny model's base, random and curriculum cells of seed 0: a subset of the resumed grid."""
    data = yaml.safe_load(resumed["cfg"].read_text())
    data.update(output_dir=str(out / "run"), seeds=[0], strategies=["random", "curriculum"])
    data["models"] = data["models"][:1]
    path = out / "small.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _same_as_local(resumed: dict, summary: RunSummary) -> None:
    assert summary.counts == {"done": 3}
    cols = ["cell_id", "test_set", "status", "accuracy", "n_correct", "final_loss", "train_steps"]
    other = pd.read_parquet(summary.results)[cols].sort_values("cell_id").reset_index(drop=True)
    local = pd.read_parquet(resumed["run"] / "results.parquet")[cols]
    local = local[local["cell_id"].isin(other["cell_id"])].sort_values("cell_id").reset_index(drop=True)
    assert len(local) == 3
    pd.testing.assert_frame_equal(other, local)
    # Every stage was recomputed in the other executor's workers (its own store), not in this process.
    assert (summary.run_dir / "store" / "train").is_dir()
    pids = {json.loads(p.read_text())["pid"] for p in (summary.run_dir / "cells").glob("*.json")}
    assert os.getpid() not in pids


def test_ray_executor_gives_the_local_results(resumed: dict, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    cfg = load_config(_small_grid(resumed, tmp_path))
    # A local instance as ray.init(num_cpus=2); each task asks for both CPUs, so one worker process serves
    # all tasks (a cold worker pays ~30 s of imports on this loaded 2-core machine).
    cfg = cfg.model_copy(update={"executor": cfg.executor.model_copy(update={"num_cpus": 2, "workers": 2})})
    summary = run_experiment(cfg, executor="ray", progress=False)
    _same_as_local(resumed, summary)


def test_process_pool_gives_the_local_results(resumed: dict, tmp_path: Path) -> None:
    summary = run_experiment(load_config(_small_grid(resumed, tmp_path)), executor="pool", progress=False)
    _same_as_local(resumed, summary)
