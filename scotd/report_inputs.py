"""What the report reads, checked before a number is shown: each run's predictions file (its rows, the run that
wrote it, the questions it answers) and the experiment's evaluation questions with their gold answers."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from scotd import layout
from scotd.prompts import score_answer
from scotd.tasks import Question

log = logging.getLogger(__name__)


class ReportError(ValueError):
    """A predictions file that cannot be scored as its run's answers to the evaluation split."""


def read_predictions(path: Path, questions: dict[str, Question] | None, fingerprint: str | None = None) -> list[dict]:
    """The rows of one run's predictions file, refused (``ReportError`` naming the file) unless it is a Parquet
    file of PREDICTION_SCHEMA with exactly one row per evaluation question (``questions``: the evaluation split by
    id; None when the experiment's question file is absent, then only emptiness and repeats are checked) and,
    where the file and ``fingerprint`` both say, written by the run this experiment recorded. Every row is scored
    again from its text against the gold answer in ``questions``: a predictions file says what was answered, the
    question file what is right."""
    from scotd.schema import PREDICTION_SCHEMA, PREDICTIONS_FINGERPRINT, PREDICTIONS_RUN, read_table

    fix = "remove its folder and rerun the eval stage (scotd run CONFIG --stages eval,report)"
    if not path.is_file():
        raise ReportError(f"{path}: {'a folder, not a predictions file' if path.is_dir() else 'no such file'}; "
                          "remove it and rerun the eval stage (scotd run CONFIG --stages eval,report)")
    try:
        table = read_table(path, PREDICTION_SCHEMA)
        written = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
    except Exception as err:  # pyarrow's ArrowInvalid, a missing column, a type that does not cast
        raise ReportError(f"{path}: not a readable predictions file ({str(err).splitlines()[0]}); {fix}") from None
    if fingerprint and written.get(PREDICTIONS_FINGERPRINT, fingerprint) != fingerprint:
        raise ReportError(f"{path}: written by another run (the run {written.get(PREDICTIONS_RUN, '?')!r} of other "
                          f"settings than this experiment's records); {fix}")
    rows = table.to_pylist()
    if not rows:
        raise ReportError(f"{path}: no predictions in it; {fix}")
    ids = Counter(r["question_id"] for r in rows)
    repeated = [q for q, n in ids.items() if n > 1]
    if repeated:
        raise ReportError(f"{path}: {len(repeated)} question(s) answered more than once (e.g. {repeated[0]!r}); {fix}")
    if questions is None:
        return rows
    if set(ids) != set(questions):
        missing, foreign = set(questions) - set(ids), set(ids) - set(questions)
        raise ReportError(f"{path}: answers {len(ids)} questions, the evaluation split has {len(questions)} ("
                          f"{len(missing)} missing, {len(foreign)} not in it); the file is from another run of "
                          f"the experiment, or the question file was changed: {fix}")
    rescored = [r if r["parse_error"] == "prompt_too_long" else
                score_answer(r["run"], questions[r["question_id"]], r["text"],
                             "length" if r["parse_error"] == "cut_at_limit" else None) for r in rows]
    changed = sum(a["correct"] != b["correct"] for a, b in zip(rows, rescored))
    if changed:
        log.warning("%s: %d of %d answers were marked otherwise than their text scores against the gold answers "
                    "(the file was edited, or scored by an older scotd); the report uses the scores of the text",
                    path, changed, len(rows))
    return rescored


def eval_questions(root: Path) -> dict[str, Question] | None:
    """An experiment's evaluation questions by id, with their gold answers; None when its question file is absent
    (a ``ReportError`` names it when it cannot be read)."""
    from scotd.schema import QUESTION_SCHEMA, read_table

    path = layout.questions(root, "eval")
    if not path.is_file():
        return None
    try:
        rows = read_table(path, QUESTION_SCHEMA).to_pylist()
    except Exception as err:  # noqa: BLE001 - ArrowInvalid, a missing column: the file is not what the stage wrote
        raise ReportError(f"{path}: not a readable question file ({str(err).splitlines()[0]}); rerun the tasks stage "
                          "(scotd run CONFIG --stages tasks,report)") from None
    return {r["question_id"]: Question(r["question_id"], r["task"], r["question"], tuple(r["choices"]),
                                       r["answer_index"], r["answer"]) for r in rows}
