"""Symbolic reasoning tasks generated from a seed, no files needed: where the steps are what a student must learn.

A data source ``gen:<kind>:<split>:<min steps>-<max steps>`` (e.g. ``gen:arithmetic:train:2-4``) names an endless,
deterministic stream of questions of one kind; the task's ``max_train`` / ``max_eval`` say how many are used.

- ``arithmetic``: "What is 28 - 68 + 41?", k two-digit operands joined by + and -, five numeric choices. The
  wrong choices are the results of slips a solver makes (one operator read the other way, a step off by ten, the
  last operand left out), so only working the steps tells the answer from them.
- ``arithmetic_check``: "Is 28 - 68 + 41 equal to 11?", yes or no; half the proposed results are right, the others
  are the slips above. The answer is the sum's, with no letter to look up among numbers.
- ``coin_flip``: "A coin is heads up. Ana flips the coin. Ben does not flip the coin. Is the coin still heads
  up?", yes or no, for k people (Wei et al. 2022's task).
- ``sum``: "What is 28 - 68 + 41?" with a free-form numeric answer (no choices to look the result up among).
- ``last_letters``: "Take the last letter of each word in "river stone apple" and join them." with a free-form
  answer ("ree"), for k words from a word list of this project (Wei et al. 2022's last-letter concatenation).

Each question's split is a hash of its text (80 % train, 10 % dev, 10 % eval, as ``tasks.hash_split``), so the
splits never share a question, and a question's id is ``<kind>-k<min>-<max>-<split>-<index>``: stable for a
(kind, split, step range). An out-of-distribution evaluation uses more steps than training (``gen:arithmetic:
eval:5-6`` against ``train:2-4``): a separate task in the config, shown as its own row group in the report.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator

from scotd.tasks import SPLITS, Question, SourceUnavailableError, TaskDataError, hash_split

PREFIX = "gen:"
NAMES = ("Ana", "Ben", "Cal", "Dee", "Eli", "Fay", "Gus", "Ivy", "Jon", "Kim", "Leo", "Mia", "Ned", "Ola", "Pam",
         "Rex", "Sam", "Tia", "Uma", "Vic", "Wes", "Zoe")
ARITHMETIC_CHOICES = 5
_REF = re.compile(r"^gen:(?P<kind>[a-z_]+):(?P<split>[a-z]+):(?P<low>\d+)-(?P<high>\d+)$")


def arithmetic_question(rng: random.Random, steps: int) -> tuple[str, tuple[str, ...], int]:
    """(question, choices, gold index) for ``steps`` operands of 10-99 joined by + and -.

    The four wrong choices: two slips (one operator read the other way, or the last operand left out) and a pair
    that differs by ten in one step, one from the gold result and one from a slip, so that neither a shared last
    digit nor being the middle value singles out the gold."""
    operands = [rng.randint(10, 99) for _ in range(steps)]
    ops = [rng.choice("+-") for _ in range(steps - 1)]
    gold = evaluate(operands, ops)
    slips = [evaluate(operands, ops[:j] + ["-" if ops[j] == "+" else "+"] + ops[j + 1:]) for j in range(len(ops))]
    slips.append(evaluate(operands[:-1], ops[:-1]))
    slips = [v for v in dict.fromkeys(slips) if v != gold]
    rng.shuffle(slips)
    wrong = [gold + rng.choice((-10, 10))]
    if slips:
        wrong.append(slips[0] + rng.choice((-10, 10)))
    wrong += slips
    wrong = [v for v in dict.fromkeys(wrong) if v != gold]
    while len(wrong) < ARITHMETIC_CHOICES - 1:  # too few distinct slips (a short sum): further steps of ten
        extra = gold + rng.choice((-1, 1)) * 10 * rng.randint(2, 9)
        if extra not in wrong:
            wrong.append(extra)
    choices = wrong[: ARITHMETIC_CHOICES - 1]
    rng.shuffle(choices)
    position = rng.randrange(ARITHMETIC_CHOICES)
    choices.insert(position, gold)
    text = "What is " + " ".join([str(operands[0])] + [f"{op} {x}" for op, x in zip(ops, operands[1:])]) + "?"
    return text, tuple(str(c) for c in choices), position


def arithmetic_check_question(rng: random.Random, steps: int) -> tuple[str, tuple[str, ...], int]:
    """(question, ("yes", "no"), gold index): is a sum of ``steps`` operands equal to a proposed result? Half the
    proposals are right; the others are one of ``arithmetic_question``'s wrong choices (a solver's slips), so the
    answer needs the sum worked out."""
    text, choices, gold = arithmetic_question(rng, steps)
    right = rng.random() < 0.5
    proposed = choices[gold] if right else rng.choice([c for i, c in enumerate(choices) if i != gold])
    return f"Is {text.removeprefix('What is ').removesuffix('?')} equal to {proposed}?", ("yes", "no"), 0 if right else 1


def evaluate(operands: list[int], ops: list[str]) -> int:
    total = operands[0]
    for op, x in zip(ops, operands[1:]):
        total = total + x if op == "+" else total - x
    return total


def coin_flip_question(rng: random.Random, steps: int) -> tuple[str, tuple[str, ...], int]:
    """(question, ("yes", "no"), gold index) for ``steps`` people who each flip the coin or not."""
    people = rng.sample(NAMES, steps)
    flips = [rng.random() < 0.5 for _ in people]
    acts = " ".join(f"{p} {'flips' if f else 'does not flip'} the coin." for p, f in zip(people, flips))
    heads = sum(flips) % 2 == 0
    return f"A coin is heads up. {acts} Is the coin still heads up?", ("yes", "no"), 0 if heads else 1


def sum_question(rng: random.Random, steps: int) -> tuple[str, tuple[str, ...], str]:
    """(question, no choices, the result) for ``steps`` operands of 10-99 joined by + and -."""
    operands = [rng.randint(10, 99) for _ in range(steps)]
    ops = [rng.choice("+-") for _ in range(steps - 1)]
    text = "What is " + " ".join([str(operands[0])] + [f"{op} {x}" for op, x in zip(ops, operands[1:])]) + "?"
    return text, (), str(evaluate(operands, ops))


# Common English words (written for this project), whose last letters cover most of the alphabet.
WORDS = ("apple", "river", "stone", "cloud", "table", "green", "music", "paper", "light", "house", "water", "bread",
         "chair", "dream", "earth", "field", "glass", "heart", "island", "jacket", "kitten", "lemon", "market",
         "night", "ocean", "pencil", "queen", "rabbit", "summer", "tiger", "uncle", "valley", "window", "yellow",
         "zebra", "garden", "forest", "button", "candle", "doctor", "engine", "finger", "guitar", "hammer", "insect",
         "jungle", "kettle", "ladder", "mirror", "needle", "orange", "planet", "rocket", "silver", "tomato",
         "violin", "wallet", "basket", "camera", "dinner", "family", "honey", "idea", "jelly", "koala", "laptop",
         "monkey", "number", "office", "pillow", "quilt", "radio", "school", "ticket", "umbrella", "village",
         "winter", "shadow", "bridge", "circus", "desert", "flower", "ghost", "horse", "jewel", "knife", "lizard",
         "magnet", "nest", "owl", "pizza", "puzzle", "robot", "salad", "train", "vase", "whale", "yogurt", "box",
         "cliff", "drum", "elbow", "frog", "gold", "hawk", "ink", "jam", "kiwi", "lamb", "mouth", "nail", "oak",
         "plum", "roof", "sock", "tree", "van", "wolf", "yak")


def last_letters_question(rng: random.Random, steps: int) -> tuple[str, tuple[str, ...], str]:
    """(question, no choices, the last letters of ``steps`` words joined)."""
    words = rng.sample(WORDS, steps)
    text = f'Take the last letter of each word in "{" ".join(words)}" and join them.'
    return text, (), "".join(w[-1] for w in words)


GENERATORS = {"arithmetic": arithmetic_question, "arithmetic_check": arithmetic_check_question,
              "coin_flip": coin_flip_question, "sum": sum_question, "last_letters": last_letters_question}


def parse_ref(ref: str) -> tuple[str, str, int, int]:
    """(kind, split, min steps, max steps) of ``gen:<kind>:<split>:<min>-<max>``; TaskDataError names the fault."""
    match = _REF.match(ref)
    if not match:
        raise TaskDataError(f"{ref}: expected gen:<kind>:<split>:<min steps>-<max steps>, e.g. gen:arithmetic:train:2-4")
    kind, split, low, high = match["kind"], match["split"], int(match["low"]), int(match["high"])
    if kind not in GENERATORS:
        raise TaskDataError(f"{ref}: unknown generated task {kind!r} (known: {', '.join(GENERATORS)})")
    if split not in SPLITS:
        raise TaskDataError(f"{ref}: unknown split {split!r} (known: {', '.join(SPLITS)})")
    limit = len(NAMES) if kind == "coin_flip" else 12
    if not 2 <= low <= high <= limit:
        raise TaskDataError(f"{ref}: steps must satisfy 2 <= min <= max <= {limit}")
    return kind, split, low, high


def generate(ref: str, task: str, count: int) -> list[Question]:
    """The first ``count`` questions of the stream ``ref`` names (deterministic; never repeats a question)."""
    kind, split, low, high = parse_ref(ref)
    if count < 1:
        raise TaskDataError(f"{ref}: a generated task needs a positive max_train / max_eval (got {count})")
    out: list[Question] = []
    seen: set[str] = set()
    for text, choices, answer in _stream(kind, low, high):
        if text in seen or hash_split(_text_key(kind, text)) != split:
            continue
        seen.add(text)
        qid = f"{kind}-k{low}-{high}-{split}-{len(out)}"
        out.append(Question(qid, task, text, (), None, answer) if not choices else
                   Question(qid, task, text, choices, answer))
        if len(out) == count:
            return out
    raise SourceUnavailableError(f"{ref}: only {len(out)} distinct questions exist; ask for fewer")


def _stream(kind: str, low: int, high: int,
            attempts: int = 2_000_000) -> Iterator[tuple[str, tuple[str, ...], int | str]]:
    seed = int.from_bytes(hashlib.sha256(f"{kind}:{low}-{high}".encode()).digest()[:8], "little")
    rng = random.Random(seed)
    for _ in range(attempts):
        yield GENERATORS[kind](rng, rng.randint(low, high))


def _text_key(kind: str, text: str) -> str:
    return f"{kind}:{text}"
