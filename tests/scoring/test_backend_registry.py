"""Scoring backends: the registry and spec prefixes, one meaning of letter mode, and a plugin's backend end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from medtune.errors import ConfigError, InputError, UnsupportedOnThisMachine
from medtune.plugins import load_plugins
from medtune.prompts import mcq_prompt
from medtune.schema import MCQItem, write_items
from medtune.scoring import backend_names, get_backend, load_backend, reduce_scores, register_backend, score_items
from medtune.scoring import backends as backends_module
from medtune.scoring.backends import ScoringBackend, continuations, split_spec
from medtune.scoring.endpoint import Endpoint
from medtune.scoring.hf import HFBackend
from medtune.scoring.vllm_backend import vllm_available

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugin_backend(monkeypatch):
    """The test plugin loaded the way the CLI loads plugins (``MEDTUNE_PLUGINS``)."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("MEDTUNE_PLUGINS", "medtune_test_backend")
    load_plugins()
    assert "longest" in backend_names()


def _items() -> list[MCQItem]:
    opts = [["a", "bbbb", "cc", "d"], ["long option here", "x", "yy", "zzz"], ["p", "q", "rr", "s"],
            ["same", "sam", "one", "two"], ["e", "f", "g", "the longest one"]]
    return [MCQItem(id=f"r{i}", question=f"Which one, case {i}?", options=o, answer=i % 4, source="t", split="test")
            for i, o in enumerate(opts)]


def _longest(item: MCQItem) -> int:
    return max(range(len(item.options)), key=lambda k: (len(item.options[k]), -k))


# ----------------------------------------------------------------------------------------------------------
# Letter mode means the same everywhere; the transformers fast path computes exactly that


def test_hf_letter_fast_path_equals_the_continuation_loglikelihood(tiny, five_option_items):
    backend = HFBackend(tiny)
    pairs = [(mcq_prompt(it), c) for it in five_option_items[:6] for c in continuations("letter", it.options)]
    fast = backend.loglikelihood(pairs)
    slow = backend.loglikelihood(pairs, single_token_fast_path=False)
    assert [n for _, n in fast] == [1] * len(pairs) == [n for _, n in slow]
    for (a, _), (b, _) in zip(fast, slow, strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    # and score_items' letter scores are those numbers
    frame = score_items(tiny, five_option_items[:6], mode="letter", progress=False)
    flat = [s for row in frame["scores"] for s in row]
    assert flat == pytest.approx([s for s, _ in slow], abs=1e-5)


def test_one_reduction_for_every_backend():
    res = [(-2.0, 1), (-1.0, 4), (-3.0, 1)]
    letter = reduce_scores("letter", res)
    assert letter.pred == 1 and letter.norms is None and sum(letter.probs) == pytest.approx(1)
    norm = reduce_scores("option", res, "norm")
    assert norm.norms == [-2.0, -0.25, -3.0] and norm.pred == 1
    summed = reduce_scores("option", [(-2.0, 1), (-1.5, 4)], "sum")
    assert summed.pred == 1 and summed.scores == [-2.0, -1.5]
    assert reduce_scores("option", [(-2.0, 1), (-1.5, 4)], "norm").pred == 1
    assert reduce_scores("letter", [(-1.0, 1), (-1.0, 1)]).pred == 0  # ties: the first


# ----------------------------------------------------------------------------------------------------------
# Registry and specs


def test_builtin_backends_and_spec_prefixes(tmp_path):
    assert {"hf", "openai", "vllm"} <= set(backend_names())
    assert split_spec("openai:http://127.0.0.1:8000/v1#m") == ("openai", "http://127.0.0.1:8000/v1#m")
    assert split_spec("hf:smollm2") == ("hf", "smollm2")
    assert split_spec("meta-llama/Llama-2-7b-hf") == (None, "meta-llama/Llama-2-7b-hf")
    odd = tmp_path / "hf:model"  # an existing path is a path, even with a prefix-like start
    odd.mkdir()
    assert split_spec(str(odd)) == (None, str(odd))
    with pytest.raises(ConfigError, match=r"unknown scoring backend 'nosuch'.*registered: .*hf"):
        load_backend("nosuch:x")
    with pytest.raises(ConfigError, match="write 'openai:http://h:1/v1'"):
        load_backend("http://h:1/v1")
    with pytest.raises(ConfigError, match="unknown scoring backend 'nosuch'"):
        get_backend("nosuch")
    with pytest.raises(InputError, match="http"):
        load_backend("openai:ftp://h/v1#m")
    with pytest.raises(ConfigError, match="serves its own weights"):
        load_backend("openai:http://127.0.0.1:9/v1#m", adapter=tmp_path)
    endpoint = load_backend("openai:http://127.0.0.1:9/v1#my-model")  # named model: no request made
    assert isinstance(endpoint, Endpoint) and endpoint.model == "my-model" and endpoint.tokenizer is None
    with pytest.raises(InputError, match="cannot reach endpoint"):
        load_backend("openai:http://127.0.0.1:9/v1")  # no name: asks the server, which is not there


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed: the unavailable path cannot be exercised")
def test_vllm_prefix_reaches_the_vllm_backend():
    with pytest.raises(UnsupportedOnThisMachine, match="vllm"):
        load_backend("vllm:some/model")


def test_backend_override_and_factory_arguments(monkeypatch, tmp_path):
    seen: list[tuple[str, dict]] = []

    def factory(target, **kw):
        seen.append((target, kw))
        return Endpoint("http://127.0.0.1:9/v1", target)

    with backends_module.BACKENDS.scoped():
        register_backend("recorder", factory)
        load_backend("hf:some-model", backend="recorder", dtype="bf16", device="cpu")
        load_backend("recorder:other", quantization=None)
        assert seen[0] == ("some-model", {"dtype": "bf16", "device": "cpu", "quantization": None, "adapter": None,
                                          "trust_remote_code": False})
        assert seen[1][0] == "other"
        register_backend("broken", lambda target, **kw: object())
        with pytest.raises(ConfigError, match="lacks the ScoringBackend members"):
            load_backend("broken:x")
        with pytest.raises(ConfigError, match="must be lower-case"):
            register_backend("Bad Name", factory)
    assert "recorder" not in backend_names()


def test_a_built_in_backend_is_overridden_only_on_purpose():
    """One collision rule: a plugin's ``hf`` is refused, naming both, unless it passes ``replace=True``."""

    def mine(target, **kw):
        return Endpoint("http://127.0.0.1:9/v1", target)

    with backends_module.BACKENDS.scoped():
        # The same message whether or not an earlier test has imported the built-in already.
        with pytest.raises(ConfigError, match=r"scoring backend 'hf' is already registered by "
                                              r"medtune\.scoring\.backends\._hf_factory; .*mine registers it again "
                                              r"\(pass replace=True"):
            register_backend("hf", mine)
        register_backend("hf", mine, replace=True)
        assert isinstance(load_backend("hf:some-model"), Endpoint)
    assert get_backend("hf") is not mine
    with pytest.raises(ConfigError, match=r"unknown scoring backend 'opnai' in model spec 'opnai:http://h:1/v1'; "
                                          r"did you mean 'openai'\?"):
        load_backend("opnai:http://h:1/v1")


def test_score_items_accepts_only_backends(tiny, five_option_items):
    assert isinstance(HFBackend(tiny), ScoringBackend)
    with pytest.raises(InputError, match="cannot score with a dict"):
        score_items({"model": 1}, five_option_items[:2], progress=False)


# ----------------------------------------------------------------------------------------------------------
# A plugin's backend through load_backend, score_items and the CLI


def test_plugin_backend_scores_through_load_backend_and_score_items(plugin_backend):
    items = _items()
    backend = load_backend("longest:anything")
    assert type(backend).__name__ == "LongestOption" and backend.spec == "longest:anything"
    letter = score_items(backend, items, mode="letter", permute_seed=5, progress=False)
    assert list(letter["pred"]) == [_longest(it) for it in items]  # original indices, despite the permutation
    assert letter["permutation"].notna().all()
    option = score_items("longest:x", items, mode="option", option_score="sum", progress=False)
    assert list(option["pred"]) == [_longest(it) for it in items]
    assert option["scores"][1] == [16.0, 1.0, 2.0, 3.0]
    gen = score_items(backend, items, mode="generate", progress=False)
    assert list(gen["pred"]) == [_longest(it) for it in items]


def test_plugin_backend_from_the_command_line(tmp_path):
    items = _items()
    items_path = write_items(items, tmp_path / "items.parquet")
    out = tmp_path / "eval"
    env = {**os.environ, "MEDTUNE_PLUGINS": "medtune_test_backend", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    code = ("import sys; from medtune.cli import main; "
            f"sys.exit(main(['evaluate', 'run', {str(items_path)!r}, '--model', 'longest:cli', '-o', {str(out)!r}, "
            "'--no-progress', '--n-boot', '200']))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pred = pd.read_parquet(out / "predictions.parquet")
    assert list(pred["pred"]) == [_longest(it) for it in items]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["backend"] == "longest" and metrics["run"]["model"] == "longest:cli"
    expected = sum(_longest(it) == it.answer for it in items) / len(items)
    assert metrics["accuracy"]["accuracy"] == pytest.approx(expected)
