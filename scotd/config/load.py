"""Loading a config: YAML -> dict -> ``key.sub=value`` overrides -> typed, validated dataclasses; an unknown key, a
value of the wrong type or out of range, or a rule across keys broken raises ``ConfigError`` naming the dotted key,
before any cluster work starts."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from scotd.config.names import check_run_folders
from scotd.config.sections import ConfigError, ExperimentConfig



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
        if check_training:  # a run's config, not a finished experiment's saved one (already sized)
            size_for_cpu(raw, overrides)
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
    if cfg.teacher.tensor_parallel_size * cfg.teacher.pipeline_parallel_size > 1 and not cfg.teacher.use_gpu:
        raise ConfigError(f"teacher.tensor_parallel_size: {cfg.teacher.tensor_parallel_size} x "
                          f"pipeline_parallel_size {cfg.teacher.pipeline_parallel_size} GPUs per replica need "
                          "teacher.use_gpu: true (a CPU engine is one process)")
    check_engine_kwargs(cfg.teacher.engine_kwargs, "teacher.engine_kwargs")
    if cfg.tracking.backend == "wandb" and importlib.util.find_spec("wandb") is None:
        raise ConfigError("tracking.backend: wandb needs the wandb package (pip install 'scotd[wandb]'), or set "
                          "tracking.backend: mlflow")
    if cfg.teacher.max_replicas is not None and cfg.teacher.max_replicas < cfg.teacher.num_replicas:
        raise ConfigError(f"teacher.max_replicas: {cfg.teacher.max_replicas} is below teacher.num_replicas = "
                          f"{cfg.teacher.num_replicas}")
    t = cfg.teacher
    if t.samples_per_round is not None and not 1 <= t.samples_per_round <= t.num_samples:
        raise ConfigError(f"teacher.samples_per_round: {t.samples_per_round} must be 1 to teacher.num_samples "
                          f"({t.num_samples}), or null (all at once)")
    if (t.stop_when_repeated or t.stop_at_distinct) and t.samples_per_round is None:
        raise ConfigError("teacher.stop_when_repeated / stop_at_distinct: a question can only stop between rounds; "
                          "set teacher.samples_per_round")
    if t.sample_budget is not None and t.sample_budget < t.num_samples:
        raise ConfigError(f"teacher.sample_budget: {t.sample_budget} buys not one question of teacher.num_samples "
                          f"({t.num_samples}) samples")
    if t.stop_at_distinct is not None and t.stop_at_distinct < 1:
        raise ConfigError(f"teacher.stop_at_distinct: {t.stop_at_distinct} must be at least 1, or null (off)")
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
        for key in ("max_steps", "max_tokens", "patience"):
            if getattr(s, key) is not None and getattr(s, key) < 1:
                raise ConfigError(f"students.{i}.{key}: {getattr(s, key)} must be at least 1, or null (off)")
        if s.patience is not None and not any(t.max_dev and t.train for t in cfg.tasks):
            raise ConfigError(f"students.{i}.patience: early stopping needs dev questions: set tasks.N.max_dev > 0 "
                              "on a training task")
        if s.lora and s.zero_stage == 3:
            raise ConfigError(f"students.{i}.lora: LoRA students train with ZeRO stage 0-2 (stage 3 shards the "
                              f"weights the export merges the adapters into); set students.{i}.zero_stage: 2")
        if s.lora and not s.lora.target_modules:
            raise ConfigError(f"students.{i}.lora.target_modules: empty; name the layers that get adapters")
        per_step = s.micro_batch_size * s.num_workers
        if s.batch_size % per_step:
            raise ConfigError(f"students.{i}.batch_size: {s.batch_size} is not a multiple of micro_batch_size x "
                              f"num_workers = {s.micro_batch_size} x {s.num_workers}")
        if s.name in seen:
            raise ConfigError(f"students.{i}.name: {s.name!r} is used by an earlier student")
        seen.add(s.name)
    check_run_folders(cfg)
    runs = greedy_run_names(cfg)
    for i, pair in enumerate(cfg.eval.judge_pairs):
        unknown = [name for name in pair if name not in runs and name.rsplit("@", 1)[0] not in seen]
        if len(pair) != 2 or unknown:
            raise ConfigError(f"eval.judge_pairs.{i}: expected two of the evaluation runs {sorted(runs)}, got "
                              f"{list(pair)}")
    return cfg


# vllm.LLM settings scotd derives from the engine section (or sets itself): given in engine_kwargs they would
# bypass the section's checks and the record of what a result was built from.
MANAGED_ENGINE_KEYS = {"model", "dtype", "max_model_len", "seed", "enable_prefix_caching", "trust_remote_code",
                       "max_num_seqs", "tensor_parallel_size", "pipeline_parallel_size", "gpu_memory_utilization",
                       "block_size", "distributed_executor_backend", "tokenizer"}


def check_engine_kwargs(kwargs: dict[str, Any], key: str) -> None:
    """Each ``engine_kwargs`` name must be a ``vllm.LLM`` / ``EngineArgs`` setting that scotd does not set itself
    (vLLM is imported only when there are some to check)."""
    if not kwargs:
        return
    managed = sorted(set(kwargs) & MANAGED_ENGINE_KEYS)
    if managed:
        raise ConfigError(f"{key}.{managed[0]}: set from the engine section's own key (teacher.{managed[0]} or "
                          "resources); engine_kwargs holds the other vLLM settings")
    quiet = logging.getLogger("vllm")  # vLLM's import-time notes (its CPU build's Triton) are not the user's
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from vllm.engine.arg_utils import EngineArgs
    except ImportError:  # a driver without vLLM: the engines check the names when they start
        return
    finally:
        quiet.setLevel(level)
    known = {f.name for f in dataclasses.fields(EngineArgs)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{key}.{unknown[0]}: not a vLLM engine setting{hint}; the settings are vLLM's "
                          "EngineArgs fields")


def greedy_run_names(cfg: ExperimentConfig) -> list[str]:
    """The greedy evaluation runs a config asks for (``runs.eval_runs`` adds ``<student>@best`` / ``@last`` rows
    once training has chosen checkpoints)."""
    from scotd.runs import eval_runs

    return [run.run for run in eval_runs(cfg) if run.samples == 1]


def size_for_cpu(raw: dict, overrides: list[str] | tuple[str, ...], native_bf16: bool | None = None) -> list[str]:
    """On a CPU without native bf16 (``native_bf16``; default: this machine's), set the config's
    ``without_native_bf16`` values in ``raw`` in place, except keys the command line sets, and mark it
    ``cpu_sized``; returns the ``key=value`` items applied."""
    sizes = raw.get("without_native_bf16") or {}
    if not isinstance(sizes, dict):
        raise ConfigError(f"without_native_bf16: expected a mapping of dotted keys to values, got {sizes!r}")
    if not sizes or raw.get("cpu_sized"):
        return []
    if native_bf16 is None:
        from scotd import cpu

        native_bf16 = cpu.cpu_has_bf16()
    if native_bf16:
        return []
    given = {item.partition("=")[0] for item in overrides}
    applied = []
    for key, value in sizes.items():
        if key in given:
            continue
        try:
            set_value(raw, str(key), value)
        except ConfigError as err:
            raise ConfigError(f"without_native_bf16: {err}") from None
        applied.append(f"{key}={value}")
    raw["cpu_sized"] = True
    return applied


def apply_override(raw: dict, item: str) -> None:
    """Set ``a.b.c=value`` in the nested dict ``raw`` in place; the value is parsed as YAML (``3``, ``true``, ``[a]``)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({str(err).splitlines()[0]})") from None
    set_value(raw, key, value, item)


def set_value(raw: dict, key: str, value: Any, item: str | None = None) -> None:
    """Set the dotted ``key`` in the nested dict ``raw`` in place (``item``: the override it came from, for errors)."""
    item = item or f"{key}={value}"
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
    "EngineConfig": {"max_model_len": (16, None), "tensor_parallel_size": POSITIVE,
                     "pipeline_parallel_size": POSITIVE, "num_replicas": POSITIVE, "max_replicas": POSITIVE,
                     "batch_size": POSITIVE, "concurrent_batches": POSITIVE, "gpu_memory_utilization": (">0", 1),
                     "max_num_seqs": POSITIVE, "cpu_kvcache_gb": POSITIVE, "block_size": POSITIVE},
    "TeacherConfig": {"num_samples": (1, 10_000), "temperature": (0, 100), "top_p": (">0", 1),
                      "max_new_tokens": POSITIVE, "seed": NONNEGATIVE},
    "StudentConfig": {"selector_k": POSITIVE, "epochs": POSITIVE, "learning_rate": (">0", 1),
                      "weight_decay": NONNEGATIVE, "batch_size": POSITIVE, "micro_batch_size": POSITIVE,
                      "dev_batch_size": POSITIVE, "warmup_steps": NONNEGATIVE, "grad_clip": ABOVE_ZERO,
                      "max_length": (8, None), "num_workers": POSITIVE, "cpus_per_worker": ABOVE_ZERO,
                      "seed": NONNEGATIVE},
    "LoraSettings": {"r": POSITIVE, "alpha": ABOVE_ZERO, "dropout": (0, 1)},
    "EvalConfig": {"max_new_tokens": POSITIVE, "repetition_penalty": (">0", 10), "batch_size": POSITIVE,
                   "self_consistency": NONNEGATIVE,
                   "self_consistency_temperature": (0, 100), "untrained_shots": NONNEGATIVE},
    "ResourcesConfig": {"num_cpus": POSITIVE, "engine_cpus": ABOVE_ZERO, "omp_threads": POSITIVE},
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check_range(cls: type, name: str, value: Any, dotted: str) -> None:
    bounds = next((RANGES[c.__name__][name] for c in cls.__mro__ if name in RANGES.get(c.__name__, {})), None)
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
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
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
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{dotted}: expected a mapping of names to values, got {type(value).__name__}")
        return dict(value)
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
        default = ("(required)" if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   else repr(f.default_factory() if f.default is dataclasses.MISSING else f.default))
        if dataclasses.is_dataclass(sub):
            lines.append(f"{dotted}: {f.metadata.get('help', '')}")
            lines.extend(describe(sub, f"{dotted}.N" if sub is not hint else dotted))
        else:
            lines.append(f"{dotted} = {default}  # {f.metadata.get('help', '')}")
    return lines
