"""The tasks stage: each task's questions read from the first of its sources that can be read here, exemplar
questions dropped from training, the dev split held out, sizes capped, and ``questions/{train,dev,eval}.parquet``
written with ``where.json`` (the file and line of every question)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from scotd import layout, provenance, symbolic
from scotd.assets import MissingAssetError
from scotd.config import TaskConfig
from scotd.prompts import normalize_text
from scotd.schema import QUESTION_SCHEMA, to_table, write_table, write_text
from scotd.tasks import (SPLITS, LoadResult, SourceUnavailableError, TaskDataError, carve_dev, hash_split,
                         load_hf_questions, load_questions)

if TYPE_CHECKING:
    from scotd.experiment import Experiment

log = logging.getLogger(__name__)


def task_sources(task: TaskConfig, split: str) -> tuple[str, ...]:
    """The configured alternatives for a split's questions (``train`` serves the dev split too), in order."""
    configured = task.eval if split == "eval" else task.train
    return (configured,) if isinstance(configured, str) else tuple(configured)


def load_task_split(task: TaskConfig, split: str, cache_dir: Path) -> tuple[LoadResult, str]:
    """Questions of one split (with rows skipped and where each question was read), and the source: the first of
    the task's sources that can be read here (the log names it).

    A source that cannot be read at all (no such file, no hub access, a missing archive) passes to the next; when
    none is left, one error lists each with its reason. Malformed data in a source that exists is an error at once.
    """
    key = "eval" if split == "eval" else "train"
    sources = [s for s in task_sources(task, split) if s]
    if not sources:
        raise TaskDataError(f"tasks.{task.name}.{key}: no {split} data configured")
    reasons = []
    for source in sources:
        try:
            result = read_source(task, split, source, cache_dir)
        except (SourceUnavailableError, MissingAssetError) as err:
            reasons.append(str(err))
            continue
        log.info("task %s, %s split: %d questions from %s", task.name, split, len(result.questions), source)
        return result, source
    raise SourceUnavailableError(
        f"tasks.{task.name}.{key}: no source of {split} questions can be read here:\n  - " + "\n  - ".join(reasons)
        + f"\nGive a file you have: scotd run CONFIG tasks.<index>.{key}=/path/to/{split}.jsonl (format "
        f"{task.format}), or an 'hf:<dataset>:<split>' ref where the Hugging Face hub is reachable.")


def read_source(task: TaskConfig, split: str, source: str, cache_dir: Path) -> LoadResult:
    """One source's questions: ``offline:<dataset>:<split>`` (scotd.assets, cut by ``hash_split``; the dev split is
    the dataset's own), ``gen:<kind>:<split>:<steps>`` (scotd.symbolic: as many as the task uses),
    ``hf:<dataset>[:<config>]:<split>`` (the hub), or a file in the task's format."""
    if source.startswith("offline:"):
        from scotd.bigbench import ensure_dataset

        parts = source.split(":")
        key, wanted = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
        if wanted not in SPLITS:
            raise TaskDataError(f"tasks.{task.name}.{split}: {source!r}: expected offline:<dataset>:<{'|'.join(SPLITS)}>")
        wanted = "dev" if split == "dev" else wanted
        result = load_questions(ensure_dataset(key, cache_dir), "jsonl", task.name, skip_bad_rows=task.skip_bad_rows)
        return replace(result, questions=[q for q in result.questions if hash_split(q.id) == wanted])
    if source.startswith(symbolic.PREFIX):
        wanted = task.max_eval if split == "eval" else (task.max_train or 0) + task.max_dev
        if not wanted:
            raise TaskDataError(f"tasks.{task.name}.max_{'eval' if split == 'eval' else 'train'}: a generated task "
                             f"({source}) needs a count")
        generated = symbolic.generate(source, task.name, wanted)
        return LoadResult(generated, 0, [], {q.id: f"{source} #{i}" for i, q in enumerate(generated)})
    if source.startswith("hf:") or task.format == "hf":
        return load_hf_questions(source.removeprefix("hf:"), task.name, skip_bad_rows=task.skip_bad_rows,
                                 fmt=task.format)
    return load_questions(source, task.format, task.name, skip_bad_rows=task.skip_bad_rows)


def stage_tasks(exp: Experiment) -> dict:
    """Load every task, drop exemplar questions from training, hold out the dev split, cap sizes, write
    questions/{train,dev,eval}.parquet."""
    summary, splits, where = {}, {"train": [], "dev": [], "eval": []}, {}
    owners: dict[str, str] = {}  # question id -> the task that has it: samples, labels and scores are keyed by id
    for task in exp.cfg.tasks:
        shots = {normalize_text(e.question.text) for e in exp.exemplars(task)}
        loaded, source = (load_task_split(task, "train", exp.cache) if task.train
                          else (LoadResult([], 0, []), ""))
        train, skipped_train = loaded.questions, loaded.num_skipped
        where.update(loaded.where)
        kept = [q for q in train if normalize_text(q.text) not in shots]
        removed = len(train) - len(kept)
        if task.max_dev and not task.train:
            raise TaskDataError(f"tasks.{task.name}.max_dev: an evaluation-only task has no training questions to "
                             "carve a dev split from")
        if task.max_dev and source.startswith("offline:"):
            held = read_source(task, "dev", source, exp.cache)
            where.update(held.where)
            dev = [q for q in held.questions if normalize_text(q.text) not in shots][: task.max_dev]
        else:
            kept, dev = carve_dev(kept, task.max_dev)
        loaded, eval_source = load_task_split(task, "eval", exp.cache)
        evaluation, skipped_eval = loaded.questions, loaded.num_skipped
        where.update(loaded.where)
        held = {q.id for q in kept[: task.max_train]} | {q.id for q in dev}
        overlap = sum(q.id in held for q in evaluation)
        if overlap and overlap == len(evaluation):
            raise TaskDataError(f"tasks.{task.name}: every evaluation question of {eval_source} is also a training "
                                f"or dev question of {source}: give an evaluation file of other questions")
        if overlap:
            log.warning("task %s: %d evaluation questions of %s are also training or dev questions of %s; they are "
                        "left out of evaluation", task.name, overlap, eval_source, source)
        evaluation = [q for q in evaluation if q.id not in held]
        for q in kept[: task.max_train] + dev + evaluation[: task.max_eval]:
            if owners.setdefault(q.id, task.name) != task.name:
                raise TaskDataError(
                    f"tasks.{task.name}: question id {q.id!r} is also a question of task {owners[q.id]}; ids must "
                    "be unique across tasks (give one of them other files, or ids of its own)")
        splits["train"] += kept[: task.max_train]
        splits["dev"] += dev
        splits["eval"] += evaluation[: task.max_eval]
        summary[task.name] = {"train": len(kept[: task.max_train]), "dev": len(dev),
                              "eval": len(evaluation[: task.max_eval]),
                              "exemplar_questions_removed": removed,
                              "skipped_rows": skipped_train + skipped_eval,
                              "sources": {"train": source, "eval": eval_source}}
    for split, questions in splits.items():
        rows = [{"question_id": q.id, "task": q.task, "question": q.text, "choices": list(q.choices),
                 "answer_index": q.answer_index, "answer": q.answer} for q in questions]
        write_table(to_table(rows, QUESTION_SCHEMA), layout.questions(exp.dir, split))
    write_text(layout.summary(layout.questions_dir(exp.dir)), json.dumps(summary, indent=2))
    used = {q.id for questions in splits.values() for q in questions}
    write_text(layout.where(exp.dir), json.dumps({i: w for i, w in where.items() if i in used}))
    provenance.record(exp.dir, provenance.units(exp.cfg, exp.dir)["questions"])
    log.info("tasks: %s", summary)
    return summary
