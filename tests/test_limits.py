"""Issue 23: completions cut at the token budget are counted apart (``cut_at_limit``), warned about with the key to
raise, shown in the report; budgets left unset are sized from the data and written into config.yaml."""

from __future__ import annotations

import json
import logging

import pytest

from scotd import limits
from scotd.config import load_config
from scotd.scoring import metrics_of
from scotd.evaluate import score
from scotd.prompts import mark_cut, parse_answer
from scotd.report_markdown import budget_lines, failures_cell
from scotd.corpus import with_training_text
from scotd.schema import CORPUS_SCHEMA, to_table, write_table
from scotd.tasks import Question
from tests.conftest import REPO

TINY = REPO / "configs" / "tiny.yaml"


def test_budgets_from_the_data():
    assert limits.teacher_budget([35, 46, 66]) == 132  # twice the longest exemplar answer
    assert limits.teacher_budget([5]) == limits.FLOOR
    lengths = list(range(1, 101))  # the 99th percentile is 99
    assert limits.eval_budget(lengths) == 140  # ceil(1.25 * 99) + 16
    assert limits.eval_budget([]) == limits.FLOOR


def test_a_failed_answer_that_hit_the_budget_is_cut_at_limit():
    assert mark_cut(parse_answer(" Two plus two is", 3), "length").reason == "cut_at_limit"
    assert mark_cut(parse_answer(" Two plus two is", 3), "stop").reason == "no_answer_phrase"
    assert mark_cut(parse_answer(" So the answer is: (b)", 3), "length").index == 1  # an answer stands
    q = {"q": Question("q", "t", "?", ("x", "y"), 0)}
    rows = [score("r", q, "q", " and so on and", "length"), score("r", q, "q", " (a)", "stop"),
            score("r", q, "q", " no phrase", "stop")]
    assert [r["parse_error"] for r in rows] == ["cut_at_limit", None, "no_answer_phrase"]
    assert metrics_of(rows)["cut_at_limit"] == 1 and metrics_of(rows)["parse_failures"] == 2


def test_report_splits_the_failures_and_warns_with_the_key():
    row = {"run": "scotd", "total": 200, "parse_failures": 85, "cut_at_limit": 60, "max_new_tokens": 48,
           "repetition_penalty": 1.0}
    assert failures_cell(row) == "85 (60 cut at the limit)"
    assert failures_cell({**row, "cut_at_limit": 0}) == "85"
    lines = "\n".join(budget_lines([row]))
    assert "at most 48 new tokens (eval.max_new_tokens); repetition penalty 1.0 (off)" in lines
    assert "**Cut at the token limit:** scotd: 30.0 % of its answers" in lines and "raise eval.max_new_tokens" in lines
    assert "Cut at the token limit" not in "\n".join(budget_lines([{**row, "cut_at_limit": 10}]))  # 5 %: no warning


@pytest.fixture
def experiment(tmp_path, shared_data):
    from scotd import pipeline

    csqa = shared_data / "commonsenseqa"
    args = [f"output.dir={tmp_path / 'exp'}", f"output.cache_dir={tmp_path / 'cache'}",
            f"tasks.0.train={csqa / 'train_rand_split.jsonl'}", f"tasks.0.eval={csqa / 'dev_rand_split.jsonl'}",
            "eval.max_new_tokens=null"]
    exp = pipeline.run(load_config(TINY, args), ("tasks",))
    rows = [{"question_id": f"q{i}", "task": "csqa", "sample_index": 0, "question": "?", "choices": ["a", "b"],
             "rationale": "r", "label_index": 0, "label": "a", "logprob_sum": -1.0, "logprob_mean": -0.1,
             "num_tokens": n}
            for i, n in enumerate(range(1, 101))]
    write_table(to_table([with_training_text(r) for r in rows], CORPUS_SCHEMA), exp.dir / "corpus" / "corpus.parquet")
    return exp, args


def test_evaluation_budget_sized_from_the_corpus_is_kept_and_written_into_config_yaml(experiment):
    from scotd import pipeline

    from scotd import prepare

    exp, args = experiment
    assert exp.cfg.eval.max_new_tokens is None
    with pytest.raises(RuntimeError, match="eval.max_new_tokens is unset and not sized yet"):
        exp.eval_tokens()  # a getter only reads: the stages' preparation sizes the budget
    assert not (exp.dir / "limits.json").exists()
    prepare.eval_budget(exp)
    assert exp.eval_tokens() == 140
    assert json.loads((exp.dir / "limits.json").read_text()) == {"eval.max_new_tokens": 140}
    saved = load_config(exp.dir / "config.yaml")
    assert saved.eval.max_new_tokens == 140 and saved.teacher.max_new_tokens == 48  # the explicit one as given
    again = pipeline.run(load_config(TINY, args), ("tasks",))  # a rerun keeps the sized value in config.yaml
    assert load_config(again.dir / "config.yaml").eval.max_new_tokens == 140
    explicit = pipeline.Experiment(load_config(TINY, [*args[:-1], "eval.max_new_tokens=77"]))
    assert explicit.eval_tokens() == 77  # an explicit value always wins


def test_demo_sizes_both_budgets_from_the_data():
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.teacher.max_new_tokens is None and cfg.eval.max_new_tokens is None


@pytest.mark.slow
def test_a_run_with_a_small_budget_counts_the_cut_samples_and_warns(ray_cluster, shared_data, tmp_path, capsys):
    """The real tiny teacher in vLLM with a 3-token budget: no sample reaches an answer."""
    from scotd.cli import main

    csqa = shared_data / "commonsenseqa"
    assert main(["run", str(TINY), "--stages", "tasks,teacher", f"output.dir={tmp_path / 'exp'}",
                 f"output.cache_dir={tmp_path / 'cache'}", f"tasks.0.train={csqa / 'train_rand_split.jsonl'}",
                 f"tasks.0.eval={csqa / 'dev_rand_split.jsonl'}", "tasks.0.max_train=4", "teacher.num_samples=2",
                 "teacher.max_new_tokens=3"]) == 0
    summary = json.loads((tmp_path / "exp" / "teacher" / "sampling_summary.json").read_text())
    assert summary["samples"] == 8 and summary["cut_at_limit"] == 8
    err = capsys.readouterr().err
    assert "(8 cut at teacher.max_new_tokens=3)" in err
    assert ("WARNING scotd.limits: teacher: 100.0% of the completions (8 of 8) were cut at teacher.max_new_tokens=3 "
            "before an answer; raise teacher.max_new_tokens") in err


@pytest.mark.slow
def test_evaluation_marks_cut_answers_and_left_out_questions(ray_cluster, shared_data, tmp_path, caplog):
    """evaluate_run on the real tiny teacher: a 3-token budget cuts every answer; a left-out question (a prompt
    too long for the engine) is scored as prompt_too_long without being asked."""
    import pyarrow.parquet as pq

    from scotd.config import TeacherConfig
    from scotd.evaluate import evaluate_run
    from scotd.experiment import format_texts
    from scotd.prompts import load_exemplars, student_prompt, teacher_prompt
    from scotd.inference.spec import engine_spec
    from scotd.runs import EvalRun
    from scotd.tasks import load_questions
    from scotd.tiny import ensure_tiny_model

    questions = load_questions(shared_data / "commonsenseqa" / "dev_rand_split.jsonl", "commonsenseqa",
                               "csqa").questions[:6]
    shots = load_exemplars("commonsenseqa", "csqa")[:3]
    model = ensure_tiny_model("teacher", tmp_path / "teacher", [student_prompt(q) for q in questions],
                              format_texts(questions, {"csqa": shots}))
    engine = TeacherConfig(model=str(model), max_model_len=1024, cpu_kvcache_gb=1, batch_size=8)
    spec = engine_spec(engine, str(model))
    with caplog.at_level(logging.INFO, logger="scotd"):
        metrics = evaluate_run(EvalRun("teacher", "teacher", str(model)), questions, lambda q: teacher_prompt(q, shots),
                               spec, engine, max_new_tokens=3, num_cpus=1, run_dir=tmp_path / "eval" / "teacher",
                               left_out={questions[0].id})
    rows = pq.read_table(tmp_path / "eval" / "teacher" / "predictions.parquet").to_pylist()
    reasons = {r["question_id"]: r["parse_error"] for r in rows}
    assert reasons[questions[0].id] == "prompt_too_long" and len(rows) == 6
    assert [reasons[q.id] for q in questions[1:]] == ["cut_at_limit"] * 5
    assert metrics["cut_at_limit"] == 5 and metrics["max_new_tokens"] == 3 and metrics["repetition_penalty"] == 1.0
    assert "eval teacher: 83.3% of the completions (5 of 6) were cut at eval.max_new_tokens=3" in caplog.text
