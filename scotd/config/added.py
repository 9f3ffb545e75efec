"""A finished experiment's config with evaluation-only tasks added (``scotd eval``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from scotd.config.load import from_dict
from scotd.config.sections import ConfigError, ExperimentConfig


def with_eval_tasks(cfg: ExperimentConfig, specs: list[str]) -> ExperimentConfig:
    """``cfg`` with evaluation-only tasks added, each given as ``name=X,format=F,eval=PATH[,max_eval=N,...]``
    (``scotd eval``): a task of new questions that no student trains on, reported as its own task."""
    from scotd.config.sections import TaskConfig

    tasks = list(cfg.tasks)
    for n, spec in enumerate(specs):
        where = f"--task {spec!r}"
        raw: dict[str, Any] = {}
        for item in spec.split(","):
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{where}: expected key=value pairs separated by commas, e.g. "
                                  "name=held-out,format=jsonl,eval=/data/held-out.jsonl")
            try:
                raw[key.strip()] = yaml.safe_load(text) if text else ""
            except yaml.YAMLError:
                raw[key.strip()] = text
        try:
            task = from_dict(TaskConfig, raw)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        if task.train or task.max_train or task.max_dev:
            raise ConfigError(f"{where}: an added task is evaluated only; give no train, max_train or max_dev")
        if not task.eval:
            raise ConfigError(f"{where}: eval: give the questions to evaluate on (a path, URI or gen: source)")
        if any(t.name == task.name for t in tasks):
            raise ConfigError(f"{where}: name: {task.name!r} is already a task of this experiment")
        tasks.append(task)
    return dataclasses.replace(cfg, tasks=tuple(tasks))
