"""Stages that need no cluster, run on files written here."""

import json

import pyarrow.parquet as pq
import pytest

from scotd.config import load_config
from scotd.experiment import Experiment
from scotd.runs import eval_runs
from scotd.tasks_stage import stage_tasks
from scotd.prompts import load_exemplars


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_tasks_stage_removes_exemplar_questions_and_caps(tmp_path):
    shot = load_exemplars("generic", "g")[0].question
    rows = [{"id": f"t{i}", "question": f"Question {i}?", "choices": ["a", "b"], "answer": i % 2} for i in range(6)]
    rows.insert(2, {"id": "dup", "question": "  " + shot.text.upper() + " ", "choices": list(shot.choices),
                    "answer": shot.answer_index})
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    evaluation = write_jsonl(tmp_path / "eval.jsonl", rows[:3] + [{"id": "e1", "question": "E?", "choices": ["a", "b"],
                                                                  "answer": 0}])
    (tmp_path / "exp.yaml").write_text(
        f"tasks: [{{name: g, format: jsonl, train: {train}, eval: {evaluation}, max_train: 4}}]\n"
        f"students: [{{name: s}}]\noutput: {{dir: {tmp_path / 'out'}}}\n")
    summary = stage_tasks(Experiment(load_config(tmp_path / "exp.yaml")))
    assert summary["g"]["exemplar_questions_removed"] == 1
    train_ids = pq.read_table(tmp_path / "out" / "questions" / "train.parquet")["question_id"].to_pylist()
    assert train_ids == ["t0", "t1", "t2", "t3"]
    # evaluation questions that are also training questions are dropped
    assert pq.read_table(tmp_path / "out" / "questions" / "eval.parquet")["question_id"].to_pylist() == ["dup", "e1"]


def test_offline_source_needs_a_split(tmp_path):
    from scotd.tasks_stage import load_task_split

    cfg = load_config(write_cfg(tmp_path, "offline:bigbench-qasc"))
    with pytest.raises(ValueError, match=r"tasks\.q\.train: 'offline:bigbench-qasc': expected offline:<dataset>"):
        load_task_split(cfg.tasks[0], "train", tmp_path)


def write_cfg(tmp_path, source):
    path = tmp_path / "exp.yaml"
    path.write_text(f"tasks: [{{name: q, format: jsonl, train: '{source}', eval: '{source}'}}]\nstudents: [{{name: s}}]\n")
    return path


def test_eval_runs_order_and_dedup_of_untrained_models(tmp_path):
    cfg = load_config(write_cfg(tmp_path, "a.jsonl"),
                      ["students=[{name: a, model: m1}, {name: b, model: m1, method: label_only}, {name: c, model: m2}]"])
    assert [(r.run, r.kind) for r in eval_runs(cfg)] == [
        ("teacher", "teacher"), ("untrained:m1", "untrained"), ("untrained:m2", "untrained"),
        ("a", "scotd"), ("b", "label_only"), ("c", "scotd")]


def test_self_consistency_adds_a_voted_run_for_every_run(tmp_path):
    cfg = load_config(write_cfg(tmp_path, "a.jsonl"), ["students=[{name: a, model: m1}]", "eval.self_consistency=5"])
    runs = eval_runs(cfg)
    assert [(r.run, r.samples) for r in runs] == [
        ("teacher", 1), ("untrained:m1", 1), ("a", 1), ("teacher sc@5", 5), ("untrained:m1 sc@5", 5), ("a sc@5", 5)]
    assert len({r.dir for r in runs}) == len(runs)


def test_stage_job_entry_point_runs_one_stage(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    rows = [{"id": f"t{i}", "question": f"Q{i}?", "choices": ["a", "b"], "answer": 0} for i in range(3)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    held = write_jsonl(tmp_path / "e.jsonl", [{**r, "id": f"e{i}"} for i, r in enumerate(rows)])
    (tmp_path / "exp.yaml").write_text(f"tasks: [{{name: g, format: jsonl, train: {data}, eval: {held}}}]\n"
                                       "students: [{name: s}]\n")
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "stage.py"), "tasks", str(tmp_path / "exp.yaml"),
                           f"output.dir={tmp_path / 'out'}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert pq.read_table(tmp_path / "out" / "questions" / "train.parquet").num_rows == 3
    assert not (tmp_path / "out" / "teacher").exists()


def test_runtime_env_ships_the_checkout_without_the_venv():
    import yaml

    from tests.conftest import REPO

    env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    assert env["working_dir"] == "." and ".venv/" in env["excludes"] and "env_vars" not in env


def test_each_student_trains_on_its_selection_of_the_corpus(tmp_path):
    from scotd.corpus import with_training_text
    from scotd.schema import CORPUS_SCHEMA, to_table, write_table
    from scotd.student.stage import student_rows

    rows = [{"question_id": f"q{q}", "task": "t", "sample_index": i, "question": "?", "choices": ["a", "b"],
             "rationale": f"reason {q} {i}", "label_index": 0, "label": "a", "logprob_sum": -i * 5.0,
             "logprob_mean": -float(i),
             "num_tokens": 5} for q in range(4) for i in range(0, 20, 2)]  # 10 kept of 20 samples per question
    cfg = load_config(write_cfg(tmp_path, "a.jsonl"), [
        f"output.dir={tmp_path / 'out'}",
        "students=[{name: all}, {name: n6, selector: first_n, selector_k: 6}, "
        "{name: top2, selector: likelihood, selector_k: 2}, {name: rand3, selector: random, selector_k: 3}, "
        "{name: labels, method: label_only, selector: random}]"])
    exp = Experiment(cfg)
    write_table(to_table([with_training_text(r) for r in rows], CORPUS_SCHEMA), exp.dir / "corpus" / "corpus.parquet")
    chosen = {}
    for student in cfg.students:
        path, summary = student_rows(exp, student)
        chosen[student.name] = (path, summary)
    assert chosen["all"] == (exp.dir / "corpus" / "corpus.parquet", {"selector": "all", "setting": "supervised"})
    assert chosen["labels"][0] == exp.dir / "corpus" / "labels.parquet"

    def read(name):
        return pq.read_table(chosen[name][0]).to_pylist()

    assert sorted({r["sample_index"] for r in read("n6")}) == [0, 2, 4]
    assert {r["sample_index"] for r in read("top2")} == {0, 2}  # highest mean log-prob: -0 and -2
    assert len(read("rand3")) == 12 and chosen["rand3"][1] == {
        "selector": "random", "k": 3, "rationales": 12, "questions": 4, "per_question": 3.0, "of_rationales": 40}


def test_greedy_cot_student_needs_the_greedy_corpus(tmp_path):
    from scotd.student.stage import student_rows

    cfg = load_config(write_cfg(tmp_path, "a.jsonl"), [f"output.dir={tmp_path / 'out'}",
                                                       "students=[{name: g, selector: greedy}]"])
    exp = Experiment(cfg)
    with pytest.raises(ValueError, match="teacher.greedy_rationales"):
        student_rows(exp, cfg.students[0])
    greedy = exp.dir / "corpus" / "greedy" / "corpus.parquet"
    greedy.parent.mkdir(parents=True)
    greedy.write_bytes(b"")
    assert student_rows(exp, cfg.students[0]) == (greedy, {"selector": "greedy"})


def test_evaluation_only_task_and_in_context_examples_for_students(tmp_path, shared_data):
    """A contrast set (or held-out task) is a task without training data; student_shots puts that task's exemplars
    in front of the student's evaluation questions."""
    from scotd.prompts import load_exemplars, student_prompt

    folder = shared_data / "imdb_contrast"
    (tmp_path / "exp.yaml").write_text(
        "tasks:\n"
        f"  - {{name: csqa, format: commonsenseqa, train: {shared_data / 'commonsenseqa' / 'train_rand_split.jsonl'},"
        f" eval: {shared_data / 'commonsenseqa' / 'dev_rand_split.jsonl'}, max_train: 5, max_eval: 3}}\n"
        f"  - {{name: imdb, format: imdb, eval: {folder / 'dev_original.tsv'}, max_eval: 4, student_shots: 2}}\n"
        f"  - {{name: imdb-contrast, format: imdb, eval: {folder / 'dev_contrast.tsv'}, max_eval: 4}}\n"
        f"students: [{{name: s}}]\noutput: {{dir: {tmp_path / 'out'}}}\n")
    exp = Experiment(load_config(tmp_path / "exp.yaml"))
    summary = stage_tasks(exp)
    assert [summary[t]["train"] for t in ("csqa", "imdb", "imdb-contrast")] == [5, 0, 0]
    assert [q.task for q in exp.questions("eval")] == ["csqa"] * 3 + ["imdb"] * 4 + ["imdb-contrast"] * 4
    assert {q.task for q in exp.questions("train")} == {"csqa"}
    q = exp.questions("eval")[3]
    shots = load_exemplars("imdb", "imdb")[:2]
    prompt = student_prompt(q, shots)
    assert prompt.startswith("Q: " + shots[0].question.text) and prompt.endswith(student_prompt(q))
    assert prompt.count("So the answer is:") == 2


def test_few_shot_untrained_rows(tmp_path):
    cfg = load_config(write_cfg(tmp_path, "a.jsonl"), ["students=[{name: a, model: m1}, {name: b, model: m2}]",
                                                       "eval.untrained_shots=3"])
    runs = eval_runs(cfg)
    assert [(r.run, r.shots) for r in runs if r.kind == "untrained"] == [
        ("untrained:m1", 0), ("untrained:m1 3-shot", 3), ("untrained:m2", 0), ("untrained:m2 3-shot", 3)]
    assert len({r.dir for r in runs}) == len(runs)


def test_students_of_both_settings_in_one_experiment(tmp_path):
    """Supervised and few-shot students from the same teacher samples: each reads its own setting's corpus."""
    from scotd.corpus import stage_corpus
    from scotd.student.stage import student_rows
    from scotd.schema import QUESTION_SCHEMA, SAMPLE_SCHEMA, to_table, write_table

    def sample(q, i, parsed, gold=0):
        return {"question_id": f"q{q}", "task": "t", "sample_index": i, "question": "?", "choices": ["a", "b"],
                "text": "t", "rationale": f"r{q}{i}", "parsed_index": parsed, "gold_index": gold,
                "parse_error": None if parsed is not None else "no_answer_phrase", "correct": parsed == gold,
                "logprob_sum": -1.0, "logprob_mean": -0.5, "num_tokens": 2, "finish_reason": "stop",
                "parsed_answer": None if parsed is None else "ab"[parsed], "gold_answer": "ab"[gold]}

    samples = [sample(0, 0, 0), sample(0, 1, 1), sample(0, 2, 1), sample(1, 0, None), sample(1, 1, 1)]
    cfg = load_config(write_cfg(tmp_path, "a.jsonl"), [
        f"output.dir={tmp_path / 'out'}",
        "students=[{name: sup}, {name: few, setting: fewshot}, {name: few-labels, method: label_only, "
        "setting: fewshot}, {name: sup-labels, method: label_only}]"])
    exp = Experiment(cfg)
    write_table(to_table(samples, SAMPLE_SCHEMA), exp.dir / "teacher" / "samples" / "block-1.parquet")
    write_table(to_table([{"question_id": f"q{i}", "task": "t", "question": "?", "choices": ["a", "b"],
                           "answer_index": 0, "answer": None} for i in range(2)], QUESTION_SCHEMA),
                exp.dir / "questions" / "train.parquet")
    summary = stage_corpus(exp)
    assert summary["setting"] == "supervised" and summary["fewshot"]["setting"] == "fewshot"
    paths = {st.name: student_rows(exp, st) for st in cfg.students}
    assert paths["sup"][0] == exp.dir / "corpus" / "corpus.parquet"
    assert paths["few"] == (exp.dir / "corpus" / "fewshot" / "corpus.parquet", {"selector": "all",
                                                                                   "setting": "fewshot"})
    read = lambda name: pq.read_table(paths[name][0]).to_pylist()  # noqa: E731
    assert [r["rationale"] for r in read("sup")] == ["r00"]  # only the correct sample
    assert sorted(r["rationale"] for r in read("few")) == ["r00", "r01", "r02", "r11"]  # every parsed one
    # few-shot labels are the teacher's majority answers (q0: b twice, a once; q1: b), supervised ones the gold
    assert {r["question_id"]: r["answer_index"] for r in read("few-labels")} == {"q0": 1, "q1": 1}
    assert {r["question_id"]: r["answer_index"] for r in read("sup-labels")} == {"q0": 0, "q1": 0}


def test_id_less_files_of_the_same_name_keep_their_questions_and_overlap_is_named(tmp_path, caplog):
    """Issue 31: ids from a file's base name and line made b/train.jsonl's questions a/train.jsonl's, so the
    evaluation split came out empty (or swapped) with exit 0."""
    import logging

    from scotd.tasks import TaskDataError

    def rows(prefix, n):
        return [{"question": f"{prefix} {i}?", "choices": ["a", "b"], "answer": i % 2} for i in range(n)]

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    train = write_jsonl(tmp_path / "a" / "train.jsonl", rows("Train", 40))
    held = write_jsonl(tmp_path / "b" / "train.jsonl", rows("Held", 32))

    def tasks(eval_file, max_train=40):
        (tmp_path / "exp.yaml").write_text(
            f"tasks: [{{name: g, format: jsonl, train: {train}, eval: {eval_file}, max_train: {max_train}}}]\n"
            f"students: [{{name: s}}]\noutput: {{dir: {tmp_path / 'out'}}}\n")
        return stage_tasks(Experiment(load_config(tmp_path / "exp.yaml")))

    assert tasks(held)["g"]["eval"] == 32
    texts = pq.read_table(tmp_path / "out" / "questions" / "eval.parquet")["question"].to_pylist()
    assert texts == [f"Held {i}?" for i in range(32)]
    with pytest.raises(TaskDataError, match=rf"every evaluation question of {train} is also a training or dev "
                                            rf"question of {train}"):
        tasks(train)
    with caplog.at_level(logging.WARNING, logger="scotd"):
        assert tasks(train, max_train=30)["g"]["eval"] == 10  # the rows not trained on
    assert f"task g: 30 evaluation questions of {train} are also training or dev questions of {train}" in caplog.text
