"""Evaluation stage: every model answers the evaluation split greedily through the same Ray Data + vLLM path.

Runs: the teacher (few-shot prompt), each distinct student base model before training (zero-shot student prompt)
and each trained student. Each run writes ``eval/<run>/predictions.parquet`` (PREDICTION_SCHEMA) and
``metrics.json``; the report recomputes its numbers from the predictions.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Callable

from scotd.engine import EngineSpec, Sampling, generate, stream_batches
from scotd.prompts import parse_answer, stop_strings
from scotd.schema import PREDICTION_SCHEMA, to_table, write_table
from scotd.tasks import Question

log = logging.getLogger(__name__)


def run_dir_name(run: str) -> str:
    """A filesystem-safe folder name for a run label such as ``student:scotd`` or ``untrained:offline:x``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run)


def eval_request(q: Question, prompt: str) -> dict:
    return {"prompt": prompt, "seed": 0, "n": 1, "stop": json.dumps(stop_strings(len(q.choices))),
            "question_id": q.id}


def score(run: str, questions: dict[str, Question], qid: str, text: str) -> dict:
    """One PREDICTION_SCHEMA row (pure)."""
    q = questions[qid]
    parsed = parse_answer(text, len(q.choices))
    return {"run": run, "question_id": qid, "task": q.task, "text": text, "parsed_index": parsed.index,
            "parse_error": parsed.reason, "gold_index": q.answer_index,
            "correct": parsed.index is not None and parsed.index == q.answer_index}


def metrics_of(rows: list[dict]) -> dict:
    total = len(rows)
    correct = sum(r["correct"] for r in rows)
    failures = sum(r["parse_error"] is not None for r in rows)
    return {"total": total, "correct": correct, "accuracy": correct / total if total else 0.0,
            "parse_failures": failures, "parse_failure_rate": failures / total if total else 0.0}


def evaluate_run(run: str, questions: list[Question], prompt_fn: Callable[[Question], str], spec: EngineSpec,
                 *, max_new_tokens: int, batch_size: int, num_cpus: float, out_dir: Path,
                 replicas: int | tuple[int, int] = 1, resource: str | None = None) -> dict:
    """Greedy answers of one model on ``questions``; writes predictions and metrics under ``out_dir/<run>``."""
    import ray

    run_dir = out_dir / run_dir_name(run)
    if (run_dir / "metrics.json").exists():
        log.info("eval %s: already done, skipping", run)
        return json.loads((run_dir / "metrics.json").read_text())
    by_id = {q.id: q for q in questions}
    ds = ray.data.from_items([eval_request(q, prompt_fn(q)) for q in questions])
    out = generate(ds, replace(spec, enable_prefix_caching=True), Sampling(temperature=0.0,
                   max_new_tokens=max_new_tokens, logprobs=False), replicas=replicas, batch_size=batch_size,
                   num_cpus=num_cpus, run=f"eval:{run}", resource=resource)
    rows = []
    for batch in stream_batches(out, total=len(questions), label=f"eval {run}"):
        rows.extend(score(run, by_id, str(qid), str(text)) for qid, text in zip(batch["question_id"], batch["text"]))
    rows.sort(key=lambda r: r["question_id"])
    write_table(to_table(rows, PREDICTION_SCHEMA), run_dir / "predictions.parquet")
    metrics = {"run": run, "model": spec.model, **metrics_of(rows)}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("eval %s: accuracy %.1f%% (%d/%d), parse failures %d", run, 100 * metrics["accuracy"],
             metrics["correct"], metrics["total"], metrics["parse_failures"])
    return metrics
