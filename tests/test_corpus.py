import json
import logging

import pyarrow.parquet as pq
import pytest

from scotd.config import CorpusConfig
from scotd.corpus import build_corpus, dedup, keep_correct, keep_parsed, majority_labels
from scotd.schema import CORPUS_SCHEMA, QUESTION_SCHEMA, SAMPLE_SCHEMA, to_table, write_table


def sample(qid, idx, rationale, parsed, gold, error=None):
    return {"question_id": qid, "task": "t", "sample_index": idx, "question": f"{qid}?", "choices": ["x", "y", "z"],
            "text": f" {rationale} So the answer is: (?)", "rationale": rationale, "parsed_index": parsed,
            "parse_error": error, "gold_index": gold, "correct": parsed == gold, "logprob_sum": -1.0 * idx,
            "logprob_mean": -0.2 * idx,
            "num_tokens": 5, "finish_reason": "stop",
            "parsed_answer": None if parsed is None else "abc"[parsed], "gold_answer": "abc"[gold]}


ROWS = [
    sample("q1", 0, "because a", 0, 0),
    sample("q1", 1, "because  a", 0, 0),  # whitespace-only duplicate of sample 0
    sample("q1", 2, "because b", 1, 0),
    sample("q1", 3, "", None, 0, "no_answer_phrase"),
    sample("q2", 0, "since c", 2, 1),
    sample("q2", 1, "since d", 2, 1),
    sample("q2", 2, "since e", 1, 1),
]


def test_keep_correct_uses_gold_labels():
    kept = keep_correct(ROWS)
    assert [(r["question_id"], r["sample_index"]) for r in kept] == [("q1", 0), ("q1", 1), ("q2", 2)]
    assert all(r["label_index"] == r["gold_index"] for r in kept)


def test_keep_parsed_uses_teacher_labels():
    kept = keep_parsed(ROWS)
    assert len(kept) == 6 and all(r["label_index"] == r["parsed_index"] for r in kept)


def test_dedup_keeps_first_sample_per_question():
    assert [(r["question_id"], r["sample_index"]) for r in dedup(keep_parsed(ROWS))] == [
        ("q1", 0), ("q1", 2), ("q2", 0), ("q2", 1), ("q2", 2)]


def test_majority_labels_break_ties_low():
    assert majority_labels(ROWS) == {"q1": "a", "q2": "c"}
    assert majority_labels([sample("q", 0, "r", 2, 0), sample("q", 1, "r", 1, 0)]) == {"q": "b"}


@pytest.mark.parametrize("setting, kept, labels", [
    ("supervised", 2, {"q1": 0, "q2": 1}),
    ("fewshot", 5, {"q1": 0, "q2": 2}),
])
def test_build_corpus_writes_parquet_and_summary(tmp_path, setting, kept, labels):
    write_table(to_table(ROWS, SAMPLE_SCHEMA), tmp_path / "samples" / "block-1.parquet")
    summary = build_corpus(tmp_path / "samples", CorpusConfig(setting=setting), tmp_path / "corpus")
    corpus = pq.read_table(tmp_path / "corpus" / "corpus.parquet")
    assert corpus.schema.equals(CORPUS_SCHEMA) and corpus.num_rows == kept
    label_table = pq.read_table(tmp_path / "corpus" / "labels.parquet")
    assert label_table.schema.equals(QUESTION_SCHEMA)
    assert dict(zip(label_table["question_id"].to_pylist(), label_table["answer_index"].to_pylist())) == labels
    assert summary == json.loads((tmp_path / "corpus" / "summary.json").read_text())
    assert summary["samples"] == 7 and summary["parse_failures"] == 1 and summary["kept"] == kept
    assert summary["sample_accuracy"] == pytest.approx(3 / 7)


def test_empty_corpus_is_a_clear_error(tmp_path):
    write_table(to_table([sample("q", 0, "r", 1, 0)], SAMPLE_SCHEMA), tmp_path / "s" / "b.parquet")
    with pytest.raises(RuntimeError, match="no rationale survived the supervised filter"):
        build_corpus(tmp_path / "s", CorpusConfig(), tmp_path / "c")


def test_corpus_uses_the_samples_of_this_runs_training_questions_only(tmp_path):
    """Issue 19, item 4: samples an earlier, larger run left (q2) do not enter a corpus of fewer questions."""
    write_table(to_table(ROWS, SAMPLE_SCHEMA), tmp_path / "samples" / "block-1.parquet")
    summary = build_corpus(tmp_path / "samples", CorpusConfig(), tmp_path / "corpus", {"q1"})
    assert set(pq.read_table(tmp_path / "corpus" / "corpus.parquet")["question_id"].to_pylist()) == {"q1"}
    assert summary["questions"] == 1 and summary["samples"] == 4


def overwrite_page(path):
    """64 bytes overwritten inside the file's data pages: the footer still reads, the data does not."""
    data = bytearray(path.read_bytes())
    data[8:72] = bytes(range(64))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "columns", "page"])
def test_a_corrupt_teacher_block_is_named_with_the_way_to_resample_it(tmp_path, damage):
    """Issue 19, item 10: the corpus and the teacher's resume both refuse a block they cannot read, naming it."""
    import pyarrow as pa

    from scotd.schema import CorruptFileError
    from scotd.teacher import finished_question_ids

    write_table(to_table(ROWS[:4], SAMPLE_SCHEMA), tmp_path / "samples" / "block-1.parquet")
    bad = tmp_path / "samples" / "block-2.parquet"
    write_table(to_table(ROWS[4:], SAMPLE_SCHEMA), bad)
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:-30])
    elif damage == "page":  # issue 31, item 9: "OSError: Corrupt snappy compressed data." with no file named
        overwrite_page(bad)
    else:
        pq.write_table(pa.table({"question_id": ["q2"]}), bad)
    for call in (lambda: build_corpus(tmp_path / "samples", CorpusConfig(), tmp_path / "corpus"),
                 lambda: finished_question_ids(tmp_path / "samples")):
        with pytest.raises(CorruptFileError) as err:
            call()
        assert str(err.value).startswith(f"{bad}: ") and "remove it and rerun" in str(err.value)
        assert "samples its questions again" in str(err.value)
    bad.unlink()  # what the message says to do: the rest resumes
    assert finished_question_ids(tmp_path / "samples") == {"q1"}


def test_a_teacher_block_copied_twice_is_refused_not_counted_twice(tmp_path):
    """Issue 31, item 5: a copied block was counted twice ("96 of 256 samples kept")."""
    import shutil

    from scotd.schema import CorruptFileError
    from scotd.teacher import finished_question_ids

    write_table(to_table(ROWS, SAMPLE_SCHEMA), tmp_path / "samples" / "block-1.parquet")
    shutil.copy(tmp_path / "samples" / "block-1.parquet", tmp_path / "samples" / "block-2.parquet")
    for call in (lambda: build_corpus(tmp_path / "samples", CorpusConfig(), tmp_path / "corpus"),
                 lambda: finished_question_ids(tmp_path / "samples")):
        with pytest.raises(CorruptFileError, match=r"block-2.parquet: holds question_id 'q\d', which "
                                                   r"block-1.parquet holds too"):
            call()


@pytest.mark.parametrize("a, b, same", [
    ("63 - 18 = 45. 45 + 29 = 74.", "63 - 18 = 45.  45 + 29 =\n74.", True),  # whitespace
    ("1,000 + 5 = 1,005.", "1000 + 5 = 1005.", True),  # thousands commas
    ("45.0 - 5 = 40.", "45 - 5 = 40.00.", True),  # trailing zeros
    ("Items 3,4 and 5.", "Items 34 and 5.", False),  # a list is not a number
    ("63 - 18 = 45.", "18 - 63 = -45.", False),
    ("Version 1.2.3.", "Version 1.2.30.", False),
])
def test_rationale_key_folds_whitespace_and_number_formatting_only(a, b, same):
    from scotd.diversity import rationale_key

    assert (rationale_key(a) == rationale_key(b)) is same


def test_diversity_counts_distinct_rationales_per_question_and_repeats():
    from scotd.diversity import diversity

    rows = [{"question_id": "q1", "rationale": "1 + 2 = 3."}, {"question_id": "q1", "rationale": "1 + 2 = 3.0."},
            {"question_id": "q1", "rationale": "2 + 1 = 3."}, {"question_id": "q2", "rationale": "5 - 1 = 4."}]
    assert diversity(rows) == {"distinct_rationales": 3, "distinct_per_question": 1.5,
                               "questions_by_distinct": {"1": 1, "2": 1}, "duplicate_share": 0.25}
    assert diversity([])["distinct_per_question"] == 0.0


def test_dedup_drops_rationales_that_differ_only_in_number_formatting():
    rows = [{"question_id": "q", "sample_index": i, "rationale": r, "label": "3"}
            for i, r in enumerate(["1 + 2 = 3.0.", "1 + 2 = 3.", "2 + 1 = 3."])]
    assert [r["sample_index"] for r in dedup(rows)] == [0, 2]


def test_mostly_repeated_samples_warn_naming_what_to_change(caplog):
    from scotd.teacher import warn_if_repeated

    with caplog.at_level(logging.INFO, logger="scotd"):
        warn_if_repeated({"distinct_per_question": 1.03, "duplicate_share": 0.74}, 4)
    assert "teacher: 1.03 distinct rationales per question of 4 samples; 74% of the samples repeat another" \
        in caplog.text
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for key in ("tasks[].max_train", "teacher.num_samples", "tasks[].exemplars", "teacher.temperature"):
        assert key in warning
    caplog.clear()
    warn_if_repeated({"distinct_per_question": 3.2, "duplicate_share": 0.2}, 4)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
