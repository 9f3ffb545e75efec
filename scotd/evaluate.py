"""Evaluation stage: every model answers the evaluation split through the same Ray Data + vLLM path.

Runs: the teacher (few-shot prompt), each distinct student base model before training (zero-shot student prompt)
and each trained student; greedily, and with ``eval.self_consistency = k`` also by self-consistency (k sampled
answers, majority vote over the parsed answers). Each run writes ``eval/<run>/predictions.parquet``
(PREDICTION_SCHEMA) and ``metrics.json``; the report recomputes its numbers from the predictions. The raw answers
are kept as engine calls finish (``eval/<run>/answers/``), so a killed evaluation resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from scotd import layout, limits, provenance
from scotd.config import EngineConfig
from scotd.fit import too_long
from scotd.inference import EngineSpec, Sampling, engine_spec, generate_rows, question_seed
from scotd.limits import warn_if_cut
from scotd.prompts import parse_answer, score_answer, stop_strings, student_prompt, teacher_prompt
from scotd.runs import EvalRun, eval_runs
from scotd.schema import (ANSWER_SCHEMA, PREDICTION_SCHEMA, PREDICTIONS_FINGERPRINT, PREDICTIONS_RUN,
                          CorruptFileError, check_parquet_folder, read_table, to_table, write_table, write_text)
from scotd.scoring import metrics_of
from scotd.tasks import Question

if TYPE_CHECKING:
    from scotd.experiment import Experiment

log = logging.getLogger(__name__)


def eval_request(q: Question, prompt: str, samples: int = 1, seed: int = 0) -> dict:
    return {"prompt": prompt, "seed": seed, "n": samples, "stop": json.dumps(stop_strings(len(q.choices))),
            "question_id": q.id}


def vote(texts: list[str], num_choices: int) -> tuple[int, bool]:
    """Self-consistency: the position in ``texts`` of the answer to report and whether the vote was tied.

    The majority answer among the parseable completions wins; a tie goes to the answer that appeared first (a
    deterministic rule that favours no letter). If nothing parses, the first completion is reported (a failure).
    """
    parsed = [parse_answer(t, num_choices).key for t in texts]  # letters, or normalised free-form answers
    counts: dict[str, int] = {}
    for index in parsed:
        if index is not None:
            counts[index] = counts.get(index, 0) + 1
    if not counts:
        return 0, False
    best = max(counts.values())
    winners = [i for i, c in counts.items() if c == best]
    first = min(parsed.index(w) for w in winners)  # dict order is first appearance, min() makes it explicit
    return first, len(winners) > 1


def score(run: str, questions: dict[str, Question], qid: str, text: str, finish_reason: str | None = None) -> dict:
    """One PREDICTION_SCHEMA row (pure); ``finish_reason`` "length" marks a failed answer as cut_at_limit."""
    return score_answer(run, questions[qid], text, finish_reason)


# What to do about an answers file that cannot be read: its questions count as unanswered once it is gone.
ANSWERS_FIX = "remove it and rerun (scotd run CONFIG): the run asks its questions again"


def answered(answers_dir: Path) -> dict[str, list[tuple[int, str, str | None]]]:
    """The answers earlier runs of this evaluation run kept: question id -> (sample index, text, finish reason)."""
    texts: dict[str, list[tuple[int, str, str | None]]] = {}
    for path in check_parquet_folder(answers_dir, ANSWER_SCHEMA, ANSWERS_FIX):
        try:
            rows = read_table(path, ANSWER_SCHEMA).to_pylist()
        except Exception as err:  # noqa: BLE001 - a damaged page (snappy, thrift) shows only on reading
            raise CorruptFileError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]}); "
                                   f"{ANSWERS_FIX}") from None
        for r in rows:
            texts.setdefault(r["question_id"], []).append((r["sample_index"], r["text"], r["finish_reason"]))
    return texts


def done_on(run_dir: Path, question_ids) -> bool:
    """Whether the run in ``run_dir`` finished (``metrics.json``) on exactly these questions; one made before a task
    was added or its ``max_eval`` changed is redone from the answers it kept (``evaluate_run``)."""
    if not layout.metrics(run_dir).exists():
        return False
    try:
        done = read_table(layout.predictions(run_dir), PREDICTION_SCHEMA).column("question_id").to_pylist()
    except (OSError, ValueError):
        return False  # predictions missing or unreadable: built again
    return set(done) == set(question_ids)


def earlier_predictions(run_dir: Path, samples: int) -> dict[str, list[tuple[int, str, str | None]]]:
    """A finished greedy run's answers from its predictions (runs written before answers were kept in files): the
    text of each question asked, cut at the budget where its parse error says so."""
    path = layout.predictions(run_dir)
    if samples != 1 or not path.exists() or not layout.metrics(run_dir).exists():
        return {}
    try:
        rows = read_table(path, PREDICTION_SCHEMA).to_pylist()
    except (OSError, ValueError):
        return {}
    return {r["question_id"]: [(0, r["text"], "length" if r["parse_error"] == "cut_at_limit" else "stop")]
            for r in rows if r["parse_error"] != "prompt_too_long"}


def evaluate_run(run: EvalRun, questions: list[Question], prompt_fn: Callable[[Question], str], spec: EngineSpec,
                 engine: EngineConfig, *, max_new_tokens: int, num_cpus: float, run_dir: Path,
                 temperature: float = 0.0, left_out: set[str] = frozenset(), repetition_penalty: float = 1.0,
                 on_file: Callable[[Path], None] | None = None, expected_tokens: float | None = None,
                 fingerprint: str | None = None) -> dict:
    """Answers of one model on ``questions``: greedy (``run.samples`` 1), or the majority vote of ``run.samples``
    answers sampled at ``temperature``, on ``engine``'s pool; writes predictions and metrics into
    ``run_dir``. Questions in ``left_out`` (prompts that do not fit the engine, ``scotd.fit``) are not
    asked: each is a failure with the reason ``prompt_too_long``, so every run still answers the same questions.

    Answers are kept as engine calls finish (``answers/``, ``on_file`` called with each file), so a rerun after a
    crash asks only the questions not yet answered; ``metrics.json``, written last, marks the run done."""
    samples, name = run.samples, run.run
    by_id = {q.id: q for q in questions}
    if done_on(run_dir, by_id.keys()):
        log.info("eval %s: already done, skipping", name)
        return json.loads(layout.metrics(run_dir).read_text())
    answers_dir = layout.answers(run_dir)
    kept = answered(answers_dir)
    earlier = {qid: found for qid, found in earlier_predictions(run_dir, samples).items() if qid not in kept}
    if earlier:  # kept as an answers file first: from here on the run is redone from its answers alone
        write_table(to_table(({"question_id": qid, "sample_index": i, "text": t, "finish_reason": f}
                              for qid, found in sorted(earlier.items()) for i, t, f in found), ANSWER_SCHEMA),
                    layout.earlier_answers(run_dir))
    layout.metrics(run_dir).unlink(missing_ok=True)  # the run is done again only once it is whole
    texts = {qid: found for qid, found in answered(answers_dir).items() if qid in by_id and len(found) == samples}
    asked = [q for q in questions if q.id not in left_out and q.id not in texts]
    if texts:
        log.info("eval %s: %d questions answered by an earlier run, %d to ask", name, len(texts), len(asked))
    requests = [eval_request(q, prompt_fn(q), samples, question_seed(0, q.id)) for q in asked]
    sampling = Sampling(temperature=temperature if samples > 1 else 0.0, max_new_tokens=max_new_tokens,
                        logprobs=False, repetition_penalty=repetition_penalty)
    pending: dict[str, list[tuple[int, str, str | None]]] = {}
    for batch in generate_rows(requests, replace(spec, enable_prefix_caching=True), sampling, engine,
                               num_cpus=num_cpus, run=f"eval:{name}", label=f"eval {name}",
                               expected_tokens=expected_tokens):
        complete = []
        for qid, index, text, finish in zip(batch["question_id"], batch["sample_index"], batch["text"],
                                            batch["finish_reason"]):
            found = pending.setdefault(str(qid), [])
            found.append((int(index), str(text), None if finish is None else str(finish)))
            if len(found) == samples:
                complete.append(str(qid))
                texts[str(qid)] = pending.pop(str(qid))
        if complete:  # every sample of each question: a rerun never sees half a vote
            path = layout.new_block(answers_dir, "answers")
            write_table(to_table(({"question_id": qid, "sample_index": i, "text": t, "finish_reason": f}
                                  for qid in complete for i, t, f in texts[qid]), ANSWER_SCHEMA), path)
            if on_file:
                on_file(path)
    if pending:
        raise RuntimeError(f"eval {name}: {len(pending)} questions came back with fewer than {samples} answers")
    rows, ties = [], 0
    for qid, answers in sorted(texts.items()):
        ordered = sorted(answers)
        chosen, tied = vote([t for _, t, _ in ordered], len(by_id[qid].choices)) if samples > 1 else (0, False)
        rows.append(score(name, by_id, qid, ordered[chosen][1], ordered[chosen][2]))
        ties += tied
    for qid in sorted(left_out & by_id.keys()):
        rows.append({**score(name, by_id, qid, ""), "parse_error": "prompt_too_long"})
    rows.sort(key=lambda r: r["question_id"])
    table = to_table(rows, PREDICTION_SCHEMA)
    if fingerprint:  # what the run was built from (provenance): the report refuses a file another run wrote
        table = table.replace_schema_metadata({PREDICTIONS_RUN: name, PREDICTIONS_FINGERPRINT: fingerprint})
    write_table(table, layout.predictions(run_dir))
    metrics = {"run": name, "model": spec.model, "samples": samples, "max_new_tokens": max_new_tokens,
               "repetition_penalty": repetition_penalty, **metrics_of(rows)}
    if samples > 1:
        metrics.update(temperature=temperature, tied_votes=ties)
    write_text(layout.metrics(run_dir), json.dumps(metrics, indent=2))
    log.info("eval %s: accuracy %.1f%% (%d/%d), parse failures %d (%d cut at eval.max_new_tokens=%d)", name,
             100 * metrics["accuracy"], metrics["correct"], metrics["total"], metrics["parse_failures"],
             metrics["cut_at_limit"], max_new_tokens)
    warn_if_cut(f"eval {name}", metrics["cut_at_limit"], metrics["total"], "eval.max_new_tokens", max_new_tokens)
    return metrics


def stage_eval(exp: Experiment) -> list[dict]:
    """Every evaluation run of the experiment (``scotd.runs.eval_runs``), each skipped when already done."""
    cfg = exp.cfg
    questions = exp.questions("eval")
    shots = exp.all_exemplars()
    student_shots = {t.name: t.student_shots for t in cfg.tasks}
    where = exp.where()
    budget = exp.eval_tokens()
    corpus = layout.corpus(layout.corpus_dir(exp.dir))
    lengths = limits.corpus_tokens(corpus) if corpus.exists() else []
    expected = sum(lengths) / len(lengths) if lengths else None  # an answer like the kept rationales
    students = {s.name: s for s in cfg.students}
    results = []
    units = provenance.units(cfg, exp.dir)
    for run in eval_runs(cfg, exp.dir):
        teacher = run.kind == "teacher"
        model = (str(layout.student_model(layout.student_dir(exp.dir, run.student), run.model_subdir)) if run.student
                 else exp.model_path(run.model))
        # a trained student is asked as it was trained (inside its chat template, if so)
        engine = cfg.engine("teacher_eval" if teacher else "student_eval", students.get(run.student))
        spec = engine_spec(engine, exp.engine_model(model), cfg.output.cache_dir, cfg.teacher.seed)
        # a few-shot prompted untrained student; otherwise the task's student_shots
        prompt_fn = ((lambda q: teacher_prompt(q, shots[q.task])) if teacher
                     else (lambda q, k=run.shots: student_prompt(q, shots[q.task][: k or student_shots[q.task]])))
        unit = units[f"eval {run.run}"]
        provenance.record(exp.dir, unit)
        run_dir = layout.run_dir(exp.dir, run.dir)
        done = done_on(run_dir, {q.id for q in questions})
        left_out = set() if done else too_long(cfg, questions, prompt_fn, model, chat_template=spec.chat_template,
                                               stage=f"eval {run.run}", where=where)
        results.append(evaluate_run(run, questions, prompt_fn, spec, engine, max_new_tokens=budget,
                                    num_cpus=cfg.resources.engine_cpus, run_dir=run_dir,
                                    temperature=cfg.eval.self_consistency_temperature, left_out=left_out,
                                    repetition_penalty=cfg.eval.repetition_penalty,
                                    on_file=lambda path: exp.mirror.push(str(path.relative_to(exp.dir))),
                                    expected_tokens=expected,
                                    fingerprint=unit.fingerprint))
        exp.mirror.push(str(layout.run_dir(Path(), run.dir)))
    return results
