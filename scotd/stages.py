"""The job's stages, in order, in one table: what each runs, what it writes, what ``--restart`` removes, whether it
needs the Ray cluster, and which token budgets are sized from its outputs. The pipeline runs it; provenance (the
order of stages, what a restart removes), limits (which sized budgets a restart forgets) and the layout test read
it. Stages hand off only through files in the experiment folder (``scotd.layout``, ``scotd.schema``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from scotd import layout, prepare
from scotd.corpus import stage_corpus
from scotd.evaluate import stage_eval
from scotd.judge import stage_judge
from scotd.report import stage_report
from scotd.student.stage import stage_students
from scotd.tasks_stage import stage_tasks
from scotd.teacher import stage_teacher

if TYPE_CHECKING:
    from scotd.experiment import Experiment


@dataclass(frozen=True)
class Stage:
    name: str
    steps: tuple[Callable[[Experiment], object], ...]  # run in order: what the stage needs ready, then its work
    outputs: tuple[str, ...]  # what it writes (relative to the experiment folder; pushed when output.dir is a URI)
    removes: tuple[str, ...]  # what --restart of it, or of an earlier stage, removes (models/ is shared: it stays)
    ray: bool = False  # a local Ray cluster starts with the first stage that needs one
    sizes: tuple[str, ...] = ()  # budgets sized from its outputs: sized again after a restart that removes them


STAGES = (
    Stage("tasks", (stage_tasks,), (layout.QUESTIONS,), (layout.QUESTIONS,)),
    Stage("teacher", (prepare.teacher_stage, stage_teacher), (layout.TEACHER, layout.MODELS), (layout.TEACHER,), ray=True,
          sizes=("teacher.max_new_tokens",)),
    Stage("corpus", (stage_corpus,), (layout.CORPUS,), (layout.CORPUS,), sizes=("eval.max_new_tokens",)),
    Stage("students", (prepare.students_stage, stage_students), (layout.STUDENTS, layout.MODELS), (layout.STUDENTS, layout.RAY_TRAIN),
          ray=True),
    Stage("eval", (prepare.eval_stage, stage_eval, stage_judge), (layout.EVAL, layout.JUDGE), (layout.EVAL, layout.JUDGE), ray=True),
    Stage("report", (stage_report,), layout.REPORT_FILES, layout.REPORT_FILES),
)
NAMES = tuple(s.name for s in STAGES)
BY_NAME = {s.name: s for s in STAGES}


def from_on(name: str) -> tuple[Stage, ...]:
    """``name`` and every later stage: what a ``--restart name`` redoes."""
    return STAGES[NAMES.index(name):]
