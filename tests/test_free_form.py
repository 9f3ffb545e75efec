"""Issue 22: free-form answers (GSM8K first): loading, rendering, parsing, and every stage's use of them with no
letter assumption (corpus filter and labels, student targets, evaluation with self-consistency, the report)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scotd.config import CorpusConfig
from scotd.corpus import build_corpus
from scotd.scoring import metrics_of
from scotd.evaluate import score, vote
from scotd.prompts import (flexible_answer, gold_key, load_exemplars, parse_answer, render_answer, render_question,
                           stop_strings, teacher_prompt)
from scotd.report_markdown import render_markdown
from scotd.report import write_report
from scotd.runs import EvalRun
from scotd.schema import PREDICTION_SCHEMA, QUESTION_SCHEMA, SAMPLE_SCHEMA, to_table, write_table
from scotd.student.data import training_texts
from scotd.scoring import answers_match, normalize_number
from scotd.tasks import Question, TaskDataError, load_questions

Q = Question("g1", "gsm8k", "A baker has 3 trays of 4 rolls. How many rolls?", (), None, "12")


def test_gsm8k_files_load_with_the_number_after_the_last_marks(shared_data):
    test = load_questions(shared_data / "gsm8k" / "test.jsonl", "gsm8k", "gsm8k")
    train = load_questions(shared_data / "gsm8k" / "train.jsonl", "gsm8k", "gsm8k")
    assert (len(train.questions), len(test.questions)) == (7473, 1319)
    first = test.questions[0]
    assert first.free_form and first.answer == "18" and first.id.startswith("gsm8k-") and first.answer_index is None
    assert test.where[first.id] == f"{shared_data / 'gsm8k' / 'test.jsonl'}:1"
    assert not {q.id for q in train.questions} & {q.id for q in test.questions}
    with_commas = [q for q in train.questions if q.answer == "850000"]  # "#### 850,000" in the file
    assert with_commas and all(q.answer and normalize_number(q.answer) == q.answer for q in train.questions)


def test_gsm8k_rows_without_a_final_number_are_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": "work\n#### 5"}) + "\n"
                    + json.dumps({"question": "Q?", "answer": "no marks"}) + "\n")
    with pytest.raises(TaskDataError, match=r"bad\.jsonl:2: answer has no '#### <number>' line"):
        load_questions(path, "gsm8k", "g")
    assert load_questions(path, "gsm8k", "g", skip_bad_rows=True).num_skipped == 1


def test_generic_jsonl_without_choices_is_free_form(tmp_path):
    path = tmp_path / "free.jsonl"
    path.write_text(json.dumps({"id": "a", "question": "2+2?", "answer": 4}) + "\n"
                    + json.dumps({"id": "b", "question": "Capital of France?", "choices": [], "answer": " Paris. "})
                    + "\n")
    a, b = load_questions(path, "jsonl", "t").questions
    assert (a.free_form, a.answer, b.answer) == (True, "4", "paris")


@pytest.mark.parametrize("text, key, reason", [
    (" 3 * 4 = 12. So the answer is: 12", "12", None),
    (" It costs $1,200.00 in all. So the answer is: $1,200.00.", "1200", None),
    (" Half is 0.5. So the answer is: 50%", "50", None),
    (" So the answer is: -7 degrees", "-7", None),
    (" 12", "12", None),  # a label-only student's bare answer
    (" So the answer is: twelve", "twelve", None),  # a short text answer
    (" 3 * 4 = 12 and then", None, "no_answer_phrase"),
    (" So the answer is:", None, "no_number"),
    ("", None, "empty_output"),
])
def test_parse_free_form(text, key, reason):
    parsed = parse_answer(text, 0)
    assert (parsed.key, parsed.reason) == (key, reason)


def test_strict_and_flexible_extraction_and_tolerance():
    assert flexible_answer(" 3 * 4 = 12 and 12 + 1 = 13") == "13"
    assert parse_answer(" 3 * 4 = 12 and 12 + 1 = 13", 0).key is None  # strict needs the answer phrase
    assert answers_match("18", "18.0000001") and answers_match("3.5", "3.50") and not answers_match("18", "19")
    assert not answers_match(None, "1") and not answers_match("a", "b") and answers_match("paris", "paris")


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(value=st.integers(-10**9, 10**9) | st.decimals(-10**6, 10**6, places=2, allow_nan=False,
                                                       allow_infinity=False),
       style=st.sampled_from(["{}", "${}", "{:,}", "{}.", "{}%"]), lead=st.text(max_size=30))
def test_a_rendered_number_parses_back_to_its_value(value, style, lead):
    """Property: whatever the formatting, the number after the answer phrase comes back equal (never raises)."""
    shown = style.format(value) if style != "{:,}" or isinstance(value, int) else f"{value:,}"
    parsed = parse_answer(f" {lead.replace(chr(10), ' ')} So the answer is: {shown}", 0)
    assert parsed.key is not None and answers_match(parsed.key, normalize_number(str(value)))


def test_prompt_target_and_stops_of_a_free_form_question():
    assert render_question(Q) == f"Q: {Q.text}\nA:" and "Answer Choices" not in render_question(Q)
    assert render_answer("3 * 4 = 12.", Q.gold) == " 3 * 4 = 12. So the answer is: 12"
    assert render_answer(None, Q.gold) == " 12" and gold_key(Q) == "12"
    assert stop_strings(0) == ["\n\n", "\n"]
    shots = load_exemplars("gsm8k", "gsm8k")
    assert len(shots) >= 5 and teacher_prompt(Q, shots).endswith(f"\n\nQ: {Q.text}\nA:")
    for shot in shots:  # the exemplars are arithmetic that holds
        assert parse_answer(render_answer(shot.rationale, shot.question.gold), 0).key == shot.question.answer


def sample(i, text, gold="12"):
    parsed = parse_answer(text, 0)
    return {"question_id": "g1", "task": "gsm8k", "sample_index": i, "question": Q.text, "choices": [], "text": text,
            "rationale": parsed.rationale, "parsed_index": None, "parse_error": parsed.reason, "gold_index": None,
            "correct": answers_match(parsed.key, gold), "logprob_sum": -1.0, "logprob_mean": -0.1, "num_tokens": 9,
            "finish_reason": "stop", "parsed_answer": parsed.key, "gold_answer": gold}


SAMPLES = [sample(0, " 3 * 4 = 12. So the answer is: 12"), sample(1, " 3 + 4 = 7. So the answer is: 7"),
           sample(2, " Three fours are 12. So the answer is: 12.0"), sample(3, " 3 + 4 = 7. So the answer is: 7"),
           sample(4, " 3 + 4 = 7. So the answer is: 7 rolls")]


@pytest.mark.parametrize("setting, kept, kept_labels, label", [("supervised", 2, {"12"}, "12"),
                                                               ("fewshot", 3, {"12", "7"}, "7")])
def test_corpus_filters_and_labels_free_form_samples(tmp_path, setting, kept, kept_labels, label):
    write_table(to_table(SAMPLES, SAMPLE_SCHEMA), tmp_path / "s" / "b.parquet")
    summary = build_corpus(tmp_path / "s", CorpusConfig(setting=setting), tmp_path / "c")
    corpus = pq_rows(tmp_path / "c" / "corpus.parquet")
    labels = pq_rows(tmp_path / "c" / "labels.parquet")
    assert summary["kept"] == kept and {r["label"] for r in corpus} == kept_labels
    assert all(r["label_index"] is None for r in corpus)
    assert [(r["answer"], r["answer_index"]) for r in labels] == [(label, None)]  # few-shot: the majority, 7
    texts = training_texts(corpus, "scotd")["g1"][1]
    assert sorted(t.rsplit(": ", 1)[1] for t in texts) == sorted(r["label"] for r in corpus)
    assert training_texts([{**labels[0]}], "label_only")["g1"][1] == [f" {label}"]


def pq_rows(path):
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_evaluation_scores_votes_and_reports_free_form_answers(tmp_path):
    questions = {f"g{i}": Question(f"g{i}", "gsm8k", "?", (), None, str(i)) for i in range(4)}
    texts = [" So the answer is: 0", " 1 + 1 = 2, so 1", " So the answer is: 2.0", " So the answer is: 9"]
    rows = [score("s", questions, qid, t) for qid, t in zip(questions, texts)]
    assert [r["correct"] for r in rows] == [True, False, True, False]
    assert [r["flexible_answer"] for r in rows] == ["0", "1", "2", "9"]
    assert metrics_of(rows)["parse_failures"] == 1  # g1 has no answer phrase
    assert vote([" So the answer is: 5", " So the answer is: 7", " So the answer is: 7.0"], 0) == (1, False)
    write_table(to_table([{"question_id": q.id, "task": q.task, "question": q.text, "choices": [],
                           "answer_index": None, "answer": q.answer} for q in questions.values()], QUESTION_SCHEMA),
                tmp_path / "questions" / "eval.parquet")
    write_table(to_table(rows, PREDICTION_SCHEMA), tmp_path / "eval" / "s" / "predictions.parquet")
    report = write_report(tmp_path, [EvalRun(run="s", kind="scotd", model="m", dir="s")])
    assert report["rows"][0]["free_form"] == {"questions": 4, "strict": 0.5, "flexible": 0.75}
    assert "| s | 4 | 50.0 % | 75.0 % |" in render_markdown(report)


@pytest.mark.slow
def test_tiny_preset_runs_end_to_end_on_free_form_answers(ray_cluster, shared_data, tmp_path, capsys):
    """Every stage on free-form answers with the real stack (tiny models, vLLM on CPU, Ray Train + DeepSpeed), on
    GSM8K's files and on the generated sums as two tasks of one run: the few-shot corpus (the tiny teacher is never
    right), both students, evaluation with self-consistency, the judge and the report, with no letter assumption left
    to trip on."""
    import pyarrow.parquet as pq
    import yaml

    from scotd.cli import main
    from tests.conftest import REPO

    gsm8k = shared_data / "gsm8k"
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    sizes = {"max_train": 16, "max_eval": 12, "max_dev": 4, "num_exemplars": 3}
    config["tasks"] = [{"name": "gsm8k", "format": "gsm8k", "train": str(gsm8k / "train.jsonl"),
                        "eval": str(gsm8k / "test.jsonl"), **sizes},
                       {"name": "sum", "format": "sum", "train": "gen:sum:train:2-4", "eval": "gen:sum:eval:2-4",
                        **sizes}]
    (tmp_path / "free.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "exp"
    assert main(["run", str(tmp_path / "free.yaml"), f"output.dir={out}", f"output.cache_dir={tmp_path / 'c'}",
                 "teacher.num_samples=2", "corpus.setting=fewshot", "students.0.epochs=1", "students.1.epochs=1",
                 "eval.self_consistency=3"]) == 0
    samples = pq.read_table(out / "teacher" / "samples").to_pylist()
    assert len(samples) == 2 * 32 and all(r["choices"] == [] and r["gold_answer"] for r in samples)
    assert {r["task"] for r in samples} == {"gsm8k", "sum"}
    corpus = pq.read_table(out / "corpus" / "corpus.parquet").to_pylist()
    assert corpus and all(r["label"] and r["label_index"] is None for r in corpus)
    report = json.loads((out / "report.json").read_text())
    runs = {r["run"]: r for r in report["rows"]}
    assert {"teacher", "scotd", "label-only", "scotd sc@3"} <= set(runs)
    assert all(r["total"] == 24 and r["free_form"]["questions"] == 24 for r in runs.values())
    assert all(set(r["by_task"]) == {"gsm8k", "sum"} for r in runs.values())
    preds = pq.read_table(out / "eval" / "scotd" / "predictions.parquet").to_pylist()
    assert all(p["gold_answer"] and p["gold_index"] is None for p in preds)
    assert "| run | free-form questions | strict | flexible |" in capsys.readouterr().out
    meta = json.loads((out / "students" / "scotd" / "model" / "scotd_student.json").read_text())
    assert meta["prompt_format"] == {"input": "Q: {question}\nA:",
                                     "target": " <rationale> So the answer is: {answer}"}


def test_student_metadata_shows_the_prompt_format_of_each_kind_it_trained_on():
    from scotd.student.stage import prompt_formats

    free = prompt_formats({True}, scotd=False)
    assert free == {"prompt_format": {"input": "Q: {question}\nA:", "target": " {answer}"}}
    mixed = prompt_formats({True, False}, scotd=True)
    assert mixed["prompt_format"]["target"] == " <rationale> So the answer is: (a)"
    assert "Answer Choices:" in mixed["prompt_format"]["input"]
    assert mixed["prompt_format_free_form"]["target"] == " <rationale> So the answer is: {answer}"
