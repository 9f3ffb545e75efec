"""Corpus selectors on hand-made corpora where the right selection is known."""

import numpy as np
import pytest

from scotd.selectors import OPEN_ENDED_KEEP, kmeans, open_ended_keep, select, unique_bigrams


def row(qid, idx, rationale="r", logprob_mean=-1.0):
    return {"question_id": qid, "task": "t", "sample_index": idx, "question": "?", "choices": ["a", "b"],
            "rationale": rationale, "label_index": 0, "logprob_sum": None if logprob_mean is None else 5 * logprob_mean,
            "logprob_mean": logprob_mean,
            "num_tokens": 5}


def keys(rows):
    return sorted((r["question_id"], r["sample_index"]) for r in rows)


def test_first_n_keeps_what_n_samples_would_have_given():
    rows = [row("q1", i) for i in (0, 2, 4, 7)] + [row("q2", i) for i in (1, 9)]
    assert keys(select(rows, "first_n", k=5)) == [("q1", 0), ("q1", 2), ("q1", 4), ("q2", 1)]
    assert keys(select(rows, "first_n", k=1)) == [("q1", 0)]


def test_random_takes_k_per_question_reproducibly_and_all_of_small_questions():
    rows = [row("q1", i) for i in range(10)] + [row("q2", i) for i in range(3)]
    first = select(rows, "random", k=5, seed=1)
    assert sum(r["question_id"] == "q1" for r in first) == 5
    assert [k for k in keys(first) if k[0] == "q2"] == [("q2", 0), ("q2", 1), ("q2", 2)]
    assert keys(first) == keys(select(list(reversed(rows)), "random", k=5, seed=1))
    assert keys(first) != keys(select(rows, "random", k=5, seed=2))


def test_likelihood_keeps_the_highest_mean_logprob():
    scores = [-3.0, -0.5, -2.0, -0.1, -1.0, None]
    rows = [row("q", i, logprob_mean=s) for i, s in enumerate(scores)]
    assert keys(select(rows, "likelihood", k=3)) == [("q", 1), ("q", 3), ("q", 4)]


def test_diverse_picks_one_rationale_from_each_cluster():
    # Three tight groups of rationale embeddings; k=3 must take exactly one from each.
    groups = {"sun": [0, 1, 2, 3], "rain": [4, 5, 6], "soil": [7, 8]}
    centre = {"sun": [1, 0, 0], "rain": [0, 1, 0], "soil": [0, 0, 1]}
    text = {i: f"{name} {i}" for name, ids in groups.items() for i in ids}
    rows = [row("q", i, rationale=text[i]) for i in range(9)]

    def embed(texts):
        return np.array([np.array(centre[t.split()[0]]) + 0.01 * int(t.split()[1]) for t in texts])

    chosen = select(rows, "diverse", k=3, embed=embed)
    assert sorted(r["rationale"].split()[0] for r in chosen) == ["rain", "soil", "sun"]
    with pytest.raises(ValueError, match="embedding"):
        select(rows, "diverse", k=3)


def test_kmeans_separates_obvious_groups():
    points = np.array([[0, 0], [0, 0.1], [10, 10], [10, 10.1], [0, 10], [0.1, 10]], dtype=float)
    labels = kmeans(points, 3, seed=0)
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[4] == labels[5]
    assert len({labels[0], labels[2], labels[4]}) == 3


def test_open_ended_keeps_more_for_more_varied_questions():
    rows = []
    for q in range(10):  # question q's rationales use 1 + 3q distinct words: more bigrams as q grows
        words = [f"w{q}_{j}" for j in range(1 + 3 * q)]
        rows += [row(f"q{q}", i, rationale=" ".join(words[i % len(words):] + words[:i % len(words)]))
                 for i in range(12)]
    kept = select(rows, "open_ended", seed=0)
    per_question = {f"q{q}": sum(r["question_id"] == f"q{q}" for r in kept) for q in range(10)}
    assert [per_question[f"q{q}"] for q in range(10)] == [k for k in OPEN_ENDED_KEEP for _ in range(2)]
    assert sum(per_question.values()) / 10 == 5
    # another budget scales the quintile counts: 2 per question on average, the most varied questions still most
    kept = select(rows, "open_ended", k=2, seed=0)
    per_question = [sum(r["question_id"] == f"q{q}" for r in kept) for q in range(10)]
    assert per_question == [1, 1, 1, 1, 2, 2, 3, 3, 3, 3] and sum(per_question) / 10 == 2


@pytest.mark.parametrize("budget, keep", [(1, (1, 1, 1, 1, 1)), (2, (1, 1, 2, 3, 3)), (3, (1, 2, 3, 4, 5)),
                                          (5, OPEN_ENDED_KEEP), (10, (2, 6, 10, 14, 18))])
def test_open_ended_counts_scale_with_the_budget(budget, keep):
    assert open_ended_keep(budget) == keep


def test_open_ended_budget_is_the_mean_for_every_budget():
    for budget in range(1, 31):
        keep = open_ended_keep(budget)
        assert sum(keep) == 5 * budget and min(keep) >= 1 and list(keep) == sorted(keep), budget
    with pytest.raises(ValueError, match="at least 1"):
        open_ended_keep(0)


def test_unique_bigrams_counts_across_texts():
    assert unique_bigrams(["a b c", "a b d", "A B"]) == 3  # (a,b) (b,c) (b,d)


def test_unknown_selector_names_the_known_ones():
    with pytest.raises(ValueError, match="likelihood"):
        select([], "best")
