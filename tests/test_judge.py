"""The pairwise rationale judge: order randomisation, verdict parsing, mapping verdicts back to runs, the config
check and the report table."""

import json

import pytest

from scotd.evaluate import score
from scotd.judge import judge_prompt, make_pairs, parse_verdict, swapped, tally
from scotd.tasks import Question

QUESTIONS = {f"q{i}": Question(f"q{i}", "t", f"Question {i}?", ("x", "y", "z"), i % 3) for i in range(200)}


def preds(run, texts):
    return [score(run, QUESTIONS, qid, text) for qid, text in texts.items()]


@pytest.mark.parametrize("text, verdict", [(" (1)", "1"), ("(2) because", "2"), (" ( tie )", "tie"), (" (TIE)", "tie"),
                                           (" 1", None), ("", None), (" (3)", None), ("(2) or (1)", "2")])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_order_is_a_fair_seeded_coin_per_question():
    flips = [swapped(0, qid) for qid in QUESTIONS]
    assert 70 < sum(flips) < 130  # 200 fair coins
    assert flips == [swapped(0, qid) for qid in QUESTIONS]  # the same on a rerun
    assert flips != [swapped(1, qid) for qid in QUESTIONS]  # another seed, another order


def test_pairs_only_where_both_wrote_a_rationale_and_keys_map_back():
    a = preds("a", {"q0": " A thinks. So the answer is: (a)", "q1": " (b)", "q2": " A again. So the answer is: (c)",
                    "q3": " A three. So the answer is: (a)"})
    b = preds("b", {"q0": " B thinks. So the answer is: (b)", "q1": " B. So the answer is: (b)", "q2": " ",
                    "q3": " B three. So the answer is: (a)"})
    pairs = make_pairs(QUESTIONS, "a", "b", a, b, seed=0)
    assert [p["question_id"] for p in pairs] == ["q0", "q3"]  # q1: a wrote no rationale; q2: b wrote nothing
    for p in pairs:
        shown = {p["key"]["1"]: p["first"], p["key"]["2"]: p["second"]}
        assert shown["a"].startswith("A ") and shown["b"].startswith("B ")
        assert p["key"]["1"] == ("b" if swapped(0, p["question_id"]) else "a")
    prompt = judge_prompt(QUESTIONS["q0"], pairs[0]["first"], pairs[0]["second"])
    assert "Q: Question 0?" in prompt and prompt.endswith("Better explanation:") and "Explanation (2):" in prompt


def test_tally_maps_positions_to_runs():
    pairs = [{"key": {"1": "a", "2": "b"}}, {"key": {"1": "b", "2": "a"}}, {"key": {"1": "b", "2": "a"}},
             {"key": {"1": "a", "2": "b"}}, {"key": {"1": "a", "2": "b"}}]
    result = tally(pairs, ["1", "2", "2", "tie", None], "a", "b")
    assert (result["wins_a"], result["wins_b"], result["ties"], result["unparsed"]) == (3, 0, 1, 1)
    assert result["win_rate_a"] == 1.0 and result["p_value"] == pytest.approx(2 / 8) and result["within_noise"]
    with pytest.raises(ValueError):
        tally(pairs, ["1"], "a", "b")


def test_judge_pairs_must_name_two_greedy_runs(tmp_path):
    from scotd.config import load_config
    from scotd.pipeline import Experiment, eval_runs, stage_judge

    (tmp_path / "exp.yaml").write_text(
        f"tasks: [{{name: g, format: jsonl, train: a.jsonl, eval: b.jsonl}}]\nstudents: [{{name: s}}]\n"
        f"eval: {{judge_pairs: [[s, teacher], [s, nobody]]}}\noutput: {{dir: {tmp_path / 'out'}}}\n")
    cfg = load_config(tmp_path / "exp.yaml")
    assert cfg.eval.judge_pairs == (("s", "teacher"), ("s", "nobody"))
    with pytest.raises(ValueError, match=r"eval\.judge_pairs\.1: expected two evaluation runs of .*'s', 'teacher'.*"
                                         r"got \['s', 'nobody'\]"):
        stage_judge(Experiment(cfg), eval_runs(cfg))


def test_report_lists_judge_results(tmp_path):
    from scotd.report import write_report
    from scotd.schema import PREDICTION_SCHEMA, to_table, write_table

    rows = preds("a", {"q0": " (a)"})
    write_table(to_table(rows, PREDICTION_SCHEMA), tmp_path / "eval" / "a" / "predictions.parquet")
    (tmp_path / "judge" / "a__vs__b").mkdir(parents=True)
    summary = {**tally([{"key": {"1": "a", "2": "b"}}] * 3, ["1", "1", "2"], "a", "b"), "judge": "t", "seed": 0}
    (tmp_path / "judge" / "a__vs__b" / "summary.json").write_text(json.dumps(summary))
    report = write_report(tmp_path, [{"run": "a", "kind": "scotd", "model": "m", "dir": "a"}])
    assert report["judge"] == [summary]
    assert "| a | b | t | 3 | 2 | 1 | 0 | 0 | 1.000 | within noise |" in (tmp_path / "report.md").read_text()
