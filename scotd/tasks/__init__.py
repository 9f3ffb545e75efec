"""Tasks: the ``Question`` record (``question``) and the benchmark formats read into it (``formats``). The tasks
stage, which writes an experiment's questions, is ``scotd.tasks_stage``."""

from scotd.tasks.formats import (DEFAULT_EXEMPLARS, HUB_PARSERS, MAX_CHOICES, ROW_PARSERS, SENTIMENT_CHOICES,
                                 iter_json_records, iter_tsv_records, load_hf_questions, load_questions,
                                 parse_generic, parse_gsm8k, parse_hf_multiple_choice, parse_multiple_choice,
                                 parse_quarel, parse_sentiment, parse_strategyqa)
from scotd.tasks.question import (SPLITS, LoadResult, Question, RowError, SourceUnavailableError, TaskDataError,
                                  carve_dev, hash_split)

__all__ = ["DEFAULT_EXEMPLARS", "HUB_PARSERS", "MAX_CHOICES", "ROW_PARSERS", "SENTIMENT_CHOICES", "SPLITS",
           "LoadResult", "Question", "RowError", "SourceUnavailableError", "TaskDataError", "carve_dev",
           "hash_split", "iter_json_records", "iter_tsv_records", "load_hf_questions", "load_questions",
           "parse_generic", "parse_gsm8k", "parse_hf_multiple_choice", "parse_multiple_choice", "parse_quarel",
           "parse_sentiment", "parse_strategyqa"]
