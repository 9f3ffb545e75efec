import json

import pyarrow.parquet as pq
import pytest

from scotd.scoring import metrics_of
from scotd.evaluate import score, vote
from scotd.scoring import mcnemar_p, wilson_interval
from scotd.report_markdown import render_markdown
from scotd.report import write_report
from scotd.runs import EvalRun
from scotd.schema import PREDICTION_SCHEMA, to_table, write_table
from scotd.tasks import Question


@pytest.mark.parametrize("correct, total, low, high", [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634),
                                                       (10, 10, 0.7225, 1.0), (0, 0, 0.0, 0.0)])
def test_wilson_interval(correct, total, low, high):
    assert wilson_interval(correct, total) == pytest.approx((low, high), abs=1e-4)


def test_report_recounts_predictions(tmp_path):
    questions = {f"q{i}": Question(f"q{i}", "t", "?", ("x", "y", "z"), i % 3) for i in range(9)}
    texts = {"a": [" So the answer is: (a)"] * 9, "b": [" (a)", " (b)", " (c)"] * 3}
    for run, outs in texts.items():
        rows = [score(run, questions, qid, text) for qid, text in zip(questions, outs)]
        write_table(to_table(rows, PREDICTION_SCHEMA), tmp_path / "eval" / run / "predictions.parquet")
    report = write_report(tmp_path, [EvalRun(run="a", kind="scotd", model="m", dir="a"),
                                     EvalRun(run="b", kind="label_only", model="m", dir="b")])
    assert [(r["correct"], r["total"]) for r in report["rows"]] == [(3, 9), (9, 9)]
    assert json.loads((tmp_path / "report.json").read_text()) == report
    md = (tmp_path / "report.md").read_text()
    assert md == render_markdown(report) and "| a | scotd | m | 33.3 % |" in md and "| 9 / 9 |" in md
    # a is right on q0, q3, q6 only; b on all 9: 6 discordant questions, all for b
    low, high = report["differences"][0].pop("bootstrap95")
    assert -1.0 <= low <= -6 / 9 <= high < 0  # the paired bootstrap interval holds the difference, excludes 0
    assert report["differences"] == [{"run": "a", "versus": "b", "questions": 9, "difference": -6 / 9,
                                      "only_run_right": 0, "only_versus_right": 6, "p_value": 2 / 64,
                                      "within_noise": False}]
    assert f"| a | b | -66.7 points | {100 * low:+.1f} to {100 * high:+.1f} | 0 | 6 | 0.031 | significant |" in md
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000 and "![accuracy by run](report.png)" in md


@pytest.mark.parametrize("b, c, p", [(0, 0, 1.0), (3, 3, 1.0), (0, 6, 2 / 64), (1, 9, 22 / 1024), (5, 0, 2 / 32)])
def test_mcnemar_exact(b, c, p):
    assert mcnemar_p(b, c) == pytest.approx(p)


def test_metrics_count_parse_failures():
    q = {"q": Question("q", "t", "?", ("x", "y"), 0)}
    rows = [score("r", q, "q", "gibberish"), score("r", q, "q", " (a)")]
    assert metrics_of(rows) == {"total": 2, "correct": 1, "accuracy": 0.5, "parse_failures": 1,
                                "parse_failure_rate": 0.5, "cut_at_limit": 0}


@pytest.mark.parametrize("texts, chosen, tied", [
    ([" (b)", " So the answer is: (a)", " (b)"], 0, False),         # majority b, first shown at 0
    ([" x", " (c)", " (a)", " (a)", " (c)"], 1, True),               # c and a tie 2-2: c appeared first
    ([" nothing", " (a)", " none"], 1, False),                      # unparseable answers do not vote
    ([" nothing", " none"], 0, False),                              # nothing parses: the first, a failure
])
def test_self_consistency_vote(texts, chosen, tied):
    assert vote(texts, 3) == (chosen, tied)


def test_report_has_a_per_task_table_when_there_are_several_tasks(tmp_path):
    questions = {f"q{i}": Question(f"q{i}", "orig" if i < 4 else "contrast", "?", ("x", "y"), 0) for i in range(8)}
    rows = [score("a", questions, qid, " (a)" if i in (0, 1, 2, 4) else " (b)") for i, qid in enumerate(questions)]
    write_table(to_table(rows, PREDICTION_SCHEMA), tmp_path / "eval" / "a" / "predictions.parquet")
    report = write_report(tmp_path, [EvalRun(run="a", kind="scotd", model="m", dir="a")])
    assert report["rows"][0]["by_task"] == {"contrast": 0.25, "orig": 0.75}
    assert "| run | contrast | orig |" in (tmp_path / "report.md").read_text()
    assert "| a | 25.0 % | 75.0 % |" in (tmp_path / "report.md").read_text()


def test_bootstrap_intervals():
    from scotd.scoring import bootstrap_interval, paired_bootstrap

    low, high = bootstrap_interval([True] * 50 + [False] * 50)
    assert 0.38 < low < 0.45 and 0.55 < high < 0.62  # about 0.5 +- 1.96 * 0.05
    assert bootstrap_interval([True] * 10) == (1.0, 1.0) and bootstrap_interval([]) == (0.0, 0.0)
    assert paired_bootstrap([True] * 20, [True] * 20) == (0.0, 0.0)
    low, high = paired_bootstrap([True] * 40 + [False] * 60, [False] * 100)
    assert 0.3 < low < 0.4 < high <= 0.5  # about 0.4 +- 1.96 * 0.049


def test_study_tables_and_plots_from_a_finished_experiment(tmp_path):
    """An N-sweep, the selectors and a label-only baseline: the tables are built from the rows, each number equals
    the recount of its predictions file, and the plots are PNGs."""
    questions = {f"q{i}": Question(f"q{i}", "t", "?", ("x", "y"), 0) for i in range(10)}
    students = [("n1", "scotd", "first_n", 1, 3), ("n5", "scotd", "first_n", 5, 5), ("all", "scotd", "all", 5, 8),
                ("rand", "scotd", "random", 5, 6), ("lik", "scotd", "likelihood", 5, 7),
                ("labels", "label_only", "all", 5, 4)]
    runs = []
    for name, kind, selector, k, right in students:
        rows = [score(name, questions, qid, " (a)" if i < right else " (b)") for i, qid in enumerate(questions)]
        write_table(to_table(rows, PREDICTION_SCHEMA), tmp_path / "eval" / name / "predictions.parquet")
        runs.append(EvalRun(run=name, kind=kind, model="m", dir=name, student=name, checkpoint="last",
                     epoch=3, selector=selector, selector_k=k, num_samples=30))
    report = write_report(tmp_path, runs)
    study = report["studies"]
    assert [(x["n"], x["accuracy"]) for x in study["n_curve"]] == [(1, 0.3), (5, 0.5), (30, 0.8)]
    assert {x["selector"]: x["accuracy"] for x in study["selectors"]} == {"all": 0.8, "random": 0.6,
                                                                          "likelihood": 0.7}
    assert {x["method"]: x["accuracy"] for x in study["methods"]} == {"SCoTD": 0.8, "label-only": 0.4}
    for table in study.values():
        for x in table:
            preds = pq.read_table(tmp_path / "eval" / x["run"] / "predictions.parquet")
            assert x["accuracy"] == sum(preds["correct"].to_pylist()) / preds.num_rows
    md = (tmp_path / "report.md").read_text()
    assert "| m | 30 | all | 80.0 % |" in md and "| m | random | 5 |  | rand | 60.0 % |" in md
    assert "| SCoTD | 80.0 % |" in md and "| label-only | 40.0 % |" in md
    for x in study["methods"]:  # the methods plot's error bars: each row's Wilson interval
        assert x["ci95"] == list(wilson_interval(round(x["accuracy"] * 10), 10))
    for png in ("report-n-curve.png", "report-selectors.png", "report-methods.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000 and f"]({png})" in md


def test_ablation_rows_are_compared_with_the_main_scotd_row_only():
    from scotd.report_rows import ReportRow, paired_differences

    rows = [ReportRow(EvalRun(run, kind, "m", student=run, selector=selector), {})
            for run, kind, selector in (("all", "scotd", "all"), ("n1", "scotd", "first_n"),
                                        ("rand", "scotd", "random"), ("labels", "label_only", None))]
    predictions = {r.name: {"q0": True, "q1": r.name == "all"} for r in rows}
    assert [(d["run"], d["versus"]) for d in paired_differences(rows, predictions)] == [
        ("all", "n1"), ("all", "rand"), ("all", "labels")]
    # without a main row, each SCoTD row against the non-SCoTD rows
    assert [(d["run"], d["versus"]) for d in paired_differences(rows[1:], predictions)] == [
        ("n1", "labels"), ("rand", "labels")]


def write_runs(folder, students, questions, num_samples=8):
    """Predictions for student rows (name, kind, selector, k, setting, questions right); returns the report's runs."""
    runs = []
    for name, kind, selector, k, setting, right in students:
        rows = [score(name, questions, qid, " (a)" if i < right else " (b)") for i, qid in enumerate(questions)]
        write_table(to_table(rows, PREDICTION_SCHEMA), folder / "eval" / name / "predictions.parquet")
        runs.append(EvalRun(run=name, kind=kind, model="m", dir=name, student=name, checkpoint="last",
                     epoch=3, selector=selector, selector_k=k, setting=setting, num_samples=num_samples))
    return runs


def test_studies_compare_like_with_like_within_a_setting(tmp_path):
    """A supervised SCoTD student next to a few-shot N-sweep and selectors: it is neither a point of the few-shot
    N-curve nor a second 'all' row of the few-shot selector table; the method table keeps both settings apart."""
    questions = {f"q{i}": Question(f"q{i}", "t", "?", ("x", "y"), 0) for i in range(10)}
    runs = write_runs(tmp_path, [("all", "scotd", "all", 5, "fewshot", 8), ("sup", "scotd", "all", 5, "supervised", 2),
                                 ("n1", "scotd", "first_n", 1, "fewshot", 3),
                                 ("rand", "scotd", "random", 2, "fewshot", 6),
                                 ("open", "scotd", "open_ended", 2, "fewshot", 7),
                                 ("labels", "label_only", "all", 5, "fewshot", 4)], questions)
    study = write_report(tmp_path, runs)["studies"]
    assert [(x["group"], x["n"], x["run"]) for x in study["n_curve"]] == [("m (fewshot)", 1, "n1"),
                                                                          ("m (fewshot)", 8, "all")]
    assert [(x["group"], x["selector"], x["run"]) for x in study["selectors"]] == [
        ("m (fewshot)", "all", "all"), ("m (fewshot)", "random", "rand"), ("m (fewshot)", "open_ended", "open")]
    assert {x["method"]: x["run"] for x in study["methods"]} == {"SCoTD (fewshot)": "all", "SCoTD (supervised)": "sup",
                                                                 "label-only (fewshot)": "labels"}
    md = (tmp_path / "report.md").read_text()
    curve = md.split("## Rationales per question")[1].split("\n## ")[0]
    selectors = md.split("## Corpus selectors")[1].split("\n## ")[0]
    assert "| m (fewshot) | 8 | all | 80.0 % |" in curve and "| sup |" not in curve + selectors


def test_selector_table_shows_the_rationales_each_selector_kept(tmp_path):
    """Kept per question comes from what student_rows recorded in the exported student (selection.per_question) and,
    for all kept rationales, from the corpus summary of the student's own setting."""
    questions = {f"q{i}": Question(f"q{i}", "t", "?", ("x", "y"), 0) for i in range(4)}
    runs = write_runs(tmp_path, [("all", "scotd", "all", 5, "fewshot", 3), ("rand", "scotd", "random", 2, "fewshot", 2),
                                 ("sup", "scotd", "all", 5, "supervised", 1),
                                 ("sup-rand", "scotd", "random", 2, "supervised", 1)], questions)
    (tmp_path / "corpus" / "supervised").mkdir(parents=True)
    summary = {"setting": "fewshot", "questions": 4, "samples": 32, "sample_accuracy": 0.5, "kept": 14,
               "duplicates_removed": 0, "share_questions_with_kept_rationale": 1.0, "parse_failures": 0,
               "mean_kept_per_question": 3.5}
    (tmp_path / "corpus" / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "corpus" / "supervised" / "summary.json").write_text(
        json.dumps({"setting": "supervised", "mean_kept_per_question": 1.25}))
    for name, per_question in (("rand", 1.75), ("sup-rand", 1.0)):
        meta = tmp_path / "students" / name / "model" / "scotd_student.json"
        meta.parent.mkdir(parents=True)
        meta.write_text(json.dumps({"selection": {"selector": "random", "k": 2, "per_question": per_question}}))
    report = write_report(tmp_path, runs)
    kept = {x["run"]: x["kept_per_question"] for x in report["studies"]["selectors"]}
    assert kept == {"all": 3.5, "rand": 1.75, "sup": 1.25, "sup-rand": 1.0}
    md = (tmp_path / "report.md").read_text()
    assert "| m (fewshot) | random | 2 | 1.75 | rand | 50.0 % |" in md
    assert "| m (supervised) | all | all | 1.25 | sup | 25.0 % |" in md


def test_method_by_task_and_sources_in_one_experiment(tmp_path):
    """Two tasks (an original and its contrast set): the method x task table has a line per method, each cell the
    recount of the run's predictions on that task; Sources names every row's predictions file."""
    questions = {f"q{i}": Question(f"q{i}", "orig" if i < 4 else "contrast", "?", ("x", "y"), 0) for i in range(8)}
    right = {"teacher": {0, 1, 2, 3, 4, 5}, "untrained:m": {0}, "scotd": {0, 1, 2, 4}, "n1": {0, 4}}
    kinds = {"teacher": "teacher", "untrained:m": "untrained", "scotd": "scotd", "n1": "scotd"}
    runs = []
    for run, ok in right.items():
        rows = [score(run, questions, qid, " (a)" if i in ok else " (b)") for i, qid in enumerate(questions)]
        write_table(to_table(rows, PREDICTION_SCHEMA), tmp_path / "eval" / run / "predictions.parquet")
        runs.append(EvalRun(run=run, kind=kinds[run], model="m", dir=run,
                     **({"student": run, "checkpoint": "last", "selector": "first_n" if run == "n1" else "all", "selector_k": 1}
                        if kinds[run] == "scotd" else {})))
    report = write_report(tmp_path, runs)
    assert [(x["method"], x["by_task"]) for x in report["method_by_task"]] == [
        ("teacher", {"contrast": 0.5, "orig": 1.0}), ("untrained, zero-shot", {"contrast": 0.0, "orig": 0.25}),
        ("SCoTD", {"contrast": 0.25, "orig": 0.75})]  # n1 is an ablation row: not a method
    md = (tmp_path / "report.md").read_text()
    assert "| model | method | run | contrast | orig |" in md and "| m | SCoTD | scotd | 25.0 % | 75.0 % |" in md
    sources = md.split("## Sources")[1]
    for r in report["rows"]:
        assert f"| {r['run']} | eval/{r['dir']}/predictions.parquet |" in sources
        assert pq.read_table(tmp_path / r["predictions"]).num_rows == 8


def test_two_runs_of_one_method_and_model_keep_a_line_each(tmp_path):
    """Two SCoTD students of one model and setting (say, two learning rates): neither overwrites the other in the
    method table or its plot; each is named by its run."""
    questions = {f"q{i}": Question(f"q{i}", "t", "?", ("x", "y"), 0) for i in range(10)}
    runs = write_runs(tmp_path, [("lr-low", "scotd", "all", 5, "", 6), ("lr-high", "scotd", "all", 5, "", 8),
                                 ("labels", "label_only", "all", 5, "", 4)], questions)
    study = write_report(tmp_path, runs)["studies"]
    assert {x["method"]: x["accuracy"] for x in study["methods"]} == {
        "SCoTD (lr-low)": 0.6, "SCoTD (lr-high)": 0.8, "label-only": 0.4}
    md = (tmp_path / "report.md").read_text()
    assert "| SCoTD (lr-low) | 60.0 % |" in md and "| SCoTD (lr-high) | 80.0 % |" in md


def test_a_report_of_reference_rows_only_is_still_a_one_folder_report(tmp_path):
    """No main rows (only the teacher, shown in the checkpoint table's place): the title is the folder's name and
    its stage times are shown."""
    questions = {f"q{i}": Question(f"q{i}", "t", "?", ("x", "y"), 0) for i in range(10)}
    rows = [score("teacher", questions, qid, " (a)") for qid in questions]
    write_table(to_table(rows, PREDICTION_SCHEMA), tmp_path / "eval" / "teacher" / "predictions.parquet")
    (tmp_path / "timings.json").write_text(json.dumps({"tasks": 1.5}))
    report = write_report(tmp_path, [EvalRun(run="teacher", kind="teacher", model="big", dir="teacher",
                                      extra=True)])
    assert report["experiment"] == tmp_path.name and report["stage_seconds"] == {"tasks": 1.5}
    assert "experiments" not in report


def _predictions_folder(tmp_path, ids=("q0", "q1", "q2", "q3")):
    """An experiment folder with an evaluation split of ``ids`` and run ``a``'s answers to all of them."""
    from scotd.schema import QUESTION_SCHEMA

    questions = {q: Question(q, "t", "?", ("x", "y"), 0) for q in ids}
    write_table(to_table([{"question_id": q, "task": "t", "question": "?", "choices": ["x", "y"], "answer_index": 0,
                           "answer": None}
                          for q in ids], QUESTION_SCHEMA), tmp_path / "questions" / "eval.parquet")
    rows = [score("a", questions, q, " (a)") for q in ids]
    write_table(to_table(rows, PREDICTION_SCHEMA), tmp_path / "eval" / "a" / "predictions.parquet")
    return rows


@pytest.mark.parametrize("damage, message", [
    ("empty", "no predictions in it"),
    ("folder", "a folder, not a predictions file"),
    ("missing", "no such file"),
    ("twice", "2 question(s) answered more than once (e.g. 'q0')"),
    ("subset", "answers 2 questions, the evaluation split has 4 (2 missing, 0 not in it)"),
    ("corrupt", "not a readable predictions file"),
    ("columns", "not a readable predictions file (" ),
])
def test_report_refuses_a_predictions_file_that_is_not_its_runs_answers(tmp_path, capsys, damage, message):
    """Issue 19, item 5: a 0-row file, a folder, repeated rows or other questions are refused, naming the file."""
    import pyarrow as pa

    from scotd.cli import main
    from scotd.report import ReportError

    rows = _predictions_folder(tmp_path)
    path = tmp_path / "eval" / "a" / "predictions.parquet"
    if damage == "empty":
        write_table(to_table([], PREDICTION_SCHEMA), path)
    elif damage in ("folder", "missing"):
        path.unlink()
        if damage == "folder":
            path.mkdir()
    elif damage == "twice":
        write_table(to_table(rows[:2] * 2, PREDICTION_SCHEMA), path)
    elif damage == "subset":
        write_table(to_table(rows[:2], PREDICTION_SCHEMA), path)
    elif damage == "corrupt":
        path.write_bytes(path.read_bytes()[:40])
    else:
        pq.write_table(pa.table({"question_id": ["q0"]}), path)
    with pytest.raises(ReportError) as err:
        write_report(tmp_path, [EvalRun(run="a", kind="scotd", model="m", dir="a")])
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), err.value
    assert not (tmp_path / "report.json").exists()
    (tmp_path / "config.yaml").write_text(
        "tasks: [{name: t, format: jsonl, train: x.jsonl, eval: x.jsonl}]\n"
        "students: [{name: a}]\neval: {teacher: false, untrained: false}\n")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"\nreport error: {path}: " in err and message in err and "Traceback" not in err


def test_report_accepts_the_complete_answers(tmp_path):
    _predictions_folder(tmp_path)
    report = write_report(tmp_path, [EvalRun(run="a", kind="scotd", model="m", dir="a")])
    assert (report["rows"][0]["correct"], report["rows"][0]["total"]) == (4, 4)


@pytest.mark.parametrize("total", [1, 7, 12, 30, 600])
def test_wilson_bounds_hold_the_observed_share_at_the_extremes(total):
    assert wilson_interval(0, total)[0] == 0.0 and wilson_interval(total, total)[1] == 1.0
    low, high = wilson_interval(0, total)
    assert low <= 0.0 <= high  # a bar at 0 % never gets a negative error bar


def test_report_scores_the_text_not_the_correct_flags(tmp_path, caplog):
    """Issue 31, item 4: every `correct` set to true gave 100 %; the report scores each answer's text against the
    gold answers of questions/eval.parquet."""
    import logging

    rows = _predictions_folder(tmp_path)
    path = tmp_path / "eval" / "a" / "predictions.parquet"
    wrong = [{**r, "text": " (b)"} for r in rows[:3]] + rows[3:]  # three wrong answers, still marked right
    write_table(to_table(wrong, PREDICTION_SCHEMA), path)
    with caplog.at_level(logging.WARNING, logger="scotd"):
        report = write_report(tmp_path, [EvalRun(run="a", kind="scotd", model="m", dir="a")])
    assert (report["rows"][0]["correct"], report["rows"][0]["total"]) == (1, 4)
    assert f"{path}: 3 of 4 answers were marked otherwise than their text scores" in caplog.text


def test_report_refuses_predictions_another_run_wrote(tmp_path):
    """Issue 31, item 4: another run's predictions.parquet copied over eval/<run>/ was reported as this run's."""
    from scotd.report import ReportError
    from scotd.schema import PREDICTIONS_FINGERPRINT, PREDICTIONS_RUN

    rows = _predictions_folder(tmp_path)
    path = tmp_path / "eval" / "a" / "predictions.parquet"
    table = to_table(rows, PREDICTION_SCHEMA)
    write_table(table.replace_schema_metadata({PREDICTIONS_RUN: "a", PREDICTIONS_FINGERPRINT: "0123"}), path)
    runs = [EvalRun(run="a", kind="scotd", model="m", dir="a")]
    assert write_report(tmp_path, runs, fingerprints={"a": "0123"})["rows"][0]["correct"] == 4
    write_table(table.replace_schema_metadata({PREDICTIONS_RUN: "b", PREDICTIONS_FINGERPRINT: "4567"}), path)
    with pytest.raises(ReportError, match=rf"{path}: written by another run \(the run 'b' of other settings"):
        write_report(tmp_path, runs, fingerprints={"a": "0123"})


def test_report_refuses_a_cut_question_file(tmp_path):
    """Issue 31, item 4: questions/eval.parquet cut to fewer rows gave "0 / 5" beside another run's full count."""
    from scotd.report import ReportError
    from scotd.schema import QUESTION_SCHEMA

    _predictions_folder(tmp_path)
    questions = tmp_path / "questions" / "eval.parquet"
    write_table(pq.read_table(questions, schema=QUESTION_SCHEMA).slice(0, 2), questions)
    with pytest.raises(ReportError, match="answers 4 questions, the evaluation split has 2"):
        write_report(tmp_path, [EvalRun(run="a", kind="scotd", model="m", dir="a")])
    questions.write_bytes(b"PAR1xxxx")
    with pytest.raises(ReportError, match=rf"{questions}: not a readable question file"):
        write_report(tmp_path, [EvalRun(run="a", kind="scotd", model="m", dir="a")])
