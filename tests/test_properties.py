"""Property-based tests (hypothesis) of the input boundaries: data loaders, config overrides and answer parsing.

Random and mutated inputs give a question, a counted skip or one clear error (TaskDataError, ConfigError), never
another exception, and parsing never raises. Examples are derived from a fixed seed, so CI runs the same cases
each time; run with HYPOTHESIS_SEARCH=1 to explore new ones.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scotd.config import ConfigError, ExperimentConfig, load_config
from scotd.prompts import parse_answer
from scotd.tasks import ROW_PARSERS, Question, TaskDataError, load_questions
from tests.conftest import REPO

EXPLORE = bool(os.environ.get("HYPOTHESIS_SEARCH"))
SETTINGS = settings(max_examples=400 if EXPLORE else 150, deadline=None, derandomize=not EXPLORE, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

SCALARS = (st.none() | st.booleans() | st.integers(-3, 30) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12) | st.sampled_from(["A", "b", "(c)", "yes", "no", "positive", "", " ", "\ufeff"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=6)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
# Keys the loaders look for, so that many rows get far into a parser instead of failing on the first field.
KEYS = st.sampled_from(["id", "qid", "question", "stem", "choices", "text", "label", "answer", "answerKey",
                        "answer_index", "question_concept", "fact1", "facts", "decomposition", "target", "input",
                        "Sentiment", "Text"])
ROWS = st.dictionaries(KEYS, JSON, max_size=7) | JSON
FILE_FORMATS = sorted(f for f in ROW_PARSERS if f != "hf")


def check_result(result, fmt: str) -> None:
    for q in result.questions:
        assert isinstance(q, Question) and q.id and q.task == "t" and isinstance(q.text, str) and q.text.strip()
        assert q.choices and all(isinstance(c, str) for c in q.choices), (fmt, q)
        assert q.answer_index is None or 0 <= q.answer_index < len(q.choices), (fmt, q)
    assert result.num_skipped >= len(result.skipped)


def load(data: bytes, fmt: str, skip: bool):
    suffix = ".tsv" if fmt == "imdb" else ".jsonl"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{suffix}"
        path.write_bytes(data)
        try:
            result = load_questions(path, fmt, "t", skip_bad_rows=skip)
        except TaskDataError as err:
            assert str(err).startswith(str(path)), err  # every data error names the file
            return None
        check_result(result, fmt)
        return result


@SETTINGS
@given(rows=st.lists(ROWS, max_size=5), fmt=st.sampled_from(FILE_FORMATS), skip=st.booleans())
def test_random_rows_give_questions_skips_or_one_data_error(rows, fmt, skip):
    if fmt == "imdb":
        data = "".join("\t".join(str(v) for v in (r.values() if isinstance(r, dict) else [r])) + "\n" for r in rows)
    else:
        data = "".join(json.dumps(r) + "\n" for r in rows)
    load(data.encode(), fmt, skip)


# A few real rows of each line-per-question file in ../shared/data (StrategyQA is one JSON array: not cut here).
REAL = {"commonsenseqa": "commonsenseqa/dev_rand_split.jsonl", "openbookqa": "openbookqa/dev.jsonl",
        "arc": "arc/ARC-Easy-Dev.jsonl", "imdb": "imdb_contrast/dev_original.tsv"}


def real_lines(shared: Path, fmt: str) -> bytes:
    with open(shared / REAL[fmt], "rb") as f:
        return b"".join(f.readline() for _ in range(4 if fmt != "imdb" else 5))


MUTATION = st.lists(st.tuples(st.sampled_from(["delete", "insert", "replace"]), st.integers(0, 10_000),
                              st.binary(min_size=1, max_size=3)), min_size=1, max_size=6)


@pytest.mark.parametrize("fmt", sorted(REAL))
def test_mutated_real_rows_give_questions_skips_or_one_data_error(fmt, shared_data):
    data = real_lines(shared_data, fmt)
    assert load(data, fmt, False) is not None  # unmutated, the real rows load

    @SETTINGS
    @given(mutations=MUTATION, skip=st.booleans())
    def mutated(mutations, skip):
        out = bytearray(data)
        for op, at, chunk in mutations:
            at %= len(out) + 1
            if op == "delete":
                del out[at: at + len(chunk)]
            elif op == "insert":
                out[at:at] = chunk
            else:
                out[at: at + len(chunk)] = chunk
        load(bytes(out), fmt, skip)

    mutated()


TINY = REPO / "configs" / "tiny.yaml"
OVERRIDE_KEYS = st.sampled_from([
    "teacher.num_samples", "teacher.temperature", "teacher.stop", "teacher.max_model_len", "tasks.0.max_train",
    "tasks.0.name", "tasks.0.train", "tasks.1.name", "tasks.-1.name", "students.0.name", "students.0.epochs",
    "students.0.zero_stage", "students.0.cpu_bf16", "students.1.method", "eval.judge_pairs", "output.dir", "name",
    "resources.num_cpus", "teacher", "tasks", "students.0", "corpus.setting", "teacher..stop", "teacher.stop.0",
    "eval.self_consistency", "nope.key",
]) | st.text(max_size=20)
VALUES = st.sampled_from(["", "1", "-1", "0", "1e29", "2.0", "true", "off", "null", "[", "[a, b]", "{a: 1}",
                          "[[teacher, scotd]]", "'x'", "a:b", "../x", "/abs", "s3://k:s/e@b/x", "&a", "*a", "!!python/none",
                          "1: 2", "- x", "\t", "\ufeff"]) | st.text(max_size=20)


@SETTINGS
@given(pairs=st.lists(st.tuples(OVERRIDE_KEYS, VALUES), min_size=1, max_size=3), bare=st.booleans())
def test_random_overrides_give_a_config_or_one_config_error(pairs, bare):
    overrides = [k if bare and i == 0 else f"{k}={v}" for i, (k, v) in enumerate(pairs)]
    try:
        cfg = load_config(TINY, overrides)
    except ConfigError as err:
        assert str(err).strip() and "Traceback" not in str(err)
        return
    assert isinstance(cfg, ExperimentConfig)
    assert all(isinstance(s.epochs, int) and not isinstance(s.epochs, bool) and s.epochs >= 1 for s in cfg.students)
    assert cfg.teacher.num_samples >= 1 and cfg.teacher.max_model_len >= 1


@SETTINGS
@given(text=st.text(max_size=200) | st.builds(lambda a, b, c: a + b + c, st.text(max_size=40),
                                               st.sampled_from([" So the answer is: (", "answer is: (", "(", "("]),
                                               st.text(max_size=5)),
       num_choices=st.integers(1, 26))
def test_parse_answer_never_raises_and_returns_a_valid_letter_or_a_reason(text, num_choices):
    parsed = parse_answer(text, num_choices)
    assert (parsed.index is None) != (parsed.reason is None)
    assert parsed.index is None or 0 <= parsed.index < num_choices
    assert parsed.reason in (None, "empty_output", "no_answer_phrase", "unknown_letter")


NAME_PARTS = st.sampled_from(["a", "b", "scotd", "teacher", "untrained", "_", "-", ".", "sc", "_sc_", "2", "__vs__",
                              "x_", "_best", "@", ":"])
NAMES = st.lists(NAME_PARTS, min_size=1, max_size=4).map("".join)
MODELS = st.sampled_from(["/x/m:x", "/x/m_x", "/x/m x", "tiny:student", "org/m", "org_m", "offline:smollm2-135m-instruct"])


@SETTINGS
@given(students=st.lists(st.tuples(NAMES, MODELS), min_size=1, max_size=3), k=st.sampled_from([1, 2, 3]),
       shots=st.sampled_from([0, 2]))
def test_run_folders_are_distinct_or_the_config_is_refused(students, k, shots):
    """Issue 31: evaluation runs map to folders injectively; a config where two would share one is refused."""
    from scotd.runs import eval_runs, run_dir_name

    overrides = [f"students=[{', '.join(f'{{name: {json.dumps(n)}, model: {json.dumps(m)}}}' for n, m in students)}]",
                 f"eval.self_consistency={k}", f"eval.untrained_shots={shots}", "eval.judge_pairs=[]"]
    try:
        cfg = load_config(REPO / "configs" / "tiny.yaml", overrides)
    except ConfigError:
        return
    folders = [r.dir or run_dir_name(r.run) for r in eval_runs(cfg)]
    assert len(folders) == len(set(folders)) and not any("__vs__" in f for f in folders)


@SETTINGS
@given(damage=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["text", "correct", "question_id", "drop", "twice",
                                                                       "parse_error"])), max_size=4))
def test_damaged_predictions_give_the_right_scores_or_one_report_error(damage):
    """Issue 31: whatever is done to a predictions file, the report scores the answers' text against the gold answers,
    or refuses the file naming it; never another exception, never a count the text does not give."""
    from scotd.prompts import score_answer
    from scotd.report import ReportError, write_report
    from scotd.runs import EvalRun
    from scotd.schema import PREDICTION_SCHEMA, QUESTION_SCHEMA, to_table, write_table

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        questions = [Question(f"q{i}", "t", "?", ("x", "y"), i % 2) for i in range(6)]
        write_table(to_table([{"question_id": q.id, "task": "t", "question": "?", "choices": ["x", "y"],
                               "answer_index": q.answer_index, "answer": None} for q in questions], QUESTION_SCHEMA),
                    root / "questions" / "eval.parquet")
        rows = [score_answer("a", q, " (a)") for q in questions]
        for index, kind in damage:
            if not rows:
                break
            i = index % len(rows)
            if kind == "text":
                rows[i] = {**rows[i], "text": " (b)" if rows[i]["text"] == " (a)" else " (a)"}
            elif kind == "correct":
                rows[i] = {**rows[i], "correct": not rows[i]["correct"]}
            elif kind == "question_id":
                rows[i] = {**rows[i], "question_id": "q99"}
            elif kind == "drop":
                rows.pop(i)
            elif kind == "twice":
                rows.append(dict(rows[i]))
            else:
                rows[i] = {**rows[i], "parse_error": "cut_at_limit"}
        write_table(to_table(rows, PREDICTION_SCHEMA), root / "eval" / "a" / "predictions.parquet")
        try:
            report = write_report(root, [EvalRun(run="a", kind="scotd", model="m", dir="a")])
        except ReportError as err:
            assert str(err).startswith(str(root / "eval" / "a" / "predictions.parquet"))
            return
        by_id = {q.id: q for q in questions}
        right = sum(score_answer("a", by_id[r["question_id"]], r["text"])["correct"] for r in rows)
        assert report["rows"][0]["correct"] == right and report["rows"][0]["total"] == 6
