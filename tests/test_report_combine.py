"""``scotd report DIR [DIR ...] --out OUT``: several one-task experiments (the paper configs) in one report, and
the single-folder report written into the folder given."""

import json

import pyarrow.parquet as pq
import pytest

from scotd.cli import main
from scotd.config import dump_config, load_config
from scotd.evaluate import score
from scotd.schema import PREDICTION_SCHEMA, to_table, write_table
from scotd.tasks import Question

CONFIG = """
name: {task}
tasks: [{{name: {task}, format: jsonl, train: a.jsonl, eval: b.jsonl}}]
teacher: {{model: big}}
students:
  - {{name: scotd, model: small}}
  - {{name: label-only, model: small, method: label_only}}
eval: {{untrained: false}}
output: {{dir: {dir}}}
"""


def experiment(tmp_path, task, right):
    """A finished one-task experiment folder: config.yaml and the predictions of each run (``right``: run -> number
    of the 10 questions it got right)."""
    folder = tmp_path / task
    folder.mkdir()
    (folder / "exp.yaml").write_text(CONFIG.format(task=task, dir=folder))
    (folder / "config.yaml").write_text(dump_config(load_config(folder / "exp.yaml")))
    questions = {f"{task}-{i}": Question(f"{task}-{i}", task, "?", ("x", "y"), 0) for i in range(10)}
    for run, count in right.items():
        rows = [score(run, questions, qid, " (a)" if i < count else " (b)") for i, qid in enumerate(questions)]
        write_table(to_table(rows, PREDICTION_SCHEMA), folder / "eval" / run / "predictions.parquet")
    return folder


def test_combined_report_has_method_by_task_across_experiments(tmp_path, capsys):
    csqa = experiment(tmp_path, "csqa", {"teacher": 9, "scotd": 6, "label-only": 5})
    obqa = experiment(tmp_path, "obqa", {"teacher": 8, "scotd": 4, "label-only": 2})
    out = tmp_path / "combined"
    assert main(["report", str(csqa), str(obqa), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["run"] for r in report["rows"]] == ["csqa/teacher", "csqa/scotd", "csqa/label-only", "obqa/teacher",
                                                  "obqa/scotd", "obqa/label-only"]
    # one line per run name, filled from both experiments
    assert [(x["method"], x["run"], x["by_task"]) for x in report["method_by_task"]] == [
        ("teacher", "teacher", {"csqa": 0.9, "obqa": 0.8}), ("SCoTD", "scotd", {"csqa": 0.6, "obqa": 0.4}),
        ("label-only", "label-only", {"csqa": 0.5, "obqa": 0.2})]
    # SCoTD is compared with the rows of its own experiment only (other questions are not paired)
    assert [(d["run"], d["versus"], d["questions"]) for d in report["differences"]] == [
        ("csqa/scotd", "csqa/teacher", 10), ("csqa/scotd", "csqa/label-only", 10),
        ("obqa/scotd", "obqa/teacher", 10), ("obqa/scotd", "obqa/label-only", 10)]
    md = (out / "report.md").read_text()
    assert md in capsys.readouterr().out
    assert "| small | SCoTD | scotd | 60.0 % | 40.0 % |" in md and "| big | teacher | teacher | 90.0 % | 80.0 % |" in md
    assert "| csqa: SCoTD | 60.0 % |" in md and "| obqa: label-only | 20.0 % |" in md  # method by student model
    assert [e["name"] for e in report["experiments"]] == ["csqa", "obqa"]
    for r in report["rows"]:  # every number traceable: the predictions file, relative to the combined report
        assert f"| {r['run']} | {r['predictions']} |" in md
        preds = pq.read_table(out / r["predictions"])
        assert r["correct"] == sum(preds["correct"].to_pylist()) and r["predictions"].startswith("../")
    for png in ("report.png", "report-methods.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_several_folders_need_out(tmp_path, capsys):
    csqa = experiment(tmp_path, "csqa", {"teacher": 9, "scotd": 6, "label-only": 5})
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(csqa), str(csqa)])
    assert exit_info.value.code == 2 and "give --out OUT" in capsys.readouterr().err


def test_single_folder_report_is_written_into_the_folder_given(tmp_path):
    """A copied experiment folder: its config.yaml still names the original output.dir, which stays untouched."""
    original = experiment(tmp_path, "csqa", {"teacher": 9, "scotd": 6, "label-only": 5})
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.md").exists() and not (original / "report.md").exists()
    report = json.loads((copy / "report.json").read_text())
    assert report["experiment"] == "copy" and report["rows"][1]["predictions"] == "eval/scotd/predictions.parquet"
    assert "## Method by task" not in (copy / "report.md").read_text()  # one task: no method x task table


def test_a_folder_downloaded_from_its_uri_is_reported_where_it_is(tmp_path):
    """Its saved config names a bucket (never contacted) and a batch the training rules would now refuse: the
    report reads the folder given, as the experiment was run."""
    folder = experiment(tmp_path, "csqa", {"teacher": 9, "scotd": 6, "label-only": 5})
    saved = (folder / "config.yaml").read_text()
    saved = saved.replace(f"dir: {folder}", "dir: s3://no-such-bucket/runs/csqa")
    saved = saved.replace("batch_size: 32", "batch_size: 30", 1)
    assert "s3://no-such-bucket" in saved and "batch_size: 30" in saved
    (folder / "config.yaml").write_text(saved)
    assert main(["report", str(folder)]) == 0
    assert json.loads((folder / "report.json").read_text())["rows"][1]["correct"] == 6


def test_two_experiments_on_one_task_keep_a_line_each(tmp_path):
    first = experiment(tmp_path, "csqa", {"teacher": 9, "scotd": 6, "label-only": 5})
    (tmp_path / "again").mkdir()
    second = experiment(tmp_path / "again", "csqa", {"teacher": 7, "scotd": 3, "label-only": 5})
    assert main(["report", str(first), str(second), "--out", str(tmp_path / "out")]) == 2  # one line, no traceback
    second = second.rename(tmp_path / "csqa-2")
    assert main(["report", str(first), str(second), "--out", str(tmp_path / "out")]) == 0
    lines = json.loads((tmp_path / "out" / "report.json").read_text())["method_by_task"]
    assert [(x["run"], x["by_task"]) for x in lines if x["method"] == "SCoTD"] == [
        ("csqa/scotd", {"csqa": 0.6}), ("csqa-2/scotd", {"csqa": 0.3})]


def test_combined_reports_of_same_named_folders_or_to_a_read_only_place_are_one_line_errors(tmp_path, capsys):
    """Issue 31, item 10: `scotd report a/x b/x --out o` and an --out that cannot be written ended in tracebacks."""
    import os

    from scotd.cli import main

    for parent in ("a", "b"):
        (tmp_path / parent / "x").mkdir(parents=True)
        (tmp_path / parent / "x" / "config.yaml").write_text(
            "tasks: [{name: t, format: jsonl, train: x.jsonl, eval: y.jsonl}]\nstudents: [{name: s}]\n")
    assert main(["report", str(tmp_path / "a" / "x"), str(tmp_path / "b" / "x"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "report error: experiment folders need distinct names" in err and "Traceback" not in err
    (tmp_path / "locked").mkdir()
    os.chmod(tmp_path / "locked", 0o500)
    try:
        if os.access(tmp_path / "locked", os.W_OK):
            return  # running as a user who writes anywhere: nothing to refuse
        assert main(["report", str(tmp_path / "a" / "x"), str(tmp_path / "locked"), "--out",
                     str(tmp_path / "locked" / "o")]) == 2
        assert f"report error: --out {tmp_path / 'locked' / 'o'}: cannot write there" in capsys.readouterr().err
    finally:
        os.chmod(tmp_path / "locked", 0o700)


def test_a_damaged_question_file_is_named(tmp_path):
    """Issue 31, item 10: a 7-byte questions/eval.parquet ended in ArrowInvalid."""
    from scotd.config import load_config
    from scotd.experiment import Experiment
    from scotd.schema import CorruptFileError
    from tests.conftest import REPO

    exp = Experiment(load_config(REPO / "configs" / "tiny.yaml", [f"output.dir={tmp_path}"]))
    (tmp_path / "questions").mkdir()
    (tmp_path / "questions" / "eval.parquet").write_bytes(b"PAR1xyz")
    with pytest.raises(CorruptFileError, match=r"questions/eval.parquet: not a readable question file .*rerun the "
                                               r"tasks stage"):
        exp.questions("eval")
