"""Where a task's questions come from: alternatives tried in order, the one used named, and one clear error when
none can be read (never an HTTP traceback)."""

from __future__ import annotations

import json
import logging

import pyarrow.parquet as pq
import pytest

from scotd.config import ConfigError, load_config
from scotd.experiment import Experiment
from scotd.tasks_stage import load_task_split, stage_tasks
from scotd.tasks import SourceUnavailableError, TaskDataError


def write_rows(path, count, prefix="q"):
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "question": f"{prefix} question {i}?",
                                        "choices": ["x", "y"], "answer": i % 2}) + "\n" for i in range(count)))
    return path


def config(tmp_path, train, evaluation, extra="", fmt="jsonl"):
    path = tmp_path / "exp.yaml"
    path.write_text(f"tasks: [{{name: t, format: {fmt}, train: {json.dumps(train)}, eval: {json.dumps(evaluation)}"
                    f"{extra}}}]\nstudents: [{{name: s}}]\noutput: {{dir: {tmp_path / 'out'}}}\n")
    return load_config(path)


def test_first_readable_alternative_is_used_and_named(tmp_path, caplog):
    train = write_rows(tmp_path / "train.jsonl", 6)
    evaluation = write_rows(tmp_path / "eval.jsonl", 3, prefix="e")
    missing = str(tmp_path / "elsewhere" / "train.jsonl")
    cfg = config(tmp_path, [missing, str(train)], [str(evaluation)])
    with caplog.at_level(logging.INFO, logger="scotd"):
        summary = stage_tasks(Experiment(cfg))
    assert summary["t"]["sources"] == {"train": str(train), "eval": str(evaluation)}
    assert f"task t, train split: 6 questions from {train}" in caplog.text
    assert pq.read_table(tmp_path / "out" / "questions" / "train.parquet").num_rows == 6


def test_no_readable_source_is_one_error_listing_each_reason(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # as on a machine without the package
    cfg = config(tmp_path, [str(tmp_path / "nope.jsonl"), "hf:tau/commonsense_qa:train", "offline:bigbench-qasc:train"],
                 str(tmp_path / "nope.jsonl"))
    monkeypatch.delenv("SCOTD_BIGBENCH_SDIST", raising=False)
    with pytest.raises(SourceUnavailableError) as info:
        load_task_split(cfg.tasks[0], "train", tmp_path / "cache")
    message = str(info.value)
    assert message.startswith("tasks.t.train: no source of train questions can be read here")
    assert f"{tmp_path / 'nope.jsonl'}: file not found" in message
    assert "tau/commonsense_qa:train: the Hugging Face hub needs the 'datasets' package" in message
    assert "bigbench-1.0.0.tar.gz" in message and "tasks.<index>.train=/path/to/train.jsonl" in message
    assert "Traceback" not in message and "HTTP" not in message


def test_malformed_data_is_an_error_not_a_reason_to_try_the_next_source(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "Q?", "choices": ["x"], "answer": 0}\n')
    good = write_rows(tmp_path / "good.jsonl", 4)
    cfg = config(tmp_path, [str(bad), str(good)], str(good))
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:1: fewer than 2 choices") as info:
        load_task_split(cfg.tasks[0], "train", tmp_path)
    assert not isinstance(info.value, SourceUnavailableError)


def test_a_list_of_sources_must_hold_strings(tmp_path):
    with pytest.raises(ConfigError, match=r"tasks\.0\.train\.1: expected str, got int 3"):
        config(tmp_path, ["a.jsonl", 3], "b.jsonl")


def test_generated_task_sizes_come_from_the_task(tmp_path):
    cfg = config(tmp_path, "gen:arithmetic:train:2-3", "gen:arithmetic:eval:2-3", ", max_train: 30, max_dev: 5, "
                 "max_eval: 12", fmt="arithmetic")
    summary = stage_tasks(Experiment(cfg))
    assert (summary["t"]["train"], summary["t"]["dev"], summary["t"]["eval"]) == (30, 5, 12)
    without = config(tmp_path, "gen:arithmetic:train:2-3", "gen:arithmetic:eval:2-3", fmt="arithmetic")
    with pytest.raises(ValueError, match=r"tasks\.t\.max_train: a generated task"):
        stage_tasks(Experiment(without))


def test_two_tasks_sharing_question_ids_are_refused(tmp_path):
    """Samples, labels and scores are keyed by question id: two tasks with the same ids would mix (issue 19, 3)."""
    first = write_rows(tmp_path / "a.jsonl", 4)
    second = write_rows(tmp_path / "b.jsonl", 4)  # the same ids q0..q3, other files
    path = tmp_path / "exp.yaml"
    path.write_text(f"tasks: [{{name: a, format: jsonl, train: {first}, eval: {first}, max_train: 2}}, "
                    f"{{name: b, format: jsonl, eval: {second}}}]\nstudents: [{{name: s}}]\n"
                    f"output: {{dir: {tmp_path / 'out'}}}\n")
    with pytest.raises(TaskDataError, match=r"tasks\.b: question id 'q\d' is also a question of task a"):
        stage_tasks(Experiment(load_config(path)))
