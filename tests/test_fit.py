"""Issue 19, item 9: a question whose prompt does not fit the engine's context is refused before any engine starts,
named with its file:line, or skipped and counted where its task skips bad rows. Real tokenizer (the tiny student's,
built here), real tasks stage, the teacher stage on the session's Ray cluster."""

from __future__ import annotations

import json
import logging

import pytest

from scotd import pipeline
from scotd.cli import main
from scotd.config import load_config
from scotd.fit import prompt_tokens, too_long
from scotd.prompts import teacher_prompt
from scotd.tasks import TaskDataError


@pytest.fixture
def experiment(tmp_path):
    from scotd.tiny import ensure_tiny_model

    rows = [{"id": "short-1", "question": "Which is a colour?", "choices": ["red", "dog"], "answer": 0},
            {"id": "long-2", "question": "Why? " + "because of the weather " * 400, "choices": ["a", "b"], "answer": 1},
            {"id": "short-3", "question": "Which is an animal?", "choices": ["red", "dog"], "answer": 1}]
    data, held = tmp_path / "data.jsonl", tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held.write_text(json.dumps({"id": "held-1", "question": "Which is a fruit?", "choices": ["pear", "dog"],
                                "answer": 0}) + "\n")
    model = ensure_tiny_model("student", tmp_path / "tok", [r["question"] + " " + " ".join(r["choices"]) for r in rows], [])
    config = tmp_path / "exp.yaml"
    config.write_text(f"tasks: [{{name: g, format: jsonl, train: {data}, eval: {held}, num_exemplars: 1}}]\n"
                      f"teacher: {{model: {model}, max_model_len: 1024, num_samples: 1}}\n"
                      f"students: [{{name: s, model: {model}}}]\n"
                      f"output: {{dir: {tmp_path / 'out'}, cache_dir: {tmp_path / 'cache'}}}\n")
    return config, data, model


def test_the_long_question_is_named_with_its_file_and_line(experiment):
    config, data, model = experiment
    cfg = load_config(config)
    exp = pipeline.run(cfg, ("tasks",))
    shots = exp.all_exemplars()
    questions = exp.questions("train")
    counts = prompt_tokens(str(model), [teacher_prompt(q, shots["g"]) for q in questions])
    assert max(counts) >= 1024 > sorted(counts)[-2]  # one prompt, and only one, is too long
    with pytest.raises(TaskDataError) as err:
        too_long(cfg, questions, lambda q: teacher_prompt(q, shots[q.task]), str(model), chat_template=False,
                 stage="teacher", where=exp.where())
    message = str(err.value)
    assert message.startswith(f"{data}:2: question long-2 (task g) makes a teacher prompt of ")
    assert "teacher.max_model_len is 1024 (1 such question(s) in all)" in message
    assert "tasks.0.skip_bad_rows=true" in message and "tasks.0.num_exemplars" in message


def test_with_skip_bad_rows_the_long_question_is_skipped_and_counted(experiment, caplog):
    config, data, model = experiment
    cfg = load_config(config, ["tasks.0.skip_bad_rows=true"])
    exp = pipeline.run(cfg, ("tasks",))
    shots = exp.all_exemplars()
    with caplog.at_level(logging.WARNING, logger="scotd.fit"):
        left_out = too_long(cfg, exp.questions("train"), lambda q: teacher_prompt(q, shots[q.task]), str(model),
                            chat_template=False, stage="teacher", where=exp.where())
    assert left_out == {"long-2"}
    assert f"teacher: 1 question(s) skipped, their prompts do not fit teacher.max_model_len=1024 (first: {data}:2" \
        in caplog.text


def test_the_teacher_stage_refuses_before_an_engine_starts(experiment, ray_cluster, capsys):
    config, data, _ = experiment
    assert main(["run", str(config), "--stages", "tasks,teacher"]) == 2
    err = capsys.readouterr().err
    assert f"data error: {data}:2: question long-2 (task g) makes a teacher prompt of " in err
    assert "Traceback" not in err
    assert not (config.parent / "out" / "teacher" / "samples").exists()


def test_a_huge_question_does_not_take_the_tiny_teachers_fit_out_of_memory(tmp_path):
    """Issue 31, item 8: a 50,000-character question among the first training questions OOM-killed the tiny preset
    while its teacher was fitted to the format (24 GB); the fit cuts each text, in a process of its own here."""
    import subprocess
    import sys

    from tests.conftest import REPO

    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from scotd.tiny import ensure_tiny_model\n"
        "texts = [f'Q: what is {i} + 2?\\nA: {i + 2}' for i in range(300)] + ['Q: ' + 'word ' * 10000 + '?\\nA: x']\n"
        f"ensure_tiny_model('teacher', Path({str(tmp_path / 'tiny')!r}), texts, texts)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) < 4000  # MB at peak
    assert (tmp_path / "tiny" / "scotd_tiny.json").exists()
