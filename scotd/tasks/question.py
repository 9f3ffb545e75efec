"""The question record every task format becomes, the errors of reading one, and the fixed splits by id."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Question:
    """One question: multiple choice (``answer_index`` indexes ``choices``) or, with no choices, free-form (``answer``
    is the gold answer, a normalised number such as ``"1000"``). Gold is None when the split has no labels."""

    id: str
    task: str
    text: str
    choices: tuple[str, ...]
    answer_index: int | None
    answer: str | None = None

    @property
    def free_form(self) -> bool:
        return not self.choices

    @property
    def gold(self) -> int | str | None:
        """What a target renders: the choice index, or the free-form answer."""
        return self.answer if self.free_form else self.answer_index


class RowError(ValueError):
    """A row is malformed; the message is the fault without the location."""


class TaskDataError(ValueError):
    """A data file is malformed; the message names file:line and the fault."""


class SourceUnavailableError(TaskDataError):
    """A data source cannot be read at all here (no such file, no hub access), as opposed to malformed data."""


@dataclass(frozen=True)
class LoadResult:
    questions: list[Question]
    num_skipped: int
    skipped: list[str]  # "file:line: fault" for the first few skipped rows
    where: dict[str, str] = field(default_factory=dict)  # question id -> "file:line" it was read from


SPLITS = ("train", "dev", "eval")


def hash_split(question_id: str) -> str:
    """A fixed split of a single-file dataset by question id: 10 % eval, 10 % dev (for model selection), 80 % train.

    Depends on nothing but the id, so it is the same on every machine, in every run and for any subset.
    """
    bucket = int.from_bytes(hashlib.sha256(question_id.encode()).digest()[:4], "little") % 10
    return "eval" if bucket == 0 else "dev" if bucket == 1 else "train"


def carve_dev(train: list[Question], count: int) -> tuple[list[Question], list[Question]]:
    """(train without dev, dev): the ``count`` training questions whose id hashes lowest become the dev split.

    Depends only on the ids, so the same questions are held out in every run and on every machine; the training
    questions keep their order.
    """
    if count <= 0:
        return list(train), []
    ranked = sorted(train, key=lambda q: hashlib.sha256(q.id.encode()).digest())
    dev_ids = {q.id for q in ranked[:count]}
    return [q for q in train if q.id not in dev_ids], [q for q in train if q.id in dev_ids]


def content_id(q: Question, task: str, taken: set[str]) -> str:
    """The id of a row without one: ``<task>-`` and a digest of the question, its choices and its answer, so the
    same question has the same id in every file (a train file and an eval file that share questions show it, and
    evaluation leaves them out) and no two files' questions collide by their names or lines. The same question again
    in one file gets ``-2``, ``-3``, ... (pure but for ``taken``, the ids so far)."""
    digest = hashlib.sha256(json.dumps([q.text, list(q.choices), q.answer_index, q.answer],
                                       ensure_ascii=False).encode()).hexdigest()[:16]
    base, n = f"{task}-{digest}", 1
    while (f"{base}-{n}" if n > 1 else base) in taken:
        n += 1
    return f"{base}-{n}" if n > 1 else base
