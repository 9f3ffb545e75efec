"""Teacher sampling stage: N rationales per training question from a vLLM teacher running in Ray Data actors.

Pure row functions (``to_request``, ``from_response``) are wired into ``inference.generate_rows``. Output is written in
blocks: a block file holds only questions whose N samples are all present, so a rerun after a crash reads the
block files, skips the questions they hold and samples the rest; every (question, sample index) ends up exactly once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pyarrow.parquet as pq

from scotd.config import OutputConfig, ResourcesConfig, TeacherConfig
from scotd.inference import (EngineStats, Sampling, engine_spec, generate_rows, question_seed,
                             throughput_counters)
from scotd import layout, provenance
from scotd.diversity import diversity
from scotd.fit import too_long
from scotd.limits import warn_if_cut
from scotd.prompts import Exemplar, gold_key, mark_cut, parse_answer, stop_strings, teacher_prompt
from scotd.schema import SAMPLE_SCHEMA, read_parquet_files, to_table, write_table, write_text
from scotd.scoring import answers_match
from scotd.tasks import Question
from scotd.tracking import numbers

if TYPE_CHECKING:
    from scotd.experiment import Experiment

log = logging.getLogger(__name__)

# What to do about a block that cannot be read: its questions count as unsampled once it is gone.
BLOCK_FIX = "remove it and rerun (scotd run CONFIG): the teacher samples its questions again"


def to_request(q: Question, exemplars: list[Exemplar], cfg: TeacherConfig, n: int) -> dict:
    return {
        "prompt": teacher_prompt(q, exemplars),
        "seed": question_seed(cfg.seed, q.id),
        "n": n,
        "stop": json.dumps(stop_strings(len(q.choices), cfg.stop)),
        "question_id": q.id,
        "task": q.task,
        "question": q.text,
        "choices": json.dumps(list(q.choices)),
        "gold_index": -1 if q.answer_index is None else q.answer_index,
        "gold_answer": gold_key(q) or "",  # "": unlabelled
    }


def from_response(row: dict) -> dict:
    """One engine output row -> one SAMPLE_SCHEMA row (parsing never raises)."""
    choices = json.loads(str(row["choices"]))
    parsed = mark_cut(parse_answer(str(row["text"]), len(choices)), row["finish_reason"])
    gold = int(row["gold_index"])
    gold = None if gold < 0 else gold
    gold_answer = str(row["gold_answer"]) or None
    logprob = row["logprob_sum"]
    return {
        "question_id": str(row["question_id"]),
        "task": str(row["task"]),
        "sample_index": int(row["sample_index"]),
        "question": str(row["question"]),
        "choices": choices,
        "text": str(row["text"]),
        "rationale": parsed.rationale,
        "parsed_index": parsed.index,
        "parsed_answer": parsed.key,
        "gold_answer": gold_answer,
        "parse_error": parsed.reason,
        "gold_index": gold,
        "correct": answers_match(parsed.key, gold_answer),
        "logprob_sum": None if logprob is None else float(logprob),
        "logprob_mean": None if logprob is None or not int(row["num_tokens"]) else float(logprob) / int(row["num_tokens"]),
        "num_tokens": int(row["num_tokens"]),
        "finish_reason": None if row["finish_reason"] is None else str(row["finish_reason"]),
    }


def finished_question_ids(samples_dir: Path) -> set[str]:
    """Questions already sampled in earlier runs: every id in a block file (blocks hold complete questions only; a
    damaged block, or two blocks holding one question, is an error naming the file)."""
    return set(read_parquet_files(samples_dir, SAMPLE_SCHEMA, BLOCK_FIX).column("question_id").to_pylist())


def sample_rationales(questions: list[Question], exemplars: dict[str, list[Exemplar]], cfg: TeacherConfig,
                      resources: ResourcesConfig, model_path: str, out_dir: Path, *, block_questions: int | None = None,
                      num_samples: int | None = None, temperature: float | None = None,
                      on_block: Callable[[Path], None] | None = None,
                      cache_dir: str = OutputConfig.cache_dir, expected_tokens: float | None = None) -> dict:
    """Sample ``num_samples`` (default ``cfg.num_samples``) rationales per question into ``out_dir/samples``.

    ``on_block`` is called with each block file once it is complete (the job mirrors it to remote storage);
    ``expected_tokens``, a sample's expected length, gives the progress lines' time left until samples finish.
    Returns the sampling summary (also written to ``out_dir/sampling_summary.json``).
    """
    n = cfg.num_samples if num_samples is None else num_samples
    # One block per engine call by default: with a slow teacher, a crash loses at most the calls in flight.
    block_questions = block_questions or cfg.batch_size
    samples_dir = layout.samples(out_dir)
    samples_dir.mkdir(parents=True, exist_ok=True)
    done = finished_question_ids(samples_dir)
    pending = [q for q in questions if q.id not in done]
    budget = cfg.sample_budget if num_samples is None else None  # the greedy rationales: one per question
    log.info("teacher: %d questions, %d already sampled, %d to sample (n=%d%s)", len(questions), len(done),
             len(pending), n, f", up to {budget} samples in all" if budget else "")
    started = time.monotonic()
    totals = {"samples": 0, "generated_tokens": 0, "prompt_tokens": 0}
    engines = EngineStats()
    rounds = cfg.samples_per_round if cfg.samples_per_round and cfg.samples_per_round < n else 0
    sampling = Sampling(temperature=cfg.temperature if temperature is None else temperature, top_p=cfg.top_p,
                        max_new_tokens=cfg.max_new_tokens, per_round=rounds,
                        stop_when_repeated=cfg.stop_when_repeated, stop_at_distinct=cfg.stop_at_distinct or 0)
    spec = engine_spec(cfg, model_path, cache_dir, cfg.seed)
    sampled_now = 0
    while pending:
        if budget is None:
            wave = pending
        else:
            used, finished = samples_in(samples_dir), len(finished_question_ids(samples_dir))
            wave = budget_wave(pending, used, budget, n, used / finished if finished and rounds else None)
        if not wave:
            log.info("teacher: the sample budget (%d) is spent; %d training questions left unsampled", budget,
                     len(pending))
            break
        requests = [to_request(q, exemplars[q.task], cfg, n) for q in wave]
        _sample(requests, spec, sampling, cfg, resources, samples_dir, block_questions, on_block, totals, engines,
                expected_tokens=expected_tokens)
        sampled_now += len(wave)
        pending = pending[len(wave):]
    ended, ended_at = time.monotonic(), time.time()
    wall_s = ended - started
    summary = summarize_samples(samples_dir, wall_s=wall_s, **totals, num_sampled_now=sampled_now)
    summary["questions_left_unsampled"] = len(pending)
    if sampled_now and ended_at > engines.first_call_at:
        # From the first engine call's start to the end: engine start-up excluded, all stage overheads included.
        summary["steady_generated_tokens_per_s"] = totals["generated_tokens"] / (ended_at - engines.first_call_at)
        summary.update(engines.summary())
    write_text(layout.sampling_summary(out_dir), json.dumps(summary, indent=2))
    cut = summary["cut_at_limit"]
    log.info("teacher: %d samples of %d questions, per-sample accuracy %.1f%%, parse failures %d (%d cut at "
             "teacher.max_new_tokens=%d)", summary["samples"], summary["questions"], 100 * summary["sample_accuracy"],
             summary["parse_failures"], cut, cfg.max_new_tokens)
    warn_if_cut("teacher", cut, summary["samples"], "teacher.max_new_tokens", cfg.max_new_tokens)
    warn_if_repeated(summary["diversity"], n)
    return summary


def samples_in(samples_dir: Path) -> int:
    """Samples the teacher's blocks hold (each block: whole questions)."""
    return sum(pq.read_metadata(path).num_rows for path in samples_dir.glob("*.parquet"))


def budget_wave(pending: list[Question], used: int, budget: int, n: int, mean: float | None = None) -> list[Question]:
    """The next questions to sample under ``budget`` samples in all, ``used`` spent (pure): as many as the rest
    buys at ``n`` samples each, or at ``mean`` each (what questions took so far, where rounds stop some early);
    none once it buys less than one question. Each wave is one pass of the engines, so a budget takes a few."""
    left = budget - used
    per_question = max(mean or n, 1.0)
    count = int(left // per_question)
    return pending[:count] if count >= 1 else []


def _sample(requests: list[dict], spec, sampling: Sampling, cfg: TeacherConfig, resources: ResourcesConfig,
            samples_dir: Path, block_questions: int, on_block, totals: dict, engines: EngineStats, *,
            expected_tokens: float | None) -> None:
    """One pass of the engines over ``requests``: rows parsed into samples, written in blocks of whole questions."""
    counters = throughput_counters()
    by_question: dict[str, list[dict]] = {}
    complete: list[dict] = []
    for batch in generate_rows(requests, spec, sampling, cfg, num_cpus=resources.engine_cpus, run="teacher",
                               label="teacher", expected_tokens=expected_tokens):
        for i in range(len(batch["question_id"])):
            row = {k: batch[k][i] for k in batch}
            totals["samples"] += 1
            totals["generated_tokens"] += int(row["num_tokens"])
            if int(row["sample_index"]) == 0:
                totals["prompt_tokens"] += int(row["num_prompt_tokens"])
            rows = by_question.setdefault(str(row["question_id"]), [])
            rows.append(from_response(row))
            if rows[-1]["correct"]:
                counters["correct_samples"].inc(tags={"run": "teacher"})
            if rows[-1]["parse_error"] is not None:
                counters["parse_failures"].inc(tags={"run": "teacher"})
            if len(rows) == int(row["question_samples"]):  # every sample of the question, all rounds
                complete.extend(by_question.pop(str(row["question_id"])))
        engines.add(batch)
        if len({r["question_id"] for r in complete}) >= block_questions:
            _written(_write_block(samples_dir, complete), on_block)
            complete = []
    if complete:
        _written(_write_block(samples_dir, complete), on_block)
    if by_question:
        raise RuntimeError(f"teacher: {len(by_question)} questions came back with fewer samples than the engine "
                           "reported for them")


def warn_if_repeated(found: dict, n: int, share: float = 0.5) -> None:
    """One line with the teacher's diversity, and a warning naming what to change when more than ``share`` of its
    samples repeat another sample of the same question: more samples of such questions buy nothing."""
    if n < 2:
        return
    log.info("teacher: %.2f distinct rationales per question of %d samples; %.0f%% of the samples repeat another",
             found["distinct_per_question"], n, 100 * found["duplicate_share"])
    if found["duplicate_share"] > share:
        log.warning("teacher: %.0f%% of the samples repeat another sample of their question (%.2f distinct per "
                    "question of %d): more training questions (tasks[].max_train), fewer samples "
                    "(teacher.num_samples), more varied exemplars (tasks[].exemplars) or a higher "
                    "teacher.temperature would buy more distinct rationales", 100 * found["duplicate_share"],
                    found["distinct_per_question"], n)


def _write_block(samples_dir: Path, rows: list[dict]) -> Path:
    rows.sort(key=lambda r: (r["question_id"], r["sample_index"]))
    path = layout.new_block(samples_dir, "block")
    write_table(to_table(rows, SAMPLE_SCHEMA), path)
    return path


def _written(path: Path, on_block: Callable[[Path], None] | None) -> None:
    if on_block:
        on_block(path)


def summarize_samples(samples_dir: Path, *, wall_s: float, samples: int, generated_tokens: int,
                      prompt_tokens: int, num_sampled_now: int) -> dict:
    table = pq.read_table(samples_dir, schema=SAMPLE_SCHEMA) if any(samples_dir.glob("*.parquet")) else None
    rows = table.num_rows if table is not None else 0
    correct = sum(table.column("correct").to_pylist()) if rows else 0
    reasons = table.column("parse_error").to_pylist() if rows else []
    failures = sum(e is not None for e in reasons)
    questions = len(set(table.column("question_id").to_pylist())) if rows else 0
    samples_of = table.select(["question_id", "rationale"]).to_pylist() if rows else []
    return {
        "diversity": diversity(samples_of),
        "questions": questions,
        "samples": rows,
        "sample_accuracy": correct / rows if rows else 0.0,
        "parse_failure_rate": failures / rows if rows else 0.0,
        "parse_failures": failures,
        "cut_at_limit": reasons.count("cut_at_limit"),
        "questions_sampled_this_run": num_sampled_now,
        "samples_this_run": samples,
        "wall_s": round(wall_s, 2),
        "rationales_per_s": samples / wall_s if wall_s > 0 else 0.0,
        "generated_tokens_per_s": generated_tokens / wall_s if wall_s > 0 else 0.0,
        "prompt_tokens_per_s": prompt_tokens / wall_s if wall_s > 0 else 0.0,
    }


def stage_teacher(exp: Experiment) -> dict:
    """The teacher's samples of every training question whose prompt fits its engine (and its greedy rationales when
    the config asks), with the token budget sized from the exemplars when unset."""
    cfg = replace(exp.cfg.teacher, max_new_tokens=exp.teacher_tokens())
    provenance.record(exp.dir, provenance.units(exp.cfg, exp.dir)["teacher"])
    local = exp.model_path(cfg.model)
    model = exp.engine_model(local)
    shots = exp.all_exemplars()
    questions = exp.questions("train")
    left_out = too_long(exp.cfg, questions, lambda q: teacher_prompt(q, shots[q.task]), local,
                        chat_template=cfg.chat_template, stage="teacher", where=exp.where())
    questions = [q for q in questions if q.id not in left_out]
    push = lambda block: exp.mirror.push(str(block.relative_to(exp.dir)))  # noqa: E731 - each block as written
    exemplar_tokens = exp.exemplar_answer_tokens()
    expected = sum(exemplar_tokens) / len(exemplar_tokens) if exemplar_tokens else None
    summary = sample_rationales(questions, shots, cfg, exp.cfg.resources, model, layout.teacher_dir(exp.dir),
                                on_block=push, cache_dir=exp.cfg.output.cache_dir, expected_tokens=expected)
    summary["questions_left_out_prompt_too_long"] = len(left_out)
    if cfg.greedy_rationales:
        summary["greedy"] = sample_rationales(questions, shots, cfg, exp.cfg.resources, model,
                                              layout.teacher_dir(exp.dir, greedy=True), num_samples=1, temperature=0.0,
                                              on_block=push, cache_dir=exp.cfg.output.cache_dir,
                                              expected_tokens=expected)
    exp.tracker.log_metrics(numbers(summary, "teacher"))
    return summary
