"""The job's first line: the machine it runs on, the dtype each model runs in there, and how long this config is
expected to take on that class of machine, from the rates the demo ran at on each class (``cpu_rates.json``, with
when and where each was taken).

A CPU without native bf16 (AVX2 only) runs every model in float32, about five times slower than one with AMX, so the
same config can take 16 or 75 minutes; a user should know which before the first stage starts.

The expected time is a model of the work, not a promise: generated and trained tokens (counted from the exemplars'
answers: a digit is a token in the tokenizers of the offline models, other text about 4 characters a token) times
the parameters of the model that handles them, at the class's rate, plus engine start-ups and converting
offline models not yet in the cache. Prompt tokens are left out: the few-shot prefix is cached per engine.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from dataclasses import dataclass
from pathlib import Path

from scotd.config import ExperimentConfig


@dataclass(frozen=True)
class Rates:
    """What a class of machine does per second (``source``: the run the figures come from)."""

    generate: float  # parameters x generated tokens per second (vLLM engine, many sequences at once)
    train: float  # parameters x trained tokens per second, every student of the job together
    engine_start_s: float  # seconds to start a vLLM engine, per billion parameters (at least 10 s)
    convert_s: float  # seconds to convert an offline GGUF model into a Hugging Face folder, per billion parameters
    source: str


def class_rates() -> dict[str, Rates]:
    """CPU class -> its rates, from ``scotd/cpu_rates.json``."""
    raw = json.loads((resources.files("scotd") / "cpu_rates.json").read_text())
    return {cls: Rates(**values) for cls, values in raw.items()}


CLASS_NAMES = {"amx": "AMX (native bf16)", "avx512_bf16": "AVX-512-BF16 (native bf16)",
               "avx512": "AVX-512 without bf16", "avx2": "AVX2 without native bf16", "other": "no AVX2"}


def cpu_class(flags: str | None = None) -> str:
    """``amx``, ``avx512_bf16``, ``avx512``, ``avx2`` or ``other``, from /proc/cpuinfo's flags (or ``flags``)."""
    if flags is None:
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            flags = ""
    words = set(flags.split())
    for name, flag in (("amx", "amx_bf16"), ("avx512_bf16", "avx512_bf16"), ("avx512", "avx512f"), ("avx2", "avx2")):
        if flag in words:
            return name
    return "other"


def answer_tokens(text: str) -> float:
    """Tokens of a generated answer, without a tokenizer: digits one each, other text ~4 characters a token."""
    digits = sum(c.isdigit() for c in text)
    return digits + (len(text) - digits) / 4


def model_params(ref: str, cache_dir: Path) -> float | None:
    """Parameters of a model reference: an offline model's, a tiny one's (none to speak of), or from a local
    folder's config.json (12 x layers x hidden^2 + vocabulary x hidden); None when unknown (a hub id)."""
    if ref.startswith("tiny:"):
        return 1e6
    if ref.startswith("offline:"):
        from scotd.assets import OFFLINE_MODELS

        asset = OFFLINE_MODELS.get(ref.removeprefix("offline:"))
        return asset.params if asset else None
    config = Path(ref).expanduser() / "config.json"
    try:
        c = json.loads(config.read_text())
        hidden, layers = c["hidden_size"], c["num_hidden_layers"]
        return 12 * layers * hidden ** 2 + c.get("vocab_size", 0) * hidden
    except (OSError, ValueError, KeyError, TypeError):
        return None


def uncached(ref: str, cache_dir: Path) -> bool:
    """An offline model that the job will convert first (not yet in the cache)."""
    if not ref.startswith("offline:"):
        return False
    from scotd.assets import MARKER_NAME

    return not (cache_dir / "models" / ref.removeprefix("offline:") / MARKER_NAME).exists()


def expected_seconds(cfg: ExperimentConfig, rates: Rates, exemplar_answers: list[str]) -> float | None:
    """The whole job's expected wall time at ``rates``; None when a model's size or a split's length is unknown."""
    cache = Path(cfg.output.cache_dir).expanduser()
    teacher = model_params(cfg.teacher.model, cache)
    students = [model_params(s.model, cache) for s in cfg.students]
    train = [t.max_train for t in cfg.tasks if t.train]
    evaluated = [t.max_eval for t in cfg.tasks if t.eval]
    if teacher is None or None in students or None in train or None in evaluated or not exemplar_answers:
        return None
    answer = sum(answer_tokens(a) for a in exemplar_answers) / len(exemplar_answers)
    questions, eval_questions = sum(train), sum(evaluated)
    dev = sum(t.max_dev for t in cfg.tasks if t.train)
    samples = cfg.eval.self_consistency if cfg.eval.self_consistency > 1 else 0
    seconds = 10.0  # the local Ray cluster
    engines = [teacher]  # teacher sampling
    seconds += questions * cfg.teacher.num_samples * answer * teacher / rates.generate
    if cfg.eval.teacher:
        engines.append(teacher)
        seconds += eval_questions * (1 + samples) * answer * teacher / rates.generate
    evaluated_students = ([p for p in dict.fromkeys(students)] if cfg.eval.untrained else []) + students
    for params in evaluated_students:
        engines.append(params)
        seconds += eval_questions * (1 + samples) * answer * params / rates.generate
    for s, params in zip(cfg.students, students):
        # a SCoTD student's sequence: the question (about as long as its answer) and the rationale; label-only: the
        # question and the answer alone
        trained = questions * s.epochs * (2 * answer if s.method == "scotd" else answer + 4)
        seconds += trained * params / rates.train + dev * s.epochs * answer * params / rates.generate
        engines.append(params)  # dev answers per epoch run inside the training workers; their start-up
    seconds += sum(max(10.0, rates.engine_start_s * p / 1e9) for p in engines)
    models = {cfg.teacher.model: teacher, **{s.model: p for s, p in zip(cfg.students, students)}}
    seconds += sum(rates.convert_s * p / 1e9 for ref, p in models.items() if uncached(ref, cache))
    return seconds


def summary_line(cfg: ExperimentConfig, exemplar_answers: list[str], cls: str | None = None) -> str:
    """One line: the machine's class, each model's dtype there, and the expected time from that class's rates."""
    cls = cls or cpu_class()
    gpu = cfg.teacher.use_gpu
    native = cls in ("amx", "avx512_bf16")
    engine = cfg.teacher.dtype if cfg.teacher.dtype != "auto" else ("bfloat16" if gpu or native else "float32")
    trained = sorted({"bf16 (GPU)" if s.use_gpu else
                      ("bf16 autocast" if s.cpu_bf16 is True or (s.cpu_bf16 == "auto" and native) else "float32")
                      for s in cfg.students})
    where = "GPU engines" if gpu else f"CPU {CLASS_NAMES[cls]}"
    line = (f"machine: {where}; engines {engine}, students {', '.join(trained) or 'none'}")
    rates = None if gpu else class_rates().get(cls)
    if rates is None:
        return line + ("" if gpu else "; no rates known for this class of CPU: no expected time")
    seconds = expected_seconds(cfg, rates, exemplar_answers)
    if seconds is None:
        return line + "; expected time unknown (a model's size or a split's length is not known before the run)"
    return line + f"; expected ~{max(1, math.ceil(seconds / 60))} min for this config (rates of {rates.source})"
