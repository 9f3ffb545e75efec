"""Sampling in rounds: a question's samples are drawn ``per_round`` at a time, up to its ``n``, and it stops
early once more samples would buy little (``teacher.samples_per_round``, ``stop_when_repeated``,
``stop_at_distinct``).

On a task whose steps are fixed, a teacher at temperature 1.0 writes the same rationale nearly every time: four
samples of a sum bought 1.03 distinct rationales. The rule is decided in the engine's actor between rounds, inside
one engine call, so the engine is not started again and a call still returns every sample of its questions (the
teacher's blocks hold finished questions only, and a rerun after a kill resumes exactly once).
"""

from __future__ import annotations

from scotd.diversity import rationale_key
from scotd.prompts import parse_answer
from scotd.scoring import answers_match


def keep_sampling(texts: list[str], new: int, cap: int, *, num_choices: int, gold: str | None,
                  stop_when_repeated: bool, stop_at_distinct: int) -> bool:
    """Whether a question with samples ``texts`` (the last ``new`` of them from this round) gets another round
    (pure). It stops at ``cap`` samples; with ``stop_when_repeated`` once a sample of this round repeats an
    earlier one of the question or of the round; with ``stop_at_distinct`` once it has that many distinct
    rationales whose answer is ``gold`` (any parsed answer when ``gold`` is None)."""
    if len(texts) >= cap:
        return False
    parsed = [parse_answer(t, num_choices) for t in texts]
    keys = [rationale_key(p.rationale) for p in parsed]
    if stop_when_repeated and new:
        seen = set(keys[:-new])
        for key in keys[-new:]:
            if key in seen:
                return False
            seen.add(key)
    if stop_at_distinct:
        good = {k for k, p in zip(keys, parsed)
                if (answers_match(p.key, gold) if gold is not None else p.key is not None)}
        if len(good) >= stop_at_distinct:
            return False
    return True
