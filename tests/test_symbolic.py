"""Generated symbolic tasks: deterministic, disjoint splits, right answers, choices that do not give the answer away."""

from __future__ import annotations

import re
import statistics

import pytest

from scotd import symbolic
from scotd.prompts import load_exemplars, render_answer, render_question
from scotd.tasks import TaskDataError
from tests.conftest import REPO


def solve(text: str) -> int:
    """An independent solver for 'What is a + b - c?' (tokens left to right)."""
    tokens = re.fullmatch(r"What is (.*)\?", text).group(1).split()
    total = int(tokens[0])
    for op, value in zip(tokens[1::2], tokens[2::2]):
        total = total + int(value) if op == "+" else total - int(value)
    return total


def test_arithmetic_answers_are_right_and_choices_distinct() -> None:
    questions = symbolic.generate("gen:arithmetic:train:2-4", "a", 500)
    for q in questions:
        assert len(q.choices) == 5 and len(set(q.choices)) == 5, q
        assert int(q.choices[q.answer_index]) == solve(q.text), q
        assert 2 <= len(q.text.split()[2:]) // 2 + 1 <= 4


def test_gold_position_and_value_are_not_a_shortcut() -> None:
    """Every position holds the gold answer about as often; picking the middle value or the largest is weak."""
    questions = symbolic.generate("gen:arithmetic:train:2-4", "a", 2000)
    counts = [sum(q.answer_index == i for q in questions) for i in range(5)]
    assert min(counts) > 330 and max(counts) < 470, counts

    def by_rank(q, rank):
        ordered = sorted(q.choices, key=int)
        return q.choices.index(ordered[rank])

    for rank in range(5):
        share = statistics.mean(by_rank(q, rank) == q.answer_index for q in questions)
        assert share < 0.35, (rank, share)


def test_coin_flip_answer_is_the_parity_of_flips() -> None:
    for q in symbolic.generate("gen:coin_flip:eval:3-5", "c", 300):
        flips = q.text.count(" flips the coin.")
        assert q.choices == ("yes", "no") and q.answer_index == (0 if flips % 2 == 0 else 1)
        assert 3 <= flips + q.text.count("does not flip") <= 5


def test_streams_are_deterministic_and_splits_disjoint() -> None:
    a = symbolic.generate("gen:arithmetic:train:2-4", "a", 300)
    assert a == symbolic.generate("gen:arithmetic:train:2-4", "a", 300)
    assert a[:50] == symbolic.generate("gen:arithmetic:train:2-4", "a", 50), "a prefix does not depend on the count"
    texts = {split: {q.text for q in symbolic.generate(f"gen:arithmetic:{split}:2-4", "a", 200)}
             for split in ("train", "dev", "eval")}
    assert not texts["train"] & texts["eval"] and not texts["train"] & texts["dev"] and not texts["dev"] & texts["eval"]
    ids = [q.id for q in a] + [q.id for q in symbolic.generate("gen:arithmetic:eval:2-4", "a", 300)]
    assert len(set(ids)) == len(ids)
    assert all(len(q.text.split()) >= 11 for q in symbolic.generate("gen:arithmetic:eval:5-6", "a", 50))


@pytest.mark.parametrize("ref, fault", [
    ("gen:arithmetic:train", "expected gen:<kind>"),
    ("gen:sorting:train:2-4", "unknown generated task 'sorting'"),
    ("gen:arithmetic:test:2-4", "unknown split 'test'"),
    ("gen:arithmetic:train:4-2", "2 <= min <= max"),
    ("gen:arithmetic:train:1-3", "2 <= min <= max"),
])
def test_bad_refs_name_the_fault(ref: str, fault: str) -> None:
    with pytest.raises(TaskDataError, match=re.escape(fault)):
        symbolic.generate(ref, "a", 10)


def test_exemplars_are_right_and_render_like_questions() -> None:
    for ex in load_exemplars("arithmetic", "a"):
        gold = int(ex.question.choices[ex.question.answer_index])
        assert gold == solve(ex.question.text) and ex.rationale.endswith(f"The result is {gold}.")
        assert render_question(ex.question).endswith("A:") and "So the answer is" not in ex.rationale
        assert render_answer(ex.rationale, ex.question.answer_index).endswith(
            f"So the answer is: ({chr(97 + ex.question.answer_index)})")
    for ex in load_exemplars("coin_flip", "c"):
        flips = ex.question.text.count(" flips the coin.")
        assert ex.question.answer_index == (0 if flips % 2 == 0 else 1)


def test_arithmetic_check_says_yes_exactly_when_the_proposal_is_the_sum() -> None:
    questions = symbolic.generate("gen:arithmetic_check:train:2-4", "a", 1000)
    yes = 0
    for q in questions:
        expression, proposed = re.fullmatch(r"Is (.*) equal to (-?\d+)\?", q.text).groups()
        right = solve(f"What is {expression}?") == int(proposed)
        assert q.choices == ("yes", "no") and q.answer_index == (0 if right else 1), q
        yes += right
    assert 430 < yes < 570, yes
    for ex in load_exemplars("arithmetic_check", "a"):
        expression, proposed = re.fullmatch(r"Is (.*) equal to (-?\d+)\?", ex.question.text).groups()
        assert ex.question.answer_index == (0 if solve(f"What is {expression}?") == int(proposed) else 1)


@pytest.mark.parametrize("path", sorted(p for p in (REPO / "configs").rglob("*.yaml") if "gen:" in p.read_text()),
                         ids=lambda p: p.name)
def test_every_generated_task_of_a_shipped_config_has_its_questions(path):
    """A shipped config never asks a generator for more distinct questions than it has (train + dev, eval)."""
    from scotd.config import load_config
    from scotd.symbolic import generate

    for task in load_config(path).tasks:
        if str(task.train).startswith("gen:"):
            assert len(generate(task.train, task.name, task.max_train + task.max_dev)) == task.max_train + task.max_dev
        if str(task.eval).startswith("gen:"):
            assert len(generate(task.eval, task.name, task.max_eval)) == task.max_eval


def test_free_form_generators_answer_by_construction() -> None:
    """``sum`` and ``last_letters``: no choices, and the answer recomputed from the question text."""
    for q in symbolic.generate("gen:sum:train:2-6", "t", 300):
        tokens = q.text.removeprefix("What is ").removesuffix("?").split()
        total = int(tokens[0])
        for op, x in zip(tokens[1::2], tokens[2::2]):
            total += int(x) if op == "+" else -int(x)
        assert q.free_form and q.answer == str(total)
    for q in symbolic.generate("gen:last_letters:eval:5-6", "t", 300):
        words = re.search(r'"(.*)"', q.text).group(1).split()
        assert q.free_form and 5 <= len(words) <= 6 and q.answer == "".join(w[-1] for w in words)


@pytest.mark.parametrize("kind", ["sum", "last_letters"])
def test_free_form_streams_are_deterministic_and_splits_disjoint(kind: str) -> None:
    texts = {split: [q.text for q in symbolic.generate(f"gen:{kind}:{split}:2-4", kind, 40)]
             for split in ("train", "dev", "eval")}
    assert texts["train"] == [q.text for q in symbolic.generate(f"gen:{kind}:train:2-4", kind, 40)]
    assert not set(texts["train"]) & set(texts["eval"]) and not set(texts["dev"]) & set(texts["eval"])
    shots = load_exemplars(kind, kind)
    assert len(shots) >= 5 and all(s.question.free_form for s in shots)
