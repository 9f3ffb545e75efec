"""The SCoTD prompt format and answer parsing: pure functions, no I/O except reading exemplar files.

Formatting decisions (they matter for tokenization and for train/eval consistency):
- ``render_question`` is the only place a question becomes text; the teacher prompt, the student input and the
  student target are all built from it and ``render_answer``, so the formats cannot drift.
- The question block ends with ``"A:"`` without a trailing space and the answer starts with a space. BPE tokenizers
  then see the natural ``" word"`` tokens at the start of the rationale; a trailing space in the prompt leaves
  the model to start from an unusual token, and small teachers then often begin with a digit.
- Choice letters are lower case ``(a)``, ``(b)``, ... and come from ``len(choices)``. A free-form question (no
  choices) has no choice block and its answer is written bare: ``So the answer is: 42``.
- Exemplars are separated by a blank line, which is also the teacher's stop string.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from scotd.scoring import answers_match, normalize_answer, normalize_number
from scotd.tasks import Question, RowError, TaskDataError, parse_generic

ANSWER_PHRASE = "So the answer is:"


def letter(index: int) -> str:
    return chr(ord("a") + index)


def render_question(q: Question) -> str:
    """``Q: {question}\\nAnswer Choices:\\n(a) ...\\n(b) ...\\nA:`` (``Q: {question}\\nA:`` for a free-form question):
    the block shared by every prompt and target."""
    if q.free_form:
        return f"Q: {q.text}\nA:"
    choices = "\n".join(f"({letter(i)}) {c}" for i, c in enumerate(q.choices))
    return f"Q: {q.text}\nAnswer Choices:\n{choices}\nA:"


def render_answer(rationale: str | None, answer: int | str) -> str:
    """The completion after ``A:``: ``" {rationale} So the answer is: (x)"``, or ``" (x)"`` for label-only targets;
    a free-form ``answer`` (a string) is written as it is: ``" {rationale} So the answer is: 42"``, ``" 42"``."""
    shown = answer if isinstance(answer, str) else f"({letter(answer)})"
    if rationale is None:
        return f" {shown}"
    return f" {rationale.strip()} {ANSWER_PHRASE} {shown}"


@dataclass(frozen=True)
class Exemplar:
    question: Question
    rationale: str


def teacher_prompt(q: Question, exemplars: list[Exemplar] | tuple[Exemplar, ...]) -> str:
    """Few-shot exemplars, each ``render_question + render_answer``, then the question; blank lines between."""
    shots = [render_question(e.question) + render_answer(e.rationale, e.question.gold) for e in exemplars]
    return "\n\n".join([*shots, render_question(q)])


def student_prompt(q: Question, exemplars: list[Exemplar] | tuple[Exemplar, ...] = ()) -> str:
    """The student sees the question alone; on a held-out task, optionally after in-context exemplars."""
    return teacher_prompt(q, exemplars) if exemplars else render_question(q)


def in_chat(tokenizer, prompt: str) -> str:
    """``prompt`` as the user turn of ``tokenizer``'s chat template, ending where the assistant's answer begins: the
    one rendering of chat-template teachers and students, in training and evaluation alike."""
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def training_pair(question: str, choices: list[str] | tuple[str, ...], rationale: str | None,
                  label_index: int | None, label: str | None) -> tuple[str, str]:
    """(prompt, completion) a student trains on for one corpus or label row: the student prompt of the question and
    the rationale (None: the label alone) with its label, the choice index or, without choices, the free-form
    answer."""
    free = not choices
    q = Question("", "", question, tuple(choices), None if free else label_index, label if free else None)
    return student_prompt(q), render_answer(rationale, q.gold)


def stop_strings(num_choices: int, extra: tuple[str, ...] = ("\n\n",)) -> list[str]:
    """Stop at a blank line or right after the answer phrase of any valid letter (include it in the output), with
    the phrase capitalised or not: a teacher that writes "..., so the answer is: (d)" often goes on (a second "So the
    answer is", or a made-up "Human:" turn) to the token limit, and those tokens are wasted. A free-form answer
    (``num_choices`` 0) has no letter to stop after: it stops at the end of its line (rationales are one line)."""
    if num_choices == 0:
        return [*extra, "\n"]
    phrases = (ANSWER_PHRASE, ANSWER_PHRASE[0].lower() + ANSWER_PHRASE[1:])
    return [*extra, *(f"{phrase} ({letter(i)})" for phrase in phrases for i in range(num_choices))]


def cut_at_stop(text: str, stops: list[str]) -> str:
    """``text`` up to and including the earliest stop string, as the engine returns it (pure)."""
    ends = [i + len(stop) for stop in stops if (i := text.find(stop)) >= 0]
    return text[: min(ends)] if ends else text


# ---------------------------------------------------------------------------------------------------------------
# Parsing.


@dataclass(frozen=True)
class Parsed:
    """The parsed answer: ``index`` into the choices, or for a free-form question ``value`` (normalised); when
    neither, a named ``reason``. ``key`` is what is compared with the gold answer."""

    index: int | None
    reason: str | None = None
    rationale: str = ""
    value: str | None = None

    @property
    def key(self) -> str | None:
        return self.value if self.value is not None else (letter(self.index) if self.index is not None else None)


def gold_key(q: Question) -> str | None:
    """The gold answer in the form ``Parsed.key`` takes: the choice letter, or the free-form answer."""
    if q.free_form:
        return q.answer
    return letter(q.answer_index) if q.answer_index is not None else None


PARSE_REASONS = ("empty_output", "no_answer_phrase", "unknown_letter", "no_number", "cut_at_limit")


def mark_cut(parsed: Parsed, finish_reason: str | None) -> Parsed:
    """A completion the engine stopped at its token budget before any answer fails as ``cut_at_limit``: the
    budget, not the model's answer, is what to change."""
    if parsed.key is None and finish_reason == "length":
        return Parsed(None, "cut_at_limit", parsed.rationale)
    return parsed

_PHRASE = re.compile(r"answer is:?\s*\(?\s*([A-Za-z])\s*\)", re.I)
_LEAD_IN = re.compile(r"(?:so\s+)?the\s*$", re.I)  # "So the" before "answer is:" belongs to the phrase
_BARE = re.compile(r"^\(\s*([A-Za-z])\s*\)\s*\.?$")


def parse_answer(text: str, num_choices: int) -> Parsed:
    """Find the answer letter in a completion (the free-form answer when ``num_choices`` is 0). Never raises.

    Accepts the SCoTD phrase (the last ``answer is: (x)`` wins, case-insensitive) or, for label-only students, a
    completion that is just ``(x)``. The rationale is the text before the phrase.
    """
    if not isinstance(text, str) or not text.strip():
        return Parsed(None, "empty_output")
    if num_choices == 0:
        return parse_free(text)
    matches = list(_PHRASE.finditer(text))
    if matches:
        found = matches[-1]
        rationale = _LEAD_IN.sub("", text[: found.start()]).strip()
    else:
        found = _BARE.match(text.strip())
        rationale = ""
        if not found:
            return Parsed(None, "no_answer_phrase", text.strip())
    index = ord(found.group(1).lower()) - ord("a")
    if not 0 <= index < num_choices:
        return Parsed(None, "unknown_letter", rationale)
    return Parsed(index, None, rationale)


_FREE_PHRASE = re.compile(r"answer is:?", re.I)
_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?%?|[-+]?\$?\.\d+%?")


def parse_free(text: str) -> Parsed:
    """The free-form answer of a completion (strict, as lm-eval's strict match): the first number on the line after
    the last ``answer is:``, or that line's text where it holds no number; a completion that is one number alone
    (a label-only student's) is that number. Never raises; the value is normalised (``normalize_answer``)."""
    matches = list(_FREE_PHRASE.finditer(text))
    if not matches:
        bare = normalize_number(text.strip())
        return Parsed(None, None, "", bare) if bare is not None else Parsed(None, "no_answer_phrase", text.strip())
    found = matches[-1]
    rationale = _LEAD_IN.sub("", text[: found.start()]).strip()
    line = text[found.end():].split("\n", 1)[0]
    number = _NUMBER.search(line)
    value = normalize_number(number.group(0)) if number else normalize_answer(line)
    return Parsed(None, None, rationale, value) if value is not None else Parsed(None, "no_number", rationale)


def flexible_answer(text: str) -> str | None:
    """The last number anywhere in a completion (lm-eval's flexible extract), normalised; None if there is none."""
    numbers = _NUMBER.findall(text or "")
    return normalize_number(numbers[-1]) if numbers else None


# ---------------------------------------------------------------------------------------------------------------
# Exemplars (data files written for this project, in scotd/exemplars/).


def load_exemplars(name_or_path: str, task: str) -> list[Exemplar]:
    """Read an exemplar JSONL (a key of ``scotd/exemplars`` or a path): generic rows plus a ``rationale``."""
    path = Path(name_or_path)
    if path.suffix != ".jsonl":
        ref = resources.files("scotd") / "exemplars" / f"{name_or_path}.jsonl"
        if not ref.is_file():
            raise TaskDataError(f"exemplars {name_or_path!r}: no such file in scotd/exemplars and not a .jsonl path")
        text, where = ref.read_text(encoding="utf-8"), f"scotd/exemplars/{name_or_path}.jsonl"
    else:
        try:
            text, where = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as err:
            raise TaskDataError(f"{path}: cannot read exemplars: {err}") from None
    exemplars = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            q = parse_generic(obj, task)
            rationale = obj.get("rationale")
            if not isinstance(rationale, str) or not rationale.strip() or "\n" in rationale:
                raise RowError("missing or multi-line 'rationale'")
        except (json.JSONDecodeError, RowError) as err:
            raise TaskDataError(f"{where}:{number}: {err}") from None
        exemplars.append(Exemplar(Question(q.id or f"{task}-ex{number}", task, q.text, q.choices, q.answer_index,
                                           q.answer),
                                  " ".join(rationale.split())))
    if not exemplars:
        raise TaskDataError(f"{where}: no exemplars")
    return exemplars


def normalize_text(text: str) -> str:
    """Key for matching questions across files (exemplar exclusion): case- and whitespace-insensitive."""
    return " ".join(text.lower().split())


def score_answer(run: str, q: Question, text: str, finish_reason: str | None = None) -> dict:
    """One evaluation answer as a PREDICTION_SCHEMA row, scored against ``q``'s gold answer (pure); ``finish_reason``
    "length" marks a failed answer as cut_at_limit. The eval stage writes these rows, and the report scores them
    again from their text."""
    parsed = mark_cut(parse_answer(text, len(q.choices)), finish_reason)
    gold = gold_key(q)
    return {"run": run, "question_id": q.id, "task": q.task, "text": text, "parsed_index": parsed.index,
            "parse_error": parsed.reason, "gold_index": q.answer_index, "correct": answers_match(parsed.key, gold),
            "parsed_answer": parsed.key, "gold_answer": gold,
            "flexible_answer": flexible_answer(text) if q.free_form else None}
