"""Report stage: recompute every number from the saved predictions and write report.json, report.md and plots.

Accuracy intervals are Wilson score intervals at 95 % (binomial; sensible at small n and near 0 or 1). Differences
between a SCoTD student and the other rows are tested on the same questions with McNemar's exact test (two-sided
binomial test on the questions where exactly one of the two is right); p >= 0.05 is marked "within noise".

One report covers one experiment folder, or several combined (``combine``: the paper configs are one task per
experiment, so the method x task table needs all of them); every path it names is relative to its own folder.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING


from scotd import layout, provenance
from scotd.cards import write_model_cards
from scotd.report_inputs import ReportError, eval_questions, read_predictions
from scotd.report_markdown import render_markdown
from scotd.report_rows import ReportRow, method_by_task, paired_differences, studies
from scotd.runs import EvalRun, eval_runs
from scotd.schema import write_text
from scotd.scoring import answers_match, bootstrap_interval, metrics_of, wilson_interval

if TYPE_CHECKING:
    from scotd.experiment import Experiment

log = logging.getLogger(__name__)


def build_report(exp_dir: Path, runs: list[EvalRun], fingerprints: dict[str, str] | None = None) -> dict:
    """The report of ``runs`` in table order (extra runs only in the checkpoint table); each row starts from its
    run's fields (``EvalRun.row``). The report is written to ``exp_dir``; in a combined report each run also names
    its ``experiment`` and the ``experiment_dir`` its files are in."""
    rows, correct_by_run, expected = [], {}, {}
    for run in runs:
        root = Path(run.experiment_dir or exp_dir)
        if root not in expected:
            expected[root] = eval_questions(root)
        run_dir = layout.run_dir(root, run.dir)
        path = layout.predictions(run_dir)
        preds = read_predictions(path, expected[root], (fingerprints or {}).get(run.dir))
        settings = json.loads(layout.metrics(run_dir).read_text()) if layout.metrics(run_dir).exists() else {}
        correct_by_run[run.run] = {p["question_id"]: bool(p["correct"]) for p in preds}
        m = metrics_of(preds)
        low, high = wilson_interval(m["correct"], m["total"])
        by_task: dict[str, list[dict]] = {}
        for p in preds:
            by_task.setdefault(p["task"], []).append(p)
        flags = [bool(p["correct"]) for p in sorted(preds, key=lambda p: p["question_id"])]
        results = {**m, **{k: settings[k] for k in ("max_new_tokens", "repetition_penalty") if k in settings},
                    "ci95": [low, high], "bootstrap95": list(bootstrap_interval(flags)),
                    "predictions": os.path.relpath(path, exp_dir),
                    "by_task": {t: metrics_of(ps)["accuracy"] for t, ps in sorted(by_task.items())}}
        free = [p for p in preds if p["gold_index"] is None and p["gold_answer"] is not None]
        if free:  # free-form answers: lm-eval's flexible extraction beside the strict score
            results["free_form"] = {"questions": len(free), "strict": sum(p["correct"] for p in free) / len(free),
                                     "flexible": sum(answers_match(p["flexible_answer"], p["gold_answer"])
                                                     for p in free) / len(free)}
        kept = kept_per_question(root, run) if run.student is not None else None
        if kept is not None:
            results["kept_per_question"] = kept
        rows.append(ReportRow(run, results))
    main = [r for r in rows if not r.run.extra]
    combined = any(run.experiment for run in runs)
    by_experiment: dict[str | None, list[ReportRow]] = {}
    for r in main:  # SCoTD rows are compared with rows of their own experiment (the same questions) only
        by_experiment.setdefault(r.run.experiment, []).append(r)
    report = {"experiment": " + ".join(str(e) for e in by_experiment) if combined else exp_dir.name,
              "rows": [r.as_dict() for r in main], "extra_rows": [r.as_dict() for r in rows if r.run.extra],
              "differences": [d for group in by_experiment.values() for d in paired_differences(group, correct_by_run)],
              "studies": studies(main), "method_by_task": method_by_task(main),
              "checkpoints": checkpoint_selection(exp_dir, rows)}
    experiments = {r.run.experiment: Path(r.run.experiment_dir or exp_dir) for r in rows}
    report["judge"] = [judged for name, root in experiments.items() for judged in judge_results(exp_dir, root, name)]
    if not combined:
        report.update(experiment_files(exp_dir))
    else:
        report["experiments"] = [{"name": name, "dir": os.path.relpath(root, exp_dir), **experiment_files(root)}
                                 for name, root in experiments.items()]
    return report


def experiment_files(root: Path) -> dict:
    """The corpus summary and stage wall times of one experiment folder, where present."""
    out = {}
    for key, path in (("corpus", layout.summary(layout.corpus_dir(root))), ("stage_seconds", layout.timings(root))):
        if path.exists():
            out[key] = json.loads(path.read_text())
    return out


def judge_results(exp_dir: Path, root: Path, experiment: str | None) -> list[dict]:
    """The judge summaries of one experiment folder, each naming its verdicts file; in a combined report the runs
    carry their experiment's name, as in the main table."""
    out = []
    for path in layout.pair_summaries(root):
        verdicts = layout.pair_file(path.parent, "verdicts.parquet")
        summary = {**json.loads(path.read_text()), "verdicts": os.path.relpath(verdicts, exp_dir)}
        if experiment is not None:
            summary.update(a=f"{experiment}/{summary['a']}", b=f"{experiment}/{summary['b']}")
        out.append(summary)
    return out


def kept_per_question(root: Path, run: EvalRun) -> float | None:
    """Rationales per question a SCoTD student actually trained on (questions with at least one): the selection
    ``student_rows`` recorded in the exported student's scotd_student.json, or for selector "all" the corpus of the
    student's setting. None for label-only students and when the files are missing."""
    if run.kind != "scotd":
        return None
    meta = layout.student_meta(layout.student_model(layout.student_dir(root, run.student)))
    selection = json.loads(meta.read_text()).get("selection", {}) if meta.exists() else {}
    if "per_question" in selection:
        return selection["per_question"]
    if (run.selector or "all") != "all":
        return None
    main = layout.summary(layout.corpus_dir(root))
    summary = json.loads(main.read_text()) if main.exists() else {}
    setting = run.setting or summary.get("setting")
    if summary.get("setting") != setting:
        other = layout.summary(layout.corpus_dir(root, str(setting)))
        summary = json.loads(other.read_text()) if other.exists() else {}
    return summary.get("mean_kept_per_question")


def checkpoint_selection(exp_dir: Path, rows: list[ReportRow]) -> list[dict]:
    """Per trained student: dev accuracy by epoch, the best and last epochs, which one the main table shows and the
    evaluation accuracy of each checkpoint that was evaluated."""
    out = []
    for r in rows:
        run = r.run
        if run.extra or not r.trained:
            continue
        path = layout.checkpoints(layout.student_dir(Path(run.experiment_dir or exp_dir), run.student))
        chosen = json.loads(path.read_text()) if path.exists() else {}
        accuracy = {run.checkpoint: r.accuracy}
        accuracy.update({x.run.checkpoint: x.accuracy for x in rows
                         if x.run.extra and x.run.student == run.student and x.run.samples == 1
                         and x.run.experiment == run.experiment})
        out.append({"run": run.run, "samples": run.samples, "shown": run.checkpoint,
                    "last_epoch": chosen.get("last_epoch"),
                    "best_epoch": chosen.get("best_epoch"), "dev_questions": chosen.get("dev_questions", 0),
                    "dev": chosen.get("dev", []), "eval_accuracy": accuracy, "seen": chosen.get("seen")})
    return out


def stage_report(exp: Experiment) -> dict:
    """The report of the experiment's evaluation runs, with the stage times so far and its own; each trained
    student's model card gets its evaluation table."""
    started = time.monotonic()
    runs = eval_runs(exp.cfg, exp.dir)
    fingerprints = {run.dir: found for run in runs
                    if (found := provenance.recorded_fingerprint(exp.dir, f"eval {run.run}"))}  # as recorded
    report = write_report(exp.dir, runs, own_seconds=lambda: time.monotonic() - started, fingerprints=fingerprints)
    cards = write_model_cards(exp.dir, exp.cfg, report["rows"] + report["extra_rows"])
    exp.tracker.log_metrics({f"eval.{r['dir']}.{key}": value for r in report["rows"] + report["extra_rows"]
                             for key, value in (("accuracy", r["accuracy"]), ("ci95_low", r["ci95"][0]),
                                                ("ci95_high", r["ci95"][1]),
                                                ("parse_failure_rate", r["parse_failure_rate"]))})
    exp.mirror.push(*(str(card.relative_to(exp.dir)) for card in cards))
    return report


def write_report(exp_dir: Path, runs: list[EvalRun], own_seconds=None, fingerprints: dict[str, str] | None = None) -> dict:
    """Build the report of ``runs`` (see ``build_report``; ``fingerprints``: run folder -> what its run was built
    from) and write report.json, report.md and the plots into ``exp_dir``; ``own_seconds()``, when given, is the
    report stage's time so far, shown with the other stages'."""
    from scotd.plots import plot_accuracy, plot_study

    exp_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(exp_dir, runs, fingerprints)
    plots = layout.REPORT_PLOTS
    if report["rows"]:
        plot_accuracy(report, layout.report(exp_dir, plots["accuracy"]))
        report["chart"] = plots["accuracy"]
    study = report["studies"]
    if study["methods"]:
        plot_study(study["methods"], "method", layout.report(exp_dir, plots["methods"]),
                   "accuracy by method and student model", series="model")
        report["chart_methods"] = plots["methods"]
    if study["n_curve"]:
        plot_study(study["n_curve"], "n", layout.report(exp_dir, plots["n_curve"]), "accuracy against N")
        report["chart_n_curve"] = plots["n_curve"]
    if study["selectors"]:
        plot_study(study["selectors"], "selector", layout.report(exp_dir, plots["selectors"]),
                   "accuracy by corpus selector")
        report["chart_selectors"] = plots["selectors"]
    if own_seconds is not None and "stage_seconds" in report:
        report["stage_seconds"]["report"] = round(own_seconds(), 1)
    write_text(layout.report(exp_dir, layout.REPORT_JSON), json.dumps(report, indent=2))
    write_text(layout.report(exp_dir), render_markdown(report))
    return report


def combine(out_dir: Path, experiments: list[tuple[Path, list[EvalRun]]]) -> dict:
    """One report, written to ``out_dir``, of the runs of several experiment folders: ``experiments`` holds each
    folder with its runs (as ``write_report`` takes them). Each run is labelled ``<folder name>/<run>``; SCoTD rows
    are compared with rows of their own experiment; the method x task table gathers runs of the same name."""
    names = [folder.name for folder, _ in experiments]
    if len(set(names)) != len(names):
        raise ReportError(f"experiment folders need distinct names to label their runs, got {names}: copy or link one "
                          "under another name")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".scotd-write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ReportError(f"--out {out_dir}: cannot write there ({err.strerror or err})") from None
    return write_report(out_dir, [run.in_experiment(folder) for folder, runs in experiments for run in runs])
