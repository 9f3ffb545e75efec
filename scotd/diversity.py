"""How different a question's rationales are: the key that makes two the same, and the counts the teacher and
corpus stages report (pure functions).

Sampling many rationales per question pays only where they differ; on a task whose steps are fixed (a sum worked
left to right) a teacher at temperature 1.0 writes the same text almost every time, and the samples after the first
are work thrown away. These counts show it.
"""

from __future__ import annotations

import re
from collections import Counter

from scotd.scoring import normalize_number

# A number as written in a rationale: digits with thousands commas or none, an optional decimal part ("1,000",
# "45.0"); not a list ("3,4") or a version ("1.2.3").
_NUMBER = re.compile(r"(?<![\w.,])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w|,\d|\.\d)")


def rationale_key(text: str) -> str:
    """What makes two rationales the same: equal after folding whitespace and writing every number one way
    (``"1,000"`` and ``"1000"``, ``"45.0"`` and ``"45"``; ``scoring.normalize_number``) (pure)."""
    return " ".join(_NUMBER.sub(lambda m: normalize_number(m.group()) or m.group(), text).split())


def diversity(rows: list[dict]) -> dict:
    """How different a question's samples are: distinct rationales (``rationale_key``) per question with any,
    on average and as counts (distinct rationales -> questions), and the share of ``rows`` that repeat an earlier
    sample of their question (pure)."""
    keys: dict[str, set[str]] = {}
    for r in rows:
        keys.setdefault(r["question_id"], set()).add(rationale_key(r["rationale"]))
    distinct = sum(len(k) for k in keys.values())
    return {"distinct_rationales": distinct,
            "distinct_per_question": distinct / len(keys) if keys else 0.0,
            "questions_by_distinct": {str(n): c for n, c in sorted(Counter(len(k) for k in keys.values()).items())},
            "duplicate_share": 1 - distinct / len(rows) if rows else 0.0}
