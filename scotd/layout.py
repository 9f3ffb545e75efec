"""The experiment folder's layout: every path in it is a function here, as every hand-off file's columns are a
schema in ``scotd.schema``. No other module joins the folder's names.

```
config.yaml  timings.json  provenance.json  limits.json  report.{json,md,png}  report-*.png
questions/   {train,dev,eval}.parquet  summary.json  where.json                 (tasks stage)
teacher/     samples/block-*.parquet  sampling_summary.json  greedy/...         (teacher stage)
models/      tiny-<role>/                                                       (tiny models built here)
corpus/      corpus.parquet  labels.parquet  summary.json  <setting>/  greedy/  (corpus stage)
students/    <name>/{model,model-best}/  checkpoints.json  history.jsonl  train_rows.parquet
ray_train/   Ray Train's run folders                                            (students stage)
eval/        <run>/predictions.parquet  metrics.json  answers/                  (eval stage)
judge/       <a>__vs__<b>/pairs.jsonl  verdicts.parquet  summary.json  key.jsonl  annotate.jsonl
```

Functions take the experiment folder (``root``), or a unit's own folder where the code that writes it is handed
only that (a student's training job, an evaluation run, a judged pair, a teacher's output folder).
"""

from __future__ import annotations

from pathlib import Path

CONFIG, TIMINGS, PROVENANCE, LIMITS = "config.yaml", "timings.json", "provenance.json", "limits.json"
QUESTIONS, TEACHER, MODELS, CORPUS, STUDENTS, RAY_TRAIN, EVAL, JUDGE = (
    "questions", "teacher", "models", "corpus", "students", "ray_train", "eval", "judge")
REPORT_JSON, REPORT_MD = "report.json", "report.md"
REPORT_PLOTS = {"accuracy": "report.png", "n_curve": "report-n-curve.png", "selectors": "report-selectors.png",
                "methods": "report-methods.png"}
# The files the report stage writes into the experiment folder (a user's own files beside them stay).
REPORT_FILES = (REPORT_JSON, REPORT_MD, *REPORT_PLOTS.values())
STUDENT_META = "scotd_student.json"  # in each exported model folder: how the student was trained
SUMMARY = "summary.json"


def config(root: Path) -> Path:
    return root / CONFIG


def timings(root: Path) -> Path:
    return root / TIMINGS


def provenance(root: Path) -> Path:
    return root / PROVENANCE


def limits(root: Path) -> Path:
    return root / LIMITS


def report(root: Path, name: str = REPORT_MD) -> Path:
    """One of the report stage's files (``REPORT_FILES``)."""
    return root / name


# tasks stage


def questions_dir(root: Path) -> Path:
    return root / QUESTIONS


def questions(root: Path, split: str) -> Path:
    return root / QUESTIONS / f"{split}.parquet"


def where(root: Path) -> Path:
    """Question id -> the "file:line" it was read from."""
    return root / QUESTIONS / "where.json"


# teacher stage


def teacher_dir(root: Path, greedy: bool = False) -> Path:
    """The teacher's sampled rationales; ``greedy``: its one greedy rationale per question (corpus.greedy)."""
    return root / TEACHER / "greedy" if greedy else root / TEACHER


def samples(out_dir: Path) -> Path:
    """The folder of a teacher output folder's sample blocks."""
    return out_dir / "samples"


def new_block(folder: Path, prefix: str) -> Path:
    """A new Parquet file in a folder of blocks (teacher samples, evaluation answers), named so that files written
    by runs on other nodes, or a rerun, never collide."""
    import time
    import uuid

    return folder / f"{prefix}-{int(time.time())}-{uuid.uuid4().hex[:8]}.parquet"


def sampling_summary(out_dir: Path) -> Path:
    return out_dir / "sampling_summary.json"


def tiny_model(root: Path, role: str) -> Path:
    return root / MODELS / f"tiny-{role}"


# corpus stage


def corpus_dir(root: Path, setting: str | None = None) -> Path:
    """The corpus folder; ``setting``: another setting's corpus beside it (``corpus.also``), or ``greedy``."""
    return root / CORPUS / setting if setting else root / CORPUS


def corpus(folder: Path) -> Path:
    """The kept rationales of a corpus folder (``corpus_dir``)."""
    return folder / "corpus.parquet"


def labels(folder: Path) -> Path:
    """One row per training question with its gold (supervised) or the teacher's (few-shot) answer."""
    return folder / "labels.parquet"


def summary(folder: Path) -> Path:
    """A unit folder's counts: of the questions, a corpus, a judged pair."""
    return folder / SUMMARY


def card(folder: Path) -> Path:
    """A corpus folder's dataset card, a model folder's model card."""
    return folder / "README.md"


# students stage


def student_dir(root: Path, name: str) -> Path:
    return root / STUDENTS / name


def train_rows(student: Path) -> Path:
    """The rows a student trains on (its corpus after the selector)."""
    return student / "train_rows.parquet"


MODEL, MODEL_BEST = "model", "model-best"  # a student's exported models: the last epoch's, the dev-picked one's


def student_model(student: Path, subdir: str = MODEL) -> Path:
    """An exported model of a student: ``MODEL`` (the final epoch's) or ``MODEL_BEST`` (the dev-picked epoch's)."""
    return student / subdir


def student_meta(model: Path) -> Path:
    return model / STUDENT_META


def checkpoints(student: Path) -> Path:
    """Per-epoch dev accuracy and the epoch picked."""
    return student / "checkpoints.json"


def history(student: Path) -> Path:
    return student / "history.jsonl"


def progress(student: Path) -> Path:
    """Where a training student's rank 0 writes its position (epoch, step, loss) every few seconds."""
    return student / "progress.json"


# eval stage


def run_dir(root: Path, run: str) -> Path:
    """One evaluation run's folder (``EvalRun.dir``)."""
    return root / EVAL / run


def predictions(run: Path) -> Path:
    return run / "predictions.parquet"


def metrics(run: Path) -> Path:
    """Written last: its presence marks the run done."""
    return run / "metrics.json"


def answers(run: Path) -> Path:
    """The answers kept per engine call, so that a stopped run resumes."""
    return run / "answers"


def earlier_answers(run: Path) -> Path:
    """The answers of a run finished before answers were kept per call, taken from its predictions."""
    return answers(run) / "answers-earlier.parquet"


# the judge


def judge_dir(root: Path) -> Path:
    return root / JUDGE


def pair_dir(judge: Path, a: str, b: str) -> Path:
    """The folder of the judged pair of runs whose folder names (``EvalRun.dir``) are ``a`` and ``b``."""
    return judge / f"{a}__vs__{b}"


def pair_summaries(root: Path) -> list[Path]:
    """The summary.json of every judged pair of the experiment."""
    return sorted(judge_dir(root).glob(f"*/{SUMMARY}"))


def pair_file(pair: Path, name: str) -> Path:
    """A judged pair's files: pairs.jsonl, verdicts.parquet, summary.json (written last: the pair is judged),
    annotate.jsonl and key.jsonl (the export for people), people_summary.json."""
    return pair / name
