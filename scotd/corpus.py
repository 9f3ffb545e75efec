"""Corpus stage: teacher samples -> the rationales students train on. Filters are pure functions over row dicts.

Supervised setting: keep rationales whose parsed answer equals the gold label (the label is the gold one).
Few-shot setting: keep every rationale that parsed, labelled with the teacher's own answer (no gold labels used).
Then exact duplicates of the same question are dropped. ``corpus/labels.parquet`` holds one label per training
question for the label-only baseline: the gold label (supervised) or the teacher's majority answer (few-shot).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from scotd import layout
from scotd.cards import dataset_card
from scotd.config import CorpusConfig
from scotd.tracking import numbers
from scotd.prompts import letter, training_pair
from scotd.diversity import diversity, rationale_key
from scotd.schema import (CORPUS_SCHEMA, QUESTION_SCHEMA, SAMPLE_SCHEMA, read_parquet_files, to_table, write_table,
                          write_text)

if TYPE_CHECKING:
    from scotd.experiment import Experiment

log = logging.getLogger(__name__)


def with_answer_keys(rows: list[dict]) -> list[dict]:
    """Samples with ``parsed_answer`` and ``gold_answer`` (blocks written before free-form answers have indices
    only: their keys are the letters)."""
    def key(index):
        return letter(index) if index is not None else None

    return [r if r["parsed_answer"] is not None or r["gold_answer"] is not None or not r["choices"] else
            {**r, "parsed_answer": key(r["parsed_index"]), "gold_answer": key(r["gold_index"])} for r in rows]


def keep_correct(rows: list[dict]) -> list[dict]:
    """Supervised filter: rationales that reached the gold answer, labelled with it."""
    return [{**r, "label_index": r["gold_index"], "label": r["gold_answer"]} for r in rows
            if r["correct"] and r["rationale"].strip()]


def keep_parsed(rows: list[dict]) -> list[dict]:
    """Few-shot filter: every rationale with a parsed answer, labelled with the teacher's answer."""
    return [{**r, "label_index": r["parsed_index"], "label": r["parsed_answer"]} for r in rows
            if r["parsed_answer"] is not None and r["rationale"].strip()]


def dedup(rows: list[dict]) -> list[dict]:
    """Drop duplicates within a question: the same ``rationale_key`` and label; the first sample index survives."""
    seen, out = set(), []
    for r in sorted(rows, key=lambda r: (r["question_id"], r["sample_index"])):
        key = (r["question_id"], rationale_key(r["rationale"]), r["label"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def majority_labels(rows: list[dict]) -> dict[str, str]:
    """The teacher's most frequent parsed answer per question, as an answer key (ties: the lowest choice letter,
    or the smallest free-form answer in text order)."""
    votes: dict[str, Counter] = {}
    for r in rows:
        if r["parsed_answer"] is not None:
            votes.setdefault(r["question_id"], Counter())[r["parsed_answer"]] += 1
    return {qid: min(c, key=lambda k: (-c[k], k)) for qid, c in votes.items()}


def summarize(samples: list[dict], kept: list[dict], num_after_filter: int, filtered: list[dict] | None = None) -> dict:
    """The corpus's counts; ``diversity`` is that of the samples that passed the filter (``filtered``), before
    duplicates were dropped."""
    questions = {r["question_id"] for r in samples}
    kept_questions = {r["question_id"] for r in kept}
    failures = Counter(r["parse_error"] for r in samples if r["parse_error"] is not None)
    return {
        "questions": len(questions),
        "samples": len(samples),
        "sample_accuracy": sum(r["correct"] for r in samples) / len(samples) if samples else 0.0,
        "parse_failures": sum(failures.values()),
        "parse_failures_by_reason": dict(failures),
        "kept_after_filter": num_after_filter,
        "duplicates_removed": num_after_filter - len(kept),
        "kept": len(kept),
        "questions_with_kept_rationale": len(kept_questions),
        "share_questions_with_kept_rationale": len(kept_questions) / len(questions) if questions else 0.0,
        "mean_kept_per_question": len(kept) / len(kept_questions) if kept_questions else 0.0,
        "samples_per_question": len(samples) / len(questions) if questions else 0.0,
        # what the teacher spent per rationale a student can learn from (kept, duplicates dropped)
        "generated_tokens": sum(r["num_tokens"] for r in samples),
        "tokens_per_kept_rationale": sum(r["num_tokens"] for r in samples) / len(kept) if kept else 0.0,
        "diversity": diversity(kept if filtered is None else filtered),
    }


def with_training_text(row: dict) -> dict:
    """A corpus row with its ``prompt`` and ``completion``: the text a SCoTD student trains on."""
    prompt, completion = training_pair(row["question"], row["choices"], row["rationale"], row["label_index"],
                                       row["label"])
    return {**row, "prompt": prompt, "completion": completion}


def build_corpus(samples_dir: Path, cfg: CorpusConfig, out_dir: Path, question_ids: set[str] | None = None) -> dict:
    """Read the teacher's samples (of ``question_ids`` only, when given: the training split of this run, where an
    earlier run may have sampled more), filter, dedup, write corpus.parquet, labels.parquet and summary.json."""
    samples = with_answer_keys(read_parquet_files(samples_dir, SAMPLE_SCHEMA, "remove it and rerun the teacher "
                                                  "stage (scotd run CONFIG): the teacher samples its questions again")
                               .to_pylist())
    if question_ids is not None:
        other = len({r["question_id"] for r in samples} - question_ids)
        samples = [r for r in samples if r["question_id"] in question_ids]
        if other:
            log.info("corpus: samples of %d questions outside this run's training split left out", other)
    kept = filtered = keep_correct(samples) if cfg.setting == "supervised" else keep_parsed(samples)
    num_after_filter = len(kept)
    if cfg.dedup:
        kept = dedup(kept)
    if not kept:
        raise RuntimeError(f"corpus: no rationale survived the {cfg.setting} filter out of {len(samples)} samples "
                           f"in {samples_dir}; check the teacher (sample accuracy, parse failures)")
    write_table(to_table((with_training_text({k: r[k] for k in CORPUS_SCHEMA.names if k in r}) for r in kept),
                         CORPUS_SCHEMA), layout.corpus(out_dir))

    first = {}
    for r in samples:
        first.setdefault(r["question_id"], r)
    labels = ({qid: r["gold_answer"] for qid, r in first.items() if r["gold_answer"] is not None}
              if cfg.setting == "supervised" else majority_labels(samples))
    label_rows = [{"question_id": qid, "task": first[qid]["task"], "question": first[qid]["question"],
                   "choices": first[qid]["choices"],
                   "answer_index": ord(label) - ord("a") if first[qid]["choices"] else None,
                   "answer": None if first[qid]["choices"] else label} for qid, label in sorted(labels.items())]
    write_table(to_table(label_rows, QUESTION_SCHEMA), layout.labels(out_dir))

    summary = {"setting": cfg.setting, **summarize(samples, kept, num_after_filter, filtered),
               "labelled_questions": len(labels)}
    write_text(layout.summary(out_dir), json.dumps(summary, indent=2))
    log.info("corpus: %d of %d samples kept (%d questions with >=1, %.2f distinct rationales each), per-sample "
             "teacher accuracy %.1f%%", summary["kept"], summary["samples"], summary["questions_with_kept_rationale"],
             summary["diversity"]["distinct_per_question"], 100 * summary["sample_accuracy"])
    return summary


def stage_corpus(exp: Experiment) -> dict:
    """The corpus of this run's training questions in the experiment's setting, in each other setting a student
    asks for, and of the greedy rationales when the teacher wrote them."""
    train = {q.id for q in exp.questions("train")}
    samples = layout.samples(layout.teacher_dir(exp.dir))
    summary = build_corpus(samples, exp.cfg.corpus, layout.corpus_dir(exp.dir), train)
    for setting in sorted({s.setting for s in exp.cfg.students} - {"", exp.cfg.corpus.setting}):
        summary[setting] = build_corpus(samples, replace(exp.cfg.corpus, setting=setting),
                                        layout.corpus_dir(exp.dir, setting), train)
    greedy = layout.samples(layout.teacher_dir(exp.dir, greedy=True))
    if greedy.exists():
        summary["greedy"] = build_corpus(greedy, exp.cfg.corpus, layout.corpus_dir(exp.dir, "greedy"), train)
    for setting, of in [(None, summary)] + [(k, v) for k, v in summary.items() if isinstance(v, dict) and "kept" in v]:
        layout.card(layout.corpus_dir(exp.dir, setting)).write_text(dataset_card(exp.cfg, of))
    exp.tracker.log_metrics(numbers(summary, "corpus"))
    return summary
