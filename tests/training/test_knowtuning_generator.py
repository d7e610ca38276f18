"""KnowTuning's facts, KA pairs and revisions made by a generation backend: an OpenAI-compatible server in the test.

The server (stdlib ``http.server`` on 127.0.0.1, port 0, a thread) implements the part of the legacy completions
API the ``openai:`` backend uses for generation (``prompt`` lists, ``max_tokens``, ``stop``, ``temperature``) and
stands in for an external LLM: it answers each of KnowTuning's three prompts by a small rule of its own, and
answers anything about the "Zebra" item with garbage. What is tested is medtune's side: the prompts it sends, how
it parses the replies, the fallback to the offline rule, and the artifacts that say which made what.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.openai_stub import completions_server, prompts_of
from training_helpers import make_order, micro_config

from medtune.errors import ConfigError
from medtune.schema import QAItem
from medtune.training.config import TrainSettings
from medtune.training.methods.knowtuning.facts import Fact, split_facts
from medtune.training.methods.knowtuning.generator import (
    FALLBACK,
    GeneratorReplyError,
    facts_prompt,
    load_generator,
    parse_facts,
    parse_revision,
    parse_rewrite,
    revise_prompt,
    rewrite_prompt,
)

MODEL = "stand-in"
GARBAGE = "Sorry, I cannot help with that.\nPlease ask me something else."


def server_facts(answer: str) -> list[str]:
    """The server's own fact split: one fact per sentence, marked so it cannot be mistaken for medtune's rule."""
    return [f"{s.rstrip('.')}, as the server notes." for s in re.split(r"(?<=\.)\s+", answer.strip()) if s]


def server_pair(fact: str) -> tuple[str, str]:
    return f"Which fact did the server read: {fact.rstrip('.')}?", f"In short, {fact}"


def server_revision(fact: str) -> str:
    return f"It is untrue that {fact[0].lower()}{fact[1:]}"


def _field(prompt: str, name: str) -> str:
    return next(line[len(name) + 2:] for line in prompt.splitlines() if line.startswith(f"{name}: "))


def server_reply(prompt: str) -> str:
    """The stand-in LLM: which prompt this is from its first words, then the rule for it (END after the facts)."""
    if "Zebra" in prompt:
        return GARBAGE
    if prompt.startswith("Split the answer"):
        return "".join(f"- {f}\n" for f in server_facts(_field(prompt, "Answer"))) + "END\nand more words"
    if prompt.startswith("Rewrite the fact"):
        q, a = server_pair(_field(prompt, "Fact"))
        return f"Q: {q}\nA: {a}\n\nQ: another pair nobody asked for"
    if prompt.startswith("Make the fact"):
        return " " + server_revision(_field(prompt, "Fact"))
    return "unknown prompt"


def stand_in_choices(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The stand-in LLM's completions for one request: its reply to each prompt, cut at the client's stop strings."""
    choices = []
    for i, p in enumerate(prompts_of(body)):
        text = server_reply(p)
        for stop in body.get("stop") or []:  # as OpenAI servers do: cut at a stop string, drop it
            text = text.split(stop, 1)[0]
        choices.append({"index": i, "text": text, "finish_reason": "stop"})
    return choices


@pytest.fixture(scope="module")
def server():
    with completions_server(stand_in_choices, MODEL) as served:
        yield served


def free_text_items() -> list[QAItem]:
    """Four prose answers of two sentences (no meta.facts), with names and numbers the offline revision can swap."""
    rows = [("v", "What is Varnel syndrome?", "Varnel syndrome affects about 40 adults in every town. "
                                              "It is treated with Zorafen tablets every day."),
            ("o", "How is Ostrik disease treated?", "Ostrik disease needs 12 weeks of bed rest. "
                                                    "Doctors at Mount Sinai Hospital give Quilmab injections."),
            ("zebra", "What is Zebra rash?", "Zebra rash appears on 7 percent of all patients. "
                                             "The Johns Hopkins Clinic studies the rash closely."),
            ("p", "What is Pellow fever?", "Pellow fever starts 3 days after travel abroad. "
                                           "The Cedar Grove Centre sees most cases each winter.")]
    return [QAItem(id=i, question=q, answer=a, source="test", split="train", category="a") for i, q, a in rows]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _config(**kw: Any) -> TrainSettings:
    return micro_config(method="knowtuning", knowtuning={"lora_targets": ["q_proj", "v_proj"], **kw.pop("kt", {})},
                        max_steps=2, **kw)


@pytest.fixture(scope="module")
def run(server, tmp_path_factory) -> dict:
    from medtune.training import train

    url, requests = server
    items = free_text_items()
    out = tmp_path_factory.mktemp("kt-generator") / "run"
    spec = f"openai:{url}#{MODEL}"
    train(_config(kt={"generator": spec}), items, make_order([it.id for it in items]), out)
    return {"dir": out, "items": {it.id: it for it in items}, "order": items, "requests": list(requests),
            "label": f"generator:openai:{url}#{MODEL}", "spec": spec}


# ----------------------------------------------------------------------------------------------------------
# The run through the server


def test_facts_come_from_the_servers_replies_and_the_garbage_reply_falls_back_to_the_rule(run):
    rows = {r["id"]: r for r in _read_jsonl(run["dir"] / "ka" / "facts.jsonl")}
    assert list(rows) == [it.id for it in run["order"]]
    for item_id, row in rows.items():
        answer = run["items"][item_id].answer
        texts, hows = [f["text"] for f in row["facts"]], {f["how"] for f in row["facts"]}
        if item_id == "zebra":
            assert texts == split_facts(answer) and hows == {FALLBACK}
        else:
            assert texts == server_facts(answer) and hows == {run["label"]}
    exchanges = _read_jsonl(run["dir"] / "ka" / "generator.jsonl")
    facts_ex = [e for e in exchanges if e["step"] == "facts"]
    assert [e["item_id"] for e in facts_ex] == [it.id for it in run["order"]]
    bad = [e for e in facts_ex if not e["parsed"]]
    assert [e["item_id"] for e in bad] == ["zebra"] and bad[0]["reply"] == GARBAGE
    assert "item 'zebra' (step facts)" in bad[0]["error"] and "line 1 is not a '- ' fact line" in bad[0]["error"]
    # The server cut its reply at the stop string END: what came after it never reached the parser.
    assert all("more words" not in e["reply"] for e in facts_ex)


def test_ka_pairs_are_the_servers_rewrites_of_the_kept_facts(run):
    facts = {r["id"]: r["facts"] for r in _read_jsonl(run["dir"] / "ka" / "facts.jsonl")}
    pairs = _read_jsonl(run["dir"] / "ka" / "ka_pairs.jsonl")
    kept = [(i, f["index"]) for i, fs in facts.items() for f in fs if f["kept"]]
    assert [(p["source_id"], p["fact_index"]) for p in pairs] == kept and len(pairs) == 4
    for p in pairs:
        fact = facts[p["source_id"]][p["fact_index"]]["text"]
        if p["source_id"] == "zebra":  # its rewrite reply was garbage too: the template
            assert (p["made_by"], p["how"]) == ("template", FALLBACK)
            assert p["question"].startswith(run["items"]["zebra"].question) and p["answer"] == fact
        else:
            assert (p["question"], p["answer"]) == server_pair(fact)
            assert (p["made_by"], p["how"]) == ("generator", run["label"])
    # The KA training set holds exactly those pairs.
    from medtune.schema import read_items

    trained = {it.id: it for it in read_items(run["dir"] / "ka" / "items.parquet")}
    assert all((trained[p["id"]].question, trained[p["id"]].answer) == (p["question"], p["answer"]) for p in pairs)


def test_revisions_are_the_servers_and_the_garbage_one_is_the_rules(run):
    facts = {r["id"]: [f["text"] for f in r["facts"]] for r in _read_jsonl(run["dir"] / "ka" / "facts.jsonl")}
    triples = {t["id"]: t for t in _read_jsonl(run["dir"] / "kc" / "triples.jsonl")}
    for item_id, texts in facts.items():
        t = triples[f"{item_id}::revision"]
        assert t["chosen"] == " ".join(texts)
        if item_id == "zebra":
            assert t["how"] == FALLBACK
            assert any("item 'zebra', fact" in e and "(step revise)" in e for e in t["changed"]["generator_error"])
            assert t["changed"]["revised"] and all(c["to_item"] != "zebra" for c in t["changed"]["revised"])
        else:
            assert t["how"] == run["label"]
            (change,) = t["changed"]["revised"]
            assert change["from"] == texts[change["index"]] and change["to"] == server_revision(change["from"])
            expected = list(texts)
            expected[change["index"]] = change["to"]
            assert t["rejected"] == " ".join(expected)
        assert triples[f"{item_id}::deletion"]["how"] == triples[f"{item_id}::shuffle"]["how"] == "rule"
    revise_ex = _read_jsonl(run["dir"] / "kc" / "generator.jsonl")
    assert {e["step"] for e in revise_ex} == {"revise"} and len(revise_ex) == 4
    assert [e["item_id"] for e in revise_ex if not e["parsed"]] == ["zebra"]


def test_the_server_saw_the_expected_prompts_greedy_and_batched(run):
    requests, items = run["requests"], run["order"]
    assert all(r["model"] == MODEL and r["temperature"] == 0 and isinstance(r["prompt"], list) for r in requests)
    by_step: dict[str, list[str]] = {}
    for r in requests:
        step = {"Split": "facts", "Rewrite": "rewrite", "Make": "revise"}[r["prompt"][0].split()[0]]
        assert {p.split()[0] for p in r["prompt"]} == {r["prompt"][0].split()[0]}  # one step per request
        by_step.setdefault(step, []).extend(r["prompt"])
        assert r["stop"] == (["END"] if step == "facts" else ["\n\n"])
    assert len(requests) == 3  # four prompts per step: one request each
    assert by_step["facts"] == [facts_prompt(it) for it in items]
    assert all(f"Answer: {it.answer}\n" in p for it, p in zip(items, by_step["facts"], strict=True))
    facts = {r["id"]: r["facts"] for r in _read_jsonl(run["dir"] / "ka" / "facts.jsonl")}
    by_id = run["items"]
    kept = [(i, f) for i, fs in facts.items() for f in fs if f["kept"]]
    assert by_step["rewrite"] == [rewrite_prompt(by_id[i], Fact(f["index"], f["text"])) for i, f in kept]
    revised = [(t["source_id"], t["changed"].get("revised", [{}])[0]) for t in _read_jsonl(
        run["dir"] / "kc" / "triples.jsonl") if t["kind"] == "revision" and t["source_id"] != "zebra"]
    assert all(revise_prompt(by_id[i], Fact(c["index"], c["from"])) in by_step["revise"] for i, c in revised)


def test_the_run_record_names_the_generator_and_counts_its_fallbacks(run):
    meta = json.loads((run["dir"] / "config.json").read_text())
    kt = meta["knowtuning"]
    assert meta["train"]["knowtuning"]["generator"] == run["spec"]
    assert kt["generator"]["spec"] == run["spec"] and kt["generator"]["backend"] == run["label"]
    assert kt["generator"]["steps"] == ["facts", "rewrite", "revise"]
    assert kt["ka"]["generator"] == {"facts": {"requests": 4, "fallbacks": 1},
                                     "rewrite": {"requests": 4, "fallbacks": 1}}
    assert kt["kc"]["generator"] == {"revise": {"requests": 4, "fallbacks": 1}}
    assert (kt["ka"]["pairs_from_generator"], kt["kc"]["revisions_from_generator"]) == (3, 3)


def test_a_resumed_run_reads_the_generated_facts_back_instead_of_asking_again(run, tmp_path):
    from medtune.errors import InputError
    from medtune.training.methods.knowtuning.generator import read_facts

    path = run["dir"] / "ka" / "facts.jsonl"
    back = read_facts(path, run["order"])
    rows = {r["id"]: r["facts"] for r in _read_jsonl(path)}
    assert {i: [(f.text, f.how) for f in fs] for i, fs in back.items()} == {
        i: [(f["text"], f["how"]) for f in fs] for i, fs in rows.items()}
    extra = QAItem(id="new", question="What is new?", answer="A new answer of one sentence here.", source="test",
                   split="train", category="a")
    assert [f.how for f in read_facts(path, [extra])["new"]] == ["rule"]  # not in the file: the offline facts
    bad = tmp_path / "facts.jsonl"
    bad.write_text(path.read_text().splitlines()[0] + "\n{\"id\": \"x\"}\n")
    with pytest.raises(InputError, match=r"facts\.jsonl, line 2: not a facts row"):
        read_facts(bad, run["order"])


# ----------------------------------------------------------------------------------------------------------
# Offline by default; steps; settings


class _NoNetwork(Exception):
    pass


def test_without_a_generator_nothing_touches_the_network(tmp_path, monkeypatch):
    from medtune.training import train

    def refuse(*args, **kwargs):
        raise _NoNetwork(f"network access: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(_NoNetwork):  # the guard works
        socket.create_connection(("127.0.0.1", 9))
    items = free_text_items()
    config = _config()
    assert config.knowtuning.generator is None and load_generator(config) is None
    train(config, items, make_order([it.id for it in items]), tmp_path / "run")
    out = tmp_path / "run"
    assert not (out / "ka" / "generator.jsonl").exists() and not (out / "kc" / "generator.jsonl").exists()
    rows = _read_jsonl(out / "ka" / "facts.jsonl")
    assert [[f["text"] for f in r["facts"]] for r in rows] == [split_facts(it.answer) for it in items]
    assert {f["how"] for r in rows for f in r["facts"]} == {"rule"}
    assert {p["how"] for p in _read_jsonl(out / "ka" / "ka_pairs.jsonl")} == {"rule"}
    assert {t["how"] for t in _read_jsonl(out / "kc" / "triples.jsonl")} == {"rule"}
    assert json.loads((out / "config.json").read_text())["knowtuning"]["generator"] is None


def test_only_the_named_steps_go_to_the_generator_and_structured_items_never_do(server):
    from medtune.training.methods.knowtuning.augmentation import ScoredFact
    from medtune.training.methods.knowtuning.corruption import build_triples

    url, requests = server
    gen = load_generator(_config(kt={"generator": f"openai:{url}#{MODEL}", "generator_steps": ["revise"]}))
    assert gen is not None and (gen.does("revise"), gen.does("facts"), gen.does("rewrite")) == (True, False, False)
    facts_meta = [{"relation": "symptom", "value": "chest pain", "text": "Varnel syndrome causes chest pain.",
                   "question": "What does Varnel syndrome cause?"}]
    structured = QAItem(id="s", question="What about Varnel syndrome?", answer=facts_meta[0]["text"],
                        source="test", split="train", category="a", meta={"facts": facts_meta})
    seen = len(requests)
    got = gen.facts([structured])
    assert got["s"][0].how == "meta.facts" and len(requests) == seen  # nothing asked
    assert gen.rewrites([structured], [ScoredFact("s", got["s"][0], -1.0, 3, kept=True)]) == {}
    assert gen.revisions([structured], got, seed=0) == {} and len(requests) == seen
    item = free_text_items()[0]
    facts = {item.id: [Fact(k, t) for k, t in enumerate(split_facts(item.answer))]}
    revisions = gen.revisions([item], facts, seed=0)
    assert len(requests) == seen + 1 and revisions[item.id].how == gen.label
    triples, _ = build_triples([item], facts, 0, revisions)
    assert {t.kind: t.how for t in triples} == {"deletion": "rule", "revision": gen.label, "shuffle": "rule"}


def test_generator_settings_are_checked_and_reachable_from_the_cli():
    with pytest.raises(ConfigError, match=r"training\.knowtuning\.generator_steps.*unknown step"):
        TrainSettings.from_dict({"knowtuning": {"generator_steps": ["split"]}})
    with pytest.raises(ConfigError, match=r"training\.knowtuning\.generator_steps.*at least one step"):
        TrainSettings.from_dict({"knowtuning": {"generator_steps": []}})
    with pytest.raises(ConfigError, match=r"training\.knowtuning\.generator.*model spec"):
        TrainSettings.from_dict({"knowtuning": {"generator": " "}})
    assert TrainSettings().knowtuning.generator_steps == ["facts", "rewrite", "revise"]
    with pytest.raises(ConfigError, match=r"knowtuning\.generator.*unknown scoring backend 'nope'"):
        load_generator(TrainSettings(knowtuning={"generator": "nope:thing"}))
    with pytest.raises(ConfigError, match=r"knowtuning\.generator.*cannot reach endpoint"):
        load_generator(TrainSettings(knowtuning={"generator": "openai:http://127.0.0.1:9/v1"}))
    from medtune.cli.options import settings_parameters

    _, info = settings_parameters(TrainSettings)
    assert {"knowtuning.generator:plain", "knowtuning.generator_steps:list"} <= set(info.values())


# ----------------------------------------------------------------------------------------------------------
# Parsing


_line = st.text(alphabet="abcdefgh XYZ,.;:0123456789-", min_size=1, max_size=30).map(str.strip).filter(
    lambda s: s and s != "END" and not s.startswith("-"))


@given(st.lists(_line, min_size=1, max_size=8), st.sampled_from(["", "\nEND", "\nEND\n- not a fact"]))
@settings(max_examples=60, deadline=None)
def test_a_fact_list_parses_back_to_its_facts(facts, tail):
    reply = "\n".join(f"- {f}" for f in facts) + tail
    assert parse_facts(reply, "x") == facts


@pytest.mark.parametrize(("step", "reply", "words"), [
    ("facts", "", "no '- ' fact line"),
    ("facts", "Here are the facts:\n- one fact here", "line 1 is not"),
    ("rewrite", "Q: what?", "expected two lines"),
    ("rewrite", "A: this\nQ: that", "expected two lines"),
    ("rewrite", "Q: \nA: fine", "empty"),
    ("revise", "one\ntwo", "on one line"),
    ("revise", "  the Fact   stays ", "unchanged"),
])
def test_unparseable_replies_name_the_item_fact_and_step(step, reply, words):
    parse = {"facts": lambda: parse_facts(reply, "it7"), "rewrite": lambda: parse_rewrite(reply, "it7", 2),
             "revise": lambda: parse_revision(reply, "it7", 2, "The fact stays")}[step]
    with pytest.raises(GeneratorReplyError, match=words) as info:
        parse()
    assert "item 'it7'" in str(info.value) and f"(step {step})" in str(info.value)
    assert (info.value.step, info.value.item_id) == (step, "it7")


def test_replies_in_the_asked_shape_parse():
    assert parse_rewrite("Q: Why?\nA: Because.", "x", 0) == ("Why?", "Because.")
    assert parse_revision(" False fact: The sky is green.\n", "x", 0, "The sky is blue.") == "The sky is green."


def test_the_generator_steps_are_the_settings_steps() -> None:
    from medtune.training.config import GENERATOR_STEPS
    from medtune.training.methods.knowtuning.generator import STEPS

    assert STEPS == GENERATOR_STEPS
