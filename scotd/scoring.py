"""Scoring and statistics, pure functions shared by every stage: when an answer is right (``answers_match``, with
free-form answers normalised), accuracy summaries, and the intervals and tests of the report."""

from __future__ import annotations

import math
import random
import re

_NUMBER_TEXT = re.compile(r"^[-+]?\$?\d[\d,]*(?:\.\d*)?%?$|^[-+]?\$?\.\d+%?$")


NUMERIC_TOLERANCE = 1e-6  # relative (absolute below 1): two numbers this close are the same answer


def normalize_number(text: str) -> str | None:
    """``"1,000"``, ``"$18.00"``, ``"12%"``, ``"-3."`` -> ``"1000"``, ``"18"``, ``"12"``, ``"-3"``; None when
    ``text`` is not one number (pure, never raises)."""
    from decimal import Decimal, InvalidOperation

    s = "".join(text.split()).rstrip(".")
    if not _NUMBER_TEXT.match(s):
        return None
    s = s.replace(",", "").replace("$", "").replace("%", "")
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def normalize_answer(text: str) -> str | None:
    """A free-form answer's canonical form: a number as ``normalize_number`` gives it, other text lower-cased with
    single spaces and no end punctuation; None when nothing is left."""
    number = normalize_number(text)
    if number is not None:
        return number
    words = " ".join(text.lower().split()).strip(" .!?\"'")
    return words or None


def answers_match(parsed: str | None, gold: str | None) -> bool:
    """Whether a parsed answer is the gold one: equal canonical forms, or two numbers within NUMERIC_TOLERANCE."""
    if parsed is None or gold is None:
        return False
    if parsed == gold:
        return True
    try:
        a, b = float(parsed), float(gold)
    except ValueError:
        return False
    return abs(a - b) <= NUMERIC_TOLERANCE * max(1.0, abs(b))


def metrics_of(rows: list[dict]) -> dict:
    """Accuracy and answer failures of prediction (or sample) rows with ``correct`` and ``parse_error`` columns."""
    total = len(rows)
    correct = sum(r["correct"] for r in rows)
    failures = sum(r["parse_error"] is not None for r in rows)
    return {"total": total, "correct": correct, "accuracy": correct / total if total else 0.0,
            "parse_failures": failures, "parse_failure_rate": failures / total if total else 0.0,
            "cut_at_limit": sum(r["parse_error"] == "cut_at_limit" for r in rows)}


Z95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    if total == 0:
        return (0.0, 0.0)
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    # The bounds hold the observed share (at 0 or n right, rounding would put them a hair past it).
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def mcnemar_p(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts (questions only one of two models got right)."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    k = min(only_first, only_second)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_interval(flags: list[bool], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of an accuracy from per-question correctness (resampling questions)."""
    if not flags:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(flags)
    stats = sorted(sum(flags[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return (stats[int(0.025 * resamples)], stats[int(0.975 * resamples) - 1])


def paired_bootstrap(a: list[bool], b: list[bool], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of accuracy(a) - accuracy(b), resampling the shared questions."""
    if not a:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(a)
    diffs = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        diffs.append(sum(a[i] - b[i] for i in picks) / n)
    diffs.sort()
    return (diffs[int(0.025 * resamples)], diffs[int(0.975 * resamples) - 1])
