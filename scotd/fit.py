"""Which questions' prompts fit an engine's context, checked on the driver before any engine starts.

vLLM refuses a whole call when one prompt has ``max_model_len`` tokens or more, which would fail a stage on one
long question. Prompts are counted here with the model's own tokenizer (inside its chat template when the engine
uses one); a question that does not fit is an error naming it and where it was read, or, where its task has
``skip_bad_rows``, skipped and counted.
"""

from __future__ import annotations

import logging
from typing import Callable

from scotd.config import ExperimentConfig
from scotd.tasks import Question, TaskDataError

log = logging.getLogger(__name__)


def prompt_tokens(model: str, prompts: list[str], *, chat_template: bool = False,
                  trust_remote_code: bool = False) -> list[int]:
    """The number of tokens of each prompt as the engine for ``model`` will see it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    if chat_template:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    return [len(ids) for ids in tokenizer(prompts, add_special_tokens=not chat_template)["input_ids"]]


def too_long(cfg: ExperimentConfig, questions: list[Question], prompt_fn: Callable[[Question], str], model: str,
             *, chat_template: bool, stage: str, where: dict[str, str]) -> set[str]:
    """Ids of the questions to leave out because their prompt does not fit ``teacher.max_model_len`` (every engine's
    context). Raises ``TaskDataError`` naming the first such question unless each one's task skips bad rows."""
    if not questions:
        return set()
    limit = cfg.teacher.max_model_len
    try:
        counts = prompt_tokens(model, [prompt_fn(q) for q in questions], chat_template=chat_template,
                               trust_remote_code=cfg.teacher.trust_remote_code)
    except (OSError, ValueError) as err:  # no tokenizer to be had here: the engine will say the same, at length
        log.warning("%s: prompt lengths not checked (%s has no readable tokenizer: %s)", stage, model,
                    str(err).splitlines()[0][:200])
        return set()
    over = [(q, n) for q, n in zip(questions, counts) if n >= limit]
    if not over:
        return set()
    skips = {t.name: t.skip_bad_rows for t in cfg.tasks}
    index = {t.name: i for i, t in enumerate(cfg.tasks)}
    refused = [(q, n) for q, n in over if not skips.get(q.task, False)]
    if refused:
        q, n = refused[0]
        raise TaskDataError(
            f"{where.get(q.id, q.id)}: question {q.id} (task {q.task}) makes a {stage} prompt of {n} tokens; "
            f"teacher.max_model_len is {limit} ({len(refused)} such question(s) in all). Raise "
            f"teacher.max_model_len, use fewer exemplars (tasks.{index[q.task]}.num_exemplars), or skip them: "
            f"tasks.{index[q.task]}.skip_bad_rows=true")
    q, n = over[0]
    log.warning("%s: %d question(s) skipped, their prompts do not fit teacher.max_model_len=%d (first: %s, %d "
                "tokens)", stage, len(over), limit, where.get(q.id, q.id), n)
    return {q.id for q, _ in over}
