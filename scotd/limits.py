"""Token budgets sized from the data where the config leaves them unset (None).

``teacher.max_new_tokens``: twice the longest exemplar answer (rationale and answer phrase) in the teacher's
tokens, at least 32: sampled rationales run longer than hand-written ones, and one cut at the budget has no answer.
``eval.max_new_tokens``: the kept corpus's rationales (teacher tokens, answer phrase included) at their 99th
percentile, x 1.25 + 16, at least 32: a student that learned them needs that much, with room for another
tokenizer; the teacher's budget when no corpus is built.

An explicit value always wins. A sized value is kept in the experiment's ``limits.json`` (so reruns use the same)
and written into its ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq

from scotd import layout
from scotd.config import ExperimentConfig
from scotd.schema import write_text

log = logging.getLogger(__name__)

FLOOR = 32


def teacher_budget(answer_tokens: list[int]) -> int:
    return max(FLOOR, 2 * max(answer_tokens, default=0))


def eval_budget(rationale_tokens: list[int]) -> int:
    if not rationale_tokens:
        return FLOOR
    ordered = sorted(rationale_tokens)
    p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
    return max(FLOOR, math.ceil(1.25 * p99) + 16)


def corpus_tokens(corpus: Path) -> list[int]:
    return pq.read_table(corpus, columns=["num_tokens"]).column(0).to_pylist()


def warn_if_cut(stage: str, cut: int, total: int, key: str, budget: int, share: float = 0.05) -> None:
    """One warning when more than ``share`` of a stage's completions stopped at the token budget before an
    answer: accuracy then measures the budget, and the key to raise is named."""
    if total and cut / total > share:
        log.warning("%s: %.1f%% of the completions (%d of %d) were cut at %s=%d before an answer; raise %s",
                    stage, 100 * cut / total, cut, total, key, budget, key)


def read(exp_dir: Path) -> dict[str, int]:
    path = layout.limits(exp_dir)
    return json.loads(path.read_text()) if path.exists() else {}


def save(exp_dir: Path, key: str, value: int) -> None:
    sized = read(exp_dir)
    sized[key] = int(value)
    write_text(layout.limits(exp_dir), json.dumps(sized, indent=1, sort_keys=True))


def forget(exp_dir: Path, keys: list[str]) -> None:
    """Drop the sized values of ``keys`` (the outputs they were sized from are being rebuilt: ``Stage.sizes``)."""
    sized = read(exp_dir)
    kept = {k: v for k, v in sized.items() if k not in keys}
    if kept != sized:
        write_text(layout.limits(exp_dir), json.dumps(kept, indent=1, sort_keys=True))


def resolved(cfg: ExperimentConfig, exp_dir: Path) -> ExperimentConfig:
    """``cfg`` with each unset budget replaced by the value sized for this experiment, where one was."""
    sized = read(exp_dir)
    teacher, evaluation = cfg.teacher, cfg.eval
    if teacher.max_new_tokens is None and "teacher.max_new_tokens" in sized:
        teacher = replace(teacher, max_new_tokens=sized["teacher.max_new_tokens"])
    if evaluation.max_new_tokens is None and "eval.max_new_tokens" in sized:
        evaluation = replace(evaluation, max_new_tokens=sized["eval.max_new_tokens"])
    return replace(cfg, teacher=teacher, eval=evaluation)
