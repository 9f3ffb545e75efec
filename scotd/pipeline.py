"""The whole job: tasks -> teacher -> corpus -> students -> eval -> report, on one Ray cluster.

Stages hand off only through files in the experiment folder (see ``scotd.schema``), so any stage can be rerun on
existing artifacts and a rerun of the whole job skips finished work (teacher blocks, trained students, finished
evaluation runs).
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

from scotd.config import ConfigError, ExperimentConfig, TaskConfig, dump_config
from scotd.fit import prompt_tokens, too_long
from scotd.prompts import (Exemplar, gold_key, load_exemplars, normalize_text, render_answer, student_prompt,
                           teacher_prompt)
from scotd.schema import PREDICTION_SCHEMA, QUESTION_SCHEMA, read_table, to_table, write_table
from scotd import limits, provenance, symbolic
from scotd.assets import MissingAssetError
from scotd.tasks import (DEFAULT_EXEMPLARS, SPLITS, LoadResult, Question, SourceUnavailableError, TaskDataError,
                         carve_dev, hash_split, load_hf_questions, load_questions)

log = logging.getLogger(__name__)

STAGES = ("tasks", "teacher", "corpus", "students", "eval", "report")
RAY_STAGES = ("teacher", "students", "eval")  # the local Ray cluster starts with the first of these that runs


@contextmanager
def ray_cluster(cfg: ExperimentConfig):
    """Use the running Ray session, the cluster of ``ray job submit`` (RAY_ADDRESS), the configured address, or
    start a local cluster that lives as long as the job."""
    import ray

    from scotd.console import quiet_ray_data, ray_init_kwargs

    quiet_ray_data()
    if ray.is_initialized():
        yield
        return
    res = cfg.resources
    if res.address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=res.address or os.environ["RAY_ADDRESS"], **ray_init_kwargs(res.worker_logs))
    else:
        ray.init(address="local", num_cpus=res.num_cpus, include_dashboard=False, **ray_init_kwargs(res.worker_logs))
    log.info("Ray workers' logs (engines, training): %s", ray_logs_folder())
    try:
        yield
    finally:
        ray.shutdown()


def ray_logs_folder() -> str:
    """The Ray session's log folder on this node (where ``resources.worker_logs: false`` leaves workers' output)."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)  # no public API names it in Ray 2.60
    return str(Path(node.get_session_dir_path()) / "logs") if node else "/tmp/ray/session_latest/logs"


class Experiment:
    """Paths and helpers shared by the stages of one experiment folder."""

    def __init__(self, cfg: ExperimentConfig):
        from scotd.storage import Mirror, local_copy, reject_credentials

        reject_credentials(cfg)  # before any location is logged or the config saved
        self.cfg = cfg
        self.cache = Path(cfg.output.cache_dir).expanduser()
        self.dir = local_copy(cfg.output.dir, self.cache)  # output.dir itself, or the local copy of its URI
        self.mirror = Mirror(cfg.output.dir, self.dir)

    def exemplars(self, task: TaskConfig) -> list[Exemplar]:
        found = load_exemplars(task.exemplars or DEFAULT_EXEMPLARS[task.format], task.name)
        return found[: task.num_exemplars] if task.num_exemplars else found

    def all_exemplars(self) -> dict[str, list[Exemplar]]:
        return {t.name: self.exemplars(t) for t in self.cfg.tasks}

    def questions(self, split: str) -> list[Question]:
        path = self.dir / "questions" / f"{split}.parquet"
        if split == "dev" and not path.exists():
            return []  # experiments from before dev splits existed
        table = read_table(path, QUESTION_SCHEMA)
        return [Question(r["question_id"], r["task"], r["question"], tuple(r["choices"]), r["answer_index"],
                         r["answer"])
                for r in table.to_pylist()]

    def write_config(self) -> None:
        """config.yaml: this run's config, with the token budgets sized from the data filled in."""
        (self.dir / "config.yaml").write_text(dump_config(limits.resolved(self.cfg, self.dir)))

    def teacher_tokens(self) -> int:
        """``teacher.max_new_tokens``, sized from the exemplars when the config leaves it unset (scotd.limits)."""
        if self.cfg.teacher.max_new_tokens is not None:
            return self.cfg.teacher.max_new_tokens
        sized = limits.read(self.dir).get("teacher.max_new_tokens")
        if sized is None:
            answers = [render_answer(e.rationale, e.question.gold)
                       for shots in self.all_exemplars().values() for e in shots]
            model = self.resolve_model(self.cfg.teacher.model)
            try:
                counts = prompt_tokens(model, answers, trust_remote_code=self.cfg.teacher.trust_remote_code)
            except (OSError, ValueError) as err:  # no tokenizer to be had here: the engine will say the same
                log.warning("teacher.max_new_tokens: %s has no readable tokenizer (%s); sizing from 3 characters "
                            "per token", model, str(err).splitlines()[0][:200])
                counts = [len(a) // 3 + 1 for a in answers]
            sized = limits.teacher_budget(counts)
            self._sized("teacher.max_new_tokens", sized, "twice the longest exemplar answer in the teacher's tokens")
        return sized

    def eval_tokens(self) -> int:
        """``eval.max_new_tokens``, sized from the kept corpus (or as the teacher's) when unset (scotd.limits)."""
        if self.cfg.eval.max_new_tokens is not None:
            return self.cfg.eval.max_new_tokens
        sized = limits.read(self.dir).get("eval.max_new_tokens")
        if sized is None:
            corpus = self.dir / "corpus" / "corpus.parquet"
            if corpus.exists():
                sized = limits.eval_budget(limits.corpus_tokens(corpus))
                why = "the kept rationales' 99th-percentile length x 1.25 + 16"
            else:
                sized, why = self.teacher_tokens(), "no corpus: the teacher's budget"
            self._sized("eval.max_new_tokens", sized, why)
        return sized

    def _sized(self, key: str, value: int, why: str) -> None:
        limits.save(self.dir, key, value)
        self.write_config()
        log.info("%s: %d tokens, sized from the data (%s)", key, value, why)

    def where(self) -> dict[str, str]:
        """Question id -> the "file:line" it was read from (for messages about one question)."""
        path = self.dir / "questions" / "where.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def resolve_model(self, ref: str) -> str:
        """``tiny:<role>`` (built here), ``offline:<key>`` (a model shipped on PyPI), or a path / hub id as is."""
        if ref.startswith("tiny:"):
            from scotd.tiny import ensure_tiny_model

            role = ref.split(":", 1)[1]
            train = self.questions("train")
            texts = [student_prompt(q) for q in train + self.questions("dev") + self.questions("eval")]
            return str(ensure_tiny_model(role, self.dir / "models" / f"tiny-{role}", texts,
                                         format_texts(train, self.all_exemplars())))
        if ref.startswith("offline:"):
            from scotd.assets import resolve_model

            return resolve_model(ref, self.cache)
        return ref

    def engine_model(self, path: str) -> str:
        """Where a vLLM engine on any node finds a model. A folder inside an experiment stored at a URI (a trained
        student, a tiny model) exists only on the driver's node, so it is pushed (a no-op when already there) and
        given as its URI: the engine copies it to its own node (``scotd.storage.fetch_folder``). Anything else is
        returned as is: a hub id, or a folder in a local ``output.dir``, which on a multi-node cluster must be
        storage every node mounts."""
        if not self.mirror.uri or not Path(path).is_relative_to(self.dir):
            return path
        relative = Path(path).relative_to(self.dir).as_posix()
        self.mirror.push(relative)
        return self.mirror.remote(relative)


def format_texts(questions: list[Question], exemplars: dict[str, list[Exemplar]], limit: int = 64) -> list[str]:
    """Texts that teach ``tiny:teacher`` the answer *format* only: the teacher's own few-shot prompt for a question,
    then a rationale borrowed from an exemplar and a random letter (so nothing about the right answers is learned).
    Fitted on the bare question instead, its greedy answer was a bare letter, which left greedy-CoT nothing."""
    import random

    rng = random.Random(0)
    return [teacher_prompt(q, exemplars[q.task]) + render_answer(
                rng.choice(exemplars[q.task]).rationale,
                str(rng.randrange(100)) if q.free_form else rng.randrange(len(q.choices)))
            for q in questions[:limit]]


def task_sources(task: TaskConfig, split: str) -> tuple[str, ...]:
    """The configured alternatives for a split's questions (``train`` serves the dev split too), in order."""
    configured = task.eval if split == "eval" else task.train
    return (configured,) if isinstance(configured, str) else tuple(configured)


def load_task_split(task: TaskConfig, split: str, cache_dir: Path) -> tuple[LoadResult, str]:
    """Questions of one split (with rows skipped and where each question was read), and the source: the first of
    the task's sources that can be read here (the log names it).

    A source that cannot be read at all (no such file, no hub access, a missing archive) passes to the next; when
    none is left, one error lists each with its reason. Malformed data in a source that exists is an error at once.
    """
    key = "eval" if split == "eval" else "train"
    sources = [s for s in task_sources(task, split) if s]
    if not sources:
        raise ValueError(f"tasks.{task.name}.{key}: no {split} data configured")
    reasons = []
    for source in sources:
        try:
            result = read_source(task, split, source, cache_dir)
        except (SourceUnavailableError, MissingAssetError) as err:
            reasons.append(str(err))
            continue
        log.info("task %s, %s split: %d questions from %s", task.name, split, len(result.questions), source)
        return result, source
    raise SourceUnavailableError(
        f"tasks.{task.name}.{key}: no source of {split} questions can be read here:\n  - " + "\n  - ".join(reasons)
        + f"\nGive a file you have: scotd run CONFIG tasks.<index>.{key}=/path/to/{split}.jsonl (format "
        f"{task.format}), or an 'hf:<dataset>:<split>' ref where the Hugging Face hub is reachable.")


def read_source(task: TaskConfig, split: str, source: str, cache_dir: Path) -> LoadResult:
    """One source's questions: ``offline:<dataset>:<split>`` (scotd.assets, cut by ``hash_split``; the dev split is
    the dataset's own), ``gen:<kind>:<split>:<steps>`` (scotd.symbolic: as many as the task uses),
    ``hf:<dataset>[:<config>]:<split>`` (the hub), or a file in the task's format."""
    if source.startswith("offline:"):
        from scotd.assets import ensure_dataset

        parts = source.split(":")
        key, wanted = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
        if wanted not in SPLITS:
            raise ValueError(f"tasks.{task.name}.{split}: {source!r}: expected offline:<dataset>:<{'|'.join(SPLITS)}>")
        wanted = "dev" if split == "dev" else wanted
        result = load_questions(ensure_dataset(key, cache_dir), "jsonl", task.name, skip_bad_rows=task.skip_bad_rows)
        return replace(result, questions=[q for q in result.questions if hash_split(q.id) == wanted])
    if source.startswith(symbolic.PREFIX):
        wanted = task.max_eval if split == "eval" else (task.max_train or 0) + task.max_dev
        if not wanted:
            raise ValueError(f"tasks.{task.name}.max_{'eval' if split == 'eval' else 'train'}: a generated task "
                             f"({source}) needs a count")
        generated = symbolic.generate(source, task.name, wanted)
        return LoadResult(generated, 0, [], {q.id: f"{source} #{i}" for i, q in enumerate(generated)})
    if source.startswith("hf:") or task.format == "hf":
        return load_hf_questions(source.removeprefix("hf:"), task.name, skip_bad_rows=task.skip_bad_rows,
                                 fmt=task.format)
    return load_questions(source, task.format, task.name, skip_bad_rows=task.skip_bad_rows)


def stage_tasks(exp: Experiment) -> dict:
    """Load every task, drop exemplar questions from training, hold out the dev split, cap sizes, write
    questions/{train,dev,eval}.parquet."""
    summary, splits, where = {}, {"train": [], "dev": [], "eval": []}, {}
    owners: dict[str, str] = {}  # question id -> the task that has it: samples, labels and scores are keyed by id
    for task in exp.cfg.tasks:
        shots = {normalize_text(e.question.text) for e in exp.exemplars(task)}
        loaded, source = (load_task_split(task, "train", exp.cache) if task.train
                          else (LoadResult([], 0, []), ""))
        train, skipped_train = loaded.questions, loaded.num_skipped
        where.update(loaded.where)
        kept = [q for q in train if normalize_text(q.text) not in shots]
        removed = len(train) - len(kept)
        if task.max_dev and not task.train:
            raise ValueError(f"tasks.{task.name}.max_dev: an evaluation-only task has no training questions to "
                             "carve a dev split from")
        if task.max_dev and source.startswith("offline:"):
            held = read_source(task, "dev", source, exp.cache)
            where.update(held.where)
            dev = [q for q in held.questions if normalize_text(q.text) not in shots][: task.max_dev]
        else:
            kept, dev = carve_dev(kept, task.max_dev)
        loaded, eval_source = load_task_split(task, "eval", exp.cache)
        evaluation, skipped_eval = loaded.questions, loaded.num_skipped
        where.update(loaded.where)
        held = {q.id for q in kept} | {q.id for q in dev}
        evaluation = [q for q in evaluation if q.id not in held]
        for q in kept[: task.max_train] + dev + evaluation[: task.max_eval]:
            if owners.setdefault(q.id, task.name) != task.name:
                raise TaskDataError(
                    f"tasks.{task.name}: question id {q.id!r} is also a question of task {owners[q.id]}; ids must "
                    "be unique across tasks (give one of them other files, or ids of its own)")
        splits["train"] += kept[: task.max_train]
        splits["dev"] += dev
        splits["eval"] += evaluation[: task.max_eval]
        summary[task.name] = {"train": len(kept[: task.max_train]), "dev": len(dev),
                              "eval": len(evaluation[: task.max_eval]),
                              "exemplar_questions_removed": removed,
                              "skipped_rows": skipped_train + skipped_eval,
                              "sources": {"train": source, "eval": eval_source}}
    for split, questions in splits.items():
        rows = [{"question_id": q.id, "task": q.task, "question": q.text, "choices": list(q.choices),
                 "answer_index": q.answer_index, "answer": q.answer} for q in questions]
        write_table(to_table(rows, QUESTION_SCHEMA), exp.dir / "questions" / f"{split}.parquet")
    (exp.dir / "questions" / "summary.json").write_text(json.dumps(summary, indent=2))
    used = {q.id for questions in splits.values() for q in questions}
    (exp.dir / "questions" / "where.json").write_text(json.dumps({i: w for i, w in where.items() if i in used}))
    provenance.record(exp.dir, exp.cfg, "questions")
    log.info("tasks: %s", summary)
    return summary


def stage_teacher(exp: Experiment) -> dict:
    from scotd.teacher import sample_rationales

    cfg = replace(exp.cfg.teacher, max_new_tokens=exp.teacher_tokens())
    provenance.record(exp.dir, exp.cfg, "teacher")
    local = exp.resolve_model(cfg.model)
    model = exp.engine_model(local)
    shots = exp.all_exemplars()
    questions = exp.questions("train")
    left_out = too_long(exp.cfg, questions, lambda q: teacher_prompt(q, shots[q.task]), local,
                        chat_template=cfg.chat_template, stage="teacher", where=exp.where())
    questions = [q for q in questions if q.id not in left_out]
    push = lambda block: exp.mirror.push(str(block.relative_to(exp.dir)))  # noqa: E731 - each block as written
    summary = sample_rationales(questions, shots, cfg, exp.cfg.resources, model, exp.dir / "teacher", on_block=push,
                                cache_dir=exp.cfg.output.cache_dir)
    summary["questions_left_out_prompt_too_long"] = len(left_out)
    if cfg.greedy_rationales:
        summary["greedy"] = sample_rationales(questions, shots, cfg, exp.cfg.resources, model,
                                              exp.dir / "teacher" / "greedy", num_samples=1, temperature=0.0,
                                              on_block=push, cache_dir=exp.cfg.output.cache_dir)
    return summary


def stage_corpus(exp: Experiment) -> dict:
    from scotd.corpus import build_corpus

    train = ({q.id for q in exp.questions("train")} if (exp.dir / "questions" / "train.parquet").exists()
             else None)  # without a question file, every sampled question
    summary = build_corpus(exp.dir / "teacher" / "samples", exp.cfg.corpus, exp.dir / "corpus", train)
    for setting in sorted({s.setting for s in exp.cfg.students} - {"", exp.cfg.corpus.setting}):
        summary[setting] = build_corpus(exp.dir / "teacher" / "samples", replace(exp.cfg.corpus, setting=setting),
                                        exp.dir / "corpus" / setting, train)
    greedy = exp.dir / "teacher" / "greedy" / "samples"
    if greedy.exists():
        summary["greedy"] = build_corpus(greedy, exp.cfg.corpus, exp.dir / "corpus" / "greedy", train)
    return summary


def stage_students(exp: Experiment) -> list[dict]:
    from scotd.student.train import STUDENT_META, train_students

    shots = exp.all_exemplars()
    student_shots = {t.name: t.student_shots for t in exp.cfg.tasks}
    dev = [{"prompt": student_prompt(q, shots[q.task][: student_shots[q.task]]), "num_choices": len(q.choices),
            "gold": gold_key(q)} for q in exp.questions("dev")]
    budget = exp.eval_tokens()  # dev answers are scored with the evaluation budget
    train_kinds = {q.free_form for q in exp.questions("train")}
    jobs = []
    for s in exp.cfg.students:
        out = exp.dir / "students" / s.name
        if (out / "model" / STUDENT_META).exists():
            log.info("student %s: already trained, skipping", s.name)
            continue
        provenance.record(exp.dir, exp.cfg, f"student {s.name}")
        rows, selection = student_rows(exp, s)
        meta = {**prompt_formats(train_kinds, s.method == "scotd"),
                "base_model": s.model, "corpus_summary": _read_json(exp.dir / "corpus" / "summary.json"),
                "selection": selection}
        relative = str(rows.relative_to(exp.dir))
        exp.mirror.push(relative)  # workers on other nodes read it from output.dir
        jobs.append({"cfg": s, "model_path": exp.resolve_model(s.model),
                     "rows_path": exp.mirror.remote(relative), "out_dir": str(out),
                     "storage_path": exp.mirror.remote("ray_train"), "meta": meta,
                     "dev": dev, "dev_max_new_tokens": budget})
    return train_students(jobs) if jobs else []


def student_setting(cfg: ExperimentConfig, s) -> str:
    """The corpus setting a student trains in: its own, else the experiment's."""
    return s.setting or cfg.corpus.setting


def student_rows(exp: Experiment, s) -> tuple[Path, dict]:
    """The file a student trains on: the label file (label-only), the corpus, or the corpus after the student's
    selector (written to ``students/<name>/train_rows.parquet``), with counts of what was kept."""
    from scotd.schema import CORPUS_SCHEMA
    from scotd.selectors import by_question, hf_embedder, select

    setting = student_setting(exp.cfg, s)
    folder = exp.dir / "corpus"
    if setting != exp.cfg.corpus.setting:
        folder = folder / setting  # the other setting's corpus, built by stage_corpus from the same samples
    corpus = folder / "corpus.parquet"
    if s.method != "scotd":
        return folder / "labels.parquet", {"selector": "labels", "setting": setting}
    if s.selector == "all":
        return corpus, {"selector": "all", "setting": setting}
    if s.selector == "greedy":
        greedy = exp.dir / "corpus" / "greedy" / "corpus.parquet"
        if not greedy.exists():
            raise ValueError(f"student {s.name}: selector greedy needs teacher.greedy_rationales: true "
                             f"({greedy} is missing)")
        return greedy, {"selector": "greedy"}
    rows = read_table(corpus, CORPUS_SCHEMA).to_pylist()
    embed = hf_embedder(exp.resolve_model(s.embedding_model)) if s.selector == "diverse" else None
    kept = select(rows, s.selector, k=s.selector_k, seed=s.seed, embed=embed)
    if not kept:
        raise RuntimeError(f"student {s.name}: selector {s.selector} (k={s.selector_k}) kept no rationale")
    out = exp.dir / "students" / s.name / "train_rows.parquet"
    write_table(to_table(kept, CORPUS_SCHEMA), out)
    questions = len(by_question(kept))
    summary = {"selector": s.selector, "k": s.selector_k, "rationales": len(kept), "questions": questions,
               "per_question": len(kept) / questions, "of_rationales": len(rows)}
    log.info("student %s: %s", s.name, summary)
    return out, summary


def prompt_formats(free_form: set[bool], scotd: bool) -> dict:
    """What a student's ``scotd_student.json`` shows of its input and target: ``prompt_format`` for the kind of
    question it trained on (multiple choice, else free-form), and ``prompt_format_free_form`` beside it when it trained
    on both kinds."""
    def example(free: bool) -> dict:
        q = (Question("example", "example", "{question}", (), None, "{answer}") if free
             else Question("example", "example", "{question}", ("{choice 1}", "{choice 2}"), 0))
        return {"input": student_prompt(q), "target": render_answer("<rationale>" if scotd else None, q.gold)}

    formats = {"prompt_format": example(free_form == {True})}
    if free_form == {True, False}:
        formats["prompt_format_free_form"] = example(True)
    return formats


def stage_eval(exp: Experiment) -> list[dict]:
    from scotd.evaluate import evaluate_run
    from scotd.teacher import engine_spec, replica_range

    cfg = exp.cfg
    questions = exp.questions("eval")
    runs = eval_runs(cfg, exp.dir)
    shots = exp.all_exemplars()
    student_shots = {t.name: t.student_shots for t in cfg.tasks}
    where = exp.where()
    budget = exp.eval_tokens()
    results = []
    for run in runs:
        trained = "student" in run
        model = (str(exp.dir / "students" / run["student"] / run["model_subdir"]) if trained
                 else exp.resolve_model(run["model_ref"]))
        spec = engine_spec(cfg.teacher, exp.engine_model(model), cfg.output.cache_dir)
        if run["kind"] != "teacher":
            spec = replace(spec, tensor_parallel_size=1, pipeline_parallel_size=1, chat_template=False)
        k = run.get("shots")  # a few-shot prompted untrained student; otherwise the task's student_shots
        prompt_fn = ((lambda q: teacher_prompt(q, shots[q.task])) if run["kind"] == "teacher"
                     else (lambda q, k=k: student_prompt(q, shots[q.task][: k if k else student_shots[q.task]])))
        teacher = run["kind"] == "teacher"
        provenance.record(exp.dir, cfg, f"eval {run['run']}")
        done = (exp.dir / "eval" / run["dir"] / "metrics.json").exists()
        left_out = set() if done else too_long(cfg, questions, prompt_fn, model, chat_template=spec.chat_template,
                                               stage=f"eval {run['run']}", where=where)
        results.append(evaluate_run(run["run"], questions, prompt_fn, spec, max_new_tokens=budget,
                                    batch_size=cfg.eval.batch_size, num_cpus=cfg.resources.engine_cpus,
                                    out_dir=exp.dir / "eval", replicas=replica_range(cfg.teacher) if teacher else 1,
                                    resource=cfg.teacher.resource if teacher else None, samples=run["samples"],
                                    temperature=cfg.eval.self_consistency_temperature, run_dir=run["dir"],
                                    left_out=left_out, repetition_penalty=cfg.eval.repetition_penalty))
        exp.mirror.push(f"eval/{run['dir']}")
    if cfg.eval.judge_pairs:
        stage_judge(exp, runs)
    return results


def stage_judge(exp: Experiment, runs: list[dict]) -> list[dict]:
    """The pairwise rationale judge over ``eval.judge_pairs`` (greedy predictions of both runs)."""
    from scotd.judge import judge_runs
    from scotd.teacher import engine_spec, replica_range

    cfg = exp.cfg
    by_run = {r["run"]: r for r in runs if r["samples"] == 1}
    for i, pair in enumerate(cfg.eval.judge_pairs):
        missing = [name for name in pair if name not in by_run]
        if len(pair) != 2 or missing:
            raise ValueError(f"eval.judge_pairs.{i}: expected two evaluation runs of {sorted(by_run)}, got "
                             f"{list(pair)}")
    judge = exp.engine_model(exp.resolve_model(cfg.eval.judge_model or cfg.teacher.model))
    spec = engine_spec(cfg.teacher, judge, cfg.output.cache_dir)
    questions = exp.questions("eval")

    def preds(run: str) -> list[dict]:
        return read_table(exp.dir / "eval" / by_run[run]["dir"] / "predictions.parquet", PREDICTION_SCHEMA).to_pylist()

    summaries = []
    for a, b in cfg.eval.judge_pairs:
        summaries.append(judge_runs(questions, a, b, preds(a), preds(b), spec, out_dir=exp.dir / "judge",
                                    num_cpus=cfg.resources.engine_cpus, batch_size=cfg.eval.batch_size,
                                    seed=cfg.teacher.seed, replicas=replica_range(cfg.teacher),
                                    resource=cfg.teacher.resource))
    return summaries


def eval_runs(cfg: ExperimentConfig, exp_dir: Path | None = None) -> list[dict]:
    """The evaluation runs of an experiment, in report order.

    A student whose best dev checkpoint is another epoch than its last (``students/<name>/checkpoints.json``) is
    evaluated twice: the checkpoint ``eval.checkpoint`` names is its main row (labelled with the student's name), the
    other is an extra row ``<name>@last`` or ``<name>@best`` that only the checkpoint-selection table shows (none
    with ``eval.both_checkpoints`` off).
    """
    from scotd.evaluate import run_dir_name

    runs = []
    if cfg.eval.teacher:
        runs.append({"run": "teacher", "kind": "teacher", "model_ref": cfg.teacher.model})
    if cfg.eval.untrained:
        for model in dict.fromkeys(s.model for s in cfg.students):
            runs.append({"run": f"untrained:{model}", "kind": "untrained", "model_ref": model})
            if cfg.eval.untrained_shots:
                k = cfg.eval.untrained_shots
                runs.append({"run": f"untrained:{model} {k}-shot", "kind": "untrained", "model_ref": model,
                             "shots": k})
    extra = []
    for s in cfg.students:
        row = {"run": s.name, "kind": s.method, "model_ref": s.model, "student": s.name, "model_subdir": "model"}
        chosen = _read_json(exp_dir / "students" / s.name / "checkpoints.json") if exp_dir else None
        if not chosen or chosen["best_epoch"] in (None, chosen["last_epoch"]):
            runs.append({**row, "checkpoint": "best" if chosen and chosen["best_epoch"] else "last",
                         "epoch": chosen["last_epoch"] if chosen else None})
            continue
        both = {"last": {**row, "checkpoint": "last", "epoch": chosen["last_epoch"]},
                "best": {**row, "checkpoint": "best", "epoch": chosen["best_epoch"], "model_subdir": "model-best"}}
        shown = cfg.eval.checkpoint
        other = "last" if shown == "best" else "best"
        runs.append({**both[shown], "dir": run_dir_name(f"{s.name}@{shown}")})
        if cfg.eval.both_checkpoints:
            extra.append({**both[other], "run": f"{s.name}@{other}", "extra": True})
    k = cfg.eval.self_consistency
    runs = ([{**r, "samples": 1} for r in runs] + [{**r, "samples": 1} for r in extra]
            + ([{**r, "run": f"{r['run']} sc@{k}", "samples": k, "dir": run_dir_name(f"{r.get('dir', r['run'])} sc@{k}")}
                for r in runs] if k > 1 else []))
    for r in runs:
        r.setdefault("dir", run_dir_name(r["run"]))
        r.setdefault("extra", False)
    return runs


def stage_report(exp: Experiment) -> dict:
    from scotd.report import write_report

    return write_report(exp.dir, report_runs(exp.cfg, exp.dir))


def report_runs(cfg: ExperimentConfig, exp_dir: Path) -> list[dict]:
    """What the report needs to know of each evaluation run (``scotd.report.build_report``'s ``runs``)."""
    students = {s.name: s for s in cfg.students}
    return [{"run": r["run"], "kind": r["kind"], "model": r["model_ref"], "dir": r["dir"], "extra": r["extra"],
             **({"shots": r["shots"]} if r.get("shots") else {}),
             **({"student": r["student"], "checkpoint": r["checkpoint"], "epoch": r["epoch"],
                 "selector": students[r["student"]].selector, "selector_k": students[r["student"]].selector_k,
                 "setting": student_setting(cfg, students[r["student"]]),
                 "num_samples": cfg.teacher.num_samples} if "student" in r else {})}
            for r in eval_runs(cfg, exp_dir)]


# What each stage writes, relative to the experiment folder (pushed to output.dir when it is a URI).
STAGE_OUTPUTS = {"tasks": ("questions",), "teacher": ("teacher", "models"), "corpus": ("corpus",),
                 "students": ("students", "models"), "eval": ("eval", "judge"),
                 "report": ("report.json", "report.md", "report.png", "report-n-curve.png", "report-selectors.png",
                            "report-methods.png")}

STAGE_FUNCTIONS = {"tasks": stage_tasks, "teacher": stage_teacher, "corpus": stage_corpus,
                   "students": stage_students, "eval": stage_eval, "report": stage_report}


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def run(cfg: ExperimentConfig, stages: tuple[str, ...] = STAGES, *, restart: str | None = None,
        config_path: str = "CONFIG") -> Experiment:
    """Run ``stages`` in order; writes the resolved config and per-stage wall times into the experiment folder.

    A rerun reuses finished work only when it was built from this config's values (``scotd.provenance``);
    ``restart`` first removes the outputs of that stage and every later one, so they are built again."""
    unknown = [s for s in stages if s not in STAGE_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages: {', '.join(STAGES)}")
    if restart and restart not in STAGES:
        raise ConfigError(f"--restart {restart}: not a stage; stages: {', '.join(STAGES)}")
    exp = Experiment(cfg)
    exp.mirror.check_writable()
    try:
        exp.dir.mkdir(parents=True, exist_ok=True)
        exp.mirror.pull()  # a rerun from a fresh machine resumes from what output.dir already holds
        if restart:
            removed = provenance.restart(exp.dir, restart)
            exp.mirror.delete(*removed)
            log.info("restart from stage %s: removed %s", restart, ", ".join(removed) or "nothing (none there)")
        provenance.check(exp.dir, cfg, stages, config_path)
        exp.write_config()
    except OSError as err:
        raise ConfigError(f"output.dir: {exp.dir}: cannot write there: {err.strerror or err}") from None
    timings_path = exp.dir / "timings.json"
    timings = _read_json(timings_path) or {}
    with ExitStack() as cluster:
        have_cluster = False
        for stage in stages:
            if stage in RAY_STAGES and not have_cluster:
                cluster.enter_context(ray_cluster(cfg))  # after the stages that need no cluster checked the data
                have_cluster = True
            log.info("=== stage %s ===", stage)
            started = time.monotonic()
            STAGE_FUNCTIONS[stage](exp)
            timings[stage] = round(time.monotonic() - started, 1)
            timings_path.write_text(json.dumps(timings, indent=2))
            exp.mirror.push(*STAGE_OUTPUTS[stage], "config.yaml", "timings.json", provenance.FILE, limits.FILE)
    if "report" in stages:
        stage_report(exp)  # again, so the report carries this run's final stage timings
        exp.mirror.push(*STAGE_OUTPUTS["report"])
    return exp

