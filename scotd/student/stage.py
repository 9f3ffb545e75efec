"""The students stage: each student's training rows (the label file, the corpus, or the corpus after its
selector) and the Ray Train job that fine-tunes it (``scotd.student.train``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from scotd import layout, provenance
from scotd.cards import write_model_cards
from scotd.prompts import gold_key, render_answer, student_prompt
from scotd.schema import CORPUS_SCHEMA, read_table, to_table, write_table
from scotd.selectors import by_question, hf_embedder, select
from scotd.tasks import Question

if TYPE_CHECKING:
    from scotd.experiment import Experiment

log = logging.getLogger(__name__)


def stage_students(exp: Experiment) -> list[dict]:
    from scotd.student.train import StudentJob, train_students

    shots = exp.all_exemplars()
    student_shots = {t.name: t.student_shots for t in exp.cfg.tasks}
    dev = [{"prompt": student_prompt(q, shots[q.task][: student_shots[q.task]]), "num_choices": len(q.choices),
            "gold": gold_key(q)} for q in exp.questions("dev")]
    budget = exp.eval_tokens()  # dev answers are scored with the evaluation budget
    train_kinds = {q.free_form for q in exp.questions("train")}
    summary_path = layout.summary(layout.corpus_dir(exp.dir))
    corpus_summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    jobs = []
    units = provenance.units(exp.cfg, exp.dir)
    for s in exp.cfg.students:
        out = layout.student_dir(exp.dir, s.name)
        if layout.student_meta(layout.student_model(out)).exists():
            log.info("student %s: already trained, skipping", s.name)
            continue
        unit = units[f"student {s.name}"]
        provenance.record(exp.dir, unit)
        rows, selection = student_rows(exp, s)
        meta = {**prompt_formats(train_kinds, s.method == "scotd"),
                "base_model": s.model, "corpus_summary": corpus_summary,
                "selection": selection}
        relative = str(rows.relative_to(exp.dir))
        exp.mirror.push(relative)  # workers on other nodes read it from output.dir
        jobs.append(StudentJob(s, exp.model_path(s.model), rows_path=exp.mirror.remote(relative),
                               out_dir=str(out), storage_path=exp.mirror.remote(layout.RAY_TRAIN), meta=meta,
                               dev=dev, dev_max_new_tokens=budget, tracking=exp.tracker.for_student(),
                               run_name=train_run_name(unit)))
    results = train_students(jobs) if jobs else []
    write_model_cards(exp.dir, exp.cfg)  # the report stage adds each student's evaluation table
    return results


def train_run_name(unit: provenance.Unit) -> str:
    """Ray Train's run of a student (``unit``: ``student <name>``): its name and a digest of every value its
    training depends on. Ray Train resumes a run from its latest checkpoint, so a student retrained with other
    settings (its folder removed, or ``--restart students``) must never find the old run's checkpoints."""
    return f"{unit.name.split(' ', 1)[1]}-{unit.fingerprint[:12]}"


def student_rows(exp: Experiment, s) -> tuple[Path, dict]:
    """The file a student trains on: the label file (label-only), the corpus, or the corpus after the student's
    selector (written to ``students/<name>/train_rows.parquet``), with counts of what was kept."""
    setting = exp.cfg.student_setting(s)
    # another setting's corpus is built by stage_corpus from the same samples, beside the experiment's own
    folder = layout.corpus_dir(exp.dir, setting if setting != exp.cfg.corpus.setting else None)
    corpus = layout.corpus(folder)
    if s.method != "scotd":
        return layout.labels(folder), {"selector": "labels", "setting": setting}
    if s.selector == "all":
        return corpus, {"selector": "all", "setting": setting}
    if s.selector == "greedy":
        greedy = layout.corpus(layout.corpus_dir(exp.dir, "greedy"))
        if not greedy.exists():
            raise ValueError(f"student {s.name}: selector greedy needs teacher.greedy_rationales: true "
                             f"({greedy} is missing)")
        return greedy, {"selector": "greedy"}
    rows = read_table(corpus, CORPUS_SCHEMA).to_pylist()
    embed = hf_embedder(exp.model_path(s.embedding_model)) if s.selector == "diverse" else None
    kept = select(rows, s.selector, k=s.selector_k, seed=s.seed, embed=embed)
    if not kept:
        raise RuntimeError(f"student {s.name}: selector {s.selector} (k={s.selector_k}) kept no rationale")
    out = layout.train_rows(layout.student_dir(exp.dir, s.name))
    write_table(to_table(kept, CORPUS_SCHEMA), out)
    questions = len(by_question(kept))
    summary = {"selector": s.selector, "k": s.selector_k, "rationales": len(kept), "questions": questions,
               "per_question": len(kept) / questions, "of_rationales": len(rows)}
    log.info("student %s: %s", s.name, summary)
    return out, summary


def prompt_formats(free_form: set[bool], scotd: bool) -> dict:
    """What a student's ``scotd_student.json`` shows of its input and target: ``prompt_format`` for the kind of
    question it trained on (multiple choice, else free-form), and ``prompt_format_free_form`` beside it when it trained
    on both kinds."""
    def example(free: bool) -> dict:
        q = (Question("example", "example", "{question}", (), None, "{answer}") if free
             else Question("example", "example", "{question}", ("{choice 1}", "{choice 2}"), 0))
        return {"input": student_prompt(q), "target": render_answer("<rationale>" if scotd else None, q.gold)}

    formats = {"prompt_format": example(free_form == {True})}
    if free_form == {True, False}:
        formats["prompt_format_free_form"] = example(True)
    return formats
