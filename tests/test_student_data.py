"""Training data: masking keeps targets aligned with inputs; balanced sampling; even split across ranks."""

import random
from collections import Counter

import pytest

from scotd.student.data import (IGNORE_INDEX, EncodedQuestion, build_sequence, collate, encode, epoch_picks,
                                epoch_sequences, make_batches, training_plan, training_texts)
from scotd.student.settings import stop_early
from scotd.config import StudentConfig


def encoded(num_questions=10, seed=0):
    rng = random.Random(seed)
    return [EncodedQuestion(tuple(rng.randrange(100, 200) for _ in range(rng.randrange(3, 9))),
                            tuple(tuple(rng.randrange(200, 300) for _ in range(rng.randrange(1, 6))) + (2,)
                                  for _ in range(rng.randrange(1, 4)))) for _ in range(num_questions)]


@pytest.mark.parametrize("seed", range(20))
def test_labels_equal_inputs_on_target_positions_only(seed):
    rng = random.Random(seed)
    prompt = tuple(rng.randrange(1000) for _ in range(rng.randrange(0, 30)))
    target = tuple(rng.randrange(1000, 2000) for _ in range(rng.randrange(1, 30)))
    max_length = rng.randrange(5, 70)
    ids, labels = build_sequence(prompt, target, max_length)
    assert len(ids) == len(labels) <= max_length
    kept_target = target[:max_length]
    assert ids[len(ids) - len(kept_target):] == list(kept_target)  # target intact at the end
    assert labels == [IGNORE_INDEX] * (len(ids) - len(kept_target)) + list(kept_target)
    assert ids[: len(ids) - len(kept_target)] == list(prompt[len(prompt) - (len(ids) - len(kept_target)):] if
                                                      len(ids) > len(kept_target) else [])


def test_every_question_once_per_epoch_and_draws_vary():
    data = encoded(12)
    for world in (1, 2, 3, 5):
        seqs = [s for rank in range(world)
                for s in epoch_sequences(data, epoch=0, seed=1, rank=rank, world_size=world, max_length=64)]
        per_rank = [len(epoch_sequences(data, epoch=0, seed=1, rank=r, world_size=world, max_length=64))
                    for r in range(world)]
        assert len(set(per_rank)) == 1  # equal step counts across ranks
        prompts = Counter(tuple(ids[: labels.index(next(l for l in labels if l != IGNORE_INDEX))]) for ids, labels, _ in seqs)
        assert set(prompts) == {q.prompt_ids for q in data}
    draws = {tuple(tuple(s[0]) for s in epoch_sequences(data, epoch=e, seed=1, rank=0, world_size=1, max_length=64))
             for e in range(6)}
    assert len(draws) > 1


def test_training_texts_scotd_and_label_only():
    rows = [{"question_id": "q", "task": "t", "question": "Q?", "choices": ["x", "y"], "rationale": r,
             "label_index": 1, "answer_index": 1, "sample_index": i} for i, r in enumerate(["r1", "r2"])]
    prompt, targets = training_texts(rows, "scotd")["q"]
    assert prompt.endswith("\nA:") and targets == [" r1 So the answer is: (b)", " r2 So the answer is: (b)"]
    assert training_texts(rows[:1], "label_only")["q"][1] == [" (b)"]


def test_bucketed_batches_pad_little_and_keep_every_sequence():
    seqs = [([1] * n, [IGNORE_INDEX] * (n - 1) + [1]) for n in random.Random(0).choices(range(5, 200), k=256)]
    batches = make_batches(seqs, 8, seed=0)
    assert sorted(len(s[0]) for b in batches for s in b) == sorted(len(s[0]) for s in seqs)
    real = padded = 0
    for b in batches:
        inputs, num_real = collate(b, pad_id=0)
        real, padded = real + num_real, padded + inputs["input_ids"].numel()
        assert (inputs["labels"][inputs["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert real / padded > 0.9


def test_a_chat_template_student_sees_the_same_rendering_in_training_as_in_evaluation():
    """``encode(chat=True)`` tokenizes the question as the chat template's user turn (``prompts.in_chat``, what the
    evaluation engine and the dev scoring use) and the target as the assistant's, without the leading space."""
    from scotd.prompts import in_chat
    from scotd.tiny import build_tokenizer

    tokenizer = build_tokenizer(["Q: Where?\nA: So the answer is: (b) because"] * 20, vocab_size=300)
    groups = {"q": ("Q: Where?\nA:", [" r1 So the answer is: (b)"])}
    plain, chat = encode(groups, tokenizer)[0], encode(groups, tokenizer, chat=True)[0]
    rendered = in_chat(tokenizer, "Q: Where?\nA:")
    assert rendered.startswith("<|user|>\nQ: Where?") and rendered.endswith("<|assistant|>\n")
    assert list(chat.prompt_ids) == tokenizer(rendered)["input_ids"] and chat.prompt_ids != plain.prompt_ids
    assert list(chat.target_ids[0]) == tokenizer("r1 So the answer is: (b)", add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id]


def test_an_epoch_of_rationales_visits_every_kept_rationale_once():
    data = encoded(12)
    every = {(i, j) for i, q in enumerate(data) for j in range(len(q.target_ids))}
    for world in (1, 2, 3):
        picks = [p for r in range(world) for p in epoch_picks(data, epoch=0, seed=1, rank=r, world_size=world,
                                                               each="rationale")]
        assert set(picks) == every and len(picks) - len(every) < world  # the last ones wrap around only
    balanced = epoch_picks(data, epoch=0, seed=1, rank=0, world_size=1)
    assert sorted(i for i, _ in balanced) == list(range(12))  # a question once, one of its rationales


def student(**changes) -> StudentConfig:
    return StudentConfig(name="s", micro_batch_size=2, batch_size=4, epochs=3, **changes)


def test_plan_of_epochs_steps_and_tokens():
    data = encoded(12)
    full = training_plan(data, student(), world_size=1, accumulation=2)
    assert (full.micro_per_epoch, full.epochs, full.micro_batches, full.optimizer_steps) == (6, 3, 18, 9)
    steps = training_plan(data, student(max_steps=4), world_size=1, accumulation=2)
    assert (steps.epochs, steps.micro_batches, steps.optimizer_steps) == (2, 8, 4)  # the second epoch cut short
    volume = training_plan(data, student(each_epoch="rationale"), world_size=1, accumulation=2)
    assert volume.micro_per_epoch == -(-sum(len(q.target_ids) for q in data) // 2)
    # tokens: the micro-batch that reaches max_tokens is the last, whatever the epoch
    lengths = [sum(len(s[0]) for s in batch) for e in range(3)
               for batch in make_batches(epoch_sequences(data, epoch=e, seed=0, rank=0, world_size=1, max_length=700),
                                         2, seed=e)]
    budget = sum(lengths[:8]) - 1
    tokens = training_plan(data, student(max_tokens=budget), world_size=1, accumulation=2)
    assert tokens.micro_batches == 8 and tokens.epochs == 2 and tokens.optimizer_steps == 4


def test_early_stopping_waits_patience_epochs_without_a_better_dev_score():
    dev = lambda *scores: [{"epoch": i + 1, "dev_accuracy": a} for i, a in enumerate(scores)]  # noqa: E731
    assert not stop_early(dev(0.1, 0.2, 0.2), 2)  # the best is two epochs old: one more chance
    assert stop_early(dev(0.1, 0.3, 0.2, 0.3), 2)  # equal is not better
    assert not stop_early(dev(0.1, 0.3, 0.2, 0.4), 2)
    assert not stop_early(dev(0.5, 0.1, 0.1), None) and not stop_early([{"epoch": 1}], 1)
