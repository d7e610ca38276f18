"""KnowTuning's three language-model steps through a generation backend, instead of the offline rules.

The authors had GPT-3.5/4 (1) extract an answer's atomic facts, (2) rewrite each hard fact as its own
question-answer pair and (3) revise facts to be wrong. With ``knowtuning.generator`` set to a model spec
(any :func:`medtune.scoring.backends.load_backend` spec: ``openai:http://HOST:PORT/v1#MODEL`` for an
OpenAI-compatible server such as vLLM or llama.cpp, or a local ``hf:`` model) the steps named in
``knowtuning.generator_steps`` go through that backend's ``generate``: greedy (the ``openai`` backend sends
``temperature: 0``), in batches of :data:`BATCH` prompts, so a run is as repeatable as the server is.

Each prompt asks for a strict, line-based reply (:data:`FACTS_PROMPT`, :data:`REWRITE_PROMPT`,
:data:`REVISE_PROMPT`) and each reply is parsed strictly: a reply that does not have the asked shape raises
:class:`GeneratorReplyError` naming the item, the fact and the step, and that one item falls back to the
offline rule, recorded as :data:`FALLBACK` in the artifact's ``how`` (the error text is kept next to it). A
backend that cannot be reached is an error, not a fallback: the user asked for the generator.

Items with structured ``meta["facts"]`` never go to the generator: their facts, questions and exact value
substitutions are already what the steps are meant to produce. Every prompt and reply is kept
(:meth:`Generator.exchanges`) and written to ``ka/generator.jsonl`` and ``kc/generator.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtune.errors import ConfigError, InputError, MedtuneError
from medtune.schema import QAItem
from medtune.training.method_settings import GENERATOR_STEPS
from medtune.training.methods.knowtuning.augmentation import Rewrite, ScoredFact, rule_rewrite
from medtune.training.methods.knowtuning.corruption import Revision, revision_targets
from medtune.training.methods.knowtuning.facts import Fact, item_facts, split_facts, structured_facts

if TYPE_CHECKING:
    from medtune.training.config import TrainSettings

# The steps a generator can take over (``TrainSettings.knowtuning.generator_steps`` names them).
STEPS: tuple[str, ...] = GENERATOR_STEPS
FALLBACK = "rule (generator reply unparseable)"
BATCH = 16
# Reply budgets in new tokens: a fact list restates its answer (about two tokens a word, plus the bullets).
FACTS_TOKENS = (64, 1024)
REWRITE_TOKENS = 160
REVISE_TOKENS = 128
_END = "END"

FACTS_PROMPT = (
    "Split the answer to the medical question below into atomic facts: short sentences that each state one piece "
    "of knowledge and can be read without the others. Keep the answer's own words where you can and add nothing "
    "it does not say.\n"
    "Write one fact per line, each line starting with \"- \", and the line END after the last fact.\n\n"
    "Question: {question}\n"
    "Answer: {answer}\n\n"
    "Facts:\n"
)
REWRITE_PROMPT = (
    "Rewrite the fact below as a question-answer pair: a question that the fact alone answers, naming its subject "
    "(it is read without the original question), and the fact as its answer.\n"
    "Reply with exactly two lines and nothing else:\n"
    "Q: <the question>\n"
    "A: <the answer>\n\n"
    "Original question: {question}\n"
    "Fact: {fact}\n"
)
REVISE_PROMPT = (
    "Make the fact below false by changing one detail (a name, a number, a cause, an effect or a treatment) and "
    "keeping the rest of the sentence as it is.\n"
    "Reply with the false fact on one line and nothing else.\n\n"
    "Question: {question}\n"
    "Fact: {fact}\n"
    "False fact:"
)
STOPS: dict[str, list[str]] = {"facts": [_END], "rewrite": ["\n\n"], "revise": ["\n\n"]}


class GeneratorReplyError(MedtuneError):
    """A generator's reply that has not the shape its prompt asked for; names the step, the item and the fact."""

    def __init__(self, step: str, item_id: str, reason: str, fact_index: int | None = None) -> None:
        self.step, self.item_id, self.fact_index, self.reason = step, item_id, fact_index, reason
        where = f"item '{item_id}'" + (f", fact {fact_index}" if fact_index is not None else "")
        super().__init__(f"generator reply for {where} (step {step}) cannot be parsed: {reason}")


def _clip(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _lines(reply: str) -> list[str]:
    return [line.strip() for line in reply.strip().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------------------
# Prompts and the parsing of their replies (pure functions)


def facts_prompt(item: QAItem) -> str:
    return FACTS_PROMPT.format(question=item.question.strip(), answer=item.answer.strip())


def rewrite_prompt(item: QAItem, fact: Fact) -> str:
    return REWRITE_PROMPT.format(question=item.question.strip(), fact=fact.text)


def revise_prompt(item: QAItem, fact: Fact) -> str:
    return REVISE_PROMPT.format(question=item.question.strip(), fact=fact.text)


def parse_facts(reply: str, item_id: str) -> list[str]:
    """The facts of a :data:`FACTS_PROMPT` reply: its ``- `` lines up to ``END``; any other line is an error."""
    facts: list[str] = []
    for k, line in enumerate(_lines(reply), start=1):
        if line == _END:
            break
        if not line.startswith("-"):
            raise GeneratorReplyError("facts", item_id, f"line {k} is not a '- ' fact line: {_clip(line)!r}")
        text = line[1:].strip()
        if not text:
            raise GeneratorReplyError("facts", item_id, f"line {k} is an empty fact")
        facts.append(text)
    if not facts:
        raise GeneratorReplyError("facts", item_id, f"no '- ' fact line in {_clip(reply)!r}")
    return facts


def parse_rewrite(reply: str, item_id: str, fact_index: int) -> tuple[str, str]:
    """``(question, answer)`` of a :data:`REWRITE_PROMPT` reply: exactly a ``Q:`` line, then an ``A:`` line."""
    lines = _lines(reply)
    if len(lines) != 2 or not lines[0][:2].upper() == "Q:" or not lines[1][:2].upper() == "A:":
        raise GeneratorReplyError("rewrite", item_id, f"expected two lines 'Q: ...' and 'A: ...', got "
                                                      f"{_clip(reply)!r}", fact_index)
    question, answer = lines[0][2:].strip(), lines[1][2:].strip()
    if not question or not answer:
        raise GeneratorReplyError("rewrite", item_id, "the question or the answer is empty", fact_index)
    return question, answer


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def parse_revision(reply: str, item_id: str, fact_index: int, original: str) -> str:
    """The false fact of a :data:`REVISE_PROMPT` reply: one line, not the original fact again."""
    lines = _lines(reply)
    if lines and lines[0].lower().startswith("false fact:"):
        lines[0] = lines[0][len("false fact:"):].strip()
        lines = [x for x in lines if x]
    if len(lines) != 1:
        raise GeneratorReplyError("revise", item_id, f"expected the false fact on one line, got {_clip(reply)!r}",
                                  fact_index)
    if _norm(lines[0]) == _norm(original):
        raise GeneratorReplyError("revise", item_id, "the reply repeats the fact unchanged", fact_index)
    return lines[0]


# ----------------------------------------------------------------------------------------------------------
# The generator: batched requests, fallbacks, and the record of every exchange


@dataclass(frozen=True)
class Exchange:
    """One prompt and its reply, for ``generator.jsonl``; ``error`` is set when the reply could not be parsed."""

    step: str
    item_id: str
    fact_index: int | None
    prompt: str
    reply: str
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "item_id": self.item_id, "fact_index": self.fact_index, "prompt": self.prompt,
                "reply": self.reply, "parsed": self.error is None, "error": self.error}


@dataclass
class Generator:
    """A generation backend doing ``steps`` of KnowTuning; ``spec`` is what the user named."""

    backend: Any
    spec: str
    steps: frozenset[str]
    batch_size: int = BATCH
    log: list[Exchange] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``generator:<backend>:<its spec>``: the ``how`` of what it made (the endpoint's spec names the model)."""
        return f"generator:{self.backend.name}:{self.backend.spec}"

    def does(self, step: str) -> bool:
        return step in self.steps

    def ask(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str]) -> list[str]:
        """Replies to ``prompts``, :attr:`batch_size` at a time through the backend's greedy ``generate``."""
        replies: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = list(prompts[start: start + self.batch_size])
            got = self.backend.generate(batch, max_new_tokens, list(stop))
            if len(got) != len(batch):
                raise MedtuneError(f"generator {self.label} returned {len(got)} replies for {len(batch)} prompts")
            replies.extend(str(r) for r in got)
        return replies

    def _record(self, step: str, item_id: str, fact_index: int | None, prompt: str, reply: str,
                error: GeneratorReplyError | None = None) -> None:
        self.log.append(Exchange(step, item_id, fact_index, prompt, reply, str(error) if error else None))

    def facts(self, items: Sequence[QAItem], *, file: Any = None) -> dict[str, list[Fact]]:
        """Every item's facts: ``meta["facts"]`` kept as they are, the others' from the generator (rule on a
        reply that cannot be parsed)."""
        out: dict[str, list[Fact]] = {}
        asked: list[QAItem] = []
        for it in items:
            known = structured_facts(it, file=file)
            if known is not None:
                out[it.id] = known
            else:
                asked.append(it)
        prompts = [facts_prompt(it) for it in asked]
        budget = max((min(FACTS_TOKENS[1], FACTS_TOKENS[0] + 2 * len(it.answer.split())) for it in asked),
                     default=FACTS_TOKENS[0])
        for it, prompt, reply in zip(asked, prompts, self.ask(prompts, budget, STOPS["facts"]), strict=True):
            try:
                texts, how, error = parse_facts(reply, it.id), self.label, None
            except GeneratorReplyError as exc:
                texts, how, error = split_facts(it.answer), FALLBACK, exc
            self._record("facts", it.id, None, prompt, reply, error)
            out[it.id] = [Fact(k, t, how=how) for k, t in enumerate(texts)]
        return {it.id: out[it.id] for it in items}

    def rewrites(self, items: Sequence[QAItem], scored: Sequence[ScoredFact]) -> dict[tuple[str, int], Rewrite]:
        """The KA pair of every kept fact that has no question of its own (rule on an unparseable reply)."""
        by_id = {it.id: it for it in items}
        asked = [s for s in scored if s.kept and not s.fact.question]
        prompts = [rewrite_prompt(by_id[s.item_id], s.fact) for s in asked]
        out: dict[tuple[str, int], Rewrite] = {}
        for s, prompt, reply in zip(asked, prompts, self.ask(prompts, REWRITE_TOKENS, STOPS["rewrite"]),
                                    strict=True):
            try:
                question, answer = parse_rewrite(reply, s.item_id, s.fact.index)
                out[(s.item_id, s.fact.index)] = Rewrite(question, answer, "generator", self.label)
                self._record("rewrite", s.item_id, s.fact.index, prompt, reply)
            except GeneratorReplyError as exc:
                out[(s.item_id, s.fact.index)] = rule_rewrite(by_id[s.item_id], s.fact, FALLBACK)
                self._record("rewrite", s.item_id, s.fact.index, prompt, reply, exc)
        return out

    def revisions(self, items: Sequence[QAItem], facts: Mapping[str, Sequence[Fact]],
                  seed: int) -> dict[str, Revision]:
        """Per item without structured facts: its :func:`revision_targets` revised by the generator. One
        unparseable reply sends the whole item to the rule, so a rejected answer is all one kind of revision."""
        targets = {it.id: revision_targets(it.id, facts[it.id], seed) for it in items
                   if not all(f.structured for f in facts[it.id])}
        by_id = {it.id: it for it in items}
        asked = [(item_id, facts[item_id][k]) for item_id, ks in targets.items() for k in ks]
        prompts = [revise_prompt(by_id[item_id], f) for item_id, f in asked]
        replies = self.ask(prompts, REVISE_TOKENS, STOPS["revise"])
        revised: dict[str, dict[int, str]] = {i: {} for i in targets}
        errors: dict[str, list[str]] = {}
        for (item_id, f), prompt, reply in zip(asked, prompts, replies, strict=True):
            try:
                revised[item_id][f.index] = parse_revision(reply, item_id, f.index, f.text)
                self._record("revise", item_id, f.index, prompt, reply)
            except GeneratorReplyError as exc:
                errors.setdefault(item_id, []).append(str(exc))
                self._record("revise", item_id, f.index, prompt, reply, exc)
        out: dict[str, Revision] = {}
        for item_id in targets:
            if item_id in errors:
                out[item_id] = Revision(None, {"generator_error": errors[item_id]}, FALLBACK)
                continue
            own = facts[item_id]
            changes = [{"index": f.index, "from": f.text, "to": revised[item_id][f.index]}
                       for f in own if f.index in revised[item_id]]
            out[item_id] = Revision([revised[item_id].get(f.index, f.text) for f in own], {"revised": changes},
                                    self.label)
        return out

    def exchanges(self, steps: Iterable[str]) -> list[dict[str, Any]]:
        wanted = set(steps)
        return [e.to_dict() for e in self.log if e.step in wanted]

    def counts(self, steps: Iterable[str]) -> dict[str, dict[str, int]]:
        """Per step: how many replies were asked for and how many fell back to the rule."""
        return {s: {"requests": sum(e.step == s for e in self.log),
                    "fallbacks": sum(e.step == s and e.error is not None for e in self.log)}
                for s in steps if self.does(s)}

    def describe(self) -> dict[str, Any]:
        """The ``generator`` entry of the run record."""
        return {"spec": self.spec, "backend": self.label, "steps": [s for s in STEPS if self.does(s)],
                "batch_size": self.batch_size, "decoding": "greedy (temperature 0)"}


def load_generator(config: TrainSettings) -> Generator | None:
    """The generator ``config.knowtuning.generator`` names, or ``None`` (the offline rules: nothing is loaded
    and nothing is contacted)."""
    if config.knowtuning.generator is None:
        return None
    from medtune.scoring.backends import load_backend

    try:
        backend = load_backend(config.knowtuning.generator)
    except MedtuneError as exc:
        raise ConfigError(f"training.knowtuning.generator: {exc}") from None
    return Generator(backend, config.knowtuning.generator, frozenset(config.knowtuning.generator_steps))


def read_facts(path: Path, items: Sequence[QAItem], *, file: Any = None) -> dict[str, list[Fact]]:
    """The facts a finished KA stage used (``ka/facts.jsonl``), so a resumed run does not ask the generator
    again; items the file lacks get the offline facts."""
    saved: dict[str, list[Fact]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            saved[str(row["id"])] = [Fact(int(f["index"]), str(f["text"]), f.get("relation"), f.get("value"),
                                          f.get("question"), str(f.get("how") or "rule")) for f in row["facts"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"not a facts row ({exc})", file=path, record=n, record_kind="line") from None
    return {it.id: saved.get(it.id) or item_facts(it, file=file) for it in items}


__all__ = ["BATCH", "FACTS_PROMPT", "FALLBACK", "REVISE_PROMPT", "REWRITE_PROMPT", "STEPS", "Exchange",
           "Generator", "GeneratorReplyError", "facts_prompt", "load_generator", "parse_facts", "parse_revision",
           "parse_rewrite", "read_facts", "revise_prompt", "rewrite_prompt"]
