"""Reading a multiple-choice answer out of generated text: which option did the model choose?

A generated answer is read in this order, and the first rule that applies decides:

1. **Explicit statements** — "the answer is C", "Final answer: C", "Answer: (C)", "the correct option is C",
   "option C is correct", "C is the correct answer", "I think it's C", "I'd go with C", "\\boxed{C}", "the answer
   is not A but C" (C), and the same with an option's text instead of its letter ("the answer is "Nephrotic
   syndrome""). When a text makes several statements (a chain of thought changing its mind), the **last** one
   wins. A last statement that names a letter with no option (E of four) or two letters ("B or C") reads as no
   answer.
2. **A leading letter** — an answer that opens with a letter (" C", "(C) Fever", "C. because ...") answers with
   it, unless it goes on to label other options ("(A) is wrong, (B) is wrong" is no answer).
3. **Letter mentions** — otherwise, letters written as labels ("(C)", "C)", "option C"; never after "not")
   decide only when they all name the same option; several different letters are no answer.
4. **Option text** — without any letter, an option whose text occurs in the answer (whole words, any case); of
   several, the one mentioned first, then the longest (the most specific).

``None`` means no answer could be read; the evaluator counts it as wrong and reports the unparsed share.

Letters are upper case; a lower-case letter counts where it cannot be a word: in brackets, or followed by
punctuation or the end ("answer: c"), and never "a" or "i" followed by a word. "A" and "I" are English words, so a
capital "A" followed by a lower-case word or a number ("A 45-year-old man", "A patient") is the article and "I"
followed by a word is the pronoun, unless the word is one that follows an answer letter ("A because ...", "A is
the correct answer").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from medtune.prompts import LETTERS

_LETTER = rf"[{LETTERS[0]}-{LETTERS[-1]}{LETTERS[0].lower()}-{LETTERS[-1].lower()}]"
# A letter as a label, optionally bracketed. Groups: open, letter, close.
_TOKEN = rf"(?P<open>[\(\[])?[ \t]*(?P<letter>{_LETTER})(?![A-Za-z0-9'’\-])[ \t]*(?P<close>[\)\]])?"
_TOKEN_RE = re.compile(_TOKEN)
_OPTION_NAME = r"(?:option|choice|letter)"
_OPTION_WORD = rf"(?:{_OPTION_NAME}\s+)"
_IS = r"(?:\s+(?:is|would\s+be|should\s+be|will\s+be|must\s+be|here\s+is|=))?\s*[:=]?\s*"

# Words that follow an answer letter but never the article "A" or the pronoun "I" in a sentence.
_AFTER_LETTER_A = frozenset({"because", "since", "as", "is", "was", "seems", "appears", "and", "or", "but",
                             "which", "given", "due", "with", "from", "for"})
_AFTER_LETTER_I = frozenset({"because", "since", "which", "given", "due", "seems", "appears"})

# Where a statement's letter (or option text) starts; each pattern ends right before it.
_STATEMENT_PREFIXES: tuple[re.Pattern[str], ...] = tuple(re.compile(p, re.IGNORECASE) for p in (
    # the answer is / Answer: / final answer = / the correct answer would be / the best choice is ...
    rf"\b(?:answer\b|(?:correct|right|best|final)\s+{_OPTION_NAME}\b){_IS}{_OPTION_WORD}?",
    # I think it's / I believe the answer is / I'd go with / I choose / let's go with ...
    r"(?<![A-Za-z])(?:i\s+think|i\s+believe|i\s+would\s+(?:say|choose|pick|go\s+with|select)|i['’]d\s+(?:say|"
    r"choose|pick|go\s+with|select)|i\s+(?:choose|pick|select)|i['’]ll\s+(?:go\s+with|choose|pick)|(?:let['’]s|"
    r"let\s+us)\s+go\s+with|going\s+with)\s+(?:(?:that\s+)?(?:it['’]s|it\s+is)\s+|(?:the\s+)?(?:answer|option|"
    rf"choice)\s+(?:is\s+)?)?{_OPTION_WORD}?",
    # the answer is not A but C / not A, but rather C
    rf"\bnot\s+{_OPTION_WORD}?[\(\[]?{_LETTER}[\)\]]?\s*,?\s*but\s+(?:rather\s+)?(?:it\s+is\s+|it['’]s\s+)?"
    rf"{_OPTION_WORD}?",
    r"\\boxed\{\s*",
))
# Statements whose letter comes first: "option C is correct", "C is the correct answer" (the letter bracketed, after
# "option", or opening a sentence, so that "hepatitis B is the most likely diagnosis" is no statement).
_VERDICT = r"\s+is\s+(?:the\s+|most\s+)?(?:correct|right|best|most\s+likely|most\s+appropriate)\b"
_LETTER_FIRST: tuple[re.Pattern[str], ...] = (
    re.compile(rf"\b{_OPTION_WORD}{_TOKEN}{_VERDICT}", re.IGNORECASE),
    re.compile(rf"(?:^|[.!?:;\n])\s*{_TOKEN}{_VERDICT}", re.IGNORECASE),
)
_EITHER = re.compile(rf"\s*(?:or|/|and)\s*{_OPTION_WORD}?[\(\[]?(?-i:[{LETTERS}])(?![A-Za-z0-9])", re.IGNORECASE)
_LEADING = re.compile(rf"^\s*{_OPTION_WORD}?{_TOKEN}", re.IGNORECASE)
# Letters written as labels, outside statements.
_MENTIONS = re.compile(rf"(?:(?<![A-Za-z])not\s+)?(?:\((?P<p>{_LETTER})\)|\[(?P<s>{_LETTER})\]|(?:(?<=\s)|(?<=^))"
                       rf"(?P<c>{_LETTER})\)|\b{_OPTION_WORD}(?P<o>{_LETTER})\b)", re.IGNORECASE)


@dataclass(frozen=True)
class Statement:
    """Where in the text an answer is stated, and which shown option it names (``None``: a letter with no option)."""

    position: int
    option: int | None


def _plain(text: str) -> str:
    """Markdown emphasis removed (``**C**`` is ``C``), so patterns need not allow it everywhere."""
    return re.sub(r"[*_`]{1,3}", "", text)


def _letter_ok(text: str, match: re.Match[str], *, leading: bool = False) -> bool:
    """Whether the letter ``match`` found is an answer letter rather than a word (see the module docstring).

    ``leading``: the letter opens the answer, where "A because" / "I since" are read as words too (only
    punctuation or a bracket makes a leading "A" or "I" a letter).
    """
    letter = match.group("letter")
    if match.group("close"):
        return True
    after = text[match.end("letter"):]
    if re.match(r"\.[A-Za-z]", after):  # "e.g.", "i.e."
        return False
    if re.match(r"[ \t]*(?:[.,;:!?\n]|$)", after):
        return True
    word = re.match(r"[ \t]+([A-Za-z0-9][\w'’\-]*)", after)
    if word is None:  # a quote, a dash, an opening bracket ...
        return letter.isupper() and letter not in "AI"
    follower = word.group(1)
    if letter in "aiAI":
        if leading or letter.islower():
            return False
        return follower.lower() in (_AFTER_LETTER_A if letter == "A" else _AFTER_LETTER_I)
    return not (letter.islower() and follower[0].isdigit())


def _option_at(text: str, start: int, options: Sequence[str]) -> int | None:
    """The option whose text opens ``text[start:]`` (quotes allowed around it), the longest if several do."""
    rest = text[start:].lstrip(" \t\"'“”‘’").lower()
    found = [i for i, opt in enumerate(options) if (o := opt.strip().lower())
             and rest.startswith(o) and not re.match(r"\w", rest[len(o):len(o) + 1])]
    return max(found, key=lambda i: len(options[i].strip())) if found else None


def _index(letter: str, n_options: int) -> int | None:
    idx = LETTERS.index(letter.upper())
    return idx if idx < n_options else None


def statements(text: str, options: Sequence[str]) -> list[Statement]:
    """Every explicit statement of an answer in ``text``, in order (rule 1 of the module docstring)."""
    text = _plain(text)
    n = len(options)
    found: dict[int, Statement] = {}
    for prefix in _STATEMENT_PREFIXES:
        for m in prefix.finditer(text):
            token = _TOKEN_RE.match(text, m.end())
            if token is not None and _letter_ok(text, token):
                hedged = _EITHER.match(text, token.end())  # "the answer is B or C" names no one option
                found[m.start()] = Statement(m.start(), None if hedged else _index(token.group("letter"), n))
            elif (k := _option_at(text, m.end(), options)) is not None:
                found[m.start()] = Statement(m.start(), k)
    for pattern in _LETTER_FIRST:
        for m in pattern.finditer(text):
            if _letter_ok(text, m):
                found.setdefault(m.start("letter"), Statement(m.start("letter"), _index(m.group("letter"), n)))
    return [found[k] for k in sorted(found)]


def _leading(text: str, n_options: int) -> tuple[int | None, int] | None:
    """The option a letter opening the answer names (" C", "(C) Fever", "C. because"), and where its label ends."""
    text = _plain(text)
    lead = _LEADING.match(text)
    if lead is None or not _letter_ok(text, lead, leading=True):
        return None
    return _index(lead.group("letter"), n_options), lead.end()


def _mentioned(text: str, n_options: int) -> set[int | None]:
    """The options named by letter labels outside statements ("(C)", "C)", "option C"), except after "not"."""
    out: set[int | None] = set()
    for m in _MENTIONS.finditer(_plain(text)):
        if m.group(0).lower().startswith("not"):
            continue
        letter = next(g for g in (m.group("p"), m.group("s"), m.group("c"), m.group("o")) if g)
        if letter.islower() and letter in "ai" and m.group("o"):
            continue  # "the option a doctor would choose": the article, not a label
        out.add(_index(letter, n_options))
    return out


def _by_option_text(text: str, options: Sequence[str]) -> int | None:
    """The option whose text the answer names (whole words, any case): the first named, then the longest."""
    lowered = text.strip().lower()
    first: dict[int, int] = {}
    for i, opt in enumerate(options):
        o = opt.strip().lower()
        if o and (m := re.search(rf"(?<!\w){re.escape(o)}(?!\w)", lowered)):
            first[i] = m.start()
    if not first:
        return None
    return min(first, key=lambda i: (first[i], -len(options[i])))


def extract_answer(text: str, options: Sequence[str]) -> int | None:
    """The shown option ``text`` answers with (an index into ``options``), or ``None`` (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        return None
    found = statements(text, options)
    if found:
        return found[-1].option
    lead = _leading(text, len(options))
    if lead is not None:  # an answer that opens with its letter, unless it goes on to name other letters
        option, end = lead
        return option if _mentioned(_plain(text)[end:], len(options)) <= {option} else None
    mentioned = _mentioned(text, len(options))
    if mentioned:
        return next(iter(mentioned)) if len(mentioned) == 1 else None
    return _by_option_text(text, options)
