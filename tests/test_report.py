import json

import pytest

from scotd.evaluate import metrics_of, score
from scotd.report import render_markdown, wilson_interval, write_report
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
    report = write_report(tmp_path, [{"run": "a", "kind": "scotd", "model": "m", "dir": "a"},
                                     {"run": "b", "kind": "label_only", "model": "m", "dir": "b"}])
    assert [(r["correct"], r["total"]) for r in report["rows"]] == [(3, 9), (9, 9)]
    assert json.loads((tmp_path / "report.json").read_text()) == report
    md = (tmp_path / "report.md").read_text()
    assert md == render_markdown(report) and "| a | scotd | m | 33.3 % |" in md and "| 9 / 9 |" in md


def test_metrics_count_parse_failures():
    q = {"q": Question("q", "t", "?", ("x", "y"), 0)}
    rows = [score("r", q, "q", "gibberish"), score("r", q, "q", " (a)")]
    assert metrics_of(rows) == {"total": 2, "correct": 1, "accuracy": 0.5, "parse_failures": 1,
                                "parse_failure_rate": 0.5}
