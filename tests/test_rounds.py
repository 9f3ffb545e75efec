"""Sampling in rounds (scotd.inference.rounds): when a question gets another round of samples."""

import pytest

from scotd.config import ConfigError, load_config
from scotd.inference.rounds import keep_sampling
from tests.conftest import REPO

A = " 12 + 30 = 42. So the answer is: 42"
A_AGAIN = " 12 + 30 = 42.0.  So the answer is: 42"  # the same rationale, written another way
B = " 30 + 12 = 42. So the answer is: 42"
WRONG = " 12 + 30 = 52. So the answer is: 52"


def keep(texts, new, cap=8, gold="42", repeated=False, distinct=0):
    return keep_sampling(texts, new, cap, num_choices=0, gold=gold, stop_when_repeated=repeated,
                         stop_at_distinct=distinct)


@pytest.mark.parametrize("texts, new, expected", [
    ([A, B], 2, True),  # two different samples: another round
    ([A, A_AGAIN], 2, False),  # a repeat within the round
    ([A, B, A], 1, False),  # a repeat of an earlier round
    ([A, B, WRONG], 1, True),
])
def test_a_repeated_sample_stops_the_question(texts, new, expected):
    assert keep(texts, new, repeated=True) is expected
    assert keep(texts, new) is True  # without the rule only the cap stops it


def test_the_cap_always_stops_it():
    assert keep([A, B, WRONG, WRONG], 2, cap=4) is False


def test_enough_distinct_right_rationales_stop_it():
    assert keep([A, WRONG, A_AGAIN], 1, distinct=2) is True  # one distinct right rationale (and a wrong one)
    assert keep([A, WRONG, B], 1, distinct=2) is False
    assert keep([A, WRONG], 2, gold=None, distinct=2) is False  # no labels: any answer counts


def test_rounds_need_a_size_and_fit_the_cap():
    tiny = REPO / "configs" / "tiny.yaml"
    assert load_config(tiny, ["teacher.samples_per_round=2", "teacher.stop_when_repeated=true"]).teacher.samples_per_round == 2
    with pytest.raises(ConfigError, match="teacher.samples_per_round: 5 must be 1 to teacher.num_samples"):
        load_config(tiny, ["teacher.samples_per_round=5"])
    with pytest.raises(ConfigError, match="set teacher.samples_per_round"):
        load_config(tiny, ["teacher.stop_at_distinct=2"])


def test_a_budget_wave_buys_what_is_left_at_the_cap_then_at_the_mean():
    from scotd.teacher import budget_wave

    pool = list(range(100))
    assert budget_wave(pool, used=0, budget=24, n=4) == pool[:6]  # first: at the cap, never over the budget
    assert budget_wave(pool, used=15, budget=24, n=4, mean=2.5) == pool[:3]  # then: what questions took so far
    assert budget_wave(pool, used=23, budget=24, n=4, mean=2.5) == []  # less than a question left
    assert budget_wave(pool[:2], used=0, budget=24, n=4) == pool[:2]


def test_a_budget_below_one_question_is_refused():
    with pytest.raises(ConfigError, match="teacher.sample_budget: 3 buys not one question"):
        load_config(REPO / "configs" / "tiny.yaml", ["teacher.sample_budget=3"])
