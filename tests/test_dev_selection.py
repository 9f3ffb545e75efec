"""Choosing a student's checkpoint on a dev split: carving the split, scoring a model on it, ranking checkpoints,
the evaluation runs that follow and the report table."""

import json

import pyarrow.parquet as pq
import pytest

from scotd.config import load_config
from scotd.evaluate import score
from scotd.experiment import Experiment
from scotd.runs import eval_runs
from scotd.tasks_stage import stage_tasks
from scotd.prompts import cut_at_stop, gold_key, stop_strings, student_prompt
from scotd.report import write_report
from scotd.schema import PREDICTION_SCHEMA, to_table, write_table
from scotd.student.model import dev_metrics
from scotd.student.settings import best_key
from scotd.tasks import Question, carve_dev, load_questions


def questions(n):
    return [Question(f"q{i}", "t", f"Question {i}?", ("a", "b", "c"), i % 3) for i in range(n)]


def test_carve_dev_is_fixed_by_ids_and_disjoint():
    train, dev = carve_dev(questions(50), 5)
    assert len(dev) == 5 and len(train) == 45 and not {q.id for q in train} & {q.id for q in dev}
    assert [q.id for q in train] == [q.id for q in questions(50) if q.id not in {d.id for d in dev}]  # order kept
    # the same ids are held out from any ordering or superset of the questions
    again_train, again_dev = carve_dev(list(reversed(questions(50))), 5)
    assert {q.id for q in again_dev} == {q.id for q in dev}
    assert carve_dev(questions(3), 0) == (questions(3), [])


def test_cut_at_stop_keeps_the_earliest_stop():
    stops = stop_strings(3)
    assert cut_at_stop("It is b. So the answer is: (b) and more\n\nQ: next", stops) == "It is b. So the answer is: (b)"
    assert cut_at_stop("one\n\ntwo So the answer is: (a)", stops) == "one\n\n"
    assert cut_at_stop("no stop here", stops) == "no stop here"


def test_best_key_prefers_accuracy_then_fewer_failures_then_later_epochs():
    history = [{"epoch": 1, "dev_accuracy": 0.5, "dev_parse_failures": 3},
               {"epoch": 2, "dev_accuracy": 0.5, "dev_parse_failures": 1},
               {"epoch": 3, "dev_accuracy": 0.5, "dev_parse_failures": 1},
               {"epoch": 4, "dev_accuracy": 0.4, "dev_parse_failures": 0}]
    assert max(history, key=best_key)["epoch"] == 3
    assert max(history[:2], key=best_key)["epoch"] == 2


@pytest.mark.slow  # a real model generating on CPU: ~10 s
def test_dev_answers_batched_equal_one_by_one_and_are_scored(tmp_path, shared_data):
    """Left-padded batches give the same greedy completions as one question at a time; dev_metrics scores them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scotd.student.model import greedy_answers
    from scotd.tiny import ensure_tiny_model

    qs = load_questions(shared_data / "commonsenseqa" / "dev_rand_split.jsonl", "commonsenseqa", "csqa").questions[:10]
    folder = ensure_tiny_model("student", tmp_path / "tiny", [student_prompt(q) for q in qs], [])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():  # larger random weights, so that the greedy completion depends on the prompt
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    prompts = [student_prompt(q) for q in qs]
    batched = greedy_answers(model, tokenizer, prompts, 16, batch_size=4)
    single = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        single.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    assert batched == single and len(set(single)) > 1 and all(single)
    assert tokenizer.padding_side == "right" and not model.training  # both as they were

    # scoring: completions that name the gold letter, a wrong one and none
    dev = [{"prompt": p, "num_choices": len(q.choices), "gold": gold_key(q)} for p, q in zip(prompts, qs)]
    import scotd.student.model as train

    canned = iter([f"x So the answer is: ({'abcde'[q.answer_index]})" for q in qs[:6]]
                  + [f"So the answer is: ({'abcde'[(q.answer_index + 1) % 5]})" for q in qs[6:8]] + ["no", "idea"])
    real = train.greedy_answers
    calls = []

    def canned_answers(model, tokenizer, prompts, *a, **k):
        calls.append(k)
        return [next(canned) for _ in prompts]

    train.greedy_answers = canned_answers
    try:
        got = dev_metrics(model, tokenizer, dev, 16, rank=0, world=1, batch_size=4, synced=False)
    finally:
        train.greedy_answers = real
    assert got == {"dev_accuracy": 0.6, "dev_parse_failures": 2, "dev_questions": 10}
    assert [c["batch_size"] for c in calls] == [4]


def write_cfg(tmp_path, extra=""):
    rows = [{"id": f"t{i}", "question": f"Question {i}?", "choices": ["a", "b"], "answer": i % 2} for i in range(40)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text("".join(json.dumps({**r, "id": f"e{i}"}) + "\n" for i, r in enumerate(rows[:6])))
    path = tmp_path / "exp.yaml"
    path.write_text(f"tasks: [{{name: g, format: jsonl, train: {data}, eval: {evaluation}, max_dev: 8, "
                    f"max_train: 20}}]\nstudents: [{{name: s}}, {{name: l, method: label_only}}]\n"
                    f"output: {{dir: {tmp_path / 'out'}}}\n{extra}")
    return path


def test_tasks_stage_writes_a_dev_split_held_out_of_training(tmp_path):
    summary = stage_tasks(Experiment(load_config(write_cfg(tmp_path))))
    read = lambda split: pq.read_table(tmp_path / "out" / "questions" / f"{split}.parquet")["question_id"].to_pylist()  # noqa: E731
    train, dev = read("train"), read("dev")
    assert summary["g"]["dev"] == len(dev) == 8 and len(train) == 20
    assert not set(train) & set(dev)
    assert set(dev) == {q.id for q in carve_dev(load_questions(tmp_path / "train.jsonl", "jsonl", "g").questions, 8)[1]}


def test_offline_dev_split_of_an_evaluation_only_task_is_an_error(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(f"tasks: [{{name: g, format: jsonl, eval: {tmp_path / 'e.jsonl'}, max_dev: 3}}]\n"
                    f"students: [{{name: s}}]\noutput: {{dir: {tmp_path / 'out'}}}\n")
    with pytest.raises(ValueError, match=r"tasks\.g\.max_dev: an evaluation-only task"):
        stage_tasks(Experiment(load_config(path)))


def select(tmp_path, name, best, last=3):
    folder = tmp_path / "out" / "students" / name
    folder.mkdir(parents=True, exist_ok=True)
    dev = [{"epoch": e, "dev_accuracy": 0.5 if e == best else 0.25, "dev_parse_failures": 0} for e in range(1, last + 1)]
    (folder / "checkpoints.json").write_text(json.dumps({"last_epoch": last, "best_epoch": best, "dev_questions": 8,
                                                         "dev": dev}))


@pytest.mark.parametrize("shown, other", [("best", "last"), ("last", "best")])
def test_a_student_whose_best_is_not_its_last_is_evaluated_twice(tmp_path, shown, other):
    cfg = load_config(write_cfg(tmp_path), [f"eval.checkpoint={shown}"])
    select(tmp_path, "s", best=2)
    select(tmp_path, "l", best=3)  # best == last: one run
    runs = {r.run: r for r in eval_runs(cfg, tmp_path / "out")}
    assert list(runs) == ["teacher", "untrained:offline:smollm2-135m-instruct", "s", "l", f"s@{other}"]
    assert (runs["s"].checkpoint, runs["s"].dir, runs["s"].extra) == (shown, f"s_{shown}", False)
    assert runs["s"].model_subdir == ("model-best" if shown == "best" else "model")
    assert runs[f"s@{other}"].extra and runs[f"s@{other}"].dir == f"s_{other}"
    assert (runs["l"].model_subdir, runs["l"].dir, runs["l"].epoch) == ("model", "l", 3)
    assert len({r.dir for r in runs.values()}) == len(runs)


def test_both_checkpoints_off_evaluates_only_the_shown_checkpoint(tmp_path):
    cfg = load_config(write_cfg(tmp_path), ["eval.both_checkpoints=false"])
    select(tmp_path, "s", best=2)
    runs = {r.run: r for r in eval_runs(cfg, tmp_path / "out")}
    assert list(runs) == ["teacher", "untrained:offline:smollm2-135m-instruct", "s", "l"]
    assert (runs["s"].checkpoint, runs["s"].model_subdir, runs["s"].epoch) == ("best", "model-best", 2)
    qs = {q.id: q for q in questions(4)}
    r = runs["s"]
    write_table(to_table([score("s", qs, qid, "(a)") for qid in qs], PREDICTION_SCHEMA),
                tmp_path / "out" / "eval" / r.dir / "predictions.parquet")
    write_report(tmp_path / "out", [r])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| s | 1: 25.0 %, 2: 50.0 %, 3: 25.0 % (n=8) | 2 | 3 | best | 50.0 % | not evaluated |" in md


def test_report_shows_the_checkpoint_table_and_keeps_extra_rows_out_of_the_main_table(tmp_path):
    cfg = load_config(write_cfg(tmp_path))
    select(tmp_path, "s", best=2)
    select(tmp_path, "l", best=3)
    qs = {q.id: q for q in questions(4)}
    runs = [r for r in eval_runs(cfg, tmp_path / "out") if r.run in ("s", "l", "s@last")]
    answers = {"s": "(a)", "l": "(b)", "s@last": "(c)"}  # q0 gold a, q1 b, q2 c, q3 a
    for r in runs:
        rows = [score(r.run, qs, qid, answers[r.run]) for qid in qs]
        write_table(to_table(rows, PREDICTION_SCHEMA), tmp_path / "out" / "eval" / r.dir / "predictions.parquet")
    report = write_report(tmp_path / "out", runs)
    assert [r["run"] for r in report["rows"]] == ["s", "l"] and [r["run"] for r in report["extra_rows"]] == ["s@last"]
    assert [d["versus"] for d in report["differences"]] == ["l"]
    s = next(c for c in report["checkpoints"] if c["run"] == "s")
    assert (s["best_epoch"], s["last_epoch"], s["shown"]) == (2, 3, "best")
    assert s["eval_accuracy"] == {"best": 0.5, "last": 0.25}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| s | 1: 25.0 %, 2: 50.0 %, 3: 25.0 % (n=8) | 2 | 3 | best | 50.0 % | 25.0 % |" in md
    assert "| l | 1: 25.0 %, 2: 25.0 %, 3: 50.0 % (n=8) | 3 | 3 | best | 25.0 % | 25.0 % |" in md
