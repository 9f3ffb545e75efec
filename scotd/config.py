"""Typed experiment configuration: one YAML per experiment, one frozen dataclass per stage.

Every field carries its default and a one-line explanation (``help``) in one place. ``load_config`` reads a YAML
file, applies ``key.sub=value`` overrides (list items by index: ``students.0.epochs=3``) and converts the result to
``ExperimentConfig``; an unknown key or a value of the wrong type raises ``ConfigError`` naming the dotted key,
before any cluster work starts.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type; the message names the dotted key."""


def opt(default: Any, help: str) -> Any:
    """A dataclass field with its documentation attached (read by ``describe`` and the tests)."""
    return field(default=default, metadata={"help": help})


def required(help: str) -> Any:
    return field(metadata={"help": help})


@dataclass(frozen=True)
class TaskConfig:
    name: str = required("Task label used in ids, reports and exemplar lookup (e.g. csqa).")
    format: Literal["commonsenseqa", "openbookqa", "arc", "quarel", "strategyqa", "jsonl", "imdb", "hf",
                    "arithmetic", "arithmetic_check", "coin_flip", "gsm8k", "sum", "last_letters"] = required(
        "File format of the task's data: an official benchmark format (gsm8k: free-form numeric answers), generic "
        "JSONL (multiple choice, or free-form without choices), the IMDb contrast-set TSV (Sentiment<TAB>Text), a "
        "Hugging Face dataset, or a generated symbolic task (scotd/symbolic.py; its sources are "
        "gen:<kind>:<split>:<min steps>-<max steps>)."
    )
    train: str | tuple[str, ...] = opt(
        "", "Training questions: a file path or URI, 'hf:<dataset>[:<config>]:<split>' (the Hugging Face hub; needs "
        "the datasets package), 'offline:<dataset>:<split>', 'gen:<kind>:<split>:<min>-<max>' (a generated task), "
        "or for format=hf 'dataset_name:split'. A list gives "
        "alternatives: the first that can be read is used and the log names it. Empty: an evaluation-only task (a "
        "contrast set, or a held-out task the students never train on)."
    )
    eval: str | tuple[str, ...] = opt("", "Held-out evaluation questions (same forms as train).")
    exemplars: str = opt(
        "", "Few-shot exemplar file: a key of scotd/exemplars (e.g. commonsenseqa) or a path. Default: the format's."
    )
    num_exemplars: int | None = opt(None, "Use only the first K exemplars in the teacher prompt (None = all).")
    student_shots: int = opt(
        0, "Exemplars (with rationales) shown to students before each evaluation question of this task: in-context "
        "examples for a held-out task, as the paper did for SST-2. 0 = the plain student prompt."
    )
    max_train: int | None = opt(None, "Keep the first N training questions (after removing exemplar questions).")
    max_eval: int | None = opt(None, "Keep the first N evaluation questions.")
    max_dev: int = opt(
        0, "Development questions for choosing each student's checkpoint: the dataset's dev part for offline: "
        "datasets, else carved from the training questions by a hash of their ids (and not trained on). Students "
        "report their dev accuracy after every epoch. 0 = no dev split: the report shows the last checkpoint."
    )
    skip_bad_rows: bool = opt(False, "Skip malformed rows and report their count instead of failing on the first.")


@dataclass(frozen=True)
class TeacherConfig:
    model: str = opt(
        "offline:qwen2.5-coder-1.5b-instruct",
        "Teacher: HF hub id, local HF folder, 'offline:<key>' (a model shipped on PyPI) or 'tiny:teacher'.",
    )
    num_samples: int = opt(30, "Rationales sampled per training question (paper: 30).")
    temperature: float = opt(1.0, "Sampling temperature (paper: 1.0).")
    top_p: float = opt(1.0, "Nucleus sampling mass.")
    max_new_tokens: int | None = opt(
        None, "Generation budget per rationale; a rationale cut at it has no answer (counted as cut_at_limit). "
        "None: sized from the exemplars, twice the longest exemplar answer in the teacher's tokens (at least 32), "
        "written into the experiment's config.yaml."
    )
    stop: tuple[str, ...] = opt(("\n\n",), "Stop strings; the answer phrase of every letter is always added.")
    seed: int = opt(0, "Base seed; question i is sampled with a seed derived from (seed, question id).")
    dtype: str = opt("auto", "Engine dtype; auto = bfloat16 on GPUs and CPUs with native bf16, float32 on other CPUs.")
    max_model_len: int = opt(2048, "Longest prompt + generation the engine accepts.")
    use_gpu: bool = opt(False, "Run the engines on GPUs (vLLM's GPU build); False = vLLM's CPU build.")
    tensor_parallel_size: int = opt(1, "GPUs per engine replica sharing each layer (teachers larger than one GPU).")
    pipeline_parallel_size: int = opt(
        1, "Pipeline stages per replica; a replica owns tensor_parallel_size x pipeline_parallel_size GPUs."
    )
    num_replicas: int = opt(1, "Engine replicas (Ray Data actors), each owning its GPUs (or CPU cores).")
    max_replicas: int | None = opt(
        None, "Autoscaling range num_replicas..max_replicas: Ray Data adds engines while questions are queued and "
        "the cluster (autoscaler) has GPUs; None = exactly num_replicas."
    )
    batch_size: int = opt(16, "Questions per Ray Data batch handed to one engine call.")
    concurrent_batches: int | None = opt(
        None, "Batches each engine works on at once: the next batch's requests join the running batch while the "
        "previous one's last sequences finish (Ray's max_concurrency on the engine actor). None = enough to keep "
        "the engine full: ceil(max_num_seqs / (batch_size x num_samples)) + 1 (at most 64), with vLLM's default "
        "max_num_seqs when that is unset (256 on CPU, up to 1024 on GPU). Teacher sampling only: evaluation and "
        "the judge always take the automatic value."
    )
    gpu_memory_utilization: float = opt(0.9, "Share of GPU memory vLLM may take (GPU only).")
    resource: str | None = opt(
        None, "Custom Ray resource each engine replica asks for, one unit per GPU it uses, to keep replicas on "
        "teacher nodes (the cluster/ files give teacher nodes 'teacher' = their GPU count); None = ask for none."
    )
    max_num_seqs: int | None = opt(
        None, "Most sequences one engine decodes at once (vLLM max_num_seqs); None = vLLM's default for the device."
    )
    cpu_kvcache_gb: int = opt(2, "KV cache size in GiB on CPU (VLLM_CPU_KVCACHE_SPACE; CPU only).")
    block_size: int | None = opt(
        None, "KV block size; CPU default 32 so prefix caching also covers the question (see STACK-NOTES)."
    )
    enable_prefix_caching: bool = opt(True, "Reuse the few-shot prefix's KV cache across questions and samples.")
    greedy_rationales: bool = opt(
        False, "Also write one greedy rationale per training question (teacher/greedy): the greedy-CoT baseline's "
        "corpus (students with selector: greedy)."
    )
    chat_template: bool = opt(False, "Wrap the prompt in the tokenizer's chat template (instruction-tuned teachers).")
    trust_remote_code: bool = opt(False, "Allow model repos to run their own code (off unless you trust the repo).")


@dataclass(frozen=True)
class CorpusConfig:
    setting: Literal["supervised", "fewshot"] = opt(
        "supervised",
        "supervised: keep rationales whose answer equals the gold label; fewshot: keep every parsed rationale "
        "and label it with the teacher's answer.",
    )
    dedup: bool = opt(True, "Drop exact-duplicate rationales of the same question.")


@dataclass(frozen=True)
class StudentConfig:
    name: str = required("Name of this student run (folder name, report row).")
    model: str = opt("offline:smollm2-135m-instruct", "Student base model (same forms as teacher.model, or 'tiny:student').")
    method: Literal["scotd", "label_only"] = opt(
        "scotd", "scotd: target is a sampled rationale + answer; label_only: target is the answer letter only."
    )
    selector: Literal["all", "first_n", "random", "likelihood", "diverse", "open_ended", "greedy"] = opt(
        "all", "Which kept rationales a SCoTD student trains on (scotd/selectors.py): all; first_n = those among the "
        "first selector_k samples (the N-sweep); random / likelihood / diverse: selector_k per question; "
        "open_ended: selector_k per question on average, by quintile of rationale variety (1/3/5/7/9 at 5); greedy: "
        "the teacher's one greedy rationale per question (needs teacher.greedy_rationales)."
    )
    selector_k: int = opt(
        5, "Budget: rationales per question for random/likelihood/diverse, per question on average for open_ended "
        "(counts in proportion to 1:3:5:7:9); N for first_n (paper: 5). A question with fewer keeps them all."
    )
    setting: Literal["", "supervised", "fewshot"] = opt(
        "", "This student's corpus setting when it differs from corpus.setting (both settings in one experiment, "
        "from the same teacher samples); empty: corpus.setting. Label-only students in the fewshot setting learn "
        "the teacher's majority answers."
    )
    embedding_model: str = opt(
        "offline:smollm2-135m-instruct", "Sentence embeddings for selector 'diverse' (mean of last hidden layer)."
    )
    epochs: int = opt(3, "Passes over the training questions; each pass draws one kept rationale per question.")
    learning_rate: float = opt(2e-5, "Peak AdamW learning rate (paper: 2e-5).")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    batch_size: int = opt(32, "Global batch size in sequences (paper: 32) = micro_batch_size x accumulation x workers.")
    micro_batch_size: int = opt(8, "Sequences per worker per forward pass.")
    dev_batch_size: int = opt(
        32, "Dev questions per greedy generate call (on each rank) when scoring an epoch's checkpoint: larger "
        "batches were faster on CPU (40 dev answers of a demo student: 62 s in batches of 8, 50 s in one)."
    )
    warmup_steps: int = opt(500, "Linear warm-up steps, then linear decay to zero (paper: 500).")
    grad_clip: float = opt(0.5, "Gradient norm clip (paper: 0.5).")
    max_length: int = opt(700, "Prompt + target tokens; longer sequences are truncated from the left of the prompt.")
    zero_stage: Literal[0, 1, 2, 3] = opt(2, "DeepSpeed ZeRO stage.")
    num_workers: int = opt(1, "Ray Train workers (data-parallel ranks) for this student.")
    use_gpu: bool = opt(False, "One GPU per worker, bf16 and NCCL; False trains in fp32 over gloo on CPU.")
    cpu_bf16: bool | Literal["auto"] = opt(
        False, "CPU training only: forward passes under bfloat16 autocast (weights, gradients and optimizer stay "
        "fp32); auto: where the CPU has native bf16 (AMX or AVX-512 BF16). Faster steps, but small updates are "
        "rounded away in the forward pass, so loss falls slower at small learning rates (benchmarks/training.py "
        "--cpu-bf16)."
    )
    cpus_per_worker: float = opt(1.0, "CPUs reserved per training worker.")
    seed: int = opt(0, "Seed for initialisation-independent randomness: data order and rationale draws.")


@dataclass(frozen=True)
class EvalConfig:
    max_new_tokens: int | None = opt(
        None, "Generation budget per evaluation answer (and per dev answer while students train). None: sized from "
        "the kept corpus, its rationales' 99th-percentile length in teacher tokens x 1.25 + 16 (at least 32; the "
        "teacher's budget when no corpus is built), written into the experiment's config.yaml."
    )
    repetition_penalty: float = opt(
        1.0, "vLLM's repetition penalty for every evaluation run; 1.0 = off, above 1 discourages the loops a small "
        "student's greedy answer can fall into (the report names the value)."
    )
    batch_size: int = opt(32, "Questions per engine call.")
    self_consistency: int = opt(
        0, "Also evaluate every run by self-consistency: this many sampled answers, majority vote (paper: 30); "
        "0 = greedy only."
    )
    self_consistency_temperature: float = opt(0.7, "Sampling temperature of the self-consistency answers.")
    teacher: bool = opt(True, "Evaluate the teacher (few-shot, greedy) as a reference row.")
    judge_pairs: tuple[tuple[str, ...], ...] = opt(
        (), "Pairs of evaluation runs whose rationales a judge model compares question by question, e.g. "
        "[[scotd, teacher], [scotd, scotd-n1]] (scotd/judge.py); the pairs are also exported for people to rate."
    )
    judge_model: str = opt("", "The judge (same forms as teacher.model); empty: the teacher.")
    checkpoint: Literal["best", "last"] = opt(
        "best", "Which checkpoint of each student the report's main rows show when a dev split exists: the one with "
        "the best dev accuracy or the last one. The other is evaluated too unless eval.both_checkpoints is off."
    )
    both_checkpoints: bool = opt(
        True, "When a student's best dev checkpoint is not its last, also evaluate the one eval.checkpoint does not "
        "name (a row of the report's checkpoint table); False saves that evaluation per such student."
    )
    untrained: bool = opt(True, "Evaluate each distinct student base model before training (zero-shot, greedy).")
    untrained_shots: int = opt(
        0, "Also evaluate each untrained student base model few-shot: this many exemplars with rationales before "
        "each question (the paper's few-shot prompted student). 0 = zero-shot only."
    )


@dataclass(frozen=True)
class ResourcesConfig:
    address: str | None = opt(None, "Ray cluster address; None starts a local cluster inside the job.")
    num_cpus: int | None = opt(
        4,
        "Logical CPUs of the local cluster. Above the core count on purpose: Ray Data and Ray Train together "
        "deadlocked with num_cpus=2 on a 2-core machine (STACK-NOTES).",
    )
    engine_cpus: float = opt(1.0, "CPUs reserved by each vLLM engine actor.")
    omp_threads: int | None = opt(None, "OMP_NUM_THREADS for training workers (None: leave as is).")
    worker_logs: bool = opt(
        False, "Also show the Ray workers' own output (vLLM engines, training workers) in the job's terminal; off, "
        "it stays in the Ray session's log folder, which the job names at start."
    )


@dataclass(frozen=True)
class OutputConfig:
    dir: str = opt("runs/experiment", "Experiment folder: every stage writes its artifacts below it.")
    cache_dir: str = opt("~/.cache/scotd", "Where converted offline models and datasets are cached.")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = opt("experiment", "Experiment name (report title).")
    tasks: tuple[TaskConfig, ...] = opt((), "Tasks whose questions are labelled and evaluated.")
    teacher: TeacherConfig = opt(TeacherConfig(), "Teacher sampling stage.")
    corpus: CorpusConfig = opt(CorpusConfig(), "Corpus filtering stage.")
    students: tuple[StudentConfig, ...] = opt((), "Students to train (SCoTD and baselines).")
    eval: EvalConfig = opt(EvalConfig(), "Evaluation stage.")
    resources: ResourcesConfig = opt(ResourcesConfig(), "Ray cluster and resources.")
    output: OutputConfig = opt(OutputConfig(), "Artifact locations.")


# ----------------------------------------------------------------------------------------------------------------
# Loading: YAML -> dict -> overrides -> typed, validated dataclasses.


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
                check_training: bool = True) -> ExperimentConfig:
    """Read ``path`` (YAML), apply ``key.sub=value`` overrides, and return the validated config. ``check_training``
    false skips the rules that only matter before students train (``check_students``): a finished experiment's
    saved config is reported as it was run."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a config file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        for item in overrides:
            apply_override(raw, item)
        cfg = from_dict(ExperimentConfig, raw)
        return check_students(cfg) if check_training else cfg
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error, not the last one silently."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:  # the mapping's own keys; merged ones (<<: *base) may be overridden
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def check_students(cfg: ExperimentConfig) -> ExperimentConfig:
    """Rules across keys: the teacher's counts are positive; a student's global batch splits evenly into
    micro-batches over its workers (else the accumulation would round it silently), and names are unique (each
    names a folder)."""
    for key in ("num_samples", "batch_size", "concurrent_batches", "num_replicas"):
        if getattr(cfg.teacher, key) is not None and getattr(cfg.teacher, key) < 1:
            raise ConfigError(f"teacher.{key}: {getattr(cfg.teacher, key)} must be at least 1")
    for i, t in enumerate(cfg.tasks):
        if not NAME.match(t.name):
            raise ConfigError(f"tasks.{i}.name: {t.name!r} must be 1-64 letters, digits, '.', '_' or '-', starting "
                              "with a letter or digit (it names files and report columns)")
        if t.name in {u.name for u in cfg.tasks[:i]}:
            raise ConfigError(f"tasks.{i}.name: {t.name!r} is used by an earlier task")
    if cfg.teacher.max_replicas is not None and cfg.teacher.max_replicas < cfg.teacher.num_replicas:
        raise ConfigError(f"teacher.max_replicas: {cfg.teacher.max_replicas} is below teacher.num_replicas = "
                          f"{cfg.teacher.num_replicas}")
    if not cfg.output.dir.strip():
        raise ConfigError("output.dir: empty; give the experiment folder (a path or a URI)")
    seen: set[str] = set()
    for i, s in enumerate(cfg.students):
        reserved = s.name == "teacher" or s.name.startswith("untrained") or s.name.endswith(("_best", "_last"))
        if not NAME.match(s.name) or reserved:
            raise ConfigError(f"students.{i}.name: {s.name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit, and not 'teacher', 'untrained...' or '..._best' / "
                              "'..._last' (it names the student's folder and evaluation runs)")
        for key in ("batch_size", "micro_batch_size", "dev_batch_size", "num_workers", "selector_k", "epochs"):
            if getattr(s, key) < 1:
                raise ConfigError(f"students.{i}.{key}: {getattr(s, key)} must be at least 1")
        per_step = s.micro_batch_size * s.num_workers
        if s.batch_size % per_step:
            raise ConfigError(f"students.{i}.batch_size: {s.batch_size} is not a multiple of micro_batch_size x "
                              f"num_workers = {s.micro_batch_size} x {s.num_workers}")
        if s.name in seen:
            raise ConfigError(f"students.{i}.name: {s.name!r} is used by an earlier student")
        seen.add(s.name)
    runs = greedy_run_names(cfg)
    for i, pair in enumerate(cfg.eval.judge_pairs):
        unknown = [name for name in pair if name not in runs and name.rsplit("@", 1)[0] not in seen]
        if len(pair) != 2 or unknown:
            raise ConfigError(f"eval.judge_pairs.{i}: expected two of the evaluation runs {sorted(runs)}, got "
                              f"{list(pair)}")
    return cfg


def greedy_run_names(cfg: ExperimentConfig) -> list[str]:
    """The greedy evaluation runs a config asks for (``pipeline.eval_runs`` adds ``<student>@best`` / ``@last``
    rows once training has chosen checkpoints)."""
    names = ["teacher"] if cfg.eval.teacher else []
    if cfg.eval.untrained:
        for model in dict.fromkeys(s.model for s in cfg.students):
            names.append(f"untrained:{model}")
            if cfg.eval.untrained_shots:
                names.append(f"untrained:{model} {cfg.eval.untrained_shots}-shot")
    return names + [s.name for s in cfg.students]


def apply_override(raw: dict, item: str) -> None:
    """Set ``a.b.c=value`` in the nested dict ``raw`` in place; the value is parsed as YAML (``3``, ``true``, ``[a]``)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({str(err).splitlines()[0]})") from None
    parts = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        dotted = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, dotted)]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"override {item!r}: {dotted} is a value, not a section")
    if isinstance(node, list):
        node[_list_index(node, parts[-1], key)] = value
    else:
        node[parts[-1]] = value


def _list_index(node: list, part: str, dotted: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{dotted}: expected an index below {len(node)} into the list")
    return int(part)


# Valid values of the numeric fields, checked at load with the dotted key: (low, high), either end None for
# unbounded; a low given as a string (">0") is exclusive. None values of optional fields are not checked.
POSITIVE, NONNEGATIVE, ABOVE_ZERO = (1, None), (0, None), (">0", None)
RANGES: dict[str, dict[str, tuple]] = {
    "TaskConfig": {"num_exemplars": POSITIVE, "student_shots": NONNEGATIVE, "max_train": POSITIVE,
                   "max_eval": POSITIVE, "max_dev": NONNEGATIVE},
    "TeacherConfig": {"num_samples": (1, 10_000), "temperature": (0, 100), "top_p": (">0", 1),
                      "max_new_tokens": POSITIVE, "seed": NONNEGATIVE, "max_model_len": (16, None),
                      "tensor_parallel_size": POSITIVE, "pipeline_parallel_size": POSITIVE,
                      "num_replicas": POSITIVE, "max_replicas": POSITIVE, "batch_size": POSITIVE,
                      "concurrent_batches": POSITIVE, "gpu_memory_utilization": (">0", 1),
                      "max_num_seqs": POSITIVE, "cpu_kvcache_gb": POSITIVE, "block_size": POSITIVE},
    "StudentConfig": {"selector_k": POSITIVE, "epochs": POSITIVE, "learning_rate": (">0", 1),
                      "weight_decay": NONNEGATIVE, "batch_size": POSITIVE, "micro_batch_size": POSITIVE,
                      "dev_batch_size": POSITIVE, "warmup_steps": NONNEGATIVE, "grad_clip": ABOVE_ZERO,
                      "max_length": (8, None), "num_workers": POSITIVE, "cpus_per_worker": ABOVE_ZERO,
                      "seed": NONNEGATIVE},
    "EvalConfig": {"max_new_tokens": POSITIVE, "repetition_penalty": (">0", 10), "batch_size": POSITIVE,
                   "self_consistency": NONNEGATIVE,
                   "self_consistency_temperature": (0, 100), "untrained_shots": NONNEGATIVE},
    "ResourcesConfig": {"num_cpus": POSITIVE, "engine_cpus": ABOVE_ZERO, "omp_threads": POSITIVE},
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check_range(cls: type, name: str, value: Any, dotted: str) -> None:
    bounds = RANGES.get(cls.__name__, {}).get(name)
    if bounds is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high = bounds
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{dotted}: {value!r} must be a finite number")
    if isinstance(low, str):
        if not value > float(low[1:]):
            raise ConfigError(f"{dotted}: {value!r} must be greater than {low[1:]}")
    elif low is not None and value < low:
        raise ConfigError(f"{dotted}: {value!r} must be at least {low}")
    if high is not None and value > high:
        raise ConfigError(f"{dotted}: {value!r} must be at most {high}")


def from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``raw``, checking every key and type; errors name the dotted key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]} (known: {', '.join(sorted(names))})")
    values = {}
    for name, f in names.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in raw:
            values[name] = _convert(hints[name], raw[name], dotted)
            _check_range(cls, name, values[name], dotted)
        elif f.default is dataclasses.MISSING:
            raise ConfigError(f"missing required key {dotted}")
    return cls(**values)


def _convert(hint: Any, value: Any, dotted: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for alternative in inner:  # the first form the value fits (str | tuple[str, ...], bool | Literal["auto"])
            try:
                return _convert(alternative, value, dotted)
            except ConfigError as err:
                errors.append((typing.get_origin(alternative) is tuple, str(err)))
        shaped = [message for is_list, message in errors if is_list == isinstance(value, list)]
        if isinstance(value, list) and shaped:  # an item of a list is wrong: say which
            raise ConfigError(shaped[0])
        raise ConfigError("; or ".join(message for _, message in errors))
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):  # True == 1 and 2.0 == 2: not stages
            raise ConfigError(f"{dotted}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if isinstance(value, (str, dict)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{dotted}: expected a list, got {type(value).__name__}")
        return tuple(_convert(args[0], v, f"{dotted}.{i}") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, dotted)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _YAML11_FLOAT.match(value.strip()):
        return float(value)  # PyYAML (YAML 1.1) reads 2e-5 as a string; everyone writes learning rates that way
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ConfigError(f"{dotted}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


_YAML11_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def to_dict(cfg: Any) -> Any:
    """The config as plain YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    return cfg


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def describe(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """One line per field: dotted key, type, default and help (``scotd config --describe``)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        hint = hints[f.name]
        sub = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint
        default = "(required)" if f.default is dataclasses.MISSING else repr(f.default)
        if dataclasses.is_dataclass(sub):
            lines.append(f"{dotted}: {f.metadata.get('help', '')}")
            lines.extend(describe(sub, f"{dotted}.N" if sub is not hint else dotted))
        else:
            lines.append(f"{dotted} = {default}  # {f.metadata.get('help', '')}")
    return lines
