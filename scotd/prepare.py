"""The steps a stage starts with (``scotd.stages``): the models it needs made ready (a tiny model built from the
questions, an offline model installed from the package index) and the token budgets it needs sized from the data
(``scotd.limits``) when the config leaves them unset. Each does its work once: a rerun finds it done."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scotd import layout, limits
from scotd.runs import eval_runs

if TYPE_CHECKING:
    from scotd.experiment import Experiment


def teacher_budget(exp: Experiment) -> None:
    """``teacher.max_new_tokens``, when unset: twice the longest exemplar answer in the teacher's tokens."""
    if exp.cfg.teacher.max_new_tokens is None and "teacher.max_new_tokens" not in limits.read(exp.dir):
        exp.prepare_model(exp.cfg.teacher.model)  # its tokenizer counts the exemplars' tokens
        exp.size_budget("teacher.max_new_tokens", limits.teacher_budget(exp.exemplar_answer_tokens()),
                        "twice the longest exemplar answer in the teacher's tokens")


def eval_budget(exp: Experiment) -> None:
    """``eval.max_new_tokens``, when unset: from the kept corpus's rationales, or the teacher's budget without one."""
    if exp.cfg.eval.max_new_tokens is not None or "eval.max_new_tokens" in limits.read(exp.dir):
        return
    corpus = layout.corpus(layout.corpus_dir(exp.dir))
    if corpus.exists():
        exp.size_budget("eval.max_new_tokens", limits.eval_budget(limits.corpus_tokens(corpus)),
                        "the kept rationales' 99th-percentile length x 1.25 + 16")
    else:
        teacher_budget(exp)
        exp.size_budget("eval.max_new_tokens", exp.teacher_tokens(), "no corpus: the teacher's budget")


def teacher_stage(exp: Experiment) -> None:
    exp.prepare_model(exp.cfg.teacher.model)
    teacher_budget(exp)


def students_stage(exp: Experiment) -> None:
    """The students' base models (and a diverse selector's embedding model); the dev answers' budget."""
    for s in exp.cfg.students:
        exp.prepare_model(s.model)
        if s.method == "scotd" and s.selector == "diverse":
            exp.prepare_model(s.embedding_model)
    eval_budget(exp)


def eval_stage(exp: Experiment) -> None:
    """Every model an evaluation run or the judge asks that is not a trained student; the answers' budget."""
    for run in eval_runs(exp.cfg, exp.dir):
        if not run.student:
            exp.prepare_model(run.model)
    if exp.cfg.eval.judge_pairs:
        exp.prepare_model(exp.cfg.engine("judge").model)
    eval_budget(exp)
