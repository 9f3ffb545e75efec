"""Task formats: every benchmark format becomes the same ``Question`` record.

Each official format has a pure row parser ``parse_<format>(obj) -> Question`` that raises ``RowError`` with the
fault; ``load_questions`` reads a file line by line (JSON arrays item by item, with the item's line number), turns
row faults into ``TaskDataError("file:line: fault")`` or, with ``skip_bad_rows``, counts and skips them.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

from scotd.scoring import normalize_answer, normalize_number
from scotd.storage import is_uri, read_bytes
from scotd.tasks.question import (LoadResult, Question, RowError, SourceUnavailableError, TaskDataError,
                                  content_id)

log = logging.getLogger(__name__)

MAX_CHOICES = 10


BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark some editors write at the start of a file


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"empty {what}")
    return " ".join(value.split())


def _check_choices(choices: list[str]) -> tuple[str, ...]:
    if len(choices) < 2:
        raise RowError(f"fewer than 2 choices ({len(choices)})")
    if len(choices) > MAX_CHOICES:
        raise RowError(f"more than {MAX_CHOICES} choices ({len(choices)})")
    # Repeated choices are kept: the official CommonsenseQA files have rows with two equal choices.
    return tuple(_text(_number_as_text(c), f"choice {i + 1}") for i, c in enumerate(choices))


def _number_as_text(value: Any) -> Any:
    """A numeric choice (``[3, 5, 8]``) is its text; booleans are not numbers here."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _labelled_choices(obj: dict) -> tuple[tuple[str, ...], list[str], str]:
    """The official CSQA/OBQA/ARC shape: {"question": {"stem", "choices": [{"label", "text"}]}, "answerKey"}."""
    q = obj.get("question")
    if not isinstance(q, dict):
        raise RowError("missing field 'question' (an object with 'stem' and 'choices')")
    stem = _text(q.get("stem"), "question stem")
    raw = q.get("choices")
    if not isinstance(raw, list):
        raise RowError("missing field 'question.choices'")
    labels = [str(c.get("label", "")).strip() if isinstance(c, dict) else "" for c in raw]
    texts = [c.get("text") if isinstance(c, dict) else None for c in raw]
    return _check_choices(texts), labels, stem


def _answer_from_key(obj: dict, labels: list[str], key: str = "answerKey") -> int | None:
    if key not in obj:
        raise RowError(f"missing answer ('{key}')")
    answer = obj[key]
    if answer is None or str(answer).strip() == "":
        raise RowError(f"missing answer ('{key}' is empty)")
    answer = str(answer).strip()
    if answer not in labels:
        raise RowError(f"answer {answer!r} is not among the choice labels {labels}")
    return labels.index(answer)


def _id(obj: dict, key: str = "id") -> str:
    value = obj.get(key)
    if value is None or str(value).strip() == "":
        raise RowError(f"missing id ('{key}')")
    return str(value)


def parse_multiple_choice(obj: dict, task: str, labelled: bool = True) -> Question:
    """CommonsenseQA, OpenBookQA and ARC share one official shape; ARC labels are letters or digits, 3-5 choices."""
    choices, labels, stem = _labelled_choices(obj)
    answer = _answer_from_key(obj, labels) if labelled else None
    return Question(_id(obj), task, stem, choices, answer)


_QUAREL_CHOICES = re.compile(r"\(A\)\s*(.*?)\s*\(B\)\s*(.*?)\s*$", re.S)


def parse_quarel(obj: dict, task: str) -> Question:
    """Official QuaRel JSONL: the two options sit inside the question as '... (A) x (B) y'; 'answer_index' is 0/1."""
    text = _text(obj.get("question"), "question")
    match = _QUAREL_CHOICES.search(text)
    if not match:
        raise RowError("question has no '(A) ... (B) ...' choices")
    stem = text[: match.start()].strip()
    if not stem:
        raise RowError("empty question before the choices")
    choices = _check_choices([match.group(1), match.group(2)])
    if "answer_index" not in obj:
        raise RowError("missing answer ('answer_index')")
    answer = obj["answer_index"]
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < 2:
        raise RowError(f"answer_index {answer!r} is not among the choices (0 or 1)")
    return Question(_id(obj), task, stem, choices, answer)


def parse_strategyqa(obj: dict, task: str) -> Question:
    """StrategyQA (official JSON array): a yes/no question; the boolean 'answer' becomes choice 'yes' or 'no'."""
    text = _text(obj.get("question"), "question")
    if "answer" not in obj:
        raise RowError("missing answer ('answer')")
    answer = obj["answer"]
    if not isinstance(answer, bool):
        raise RowError(f"answer {answer!r} is not among the choices (true/false)")
    return Question(_id(obj, "qid"), task, text, ("yes", "no"), 0 if answer else 1)


def parse_generic(obj: dict, task: str) -> Question:
    """Generic JSONL: {"id"?, "question", "choices": [..], "answer": index | letter | choice text}, or free-form
    without choices (absent or ``[]``): {"id"?, "question", "answer": a number or a short text}."""
    text = _text(obj.get("question"), "question")
    raw = obj.get("choices")
    if raw is None or raw == []:
        return Question(str(obj["id"]) if obj.get("id") not in (None, "") else "", task, text, (), None,
                        _free_answer(obj.get("answer")))
    if not isinstance(raw, list):
        raise RowError("field 'choices' must be a list (or absent for a free-form answer)")
    choices = _check_choices(raw)
    if obj.get("answer") is None:
        raise RowError("missing answer ('answer')")
    answer = obj["answer"]
    if isinstance(answer, int) and not isinstance(answer, bool):
        index = answer if 0 <= answer < len(choices) else None
    elif isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().isalpha():
        index = ord(answer.strip().lower()) - ord("a")
        index = index if index < len(choices) else None
        as_text = " ".join(answer.split())
        if as_text in choices and choices.index(as_text) != index:
            raise RowError(f"answer {answer!r} is both the letter of choice {index + 1 if index is not None else '?'} "
                           f"and the text of choice {choices.index(as_text) + 1}: give its index instead")
    elif isinstance(answer, str):
        norm = " ".join(answer.split())
        index = choices.index(norm) if norm in choices else None
    else:
        index = None
    if index is None:
        raise RowError(f"answer {answer!r} is not among the {len(choices)} choices")
    return Question(str(obj["id"]) if obj.get("id") not in (None, "") else "", task, text, choices, index)


def _free_answer(value: Any) -> str:
    """A free-form gold answer, normalised as parsed answers are (``normalize_answer``)."""
    if value is None or isinstance(value, (bool, dict, list)):
        raise RowError(f"free-form answer must be a number or a short text, got {value!r}")
    answer = normalize_answer(str(value))
    if answer is None:
        raise RowError(f"empty free-form answer {value!r}")
    return answer


def parse_gsm8k(obj: dict, task: str) -> Question:
    """Official GSM8K JSONL: {"question", "answer"}; the gold answer is the number after the last ``####``."""
    text = _text(obj.get("question"), "question")
    solution = obj.get("answer")
    if not isinstance(solution, str) or "####" not in solution:
        raise RowError("answer has no '#### <number>' line")
    number = normalize_number(solution.rsplit("####", 1)[1])
    if number is None:
        raise RowError(f"no number after '####': {solution.rsplit('####', 1)[1].strip()[:40]!r}")
    return Question("", task, text, (), None, number)


def parse_hf_multiple_choice(obj: dict, task: str) -> Question:
    """Hub datasets in the common MC layout: question, choices {label: [...], text: [...]}, answerKey (CSQA, ARC, OBQA
    on the hub), or question + choices list + integer answer."""
    choices = obj.get("choices")
    if isinstance(choices, dict) and "text" in choices:
        labelled = {"question": {"stem": obj.get("question") or obj.get("question_stem"),
                                 "choices": [{"label": l, "text": t} for l, t in zip(choices["label"], choices["text"])]},
                    "answerKey": obj.get("answerKey"), "id": obj.get("id")}
        return parse_multiple_choice(labelled, task)
    return parse_generic(obj, task)


SENTIMENT_CHOICES = ("positive", "negative")


def parse_sentiment(obj: dict, task: str) -> Question:
    """A review with a ``Sentiment`` (Positive/Negative) and ``Text`` column (IMDb contrast-set TSV files)."""
    label = _text(obj.get("Sentiment"), "Sentiment").strip().lower()
    if label not in SENTIMENT_CHOICES:
        raise RowError(f"Sentiment must be Positive or Negative, got {obj.get('Sentiment')!r}")
    review = " ".join(_text(obj.get("Text"), "Text").replace("<br />", " ").split())
    if not review:
        raise RowError("empty Text")
    return Question("", task, f'What is the sentiment of this movie review? "{review}"', SENTIMENT_CHOICES,
                    SENTIMENT_CHOICES.index(label))


ROW_PARSERS: dict[str, Callable[[dict, str], Question]] = {
    "commonsenseqa": parse_multiple_choice,
    "openbookqa": parse_multiple_choice,
    "arc": parse_multiple_choice,
    "quarel": parse_quarel,
    "strategyqa": parse_strategyqa,
    "jsonl": parse_generic,
    "imdb": parse_sentiment,
    "hf": parse_hf_multiple_choice,
    "arithmetic": parse_generic,  # generated tasks (scotd.symbolic) saved as generic JSONL
    "arithmetic_check": parse_generic,
    "coin_flip": parse_generic,
    "gsm8k": parse_gsm8k,
    "sum": parse_generic,
    "last_letters": parse_generic,
}


# Formats whose hub datasets keep the official rows (the others are read in the hub's multiple-choice layouts).
HUB_PARSERS: dict[str, Callable[[dict, str], Question]] = {"gsm8k": parse_gsm8k}


# The exemplar file each format uses unless the task names another.
DEFAULT_EXEMPLARS = {"commonsenseqa": "commonsenseqa", "openbookqa": "openbookqa", "arc": "arc",
                     "quarel": "quarel", "strategyqa": "strategyqa", "jsonl": "generic", "hf": "generic",
                     "imdb": "imdb", "arithmetic": "arithmetic", "arithmetic_check": "arithmetic_check",
                     "coin_flip": "coin_flip", "gsm8k": "gsm8k", "sum": "sum", "last_letters": "last_letters"}


def iter_json_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object or RowError) for a JSONL file or a JSON array file (a path or a URI).

    Decoding is per line so that one bad byte sequence is one bad row, reported with its line.
    """
    data = read_bytes(path).removeprefix(BOM)
    head = data.lstrip()[:1]
    if head == b"[":
        yield from _iter_json_array(path, data)
        return
    for number, raw in enumerate(data.removeprefix(BOM).split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield number, RowError(f"not UTF-8 (byte {err.start})")
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            yield number, RowError(f"bad JSON: {err.msg} (column {err.colno})")


def iter_tsv_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, {header: value} or RowError) for a tab-separated file with a header line (one record per
    line; fields may be quoted CSV-style), at a path or a URI."""
    lines = read_bytes(path).removeprefix(BOM).split(b"\n")
    try:
        header = lines[0].decode("utf-8").rstrip("\r").split("\t")
    except UnicodeDecodeError:
        raise TaskDataError(f"{path}:1: header is not UTF-8") from None
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        try:
            # csv handles quoted fields ("...""..."), as the IMDb contrast files quote some reviews.
            fields = next(csv.reader([raw.decode("utf-8").rstrip("\r")], delimiter="\t"))
        except UnicodeDecodeError as err:
            yield number, RowError(f"not UTF-8 (byte {err.start})")
            continue
        if len(fields) != len(header):
            yield number, RowError(f"expected {len(header)} tab-separated fields ({', '.join(header)}), "
                                   f"got {len(fields)}")
            continue
        yield number, dict(zip(header, fields))


def _iter_json_array(path: str | Path, data: bytes) -> Iterator[tuple[int, Any]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise TaskDataError(f"{path}:{line}: not UTF-8 (the file is one JSON array, so nothing can be skipped)")
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            rest = text[pos + 1:].strip()
            if rest:
                line = text.count("\n", 0, pos + 1 + text[pos + 1:].index(rest[0])) + 1
                raise TaskDataError(f"{path}:{line}: data after the JSON array that starts the file (a JSONL file "
                                    "whose first line is an array?)")
            return
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise TaskDataError(f"{path}:{err.lineno}: bad JSON: {err.msg} (column {err.colno})") from None
        yield line, obj


def load_questions(path: str | Path, fmt: str, task: str, *, skip_bad_rows: bool = False,
                   labelled: bool = True) -> LoadResult:
    """Read one data file of format ``fmt`` into questions of ``task``: a local path, or a URI on any filesystem
    pyarrow opens (``s3://bucket/data/train.jsonl``, ``gs://...``, ``file://...``), so the data can live where every
    node of a cluster reads it.

    A bad row raises ``TaskDataError("path:line: fault")`` unless ``skip_bad_rows``, in which case it is counted.
    Duplicate ids are an error too (they would collide in the corpus). Rows without an id get one from their content
    (``content_id``).
    """
    path = str(path) if is_uri(str(path)) else Path(path)  # Path() would fold the '//' of a URI
    if fmt not in ROW_PARSERS or fmt == "hf":
        raise TaskDataError(f"{path}: unknown file format {fmt!r} (known: {', '.join(ROW_PARSERS)})")
    parser = ROW_PARSERS[fmt]
    questions, skipped, seen, where = [], [], set(), {}
    try:
        records = list(iter_tsv_records(path) if fmt == "imdb" else iter_json_records(path))
    except FileNotFoundError:
        raise SourceUnavailableError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise TaskDataError(f"{path}: a folder, not a data file of format {fmt}") from None
    for line, obj in records:
        try:
            if isinstance(obj, RowError):
                raise obj
            if not isinstance(obj, dict):
                raise RowError(f"expected a JSON object, got {type(obj).__name__}")
            if not labelled and fmt in ("commonsenseqa", "openbookqa", "arc"):
                q = parse_multiple_choice(obj, task, labelled=False)
            else:
                q = parser(obj, task)
            if not q.id:
                q = replace(q, id=content_id(q, task, seen))
            if q.id in seen:
                raise RowError(f"duplicate id {q.id!r}")
        except RowError as err:
            fault = f"{path}:{line}: {err}"
            if not skip_bad_rows:
                raise TaskDataError(fault) from None
            skipped.append(fault)
            continue
        seen.add(q.id)
        questions.append(q)
        where[q.id] = f"{path}:{line}"
    if skipped:
        log.warning("%s: skipped %d malformed rows (first: %s)", path, len(skipped), skipped[0])
    if not questions:
        raise TaskDataError(f"{path}: no questions" + (f" ({len(skipped)} malformed rows skipped)" if skipped else
                                                         " (the file is empty)"))
    return LoadResult(questions, len(skipped), skipped[:20], where)


def load_hf_questions(spec: str, task: str, *, skip_bad_rows: bool = False, fmt: str = "hf") -> LoadResult:
    """Load 'dataset_name[:config]:split' from the Hugging Face hub (needs the ``datasets`` package and network);
    rows are read in the hub's common multiple-choice layouts, or as the official rows where the hub has those
    (``HUB_PARSERS``: GSM8K)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise TaskDataError(f"{spec}: expected 'dataset_name:split' or 'dataset_name:config:split'")
    try:
        import datasets
    except ImportError:
        raise SourceUnavailableError(f"{spec}: the Hugging Face hub needs the 'datasets' package "
                                     "(pip install datasets)") from None
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    try:
        rows = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # noqa: BLE001 - the hub's failures (offline, no such dataset/split) vary by version
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SourceUnavailableError(f"{spec}: cannot load from the Hugging Face hub ({reason[:200]})") from None
    questions, skipped, where = [], [], {}
    for number, obj in enumerate(rows, start=1):
        try:
            q = HUB_PARSERS.get(fmt, parse_hf_multiple_choice)(dict(obj), task)
            questions.append(q if q.id else replace(q, id=f"{task}-{split}-{number}"))
            where[questions[-1].id] = f"{spec}:{number}"
        except RowError as err:
            if not skip_bad_rows:
                raise TaskDataError(f"{spec}:{number}: {err}") from None
            skipped.append(f"{spec}:{number}: {err}")
    return LoadResult(questions, len(skipped), skipped[:20], where)
