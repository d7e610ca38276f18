"""Instruction data: alpaca and chat (OpenAI ``messages``, ShareGPT ``conversations``) files as free-text items.

Most instruction sets are published in one of three shapes, as a JSON array or as JSON lines:

- **alpaca** (``{"instruction", "input", "output"}``, e.g. the medAlpaca "medical meadow" sets):
  ``question`` = instruction, followed by a blank line and the input when the input is not empty;
  ``answer`` = output.
- **chat**, OpenAI form (``{"messages": [{"role": "system" | "user" | "assistant", "content": ...}]}``) or
  ShareGPT form (``{"conversations": [{"from": "system" | "human" | "gpt", "value": ...}]}``): the last turn
  must be the assistant's, and it is the ``answer``; the turns before it are the question. One user turn (with or
  without a system turn before it) is the question as it is (the system text, a blank line, the user text); a
  multi-turn conversation is written out turn by turn (``User: ...``, ``Assistant: ...``, blank lines between),
  so the model sees the whole conversation before the answer. Those turns are also kept, in OpenAI form, in
  ``meta["messages"]``, for training with a model's chat template.

Every item is a :class:`~medtune.schema.QAItem`. Its id is the record's ``id`` when it has one, else
``<name>-<record number>`` (the line of a JSON-lines file, the element of an array, from 1); ``name`` (default:
the file's stem) is the items' ``source``; ``split`` is the option, else the split word in the file name, else
"train". Fields the shape does not use are kept in ``meta``. A bad record is named by file, record and field
(``messages.2.content``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtune.data.parsing import UniqueIds, iter_json_records, json_clean, require_object, split_from_name
from medtune.data.registry import LoadResult, OnError, RecordCollector, register_loader
from medtune.errors import InputError
from medtune.schema import QAItem, make_item

# Role names of both chat forms, mapped to OpenAI's.
ROLES: dict[str, str] = {"system": "system", "user": "user", "human": "user", "assistant": "assistant",
                         "gpt": "assistant"}
# The keys of one turn in each form: (list key, role key, text key).
CHAT_FORMS: tuple[tuple[str, str, str], ...] = (("messages", "role", "content"), ("conversations", "from", "value"))
ALPACA_FIELDS = ("instruction", "input", "output")
SPEAKER = {"user": "User", "assistant": "Assistant"}


def _text(row: dict[str, Any], key: str, *, field: str | None = None, optional: bool = False) -> str:
    field = field or key
    value = row.get(key)
    if value is None:
        if optional:
            return ""
        raise InputError("missing", field=field)
    if not isinstance(value, str):
        raise InputError(f"expected text, got {type(value).__name__}", field=field)
    if not optional and not value.strip():
        raise InputError("empty", field=field)
    return value


def _item_id(row: dict[str, Any], name: str, record: int, ids: UniqueIds, where: str) -> str:
    value = row.get("id")
    if value is None:
        item_id = f"{name}-{record}"
    elif isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        item_id = str(value).strip()
    else:
        raise InputError(f"expected a non-empty text or integer id, got {value!r}", field="id")
    ids.claim(item_id, where, field="id")
    return item_id


def _base(file: Path, name: str | None, split: str | None) -> tuple[str, str]:
    return name or file.stem, split or split_from_name(file) or "train"


# ----------------------------------------------------------------------------------------------------------
# alpaca


def alpaca_item(row: Any, record: int, *, name: str, split: str, ids: UniqueIds, where: str) -> QAItem:
    """One alpaca record as an item (module docstring)."""
    row = require_object(row)
    instruction = _text(row, "instruction")
    extra = _text(row, "input", optional=True)
    output = _text(row, "output")
    question = instruction.strip() + ("\n\n" + extra.strip() if extra.strip() else "")
    meta = json_clean({k: v for k, v in row.items() if k not in (*ALPACA_FIELDS, "id")})
    item_id = _item_id(row, name, record, ids, where)
    return make_item(QAItem, {"id": item_id, "question": question, "answer": output.strip(), "source": name,
                              "split": split, "meta": meta})


@register_loader("alpaca", options=(),
                 description="alpaca instruction data ({instruction, input, output}), JSON array or JSON lines")
def load_alpaca(path: Path, *, on_error: OnError = "raise", split: str | None = None,
                name: str | None = None) -> LoadResult:
    """Load alpaca records as free-text items: instruction (+ input) → question, output → answer."""
    path = Path(path)
    name, split = _base(path, name, split)
    kind, records = iter_json_records(path)
    collector = RecordCollector(path, on_error, record_kind=kind)
    ids = UniqueIds()
    for n, row in records:
        collector.run(n, lambda r=row, n=n: alpaca_item(r, n, name=name, split=split, ids=ids, where=f"{kind} {n}"))
    return collector.result()


# ----------------------------------------------------------------------------------------------------------
# chat


def _content(value: Any, field: str) -> str:
    """A turn's text: a string, or OpenAI's list of content parts of which only text parts are taken."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for k, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InputError("only text content parts ({type: text, text: ...}) can be read", field=f"{field}.{k}")
            texts.append(part["text"])
        return "".join(texts)
    if value is None:
        raise InputError("missing", field=field)
    raise InputError(f"expected text, got {type(value).__name__}", field=field)


def conversation(row: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """(the list key, the turns in OpenAI form) of a chat record in either form; errors name ``key.N.field``."""
    forms = [form for form in CHAT_FORMS if form[0] in row]
    if not forms:
        raise InputError("no conversation: expected 'messages' (OpenAI) or 'conversations' (ShareGPT)",
                         field="messages")
    if len(forms) > 1:
        raise InputError("both 'messages' and 'conversations': which one is the conversation?", field="messages")
    key, role_key, text_key = forms[0]
    turns = row[key]
    if not isinstance(turns, list) or not turns:
        raise InputError("expected a non-empty list of turns", field=key)
    out = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise InputError(f"expected an object, got {type(turn).__name__}", field=f"{key}.{k}")
        role = turn.get(role_key)
        if role not in ROLES:
            raise InputError(f"unknown role {role!r} (known: {', '.join(ROLES)})", field=f"{key}.{k}.{role_key}")
        text = _content(turn.get(text_key), f"{key}.{k}.{text_key}")
        if not text.strip():
            raise InputError("empty", field=f"{key}.{k}.{text_key}")
        out.append({"role": ROLES[role], "content": text})
    return key, out


def render_question(turns: list[dict[str, str]]) -> str:
    """The turns before the answer as one question text (module docstring)."""
    system = [t["content"].strip() for t in turns if t["role"] == "system"]
    dialogue = [t for t in turns if t["role"] != "system"]
    if len(dialogue) == 1:
        body = dialogue[0]["content"].strip()
    else:
        body = "\n\n".join(f"{SPEAKER[t['role']]}: {t['content'].strip()}" for t in dialogue)
    return "\n\n".join([*system, body])


def chat_item(row: Any, record: int, *, name: str, split: str, ids: UniqueIds, where: str) -> QAItem:
    """One chat record as an item: the last (assistant) turn is the answer, the turns before it the question."""
    row = require_object(row)
    key, turns = conversation(row)
    last = len(turns) - 1
    if turns[last]["role"] != "assistant":
        raise InputError(f"the conversation must end with the assistant's answer, its last turn is "
                         f"{turns[last]['role']!r}", field=f"{key}.{last}")
    before = turns[:last]
    if not any(t["role"] == "user" for t in before):
        raise InputError("no user turn before the answer", field=key)
    if any(t["role"] == "system" for t in before[1:]):
        k = next(i for i, t in enumerate(before) if t["role"] == "system" and i > 0)
        raise InputError("a system turn can only come first", field=f"{key}.{k}")
    meta = json_clean({k: v for k, v in row.items() if k not in (key, "id")})
    meta["messages"] = before
    item_id = _item_id(row, name, record, ids, where)
    return make_item(QAItem, {"id": item_id, "question": render_question(before),
                              "answer": turns[last]["content"].strip(), "source": name, "split": split,
                              "meta": meta})


@register_loader("chat", options=(),
                 description="chat data (OpenAI messages or ShareGPT conversations), JSON array or JSON lines")
def load_chat(path: Path, *, on_error: OnError = "raise", split: str | None = None,
              name: str | None = None) -> LoadResult:
    """Load conversations as free-text items: the last assistant turn is the answer, the turns before it the
    question."""
    path = Path(path)
    name, split = _base(path, name, split)
    kind, records = iter_json_records(path)
    collector = RecordCollector(path, on_error, record_kind=kind)
    ids = UniqueIds()
    for n, row in records:
        collector.run(n, lambda r=row, n=n: chat_item(r, n, name=name, split=split, ids=ids, where=f"{kind} {n}"))
    return collector.result()
