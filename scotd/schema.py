"""Parquet schemas of every file the stages hand to each other: defined here once, nowhere else.

Experiment folder layout (``output.dir``)::

    config.yaml                    resolved config
    questions/{train,eval}.parquet QUESTION_SCHEMA      (tasks stage)
    teacher/samples/*.parquet      SAMPLE_SCHEMA        (teacher stage; one file per block of questions)
    teacher/sampling_summary.json
    corpus/corpus.parquet          CORPUS_SCHEMA        (corpus stage: rationales kept for training)
    corpus/labels.parquet          QUESTION_SCHEMA      (the label of every training question, for label-only)
    corpus/summary.json
    students/<name>/model/         Hugging Face folder + scotd_student.json
    eval/<run>/answers/*.parquet   ANSWER_SCHEMA        (eval stage; one file per finished engine call)
    eval/<run>/predictions.parquet PREDICTION_SCHEMA
    report.json, report.md
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

QUESTION_SCHEMA = pa.schema([
    pa.field("question_id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("question", pa.string(), nullable=False),
    pa.field("choices", pa.list_(pa.string()), nullable=False),
    pa.field("answer_index", pa.int32()),  # null: unlabelled split, or a free-form question
    pa.field("answer", pa.string()),  # a free-form question's gold answer (normalised); null for multiple choice
])

SAMPLE_SCHEMA = pa.schema([
    pa.field("question_id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("sample_index", pa.int32(), nullable=False),  # 0..num_samples-1 within the question
    pa.field("question", pa.string(), nullable=False),
    pa.field("choices", pa.list_(pa.string()), nullable=False),
    pa.field("text", pa.string(), nullable=False),  # the raw completion
    pa.field("rationale", pa.string(), nullable=False),  # completion before the answer phrase
    pa.field("parsed_index", pa.int32()),  # null when parsing failed
    pa.field("parse_error", pa.string()),  # null, or one of prompts.PARSE_REASONS
    pa.field("gold_index", pa.int32()),
    pa.field("correct", pa.bool_(), nullable=False),
    pa.field("logprob_sum", pa.float64()),  # teacher log-probability of the completion's tokens
    pa.field("logprob_mean", pa.float64()),  # logprob_sum / num_tokens (the likelihood selector's score)
    pa.field("num_tokens", pa.int32(), nullable=False),  # generated tokens
    pa.field("finish_reason", pa.string()),
    pa.field("parsed_answer", pa.string()),  # the parsed answer as compared: the letter, or the free-form value
    pa.field("gold_answer", pa.string()),  # the gold answer in the same form
])

CORPUS_SCHEMA = pa.schema([
    pa.field("question_id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("sample_index", pa.int32(), nullable=False),
    pa.field("question", pa.string(), nullable=False),
    pa.field("choices", pa.list_(pa.string()), nullable=False),
    pa.field("rationale", pa.string(), nullable=False),
    pa.field("label_index", pa.int32()),  # gold (supervised) or the teacher's answer (few-shot); null: free-form
    pa.field("label", pa.string()),  # the same label as an answer key: the letter, or the free-form answer
    pa.field("logprob_sum", pa.float64()),
    pa.field("logprob_mean", pa.float64()),
    pa.field("num_tokens", pa.int32(), nullable=False),
    # Exactly what a SCoTD student trains on (``prompts.training_pair``): the input, and the target it learns to
    # write (the tokenizer's end-of-sequence token follows it in training); TRL's prompt-completion format.
    pa.field("prompt", pa.string()),
    pa.field("completion", pa.string()),
])

PREDICTION_SCHEMA = pa.schema([
    pa.field("run", pa.string(), nullable=False),  # e.g. "teacher", "student:scotd-tiny", "untrained:<model>"
    pa.field("question_id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("parsed_index", pa.int32()),
    pa.field("parse_error", pa.string()),
    pa.field("gold_index", pa.int32()),
    pa.field("correct", pa.bool_(), nullable=False),
    pa.field("parsed_answer", pa.string()),  # as SAMPLE_SCHEMA
    pa.field("gold_answer", pa.string()),
    pa.field("flexible_answer", pa.string()),  # free-form: the last number of the text (lm-eval's flexible extract)
])

# Parquet metadata of a predictions file: the run that wrote it, and the fingerprint of what that run was built from
# (``provenance.fingerprint``), which the report checks.
PREDICTIONS_RUN, PREDICTIONS_FINGERPRINT = "scotd_run", "scotd_fingerprint"

# An evaluation run's raw answers, written as engine calls finish: a file holds every sampled answer of each of its
# questions, so a rerun after a crash asks only the questions no file holds.
ANSWER_SCHEMA = pa.schema([
    pa.field("question_id", pa.string(), nullable=False),
    pa.field("sample_index", pa.int32(), nullable=False),  # 0..samples-1 (self-consistency), 0 for greedy
    pa.field("text", pa.string(), nullable=False),
    pa.field("finish_reason", pa.string()),
])

# Columns added after the first files were written: older files read them as nulls (answers come from the indices;
# a student's training text from the question and rationale).
LATER_COLUMNS = frozenset({"answer", "parsed_answer", "gold_answer", "label", "flexible_answer", "prompt",
                           "completion"})


def to_table(rows: Iterable[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) to a table of exactly ``schema``; a missing or extra column is an error, not a silent null."""
    rows = list(rows)
    for row in rows[:1]:
        if set(row) != set(schema.names):
            raise ValueError(f"row columns {sorted(row)} != schema columns {sorted(schema.names)}")
    return pa.Table.from_pylist(rows, schema=schema)


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write atomically: a crash never leaves a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (a marker such as an evaluation run's ``metrics.json`` is whole or absent)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_table(path: str | Path, schema: pa.Schema) -> pa.Table:
    """Read a file or a folder of Parquet files, checking it has ``schema``'s columns and types."""
    table = pq.read_table(path, schema=schema) if Path(path).is_dir() else pq.read_table(path)
    missing = [f.name for f in schema if f.name not in table.column_names]
    if [name for name in missing if name not in LATER_COLUMNS]:
        raise ValueError(f"{path}: missing columns {missing}")
    for name in missing:
        table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    return table.select(schema.names).cast(schema)


class CorruptFileError(ValueError):
    """A file a stage wrote earlier cannot be read back (a copy cut short, a disk fault); the message names it and
    how to rebuild it."""


def check_parquet_folder(folder: str | Path, schema: pa.Schema, fix: str) -> list[Path]:
    """The Parquet files in ``folder``, each checked to be readable with ``schema``'s columns (footer and schema
    only, so it is cheap); ``CorruptFileError`` names the first that is not, followed by ``fix``."""
    paths = sorted(Path(folder).glob("*.parquet"))
    for path in paths:
        try:
            names = pq.read_schema(path).names
        except Exception as err:  # ArrowInvalid ("magic bytes not found"), OSError: the reason varies
            raise CorruptFileError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]}); {fix}") from None
        missing = [f.name for f in schema if f.name not in names and f.name not in LATER_COLUMNS]
        if missing:
            raise CorruptFileError(f"{path}: missing columns {missing}; {fix}")
    return paths


def read_parquet_files(folder: str | Path, schema: pa.Schema, fix: str, key: str = "question_id") -> pa.Table:
    """Every Parquet file of ``folder`` read in full, as one table of ``schema``: a file that cannot be read (a
    damaged page shows only on reading) or that holds a ``key`` another file holds (a block copied or written twice)
    is a ``CorruptFileError`` naming it, followed by ``fix``."""
    tables, owner = [], {}
    for path in check_parquet_folder(folder, schema, fix):
        try:
            table = read_table(path, schema)
        except Exception as err:  # noqa: BLE001 - snappy, thrift, ArrowInvalid: the file is damaged
            raise CorruptFileError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]}); {fix}") from None
        for value in set(table.column(key).to_pylist()):
            if value in owner:
                raise CorruptFileError(f"{path}: holds {key} {value!r}, which {owner[value]} holds too (a file copied "
                                       f"or written twice); remove one of them and rerun")
            owner[value] = path.name
        tables.append(table)
    return pa.concat_tables(tables) if tables else schema.empty_table()
