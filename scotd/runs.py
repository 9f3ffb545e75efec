"""The evaluation runs of an experiment: which model answers the evaluation questions how, and where its answers go.

One ``EvalRun`` per row of the report: the teacher (few-shot), each distinct student base model before training
(zero-shot, and few-shot with ``eval.untrained_shots``), each trained student, and with ``eval.self_consistency = k``
each of those again by majority vote over k sampled answers. The evaluation stage answers them, the judge compares
pairs of them and the report reads their predictions.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from scotd import layout

if TYPE_CHECKING:  # a type only: scotd.config checks its run folders with this module
    from scotd.config import ExperimentConfig


@dataclass(frozen=True)
class EvalRun:
    """One evaluation run. ``run`` is its label in the report; ``dir`` its folder under ``eval/``; ``samples`` 1 is a
    greedy answer, more a majority vote over that many sampled answers. Student runs name the ``student``, the
    checkpoint folder answering (``model_subdir``) and what trained it (selector, corpus setting, N)."""

    run: str
    kind: Literal["teacher", "untrained", "scotd", "label_only"]
    model: str  # the model as the config names it
    dir: str = ""
    samples: int = 1
    shots: int = 0  # exemplars before each question (an untrained student prompted few-shot)
    extra: bool = False  # only in the checkpoint-selection table, not a main row
    student: str | None = None
    model_subdir: str = layout.MODEL
    checkpoint: Literal["best", "last"] | None = None
    epoch: int | None = None
    selector: str | None = None
    selector_k: int | None = None
    setting: str | None = None
    num_samples: int | None = None
    # In a report over several experiments: the experiment's name, its folder and the run's own label there.
    experiment: str | None = None
    experiment_dir: str | None = None
    experiment_run: str | None = None

    def __post_init__(self) -> None:
        if not self.dir:
            object.__setattr__(self, "dir", run_dir_name(self.run))

    @property
    def self_consistency(self) -> bool:
        return self.samples > 1

    def row(self) -> dict:
        """The run's fields as a report row starts from (unset optional fields left out)."""
        row = {"run": self.run, "kind": self.kind, "model": self.model, "dir": self.dir, "extra": self.extra,
               "samples": self.samples}
        if self.shots:
            row["shots"] = self.shots
        for key in ("student", "checkpoint", "epoch", "selector", "selector_k", "setting", "num_samples",
                    "experiment", "experiment_dir", "experiment_run"):
            value = getattr(self, key)
            if value is not None or (key in ("checkpoint", "epoch") and self.student is not None):
                row[key] = value
        if self.student is not None:
            row["model_subdir"] = self.model_subdir  # the exported folder that answered
        return row

    def in_experiment(self, folder: Path) -> EvalRun:
        """This run in a report over several experiments: labelled ``<folder name>/<run>``."""
        return dataclasses.replace(self, run=f"{folder.name}/{self.run}", experiment=folder.name,
                                   experiment_run=self.run, experiment_dir=str(folder.resolve()))


def run_dir_name(run: str) -> str:
    """A filesystem-safe folder name for a run label such as ``student:scotd`` or ``untrained:offline:x``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run)


def eval_runs(cfg: ExperimentConfig, exp_dir: Path | None = None) -> list[EvalRun]:
    """The evaluation runs of an experiment, in report order.

    A student whose best dev checkpoint is another epoch than its last (``students/<name>/checkpoints.json``) is
    evaluated twice: the checkpoint ``eval.checkpoint`` names is its main row (labelled with the student's name), the
    other is an extra row ``<name>@last`` or ``<name>@best`` that only the checkpoint-selection table shows (none
    with ``eval.both_checkpoints`` off).
    """
    runs: list[EvalRun] = []
    if cfg.eval.teacher:
        runs.append(EvalRun("teacher", "teacher", cfg.teacher.model))
    if cfg.eval.untrained:
        for model in dict.fromkeys(s.model for s in cfg.students):
            runs.append(EvalRun(f"untrained:{model}", "untrained", model))
            if cfg.eval.untrained_shots:
                k = cfg.eval.untrained_shots
                runs.append(EvalRun(f"untrained:{model} {k}-shot", "untrained", model, shots=k))
    extra: list[EvalRun] = []
    for s in cfg.students:
        student = EvalRun(s.name, s.method, s.model, student=s.name, selector=s.selector, selector_k=s.selector_k,
                          setting=cfg.student_setting(s), num_samples=cfg.teacher.num_samples)
        path = layout.checkpoints(layout.student_dir(exp_dir, s.name)) if exp_dir else None
        chosen = json.loads(path.read_text()) if path and path.exists() else None
        if not chosen or chosen["best_epoch"] in (None, chosen["last_epoch"]):
            runs.append(dataclasses.replace(student, checkpoint="best" if chosen and chosen["best_epoch"] else "last",
                                            epoch=chosen["last_epoch"] if chosen else None))
            continue
        both = {"last": dataclasses.replace(student, checkpoint="last", epoch=chosen["last_epoch"]),
                "best": dataclasses.replace(student, checkpoint="best", epoch=chosen["best_epoch"],
                                            model_subdir=layout.MODEL_BEST)}
        shown = cfg.eval.checkpoint
        other = "last" if shown == "best" else "best"
        runs.append(dataclasses.replace(both[shown], dir=run_dir_name(f"{s.name}@{shown}")))
        if cfg.eval.both_checkpoints:
            extra.append(dataclasses.replace(both[other], run=f"{s.name}@{other}", dir="", extra=True))
    k = cfg.eval.self_consistency
    voted = [dataclasses.replace(r, run=f"{r.run} sc@{k}", samples=k, dir=run_dir_name(f"{r.dir} sc@{k}"))
             for r in runs] if k > 1 else []
    return runs + extra + voted
