"""The instruction-data loaders (``alpaca``, ``chat``) and the preference-pair loader, on files written here in
the shapes the sets are published in: a medical-meadow-like alpaca JSON array, alpaca JSON lines, OpenAI
``messages`` JSON lines, a ShareGPT ``conversations`` JSON array, preference pairs as JSON lines and Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtune.cli import main
from medtune.data import load
from medtune.data.instruct import render_question
from medtune.data.preference import preference_pair
from medtune.errors import InputError
from medtune.schema import QAItem, read_items

from .badfiles import write_jsonl

# The medAlpaca "medical meadow" files are one JSON array of {instruction, input, output}, input often "".
MEADOW = [
    {"instruction": "Answer this question truthfully", "input": "What does low Mobility and bulging of TM suggest?",
     "output": "Low Mobility and bulging of TM is suggestive of Acute otitis media."},
    {"instruction": "Please summarize what this condition is.", "input": "",
     "output": "Varnel syndrome is a fictional disorder of the heart."},
    {"instruction": "What is the first-line drug for Ostrik disease?",
     "output": "Zorafen is the first-line drug for Ostrik disease."},
]


def _json_array(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path


def _error(source: str, path: Path, **options) -> str:
    with pytest.raises(InputError) as exc:
        load(source, path, **options)
    return str(exc.value)


# ----------------------------------------------------------------------------------------------------------
# alpaca


def test_alpaca_json_array_as_medical_meadow_publishes_it(tmp_path):
    path = _json_array(tmp_path / "medical_meadow_flashcards.json", MEADOW)
    items = load("alpaca", path).items
    assert all(isinstance(it, QAItem) for it in items)
    assert items[0].question == ("Answer this question truthfully\n\n"
                                 "What does low Mobility and bulging of TM suggest?")
    assert items[0].answer == MEADOW[0]["output"]
    assert items[1].question == "Please summarize what this condition is."  # an empty input adds nothing
    assert items[2].question == MEADOW[2]["instruction"]  # nor does a missing one
    assert [it.id for it in items] == [f"medical_meadow_flashcards-{n}" for n in (1, 2, 3)]
    assert {(it.source, it.split) for it in items} == {("medical_meadow_flashcards", "train")}


def test_alpaca_json_lines_keep_ids_and_other_fields(tmp_path):
    rows = [{**r, "id": f"mf{k}", "topic": "cardio"} for k, r in enumerate(MEADOW)]
    items = load("alpaca", write_jsonl(tmp_path / "meadow_test.jsonl", rows), name="meadow").items
    assert [it.id for it in items] == ["mf0", "mf1", "mf2"]
    assert items[0].meta == {"topic": "cardio"} and items[0].split == "test" and items[0].source == "meadow"


@pytest.mark.parametrize(("row", "field", "reason"), [
    ({"instruction": "Name a drug.", "input": ""}, "output", "missing"),
    ({"instruction": "  ", "output": "Zorafen"}, "instruction", "empty"),
    ({"instruction": "Name a drug.", "input": ["heart"], "output": "Zorafen"}, "input", "expected text"),
    ({"instruction": "Name a drug.", "output": 3}, "output", "expected text"),
])
def test_alpaca_bad_record_is_named_by_file_record_and_field(tmp_path, row, field, reason):
    path = _json_array(tmp_path / "meadow.json", [MEADOW[0], row])
    message = _error("alpaca", path)
    assert message.startswith(f"{path}, record 2, field '{field}': {reason}")
    lines = write_jsonl(tmp_path / "meadow.jsonl", [MEADOW[0], MEADOW[1], row])
    assert _error("alpaca", lines).startswith(f"{lines}, line 3, field '{field}'")
    skipped = load("alpaca", path, on_error="skip")
    assert len(skipped.items) == 1 and len(skipped.skipped) == 1


def test_alpaca_duplicate_id_names_the_first(tmp_path):
    path = _json_array(tmp_path / "m.json", [{**MEADOW[0], "id": 7}, {**MEADOW[1], "id": "7"}])
    assert _error("alpaca", path) == f"{path}, record 2, field 'id': duplicate id '7' (first seen at record 1)"


# ----------------------------------------------------------------------------------------------------------
# chat

OPENAI = [
    {"messages": [{"role": "system", "content": "You are a careful clinician."},
                  {"role": "user", "content": "Which drug treats Ostrik disease?"},
                  {"role": "assistant", "content": "Zorafen."}]},
    {"messages": [{"role": "user", "content": "I have chest pain."},
                  {"role": "assistant", "content": "Since when?"},
                  {"role": "user", "content": [{"type": "text", "text": "Since "}, {"type": "text", "text": "today."}]},
                  {"role": "assistant", "content": "Please call an ambulance now."}]},
]
SHAREGPT = [
    {"id": "sg-1", "conversations": [{"from": "human", "value": "How is Dunmar kidney diagnosed?"},
                                     {"from": "gpt", "value": "With a urine strip."}]},
    {"id": "sg-2", "conversations": [{"from": "system", "value": "Answer briefly."},
                                     {"from": "human", "value": "What causes Pellow fever?"},
                                     {"from": "gpt", "value": "A fictional virus."}]},
]


def test_chat_openai_messages_jsonl(tmp_path):
    items = load("chat", write_jsonl(tmp_path / "chats.jsonl", OPENAI)).items
    first, multi = items
    assert first.question == "You are a careful clinician.\n\nWhich drug treats Ostrik disease?"
    assert first.answer == "Zorafen." and first.id == "chats-1"
    assert first.meta["messages"] == OPENAI[0]["messages"][:2]  # the turns before the answer, for chat templates
    assert multi.question == "User: I have chest pain.\n\nAssistant: Since when?\n\nUser: Since today."
    assert multi.answer == "Please call an ambulance now."
    assert multi.meta["messages"][2] == {"role": "user", "content": "Since today."}


def test_chat_sharegpt_json_array_reads_like_openai(tmp_path):
    items = load("chat", _json_array(tmp_path / "sharegpt_val.json", SHAREGPT)).items
    assert [it.id for it in items] == ["sg-1", "sg-2"] and {it.split for it in items} == {"val"}
    assert items[0].question == "How is Dunmar kidney diagnosed?" and items[0].answer == "With a urine strip."
    assert items[1].question == "Answer briefly.\n\nWhat causes Pellow fever?"
    assert items[1].meta["messages"] == [{"role": "system", "content": "Answer briefly."},
                                         {"role": "user", "content": "What causes Pellow fever?"}]


@pytest.mark.parametrize(("record", "field", "reason"), [
    ({"messages": [{"role": "user", "content": "Hi?"}]}, "messages.0",
     "the conversation must end with the assistant's answer"),
    ({"messages": [{"role": "user", "content": "Hi?"}, {"role": "doctor", "content": "Yes"}]}, "messages.1.role",
     "unknown role 'doctor'"),
    ({"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": " "}]}, "conversations.1.value",
     "empty"),
    ({"conversations": [{"from": "human"}, {"from": "gpt", "value": "Yes"}]}, "conversations.0.value", "missing"),
    ({"messages": [{"role": "assistant", "content": "Yes"}]}, "messages", "no user turn"),
    ({"messages": []}, "messages", "expected a non-empty list"),
    ({"text": "Hi?"}, "messages", "no conversation"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}, {"role": "assistant", "content": "A"}]},
     "messages.0.content.0", "only text content parts"),
])
def test_chat_bad_record_is_named_by_file_record_and_field(tmp_path, record, field, reason):
    path = write_jsonl(tmp_path / "chats.jsonl", [OPENAI[0], record])
    message = _error("chat", path)
    assert message.startswith(f"{path}, line 2, field '{field}': {reason}"), message


@settings(max_examples=25, deadline=None)
@given(turns=st.lists(st.text(alphabet="abc xyz", min_size=1).filter(str.strip), min_size=1, max_size=5))
def test_every_turn_before_the_answer_is_in_the_question(turns):
    """Whatever the number of turns, the question holds each of them, in order, and nothing else but labels."""
    messages = [{"role": "user" if k % 2 == 0 else "assistant", "content": t} for k, t in enumerate(turns)]
    question = render_question(messages)
    pos = 0
    for t in turns:
        pos = question.index(t.strip(), pos) + len(t.strip())
    assert (len(turns) == 1) == (question == turns[0].strip())


# ----------------------------------------------------------------------------------------------------------
# preference pairs

PAIRS = [{"id": f"p{k}", "prompt": f"Which drug treats Ostrik disease number {k}?", "chosen": "Zorafen.",
          "rejected": "Quilmab.", "category": "cardio" if k % 2 else "renal", "source_set": "hand"}
         for k in range(4)]


def test_preference_pairs_from_jsonl_and_parquet(tmp_path):
    items = load("preference", write_jsonl(tmp_path / "pairs.jsonl", PAIRS)).items
    pq.write_table(pa.Table.from_pylist(PAIRS), tmp_path / "pairs.parquet")
    assert load("preference", tmp_path / "pairs.parquet").items == items
    assert [it.id for it in items] == ["p0", "p1", "p2", "p3"] and items[1].category == "cardio"
    assert items[0].question == PAIRS[0]["prompt"] and preference_pair(items[0]) == ("Zorafen.", "Quilmab.")
    assert items[0].meta == {"source_set": "hand", "rejected": "Quilmab."}


@pytest.mark.parametrize(("change", "field", "reason"), [
    ({"rejected": None}, "rejected", "missing"),
    ({"chosen": [{"role": "assistant", "content": "x"}]}, "chosen", "expected text"),
    ({"rejected": "Zorafen. "}, "rejected", "the chosen and the rejected answer are the same"),
    ({"prompt": ""}, "prompt", "empty"),
])
def test_bad_preference_pair_is_named(tmp_path, change, field, reason):
    rows = [PAIRS[0], {**PAIRS[1], **change}]
    path = _json_array(tmp_path / "pairs.json", rows)
    assert _error("preference", path).startswith(f"{path}, record 2, field '{field}': {reason}")


def test_an_item_without_a_rejected_answer_is_not_a_pair():
    item = QAItem(id="x1", question="Q?", answer="A", source="s", split="train")
    with pytest.raises(InputError) as exc:
        preference_pair(item, file="items.parquet")
    assert str(exc.value).startswith("items.parquet, record x1, field 'meta.rejected': not a preference pair")


# ----------------------------------------------------------------------------------------------------------
# The command line


def test_cli_loads_each_shape_and_a_bad_record_exits_2_in_one_line(tmp_path, capsys):
    sources = {"alpaca": _json_array(tmp_path / "meadow.json", MEADOW),
               "chat": write_jsonl(tmp_path / "chat.jsonl", OPENAI),
               "preference": write_jsonl(tmp_path / "pairs.jsonl", PAIRS)}
    for source, path in sources.items():
        out = tmp_path / f"{source}.parquet"
        assert main(["data", "load", source, str(path), "-o", str(out)]) == 0, capsys.readouterr().err
        assert [it.id for it in read_items(out)] == [it.id for it in load(source, path).items]
    capsys.readouterr()
    bad = _json_array(tmp_path / "bad.json", [MEADOW[0], {"instruction": "Name a drug."}])
    code = main(["data", "load", "alpaca", str(bad), "-o", str(tmp_path / "never.parquet")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{bad}, record 2, field 'output': missing" in err
    assert not (tmp_path / "never.parquet").exists()
