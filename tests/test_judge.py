"""The pairwise rationale judge: order randomisation, verdict parsing, mapping verdicts back to runs, the config
check and the report table."""

import json

import pytest

from scotd.evaluate import score
from scotd.judge import (blind_pairs, judge_prompt, make_pairs, parse_verdict, read_annotations, swapped, tally,
                         tally_annotations)
from scotd.runs import EvalRun
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
    from scotd.experiment import Experiment
    from scotd.judge import stage_judge

    (tmp_path / "exp.yaml").write_text(
        f"tasks: [{{name: g, format: jsonl, train: a.jsonl, eval: b.jsonl}}]\nstudents: [{{name: s}}]\n"
        f"eval: {{judge_pairs: [[s, teacher], [s, nobody]]}}\noutput: {{dir: {tmp_path / 'out'}}}\n")
    from scotd.config import ConfigError

    with pytest.raises(ConfigError, match=r"eval\.judge_pairs\.1: expected two of the evaluation runs"):
        load_config(tmp_path / "exp.yaml")  # refused at load, before any work
    cfg = load_config(tmp_path / "exp.yaml", check_training=False)  # a saved config: the stage checks it again
    assert cfg.eval.judge_pairs == (("s", "teacher"), ("s", "nobody"))
    with pytest.raises(ValueError, match=r"eval\.judge_pairs\.1: expected two evaluation runs of .*'s', 'teacher'.*"
                                         r"got \['s', 'nobody'\]"):
        stage_judge(Experiment(cfg))


def test_report_lists_judge_results(tmp_path):
    from scotd.report import write_report
    from scotd.schema import PREDICTION_SCHEMA, to_table, write_table

    rows = preds("a", {"q0": " (a)"})
    write_table(to_table(rows, PREDICTION_SCHEMA), tmp_path / "eval" / "a" / "predictions.parquet")
    (tmp_path / "judge" / "a__vs__b").mkdir(parents=True)
    summary = {**tally([{"key": {"1": "a", "2": "b"}}] * 3, ["1", "1", "2"], "a", "b"), "judge": "t", "seed": 0}
    (tmp_path / "judge" / "a__vs__b" / "summary.json").write_text(json.dumps(summary))
    report = write_report(tmp_path, [EvalRun(run="a", kind="scotd", model="m", dir="a")])
    assert report["judge"] == [{**summary, "verdicts": "judge/a__vs__b/verdicts.parquet"}]
    md = (tmp_path / "report.md").read_text()
    assert "| a | b | t | 3 | 2 | 1 | 0 | 0 | 1.000 | within noise |" in md
    assert "| judge: a vs b | judge/a__vs__b/verdicts.parquet |" in md  # Sources


def texts_of(run, n):
    return {f"q{i}": f" {run.upper()} reasons about {i}. So the answer is: (a)" for i in range(n)}


def test_blind_export_names_no_run_and_the_key_maps_every_pair_back():
    a, b = "scotd-all", "label-only"
    pairs = make_pairs(QUESTIONS, a, b, preds(a, texts_of("x", 40)), preds(b, texts_of("y", 40)), seed=3)
    annotate, key = blind_pairs(pairs, QUESTIONS)
    assert [r["pair_id"] for r in annotate] == [k["pair_id"] for k in key] and len(set(k["pair_id"] for k in key)) == 40
    for row, k, pair in zip(annotate, key, pairs):
        assert set(row) == {"pair_id", "question", "choices", "rationale_a", "rationale_b", "verdict"}
        assert row["verdict"] == "" and a not in json.dumps(row) and b not in json.dumps(row)
        q = QUESTIONS[k["question_id"]]
        assert (row["question"], row["choices"]) == (q.text, list(q.choices))
        # the key says which run wrote the rationale shown as A: run x's texts start with " X"
        shown = {k["a"]: row["rationale_a"], k["b"]: row["rationale_b"]}
        assert shown[a].startswith("X ") and shown[b].startswith("Y ") and {k["a"], k["b"]} == {a, b}
        assert k["a"] == (b if swapped(3, k["question_id"]) else a) and k["question_id"] == pair["question_id"]
    assert 5 < sum(k["a"] == b for k in key) < 35  # A is not always the same run


def test_people_verdicts_are_tallied_like_the_judge(tmp_path):
    a, b = "s", "t"
    pairs = make_pairs(QUESTIONS, a, b, preds(a, texts_of("x", 6)), preds(b, texts_of("y", 6)), seed=0)
    annotate, key = blind_pairs(pairs, QUESTIONS)
    # people prefer run s everywhere except one tie and one blank
    for row, k in zip(annotate, key):
        row["verdict"] = "A" if k["a"] == a else "b"
    annotate[0]["verdict"], annotate[1]["verdict"] = "tie", ""
    result = tally_annotations(annotate, key, a, b)
    assert (result["wins_a"], result["wins_b"], result["ties"], result["unparsed"]) == (4, 0, 1, 1)
    folder = tmp_path / "judge" / "s__vs__t"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"a": a, "b": b}))
    (folder / "key.jsonl").write_text("".join(json.dumps(k) + "\n" for k in key))
    (tmp_path / "filled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversed(annotate)))
    assert read_annotations(folder, tmp_path / "filled.jsonl") == result
    with pytest.raises(ValueError, match="not the key's 6 pairs"):
        tally_annotations(annotate[1:], key, a, b)


def test_a_judged_pair_is_reused_without_an_engine(tmp_path):
    """A rerun finds the pair folder's summary.json (written last) and returns it: no engine starts (spec=None)."""
    from scotd.judge import _write_jsonl, judge_runs

    a, b = "s", "t"
    judged = make_pairs(QUESTIONS, a, b, preds(a, texts_of("x", 5)), preds(b, texts_of("y", 5)), seed=0)
    folder = tmp_path / "s__vs__t"
    folder.mkdir()
    _write_jsonl(folder / "pairs.jsonl", judged)
    (folder / "summary.json").write_text(json.dumps({"a": a, "b": b, "pairs": 5}))
    summary = judge_runs(list(QUESTIONS.values()), a, b, preds(a, texts_of("p", 8)), preds(b, texts_of("q", 8)),
                         None, None, judge_dir=tmp_path, num_cpus=1)
    assert summary == {"a": a, "b": b, "pairs": 5}
    assert not list(folder.glob(".*.tmp"))


def test_judge_score_command_tallies_people_and_names_a_bad_file(tmp_path, capsys):
    from scotd.cli import main

    a, b = "s", "t"
    pairs = make_pairs(QUESTIONS, a, b, preds(a, texts_of("x", 6)), preds(b, texts_of("y", 6)), seed=0)
    annotate, key = blind_pairs(pairs, QUESTIONS)
    for row, k in zip(annotate, key):
        row["verdict"] = "A" if k["a"] == a else "B"  # people prefer s everywhere
    folder = tmp_path / "judge" / "s__vs__t"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"a": a, "b": b}))
    (folder / "key.jsonl").write_text("".join(json.dumps(k) + "\n" for k in key))
    filled = tmp_path / "filled.jsonl"
    filled.write_text("".join(json.dumps(r) + "\n" for r in annotate))
    assert main(["judge", "score", str(folder), str(filled)]) == 0
    assert "s vs t: 6 pairs, s better in 6, t better in 0, 0 ties" in capsys.readouterr().out
    written = json.loads((folder / "people_summary.json").read_text())
    assert (written["wins_a"], written["wins_b"], written["annotations"]) == (6, 0, str(filled))
    filled.write_text(filled.read_text() + "{not json\n")
    assert main(["judge", "score", str(folder), str(filled)]) == 2
    assert f"judge error: {filled}:7: not JSON" in capsys.readouterr().err
    filled.write_text("".join(json.dumps(r) + "\n" for r in annotate[:5]))
    assert main(["judge", "score", str(folder), str(filled)]) == 2
    assert "are not the key's 6 pairs" in capsys.readouterr().err
