"""What each piece of finished work in an experiment folder was built from, so that a rerun never mixes settings.

A rerun of an experiment resumes: it keeps the teacher's samples, trained students and finished evaluation runs.
That is only right while the settings they were built from are the ones in the config. Each unit of work (the
questions, the teacher's samples, one student, one evaluation run) therefore records, when it starts, the config
values it depends on in ``provenance.json``; before a rerun does any work, ``check`` compares them with the config
and refuses (``StaleWorkError``, exit 2) when a unit that would be reused was built from other values, naming the
keys, the old and new values, and the command that redoes it (``--restart STAGE``).

Only values that change a unit's result count: engine sizes, batch sizes and CPU counts do not. Tasks and students
are matched by name, so adding one to an experiment reuses what the others finished.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from scotd import layout
from scotd.config import ConfigError, ExperimentConfig
from scotd.limits import forget
from scotd.schema import write_text

# Per-question teacher samples depend on the prompt (a task's format and exemplars) and the sampling settings.
TASK_PROMPT_KEYS = ("format", "exemplars", "num_exemplars")
TEACHER_KEYS = ("model", "num_samples", "temperature", "top_p", "max_new_tokens", "stop", "seed", "dtype",
                "chat_template", "greedy_rationales", "samples_per_round", "stop_when_repeated", "stop_at_distinct",
                "sample_budget")
# Student keys that do not change what is learned.
STUDENT_SKIP = ("name", "cpus_per_worker", "dev_batch_size")


class StaleWorkError(ConfigError):
    """Finished work in the experiment folder was built from other config values than this run's."""


def _plain(value: Any) -> Any:
    """A JSON-comparable form of a config value (tuples as lists)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Unit:
    """One unit of work: its name (``questions``, ``teacher``, ``student <name>``, ``eval <run>``), its folder
    relative to the experiment folder, and the config values it depends on."""

    name: str
    folder: Path
    values: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.values)


def units(cfg: ExperimentConfig, exp_dir: Path | None = None) -> dict[str, Unit]:
    """Every unit of work this config makes, by name.

    Keys name a task or student by its name (``tasks[csqa].max_train``) so that reordering or adding entries
    changes nothing; ``display_key`` turns them into the config's dotted keys for messages.
    """
    from scotd.limits import resolved
    from scotd.runs import eval_runs

    if exp_dir is not None:
        cfg = resolved(cfg, exp_dir)  # a budget sized from the data counts as the value it was sized to
    questions = {f"tasks[{t.name}].{f.name}": _plain(getattr(t, f.name)) for t in cfg.tasks for f in fields(t)
                 if f.name != "student_shots"}
    prompts = {f"tasks[{t.name}].{k}": _plain(getattr(t, k)) for t in cfg.tasks for k in TASK_PROMPT_KEYS}
    shots = {f"tasks[{t.name}].student_shots": t.student_shots for t in cfg.tasks}
    # Training data comes from the tasks with a training split, and not from their evaluation side: a held-out
    # task added to a finished experiment (scotd eval) leaves its samples and students as they are.
    training = {f"tasks[{t.name}]" for t in cfg.tasks if t.train}
    trained = lambda values: {k: v for k, v in values.items()  # noqa: E731
                              if task_of(k) in training and k.rsplit(".", 1)[-1] not in EVALUATION_SIDE}
    # Other vLLM settings (quantization, ...) change the teacher's answers; none given is what older records hold.
    engine_kwargs = {"teacher.engine_kwargs": cfg.teacher.engine_kwargs} if cfg.teacher.engine_kwargs else {}
    teacher = {**trained(prompts), **{f"teacher.{k}": _plain(getattr(cfg.teacher, k)) for k in TEACHER_KEYS},
               **engine_kwargs}
    corpus = {**trained(questions), **teacher, **{f"corpus.{k}": v for k, v in asdict(cfg.corpus).items()}}
    here = Path()  # units name their folders relative to the experiment folder
    found = {"questions": Unit("questions", layout.questions_dir(here), questions),
             "teacher": Unit("teacher", layout.samples(layout.teacher_dir(here)), teacher)}
    student_values = {}
    for s in cfg.students:
        values = {**corpus, **trained(shots), "eval.max_new_tokens": cfg.eval.max_new_tokens,  # dev answers pick
                  **{f"students[{s.name}].{f.name}": _plain(getattr(s, f.name)) for f in fields(s)  # the epoch
                     if f.name not in STUDENT_SKIP}}
        student_values[s.name] = values
        found[f"student {s.name}"] = Unit(f"student {s.name}", layout.student_dir(here, s.name), values)
    for r in eval_runs(cfg, exp_dir):
        if r.student:
            model = {**student_values[r.student], **shots}
        elif r.kind == "teacher":
            model = {**prompts, **{f"teacher.{k}": _plain(getattr(cfg.teacher, k))
                                   for k in ("model", "dtype", "chat_template")}, **engine_kwargs}
        else:
            model = {**shots, "model": r.model}
        values = {**questions, **model, "eval.max_new_tokens": cfg.eval.max_new_tokens,
                  "eval.repetition_penalty": cfg.eval.repetition_penalty}
        if r.samples > 1:
            values["eval.self_consistency_temperature"] = cfg.eval.self_consistency_temperature
        found[f"eval {r.run}"] = Unit(f"eval {r.run}", layout.run_dir(here, r.dir), values)
    return found


def stage_of(unit: str) -> str:
    """The stage that builds a unit: questions -> tasks, teacher, student <name> -> students, eval <run> -> eval."""
    return {"questions": "tasks", "teacher": "teacher", "student": "students", "eval": "eval"}[unit.split(" ", 1)[0]]


def display_key(cfg: ExperimentConfig, key: str) -> str:
    """``tasks[csqa].max_train`` -> ``tasks.0.max_train`` (the override form), when the entry still exists."""
    for kind, entries in (("tasks", cfg.tasks), ("students", cfg.students)):
        prefix = f"{kind}["
        if key.startswith(prefix):
            name, rest = key[len(prefix):].split("]", 1)
            index = next((i for i, e in enumerate(entries) if e.name == name), None)
            return f"{kind}.{index}{rest}" if index is not None else key
    return key


def _read(exp_dir: Path) -> dict[str, dict[str, Any]]:
    path = layout.provenance(exp_dir)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StaleWorkError(f"{path}: not readable ({err}); remove it to rebuild the record, or use a new "
                             "output.dir") from None


def fingerprint(values: dict[str, Any]) -> str:
    """A digest of what a unit was built from (its recorded values): written into its output, so that a file copied
    from another run is told apart."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def recorded_fingerprint(exp_dir: Path, name: str) -> str | None:
    """The fingerprint of unit ``name`` as ``provenance.json`` records it; None when it is not recorded."""
    values = _read(exp_dir).get(name)
    return None if values is None else fingerprint(values)


def record(exp_dir: Path, unit: Unit) -> None:
    """Note that ``unit`` is being built from its values (called when its work starts)."""
    recorded = _read(exp_dir)
    recorded[unit.name] = unit.values
    write_text(layout.provenance(exp_dir), json.dumps(recorded, indent=1, sort_keys=True))


# Student settings added after records were first written, with the value that reproduces the older behaviour: a
# record without the key was built with that value.
LATER_STUDENT_DEFAULTS = {"chat_template": False, "lora": None, "each_epoch": "question", "max_steps": None,
                          "max_tokens": None, "patience": None}


LATER_TEACHER_DEFAULTS = {"samples_per_round": None, "stop_when_repeated": False, "stop_at_distinct": None,
                          "sample_budget": None}


# A task's keys that only decide its evaluation questions.
EVALUATION_SIDE = ("eval", "max_eval")


def task_of(key: str) -> str | None:
    """``tasks[csqa].max_train`` -> ``tasks[csqa]``; None for other keys."""
    return key.split("]", 1)[0] + "]" if key.startswith("tasks[") else None


def differences(old: dict[str, Any], new: dict[str, Any], unit: str = "") -> list[tuple[str, Any, Any]]:
    """(key, recorded value, current value) for every key whose value differs (a missing key reads as absent, or
    as its older behaviour's value for a setting added later).

    Keys that older records hold but no longer count are left out: an evaluation-only task's and the evaluation
    side of a task (``EVALUATION_SIDE``) in a training unit. An evaluation run (``unit`` "eval ...") keeps its
    answers per question, so a task added or removed, or its ``max_eval`` changed, only asks the questions new to
    it (``evaluate.evaluate_run``)."""
    absent = "(absent)"
    evaluation = unit.startswith("eval ")
    old_tasks, new_tasks = {task_of(k) for k in old} - {None}, {task_of(k) for k in new} - {None}

    def recorded(k: str) -> Any:
        leaf = k.rsplit(".", 1)[-1]
        if k not in old and k.startswith("students[") and leaf in LATER_STUDENT_DEFAULTS:
            return LATER_STUDENT_DEFAULTS[leaf]
        if k not in old and k.startswith("teacher.") and leaf in LATER_TEACHER_DEFAULTS:
            return LATER_TEACHER_DEFAULTS[leaf]
        return old.get(k, absent)

    def counts(k: str) -> bool:
        task = task_of(k)
        if task is None:
            return True
        if evaluation:
            return task in old_tasks and task in new_tasks and not k.endswith(".max_eval")
        if k not in new and (k.rsplit(".", 1)[-1] in EVALUATION_SIDE or old.get(f"{task}.train") in ("", [])):
            return False
        return True

    return [(k, recorded(k), new.get(k, absent)) for k in sorted(set(old) | set(new))
            if counts(k) and recorded(k) != new.get(k, absent)]


def check(exp_dir: Path, cfg: ExperimentConfig, stages: tuple[str, ...], config_path: str = "CONFIG") -> None:
    """Refuse a rerun that would reuse work built from other values: ``StaleWorkError`` listing each such unit
    with its changed keys, and the command that redoes the earliest stage involved. The questions are rebuilt by
    every run of the tasks stage, so they count only when that stage is not run."""
    recorded = _read(exp_dir)
    if not recorded:
        return
    stale = []
    for name, unit in units(cfg, exp_dir).items():
        if name not in recorded or not (exp_dir / unit.folder).exists():
            continue  # new work, or work whose folder was removed: built afresh from this config
        if name == "questions" and "tasks" in stages:
            continue
        changed = differences(recorded[name], unit.values, name)
        if changed:
            stale.append((name, unit.folder, changed))
    if not stale:
        return
    from scotd.stages import NAMES, from_on

    first = min((stage_of(name) for name, _, _ in stale), key=NAMES.index)
    lines = [f"{exp_dir} holds work built from other settings than this config's:"]
    for name, folder, changed in stale[:8]:
        shown = ", ".join(f"{display_key(cfg, k)} was {json.dumps(a)}, now {json.dumps(b)}" for k, a, b in changed[:4])
        more = f" (and {len(changed) - 4} more)" if len(changed) > 4 else ""
        lines.append(f"  {name} ({folder}): {shown}{more}")
    if len(stale) > 8:
        lines.append(f"  and {len(stale) - 8} more")
    removed = [path + "/" for stage in from_on(first) for path in stage.removes if path not in layout.REPORT_FILES]
    lines.append(f"Redo it: scotd run {config_path} ... --restart {first} (removes {', '.join(removed)} and the "
                 "report), or give another output.dir.")
    raise StaleWorkError("\n".join(lines))


def restart(exp_dir: Path, stage: str) -> list[str]:
    """Remove the outputs of ``stage`` and of every later stage, and their records; returns the paths removed
    (relative to the experiment folder)."""
    from scotd.stages import NAMES, from_on

    if stage not in NAMES:
        raise ConfigError(f"--restart {stage}: not a stage; stages: {', '.join(NAMES)}")
    removed = []
    for later in from_on(stage):
        for name in later.removes:  # the stages' own outputs only: a user's report-notes.txt stays
            path = exp_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.is_file():
                path.unlink()
            else:
                continue
            removed.append(name)
    forget(exp_dir, [key for later in from_on(stage) for key in later.sizes])
    recorded = _read(exp_dir)
    if recorded:
        kept = {k: v for k, v in recorded.items() if NAMES.index(stage_of(k)) < NAMES.index(stage)}
        write_text(layout.provenance(exp_dir), json.dumps(kept, indent=1, sort_keys=True))
    return removed
