"""Offline data sets built from the BIG-bench 1.0.0 source archive the user supplies (QASC-derived and StrategyQA
task files): verified by sha256, converted once into ``datasets/<key>.jsonl`` under the cache folder."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from scotd.assets import (FORMAT_VERSION, MissingAssetError, _locked, _lookup, _marker_matches, _read_member,
                          verify_sha256)

logger = logging.getLogger(__name__)


# The BIG-bench 1.0.0 source archive holds the QASC-derived and StrategyQA task files. The package index no longer
# serves it (it lists only bigbench 0.0.1), so scotd never downloads it: a user who has the archive supplies it, and
# the sha256 pin checks that it is the one the records were built from.
BIGBENCH_SDIST = "bigbench-1.0.0.tar.gz"
BIGBENCH_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
BIGBENCH_ENV = "SCOTD_BIGBENCH_SDIST"
_TASKS = "bigbench-1.0.0/bigbench/benchmark_tasks/"

Parsed = tuple[str, list[str], int]  # question, choices, index of the gold choice


def _clean(text: str) -> str:
    return " ".join(text.split())


def _clean_choice(text: str) -> str:
    """Drop the period the task writers put after every answer ("lightning."), as prompts render choices as
    phrases; keep it where the text has other periods ("E. coli.", "A.I."), so abbreviations stay whole."""
    text = _clean(text)
    return text[:-1].rstrip() if text.endswith(".") and "." not in text[:-1] else text


def _answer_position(question: str, num_choices: int) -> int:
    """Where the gold choice goes: a hash of the question, so it is stable across runs and row orders, and the
    gold letter is spread evenly (the source gives the correct answer apart from the distractors)."""
    return int(hashlib.sha256(question.encode()).hexdigest()[:8], 16) % num_choices


_QASC_INPUT = re.compile(r"Fact:(?P<fact>.*)\nQuestion:(?P<question>.*)\nCorrect Answer:(?P<answer>.*)", re.DOTALL)


def parse_qasc_example(example: dict[str, Any]) -> Parsed:
    """Question, 4 choices and gold index from a natural_instructions subtask042 row; ValueError if malformed.

    Input lines are "Fact: ...", "Question: ...", "Correct Answer: ..."; targets are written distractors (usually
    3, a few rows have up to 7: the first 3 distinct ones are kept, so every question has 4 choices). The fact is
    dropped: it states the answer.
    """
    match = _QASC_INPUT.fullmatch(example.get("input", ""))
    if match is None:
        raise ValueError("input is not 'Fact/Question/Correct Answer'")
    question, answer = _clean(match["question"]), _clean_choice(match["answer"])
    if not question or not answer:
        raise ValueError("empty question or answer")
    distractors: list[str] = []
    for target in example.get("target", []):
        choice = _clean_choice(target)
        if choice and choice.casefold() not in {c.casefold() for c in [answer, *distractors]}:
            distractors.append(choice)
    if len(distractors) < 3:
        raise ValueError("fewer than 3 distinct distractors")
    position = _answer_position(question, 4)
    return question, distractors[:position] + [answer] + distractors[position:3], position


def parse_strategyqa_example(example: dict[str, Any]) -> Parsed:
    """Question, ["Yes", "No"] and gold index from a BIG-bench strategyqa row (its explanation is dropped)."""
    question, scores = _clean(example.get("input", "")), example.get("target_scores", {})
    gold = [i for i, score in enumerate(scores.values()) if score == 1]
    if not question or len(scores) < 2 or len(gold) != 1:
        raise ValueError("needs an input and target_scores with exactly one score of 1")
    return question, list(scores), gold[0]


class DatasetAsset(NamedTuple):
    member: str  # the task.json inside the bigbench sdist
    parse: Callable[[dict[str, Any]], Parsed]


OFFLINE_DATASETS: dict[str, DatasetAsset] = {
    "bigbench-qasc": DatasetAsset(
        _TASKS + "natural_instructions/subtask042_qasc_incorrect_option_generation/task.json", parse_qasc_example),
    "bigbench-strategyqa": DatasetAsset(_TASKS + "strategyqa/task.json", parse_strategyqa_example),
}


def build_records(key: str, examples: list[dict[str, Any]], parse: Callable[[dict[str, Any]], Parsed]) -> list[dict]:
    """Generic records from task rows. Ids are `<key>-<row index in the task file>`, stable whatever is skipped;
    the first row of each question is kept (case and spacing ignored); malformed rows are skipped and counted."""
    records, seen, skipped = [], set(), {}
    for row, example in enumerate(examples):
        try:
            question, choices, answer = parse(example)
        except ValueError as error:
            skipped[str(error)] = skipped.get(str(error), 0) + 1
            continue
        if question.casefold() in seen:
            skipped["duplicate question"] = skipped.get("duplicate question", 0) + 1
            continue
        seen.add(question.casefold())
        records.append({"id": f"{key}-{row}", "question": question, "choices": choices, "answer": answer})
    logger.info("%s: %d records from %d rows, skipped: %s", key, len(records), len(examples), skipped or "none")
    return records


def bigbench_sdist(cache_dir: Path) -> Path:
    """The user-supplied BIG-bench archive: ``$SCOTD_BIGBENCH_SDIST``, else ``<cache_dir>/downloads/`` + its name."""
    supplied = os.environ.get(BIGBENCH_ENV)
    path = Path(supplied).expanduser() if supplied else Path(cache_dir) / "downloads" / BIGBENCH_SDIST
    if not path.is_file():
        raise MissingAssetError(
            f"the offline BIG-bench datasets need {BIGBENCH_SDIST} (sha256 {BIGBENCH_SHA256[:12]}...), which the "
            f"package index no longer serves and scotd does not download; {path} does not exist. If you have the "
            f"archive, set {BIGBENCH_ENV}=<path> or copy it to {Path(cache_dir) / 'downloads' / BIGBENCH_SDIST}; "
            "otherwise use a task with files you have (configs/csqa-cpu.yaml reads CommonsenseQA from ../shared/data).")
    return path


def ensure_dataset(key: str, cache_dir: Path) -> Path:
    """The JSONL file of `OFFLINE_DATASETS[key]`, built on first use from the user-supplied, pinned bigbench sdist
    (`bigbench_sdist`); MissingAssetError names what to supply when it is absent."""
    member, parse = _lookup(OFFLINE_DATASETS, key, "dataset")
    cache_dir = Path(cache_dir)
    out = cache_dir / "datasets" / f"{key}.jsonl"
    meta = out.with_suffix(".meta.json")
    pins = {"format_version": FORMAT_VERSION, "source_sha256": BIGBENCH_SHA256, "member": member}
    if out.exists() and _marker_matches(meta, pins):
        return out
    with _locked(cache_dir, "bigbench"):
        if out.exists() and _marker_matches(meta, pins):
            return out
        sdist = bigbench_sdist(cache_dir)
        verify_sha256(sdist, BIGBENCH_SHA256, f"sdist {sdist.name}")
        examples = json.loads(b"".join(_read_member(sdist, member)))["examples"]
        records = build_records(key, examples, parse)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        os.replace(tmp, out)
        meta.write_text(json.dumps({**pins, "num_records": len(records), "num_rows": len(examples)}, indent=2))
    return out
