"""Data mixtures: exact, seeded counts per source (a property over random shares, counts and sizes), the items
file `medtune data mix` writes, and its one-line errors."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtune.cli import main
from medtune.data import DataSettings, load_data
from medtune.data.mix import (
    MixPartSettings,
    largest_remainder,
    mix_counts,
    mix_items,
    parse_part,
    read_mix_provenance,
)
from medtune.errors import ConfigError
from medtune.schema import MCQItem, QAItem, read_items, write_items


def mcq(source: str, n: int, *, split: str = "train", prefix: str = "q") -> list[MCQItem]:
    return [MCQItem(id=f"{prefix}{i}", question=f"{source} question {i}?", options=["yes", "no", "maybe"],
                    answer=i % 3, source=source, split=split, meta={"row": i}) for i in range(n)]


# ----------------------------------------------------------------------------------------------------------
# The counts


@st.composite
def mixes(draw):
    """Parts with random sizes, each a share or a count; shares are decimals that sum to exactly 1."""
    n_parts = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(1, 40), min_size=n_parts, max_size=n_parts))
    is_share = draw(st.lists(st.booleans(), min_size=n_parts, max_size=n_parts))
    n_shares = sum(is_share)
    cuts = sorted(draw(st.lists(st.integers(1, 99), min_size=max(n_shares - 1, 0), max_size=max(n_shares - 1, 0),
                                unique=True)))
    shares = [(b - a) / 100 for a, b in zip([0, *cuts], [*cuts, 100], strict=True)] if n_shares else []
    share_iter = iter(shares)
    replace = draw(st.booleans())
    parts = []
    for i, (size, share) in enumerate(zip(sizes, is_share, strict=True)):
        if share:
            parts.append(MixPartSettings(items=f"p{i}.parquet", share=next(share_iter)))
        else:
            parts.append(MixPartSettings(items=f"p{i}.parquet", count=draw(st.integers(0, 60 if replace else size))))
    total = draw(st.one_of(st.none(), st.integers(1, 80)))
    if total is not None:
        fixed = sum(p.count or 0 for p in parts)
        total = fixed + total if n_shares else (fixed or None)
    return parts, sizes, replace, total, draw(st.integers(0, 2**16))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixes())
def test_every_source_gets_exactly_its_count_and_a_seed_gives_one_mix(mix) -> None:
    parts, sizes, replace, total, seed = mix
    pools = [mcq(p.label, n) for p, n in zip(parts, sizes, strict=True)]
    try:
        counts = mix_counts(parts, sizes, total=total, replace=replace)
    except ConfigError:  # a share needing more items than its file has (only with a total given)
        assert total is not None and not replace
        return
    shares = [(i, Fraction(str(p.share))) for i, p in enumerate(parts) if p.share is not None]
    fixed = sum(p.count or 0 for p in parts)
    if shares:
        # the share items: the total given, else min(size / share) (the part that runs out first limits the mix)
        rest = total - fixed if total is not None else min(int(sizes[i] / s) for i, s in shares)
        for (i, s), c in zip(shares, largest_remainder(rest, [s for _, s in shares]), strict=True):
            assert counts[i] == c and abs(c - s * rest) < 1  # largest remainder: within one of the quota
        assert sum(counts) == fixed + rest
    else:
        assert sum(counts) == fixed
    assert [counts[i] for i, p in enumerate(parts) if p.count is not None] == [p.count for p in parts if p.count
                                                                              is not None]
    if not replace:
        assert all(c <= n for c, n in zip(counts, sizes, strict=True))
    items, got = mix_items(parts, pools, seed=seed, replace=replace, total=total)
    assert got == counts
    assert Counter(it.meta["source"] for it in items) == Counter({p.label: c for p, c in zip(parts, counts,
                                                                                            strict=True) if c})
    assert len({it.id for it in items}) == len(items)  # ids stay unique (repeats #k, shared ids prefixed)
    again, _ = mix_items(parts, pools, seed=seed, replace=replace, total=total)
    assert [it.model_dump() for it in again] == [it.model_dump() for it in items]
    if not replace:  # each item at most once, itself
        assert all(it.meta["row"] < n for it in items for p, n in zip(parts, sizes, strict=True)
                   if it.meta["source"] == p.label)


def test_largest_remainder_is_exact_and_breaks_ties_by_order() -> None:
    assert largest_remainder(10, [Fraction(1, 3)] * 3) == [4, 3, 3]
    assert largest_remainder(7, [Fraction(5, 10), Fraction(3, 10), Fraction(2, 10)]) == [4, 2, 1]
    assert largest_remainder(0, [Fraction(1, 2), Fraction(1, 2)]) == [0, 0]


def test_a_seed_draws_the_same_items_and_another_seed_others() -> None:
    parts = [MixPartSettings(items="a.parquet", share=0.5), MixPartSettings(items="b.parquet", share=0.5)]
    pools = [mcq("a", 30), mcq("b", 20, prefix="b")]
    one, counts = mix_items(parts, pools, seed=1)
    assert counts == [20, 20]  # b (20 items at share 0.5) limits the mix to 40
    other, _ = mix_items(parts, pools, seed=2)
    assert [it.id for it in one] != [it.id for it in other]
    # adding a part leaves the draws of the others as they were (each part is seeded by its label)
    three = [MixPartSettings(items="a.parquet", count=20), MixPartSettings(items="b.parquet", count=20),
             MixPartSettings(items="c.parquet", count=5)]
    more, _ = mix_items(three, [*pools, mcq("c", 5, prefix="c")], seed=1)
    assert [it.id for it in more][:40] == [it.id for it in one]


def test_ids_in_several_parts_are_prefixed_and_repeats_numbered() -> None:
    parts = [MixPartSettings(items="x/medqa.parquet", count=3), MixPartSettings(items="mmlu.parquet", count=2)]
    items, _ = mix_items(parts, [mcq("medqa", 3), mcq("mmlu", 2)], seed=0)
    # q0 and q1 are in both files: prefixed by the part's label; q2 only in medqa keeps its id
    assert [it.id for it in items] == ["medqa:q0", "medqa:q1", "q2", "mmlu:q0", "mmlu:q1"]
    assert [it.meta.get("source_id") for it in items] == ["q0", "q1", None, "q0", "q1"]
    assert [it.source for it in items] == ["medqa"] * 3 + ["mmlu"] * 2  # the item's own source unchanged
    repeated, _ = mix_items([MixPartSettings(items="medqa.parquet", count=12)], [mcq("medqa", 3)], seed=0,
                            replace=True)
    ids = [it.id for it in repeated]
    assert len(set(ids)) == 12 and any("#" in i for i in ids)
    assert all(it.meta["source_id"] == it.id.split("#")[0] for it in repeated if "#" in it.id)


def test_parse_part_reads_shares_counts_and_names() -> None:
    assert parse_part("a.parquet:0.5").share == 0.5
    assert parse_part("a.parquet:300").count == 300
    assert parse_part("a.parquet:1.0").share == 1.0 and parse_part("a.parquet:1").count == 1
    named = parse_part("wiki=data/flash-cards.parquet:0.2")
    assert (named.label, named.items, named.share) == ("wiki", "data/flash-cards.parquet", 0.2)
    for bad, why in (("a.parquet:half", "'half' is not a number"), ("a.parquet", "expected PATH:SHARE"),
                     ("a.parquet:1.5", r"must be in \(0, 1\]"), ("a.parquet:-2", "must be in")):
        with pytest.raises(ConfigError, match=why):
            parse_part(bad)


# ----------------------------------------------------------------------------------------------------------
# The command and the data stage


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("mix")
    out = {"a": tmp / "medqa.parquet", "b": tmp / "mmlu.parquet", "qa": tmp / "medquad.parquet"}
    write_items(mcq("medqa", 12) + mcq("medqa", 5, split="test", prefix="t"), out["a"])
    write_items(mcq("mmlu", 6), out["b"])
    write_items([QAItem(id="f1", question="What is it?", answer="A thing.", source="medquad", split="train")],
                out["qa"])
    return out


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_data_mix_writes_the_exact_mix_with_its_provenance(files, tmp_path, capsys) -> None:
    out = tmp_path / "mix.parquet"
    code, said, _ = run(capsys, "data", "mix", f"{files['a']}:0.5", f"{files['b']}:0.5", "--seed", 4, "-o", out)
    assert code == 0 and "medqa=6, mmlu=6" in said
    items = read_items(out)
    assert Counter(it.meta["source"] for it in items) == {"medqa": 6, "mmlu": 6}
    # the train split only (the file holds train and test), the items' own source kept
    assert {it.split for it in items} == {"train"} and {it.source for it in items} == {"medqa", "mmlu"}
    prov = read_mix_provenance(out)
    assert prov["seed"] == 4 and prov["total"] == 12 and not prov["replace"]
    assert [(p["label"], p["share"], p["available"], p["drawn"]) for p in prov["parts"]] == [
        ("medqa", 0.5, 12, 6), ("mmlu", 0.5, 6, 6)]
    again = tmp_path / "again.parquet"
    assert run(capsys, "data", "mix", f"{files['a']}:0.5", f"{files['b']}:0.5", "--seed", 4, "-o", again)[0] == 0
    assert again.read_bytes() == out.read_bytes()  # the same seed gives the same file
    counted = tmp_path / "counted.parquet"
    code, _, _ = run(capsys, "data", "mix", f"mq={files['a']}:30", f"{files['b']}:1.0", "--total", 40, "--replace",
                     "-o", counted)
    items = read_items(counted)
    assert code == 0 and Counter(it.meta["source"] for it in items) == {"mq": 30, "mmlu": 10}
    assert any("#" in it.id for it in items) and len({it.id for it in items}) == 40


@pytest.mark.parametrize(("args", "message"), [
    (["{missing}:0.5", "{b}:0.5"], "part 'nope': items file not found"),
    (["{a}:lots", "{b}:0.5"], "argument '.*medqa.parquet:lots': the share 'lots' is not a number"),
    (["{a}:0.7", "{b}:0.6"], "the shares sum to 1.3; they must sum to 1"),
    (["{a}:100", "{b}:0.5"], "the shares sum to 0.5"),
    (["{a}:20"], r"part 'medqa' \(.*\): its count 20 needs 20 items, the file gives 12"),
    (["{a}:5", "{b}:0.5", "{b2}:0.5", "--total", "3"], "total: 3 is fewer than the counts' 5 items"),
    (["{a}:0.5", "{qa}:0.5"], r"cannot mix multiple-choice items \(medqa\) with free-text items \(medquad\)"),
    (["{a}:0.5", "{b}:0.5", "--split", "validation"], "no items in split 'validation'"),
])
def test_bad_arguments_are_one_line_errors(files, tmp_path, capsys, args, message) -> None:
    names = {"a": files["a"], "b": files["b"], "qa": files["qa"], "missing": tmp_path / "nope.parquet",
             "b2": f"other={files['b']}"}
    code, _, err = run(capsys, "data", "mix", *[a.format(**names) for a in args], "-o", tmp_path / "m.parquet")
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "m.parquet").exists()


def test_a_data_set_with_a_mix_is_the_mix(files, tmp_path) -> None:
    ds = DataSettings.model_validate({"name": "mixed", "mix": [{"items": "medqa.parquet", "share": 1.0},
                                                                {"items": "mmlu.parquet", "count": 2}],
                                      "seed": 3, "total": 8})
    assert ds.source == "mix" and ds.label == "mixed"
    data = load_data(ds, root=files["a"].parent)
    assert Counter(it.meta["source"] for it in data.items) == {"medqa": 6, "mmlu": 2}
    # a data set without a mix keeps the key it had: no mix fields in its settings
    assert "mix" not in DataSettings.model_validate({"source": "synthetic"}).to_dict()
    for bad, why in (({"source": "synthetic", "seed": 1}, "seed: only a data set with `mix:`"),
                     ({"source": "mix"}, "needs a `mix:` list"),
                     ({"mix": [{"items": "a.parquet", "share": 0.5, "count": 3}]}, "either `share`"),
                     ({"mix": [{"items": "a.parquet", "share": 0.5}], "path": "x"}, "path: a mix reads")):
        with pytest.raises(ValueError, match=why):
            DataSettings.model_validate(bad)
